"""zoo_oldcxx: a C extension shipping an old fake libstdc++.so.6 (same SONAME as the system one,
not renamed) in zoo_oldcxx.libs/, found through a $ORIGIN RUNPATH. zoo_newcxx: a C++ extension
needing GLIBCXX_3.4.30 from the system libstdc++.so.6."""

from pathlib import Path

from pytest_runtimeconflict import zoo

here = Path(__file__).parent
out = zoo.output_dir()
work = out.parent / "work"


def fake_old_libstdcxx(directory: Path) -> Path:
    """A stand-in for GCC 11's libstdc++.so.6: it defines every symbol version up to
    GLIBCXX_3.4.29 and CXXABI_1.3.13 (one marker function each) and nothing newer."""
    directory.mkdir(parents=True, exist_ok=True)
    versions = ["GLIBCXX_3.4"] + [f"GLIBCXX_3.4.{i}" for i in range(1, 30)]
    versions += ["CXXABI_1.3"] + [f"CXXABI_1.3.{i}" for i in range(1, 14)]
    source, script = [], []
    for index, version in enumerate(versions):
        marker = "zoo_fake_" + version.replace(".", "_").lower()
        source.append(f"int {marker}(void) {{ return {index}; }}")
        parent = versions[index - 1] if index and version[:6] == versions[index - 1][:6] else ""
        script.append(f"{version} {{ global: {marker}; }} {parent};")
    script[0] = script[0].replace("}", "local: *; }", 1)
    (directory / "fake.c").write_text("\n".join(source) + "\n")
    (directory / "fake.map").write_text("\n".join(script) + "\n")
    return zoo.compile_shared_library(
        [directory / "fake.c"],
        directory / "libstdc++.so.6",
        flags=[f"-Wl,--version-script={directory / 'fake.map'}", "-Wl,-soname,libstdc++.so.6"],
    )


fake = fake_old_libstdcxx(work / "fake")
stage = work / "zoo_oldcxx"
ext = zoo.extension_package(stage, "zoo_oldcxx", [here / "oldcxx.c"])
zoo.patchelf("--add-needed", "libstdc++.so.6", ext)
zoo.vendor_library([ext], fake, stage / "zoo_oldcxx.libs", rename=False)
zoo.write_wheel(out, "zoo-oldcxx", "1.0", stage)

stage = work / "zoo_newcxx"
ext = zoo.extension_package(
    stage, "zoo_newcxx", [here / "newcxx.cpp"], lang="c++", flags=["-pthread"]
)
if "GLIBCXX_3.4.30" not in zoo.run_tool(["objdump", "-T", str(ext)], what="objdump -T"):
    raise SystemExit(f"{ext} does not need GLIBCXX_3.4.30 (needs g++ 12 or newer)")
zoo.write_wheel(out, "zoo-newcxx", "1.0", stage)
