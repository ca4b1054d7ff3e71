"""zoo_odr_v1 and zoo_odr_v2: the same extension source, each with its own zoolib version
compiled in and exported (no -fvisibility=hidden, no version script)."""

from pathlib import Path

from pytest_runtimeconflict import zoo

here = Path(__file__).parent
out = zoo.output_dir()
work = out.parent / "work"
for version in (1, 2):
    package = f"zoo_odr_v{version}"
    stage = work / package
    sources = [here / "odrext.cpp", here / "zoolib.cpp"]
    zoo.extension_package(
        stage, package, sources, lang="c++", flags=[f"-DZOOLIB_VERSION={version}"]
    )
    zoo.write_wheel(out, package.replace("_", "-"), "1.0", stage)
