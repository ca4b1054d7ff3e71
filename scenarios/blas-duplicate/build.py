"""Two wheels calling OpenBLAS: zoo_blas32 vendors libscipy_openblas.so (scipy-openblas32 wheel,
as scipy does) and zoo_blas64 vendors libscipy_openblas64_.so (scipy-openblas64, as numpy does)."""

from pathlib import Path

from pytest_runtimeconflict import zoo

out = zoo.output_dir()
work = out.parent / "work"
source = Path(__file__).with_name("blaswork.c")
variants = {
    "zoo_blas32": (
        "scipy-openblas32",
        "libscipy_openblas.so",
        "int",
        "scipy_{}_",
        "scipy_openblas_get_config",
    ),
    "zoo_blas64": (
        "scipy-openblas64",
        "libscipy_openblas64_.so",
        "long",
        "scipy_{}_64_",
        "scipy_openblas_get_config64_",
    ),
}
for package, (dist, libname, int_type, pattern, config) in variants.items():
    library = zoo.fetch_pypi_file(dist, f"*/lib/{libname}")
    prefix, suffix = pattern.split("{}")
    flags = [
        f"-DBLAS_INT={int_type}",
        f"-DBLAS(x)=BLAS_NAME(BLAS_NAME({prefix}, x), {suffix})",
        f"-DBLAS_CONFIG={config}",
        f"-L{library.parent}",
        f"-l:{libname}",
    ]
    stage = work / package
    ext = zoo.extension_package(stage, package, [source], flags=flags)
    zoo.vendor_library([ext], library, stage / f"{package}.libs")
    zoo.write_wheel(out, package.replace("_", "-"), "1.0", stage)
