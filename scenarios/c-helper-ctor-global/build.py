"""zoo_chg_a and zoo_chg_b: each vendors its own build of libzhelper (version 1 and version 2,
with different table layouts), auditwheel-style as <pkg>.libs/libzhelper-<sha8>.so with that
SONAME and a $ORIGIN RUNPATH. Both builds export the same names (no visibility control)."""

from pathlib import Path

from pytest_runtimeconflict import zoo

here = Path(__file__).parent
out = zoo.output_dir()
work = out.parent / "work"
for version, package in ((1, "zoo_chg_a"), (2, "zoo_chg_b")):
    build = work / f"zhelper-{version}"
    library = zoo.compile_shared_library(
        [here / "zhelper.c"],
        build / "libzhelper.so",
        flags=[f"-DZHELPER_VERSION={version}", "-Wl,-soname,libzhelper.so"],
    )
    stage = work / package
    ext = zoo.extension_package(
        stage, package, [here / "chgext.c"], flags=[f"-L{build}", "-lzhelper"]
    )
    zoo.vendor_library([ext], library, stage / f"{package}.libs")
    zoo.write_wheel(out, package.replace("_", "-"), "1.0", stage)
