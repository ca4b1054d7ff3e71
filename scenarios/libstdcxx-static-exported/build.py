"""Two wheels from one C++ source: zoo_stx_static (-static-libstdc++, symbols exported, no
--exclude-libs) and zoo_stx_shared (needs the system libstdc++.so.6)."""

from pathlib import Path

from pytest_runtimeconflict import zoo

out = zoo.output_dir()
work = out.parent / "work"
source = Path(__file__).with_name("textops.cpp")
variants = {"zoo_stx_static": ["-static-libstdc++"], "zoo_stx_shared": []}
for package, flags in variants.items():
    stage = work / package
    zoo.extension_package(stage, package, [source], lang="c++", flags=flags)
    zoo.write_wheel(out, package.replace("_", "-"), "1.0", stage)
