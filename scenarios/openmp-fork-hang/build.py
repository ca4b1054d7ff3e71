"""zoo_gomp_fork: an OpenMP extension (gcc -fopenmp) vendoring a copy of GNU libgomp."""

from pathlib import Path

from pytest_runtimeconflict import zoo

out = zoo.output_dir()
stage = out.parent / "work" / "zoo_gomp_fork"
ext = zoo.extension_package(
    stage, "zoo_gomp_fork", [Path(__file__).with_name("ompwork.c")], flags=["-fopenmp"]
)
zoo.vendor_library(
    [ext], zoo.system_library("libgomp.so.1"), stage / "zoo_gomp_fork.libs", needed="libgomp.so.1"
)
zoo.write_wheel(out, "zoo-gomp-fork", "1.0", stage)
