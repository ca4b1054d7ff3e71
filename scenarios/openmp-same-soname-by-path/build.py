"""One OpenMP runtime (libiomp5.so from the intel-openmp wheel), shipped by several packages
under its own file name and SONAME (not renamed, so every copy is byte-identical and claims the
SONAME libiomp5.so):

- zoo_sop_needed: its extension (gcc -fopenmp) needs libiomp5.so through DT_NEEDED (in place of
  libgomp.so.1), found in zoo_sop_needed.libs/ through a $ORIGIN RUNPATH.
- zoo_sop_bypath: ships zoo_sop_bypath/lib/libiomp5.so; its __init__.py loads that file by
  absolute path with ctypes.CDLL(path, mode=os.RTLD_GLOBAL) (as torch loads its global deps)
  before importing its extension, whose DT_NEEDED libiomp5.so (no RUNPATH) is then satisfied by
  the loaded SONAME.
- zoo_sop_bypath_local: the same with ctypes' default mode (RTLD_LOCAL).
"""

from pathlib import Path

from pytest_runtimeconflict import zoo

out = zoo.output_dir()
work = out.parent / "work"
source = Path(__file__).with_name("ompwork.c")
libiomp5 = zoo.fetch_pypi_file("intel-openmp", "*/lib/libiomp5.so")

stage = work / "zoo_sop_needed"
ext = zoo.extension_package(stage, "zoo_sop_needed", [source], flags=["-fopenmp"])
zoo.vendor_library(
    [ext], libiomp5, stage / "zoo_sop_needed.libs", needed="libgomp.so.1", rename=False
)
zoo.write_wheel(out, "zoo-sop-needed", "1.0", stage)

INIT = """\
import ctypes
import os

# Load our OpenMP runtime by absolute path, so that the extension's DT_NEEDED libiomp5.so
# (it has no RUNPATH) is satisfied by the already loaded SONAME.
_libiomp5 = ctypes.CDLL(os.path.join(os.path.dirname(__file__), "lib", "libiomp5.so"){mode})

from .{module} import *  # noqa: E402,F401,F403
"""
for package, mode in (
    ("zoo_sop_bypath", ", mode=os.RTLD_GLOBAL"),
    ("zoo_sop_bypath_local", ""),
):
    stage = work / package
    ext = zoo.extension_package(stage, package, [source], flags=["-fopenmp"])
    copy = zoo.vendor_library(
        [ext], libiomp5, stage / package / "lib", needed="libgomp.so.1", rename=False
    )
    assert copy.name == "libiomp5.so" and zoo.soname_of(copy) == "libiomp5.so", copy
    zoo.patchelf("--remove-rpath", ext)
    (ext.parent / "__init__.py").write_text(INIT.format(mode=mode, module="_" + package))
    zoo.write_wheel(out, package.replace("_", "-"), "1.0", stage)
