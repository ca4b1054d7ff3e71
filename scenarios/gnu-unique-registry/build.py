"""zoo_gur_a and zoo_gur_b: two extensions from one C++ source, each compiling in the
header-only zreg registry (default visibility, so its inline static member is an exported
STB_GNU_UNIQUE object) and registering zoo/common.proto at load time."""

from pathlib import Path

from pytest_runtimeconflict import zoo

here = Path(__file__).parent
out = zoo.output_dir()
work = out.parent / "work"
for package in ("zoo_gur_a", "zoo_gur_b"):
    stage = work / package
    ext = zoo.extension_package(
        stage, package, [here / "gurext.cpp"], lang="c++", flags=["-std=c++17"]
    )
    symbols = zoo.run_tool(["readelf", "--dyn-syms", "-W", str(ext)], what="readelf")
    if not any("UNIQUE" in line and "RegistryI" in line for line in symbols.splitlines()):
        raise SystemExit(f"{ext}: the zreg registry is not an STB_GNU_UNIQUE dynamic symbol")
    zoo.write_wheel(out, package.replace("_", "-"), "1.0", stage)
