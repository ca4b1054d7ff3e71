"""Two wheels from one C++ source: zoo_sxd_system (needs the system libstdc++.so.6) and
zoo_sxd_vendored (ships a copy of that libstdc++ renamed auditwheel-style,
zoo_sxd_vendored.libs/libstdc++-<sha8>.so.6 with that SONAME, found through a $ORIGIN RUNPATH)."""

import shutil
from pathlib import Path

from pytest_runtimeconflict import zoo

out = zoo.output_dir()
work = out.parent / "work"
source = Path(__file__).with_name("textops.cpp")

stage = work / "zoo_sxd_system"
zoo.extension_package(stage, "zoo_sxd_system", [source], lang="c++")
zoo.write_wheel(out, "zoo-sxd-system", "1.0", stage)

stage = work / "zoo_sxd_vendored"
ext = zoo.extension_package(stage, "zoo_sxd_vendored", [source], lang="c++")
# Vendored under its SONAME's name (libstdc++-<sha8>.so.6), from a byte copy of the system file.
system_copy = work / "system" / "libstdc++.so.6"
system_copy.parent.mkdir(parents=True, exist_ok=True)
shutil.copyfile(zoo.system_library("libstdc++.so.6"), system_copy)
copy = zoo.vendor_library([ext], system_copy, stage / "zoo_sxd_vendored.libs")
if zoo.soname_of(copy) == "libstdc++.so.6":
    raise SystemExit(f"{copy} kept the system SONAME; the scenario needs a renamed copy")
zoo.write_wheel(out, "zoo-sxd-vendored", "1.0", stage)
