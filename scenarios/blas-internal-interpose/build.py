"""zoo_bli_a and zoo_bli_b: each vendors its own BLAS-like library, auditwheel-style
(<pkg>.libs/libzblasa-<sha8>.so and <pkg>.libs/libzblasb-<sha8>.so, that SONAME, $ORIGIN
RUNPATH). Their public APIs are renamed apart (zblasa_ddot, zblasb_ddot64_); their unprefixed
internals (gotoblas, gotoblas_HASWELL, gotoblas_init, ddot_kernel_HASWELL) are exported by both
with different types."""

from pathlib import Path

from pytest_runtimeconflict import zoo

here = Path(__file__).parent
out = zoo.output_dir()
work = out.parent / "work"
for flavor, stem, package in (("A", "zblasa", "zoo_bli_a"), ("B", "zblasb", "zoo_bli_b")):
    build = work / stem
    library = zoo.compile_shared_library(
        [here / "zblas.c"],
        build / f"lib{stem}.so",
        flags=[f"-DZBLAS_FLAVOR='{flavor}'", f"-Wl,-soname,lib{stem}.so"],
    )
    stage = work / package
    ext = zoo.extension_package(
        stage,
        package,
        [here / "bliext.c"],
        flags=[f"-DZBLAS_FLAVOR='{flavor}'", f"-L{build}", f"-l{stem}"],
    )
    zoo.vendor_library([ext], library, stage / f"{package}.libs")
    zoo.write_wheel(out, package.replace("_", "-"), "1.0", stage)
