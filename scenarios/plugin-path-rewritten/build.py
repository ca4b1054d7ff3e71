"""zoo_ppr_a and zoo_ppr_b: each bundles its own build of the plugin-loading library libzplug
(ABI 1 and ABI 2, auditwheel-style <pkg>.libs/libzplug-<sha8>.so) and a "codec" plugin built
against that build (<pkg>/plugins/libzplug_codec.so, RUNPATH to its package's libzplug).
zoo_ppr_a's extension sets ZPLUG_PLUGIN_PATH (C setenv) to its plugins when imported, and its
__init__.py sets ZPLUG_DATA_DIR through os.environ. Nothing is loaded RTLD_GLOBAL."""

from pathlib import Path

from pytest_runtimeconflict import zoo

here = Path(__file__).parent
out = zoo.output_dir()
work = out.parent / "work"
INIT = """import os

from .{module} import *  # noqa: F401,F403
from .{module} import _render

{extra}

def render():
    return _render(os.path.join(os.path.dirname(__file__), "plugins"))
"""
DATA_DIR = 'os.environ["ZPLUG_DATA_DIR"] = os.path.join(os.path.dirname(__file__), "data")'
for abi, package in ((1, "zoo_ppr_a"), (2, "zoo_ppr_b")):
    build = work / f"zplug-{abi}"
    library = zoo.compile_shared_library(
        [here / "zplug.c"],
        build / "libzplug.so",
        flags=[f"-DZPLUG_ABI={abi}", "-Wl,-soname,libzplug.so", "-ldl"],
    )
    stage = work / package
    flags = [f"-L{build}", "-lzplug", "-ldl"] + (["-DZPPR_SET_PATH"] if abi == 1 else [])
    ext = zoo.extension_package(stage, package, [here / "pprext.c"], flags=flags)
    plugin = zoo.compile_shared_library(
        [here / "codec.c"],
        stage / package / "plugins" / "libzplug_codec.so",
        flags=[f"-L{build}", "-lzplug"],
    )
    zoo.vendor_library([ext, plugin], library, stage / f"{package}.libs")
    extra = DATA_DIR if abi == 1 else ""
    (stage / package / "__init__.py").write_text(INIT.format(module=f"_{package}", extra=extra))
    zoo.write_wheel(out, package.replace("_", "-"), "1.0", stage)
