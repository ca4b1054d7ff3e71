"""zoo_tpf: an extension computing through a vendored C library with its own pthread pool
(zoo_tpf.libs/libzpool-<sha8>.so)."""

from pathlib import Path

from pytest_runtimeconflict import zoo

here = Path(__file__).parent
out = zoo.output_dir()
work = out.parent / "work"
library = zoo.compile_shared_library(
    [here / "zpool.c"], work / "zpool" / "libzpool.so", flags=["-Wl,-soname,libzpool.so", "-pthread"]
)
stage = work / "zoo_tpf"
ext = zoo.extension_package(
    stage, "zoo_tpf", [here / "tpfext.c"], flags=[f"-L{library.parent}", "-lzpool"]
)
zoo.vendor_library([ext], library, stage / "zoo_tpf.libs")
zoo.write_wheel(out, "zoo-tpf", "1.0", stage)
