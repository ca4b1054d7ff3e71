"""zoo_cxi_a: a framework wheel that carries zcore 1 compiled into its own extension and
exports it (no visibility control). zoo_cxi_b: zcore's own wheel, its extension linked against
zcore 2 vendored auditwheel-style as zoo_cxi_b.libs/libzcore-<sha8>.so (that SONAME, $ORIGIN
RUNPATH). Same mangled names, different class layouts."""

from pathlib import Path

from pytest_runtimeconflict import zoo

here = Path(__file__).parent
out = zoo.output_dir()
work = out.parent / "work"

stage = work / "zoo_cxi_a"
zoo.extension_package(
    stage,
    "zoo_cxi_a",
    [here / "cxiext.cpp", here / "zcore.cpp"],
    lang="c++",
    flags=["-DZCORE_VERSION=1"],
)
zoo.write_wheel(out, "zoo-cxi-a", "1.0", stage)

build = work / "zcore-2"
library = zoo.compile_shared_library(
    [here / "zcore.cpp"],
    build / "libzcore.so",
    lang="c++",
    flags=["-DZCORE_VERSION=2", "-Wl,-soname,libzcore.so"],
)
stage = work / "zoo_cxi_b"
ext = zoo.extension_package(
    stage,
    "zoo_cxi_b",
    [here / "cxiext.cpp"],
    lang="c++",
    flags=["-DZCORE_VERSION=2", f"-L{build}", "-lzcore"],
)
zoo.vendor_library([ext], library, stage / "zoo_cxi_b.libs")
zoo.write_wheel(out, "zoo-cxi-b", "1.0", stage)
