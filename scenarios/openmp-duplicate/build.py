"""Two wheels, zoo_iomp_a and zoo_iomp_b, each vendoring its own renamed copy of libiomp5.so
from the intel-openmp wheel (as two packages built against two builds of the runtime would):
the extensions are compiled with gcc -fopenmp and their libgomp.so.1 dependency is replaced by
the vendored libiomp5 copy, which provides the GOMP_* entry points."""

from pathlib import Path

from pytest_runtimeconflict import zoo

out = zoo.output_dir()
work = out.parent / "work"
source = Path(__file__).with_name("ompwork.c")
libiomp5 = zoo.fetch_pypi_file("intel-openmp", "*/lib/libiomp5.so")
for package in ("zoo_iomp_a", "zoo_iomp_b"):
    stage = work / package
    ext = zoo.extension_package(stage, package, [source], flags=["-fopenmp"])
    zoo.vendor_library(
        [ext], libiomp5, stage / f"{package}.libs", needed="libgomp.so.1", salt=package
    )
    zoo.write_wheel(out, package.replace("_", "-"), "1.0", stage)
