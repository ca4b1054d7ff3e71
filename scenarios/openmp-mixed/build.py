"""Two wheels from one OpenMP source compiled with gcc -fopenmp: zoo_gomp_mixed vendors a copy
of GNU libgomp (the system libgomp.so.1.0.0, as auditwheel does for wheels built with GCC) and
zoo_iomp_mixed vendors Intel's libiomp5 (from the intel-openmp wheel) in place of libgomp."""

from pathlib import Path

from pytest_runtimeconflict import zoo

out = zoo.output_dir()
work = out.parent / "work"
source = Path(__file__).with_name("ompwork.c")
runtimes = {
    "zoo_gomp_mixed": zoo.system_library("libgomp.so.1"),
    "zoo_iomp_mixed": zoo.fetch_pypi_file("intel-openmp", "*/lib/libiomp5.so"),
}
for package, runtime in runtimes.items():
    stage = work / package
    ext = zoo.extension_package(stage, package, [source], flags=["-fopenmp"])
    zoo.vendor_library(
        [ext], runtime, stage / f"{package}.libs", needed="libgomp.so.1", salt=package
    )
    zoo.write_wheel(out, package.replace("_", "-"), "1.0", stage)
