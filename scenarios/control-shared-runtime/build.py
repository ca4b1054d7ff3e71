"""zoo_ctl_a and zoo_ctl_b: the same C++ source as libstdcxx-static-exported, both linked
against the shared system libstdc++.so.6 (the correct way): one runtime serves both."""

from pathlib import Path

from pytest_runtimeconflict import zoo

out = zoo.output_dir()
work = out.parent / "work"
source = Path(__file__).with_name("textops.cpp")
for package in ("zoo_ctl_a", "zoo_ctl_b"):
    stage = work / package
    zoo.extension_package(stage, package, [source], lang="c++")
    zoo.write_wheel(out, package.replace("_", "-"), "1.0", stage)
