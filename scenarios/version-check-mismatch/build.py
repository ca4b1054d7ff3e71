"""zoo_vcm_a and zoo_vcm_b: each vendors its own build of libzimg (version 100 and version 62),
auditwheel-style as <pkg>.libs/libzimg-<sha8>.so, with an extension compiled against that
version's header. Both builds export the same names (no visibility control)."""

from pathlib import Path

from pytest_runtimeconflict import zoo

here = Path(__file__).parent
out = zoo.output_dir()
work = out.parent / "work"
for version, package in ((100, "zoo_vcm_a"), (62, "zoo_vcm_b")):
    build = work / f"zimg-{version}"
    library = zoo.compile_shared_library(
        [here / "zimg.c"],
        build / "libzimg.so",
        flags=[f"-DZIMG_LIB_VERSION={version}", "-Wl,-soname,libzimg.so"],
    )
    stage = work / package
    flags = [f"-DZIMG_CALLER_VERSION={version}", f"-L{build}", "-lzimg"]
    ext = zoo.extension_package(stage, package, [here / "vcmext.c"], flags=flags)
    zoo.vendor_library([ext], library, stage / f"{package}.libs")
    zoo.write_wheel(out, package.replace("_", "-"), "1.0", stage)
