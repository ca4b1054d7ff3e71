"""The ld.so model on real objects: search order, $ORIGIN, SONAME reuse, shadows, wheels."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path

import cbuild
import pytest
from test_rules import ext, fake_lib, make_wheel

from pytest_runtimeconflict.static.discover import path_candidates
from pytest_runtimeconflict.static.loader import LoaderModel, expand_tokens, system_ld_cache
from pytest_runtimeconflict.static.objects import FactsReader


def force_rpath(path: Path, rpath: str) -> Path:
    subprocess.run(
        [cbuild.patchelf(), "--force-rpath", "--set-rpath", rpath, str(path)], check=True
    )
    return path


def dep(outdir: Path, tag: str, soname: str = "libdep.so") -> Path:
    return fake_lib(f"int dep_{tag};", soname, outdir)


def model(**kw: object) -> LoaderModel:
    kw.setdefault("ld_library_path", ())
    return LoaderModel(FactsReader(), **kw)  # type: ignore[arg-type]


def test_runpath_with_origin(tmp_path: Path) -> None:
    d = dep(tmp_path / "pkg.libs", "a")
    top = ext("top", tmp_path / "pkg", needed=("libdep.so",), runpath="$ORIGIN/../pkg.libs")
    state = model().new_process()
    loaded = state.load(str(top))
    assert str(d) in loaded and state.resolve(str(top), "libdep.so") == str(d)


def test_rpath_is_inherited_runpath_is_not(tmp_path: Path) -> None:
    d = dep(tmp_path / "deps", "a")
    mid = fake_lib("int mid;", "libmid.so", tmp_path / "mid")
    subprocess.run([cbuild.patchelf(), "--add-needed", "libdep.so", str(mid)], check=True)
    top = ext("top", tmp_path / "top", needed=("libmid.so",))
    force_rpath(top, f"{tmp_path / 'mid'}:{tmp_path / 'deps'}")
    state = model().new_process()
    state.load(str(top))
    assert state.resolve(str(mid), "libdep.so") == str(d)  # via top's inherited DT_RPATH
    assert not state.missing

    top2 = ext(
        "top2",
        tmp_path / "top2",
        needed=("libmid.so",),
        runpath=f"{tmp_path / 'mid'}:{tmp_path / 'deps'}",
    )
    state2 = model().new_process()
    state2.load(str(top2))
    assert [(m.requester, m.soname) for m in state2.missing] == [(str(mid), "libdep.so")]


def test_rpath_ignored_when_runpath_present(tmp_path: Path) -> None:
    via_rpath = dep(tmp_path / "r", "r")
    via_runpath = dep(tmp_path / "u", "u")
    top = ext("top", tmp_path / "top", needed=("libdep.so",))
    force_rpath(top, str(tmp_path / "r"))
    state = model().new_process()
    state.load(str(top))
    assert state.resolve(str(top), "libdep.so") == str(via_rpath)
    # the same object with a DT_RUNPATH next to its DT_RPATH (ld only writes one of them, so
    # the facts are edited): the RPATH is then ignored
    reader = FactsReader()
    facts = reader(str(top))
    assert facts is not None and facts.rpath == (str(tmp_path / "r"),)
    both = dataclasses.replace(facts, runpath=(str(tmp_path / "u"),))
    loader = LoaderModel(lambda p: both if p == str(top) else reader(p), ld_library_path=())
    state = loader.new_process()
    state.load(str(top))
    assert state.resolve(str(top), "libdep.so") == str(via_runpath)


def test_ld_library_path_between_rpath_and_runpath(tmp_path: Path) -> None:
    env_dep = dep(tmp_path / "env", "e")
    run_dep = dep(tmp_path / "run", "r")
    top = ext("top", tmp_path / "top", needed=("libdep.so",), runpath=str(tmp_path / "run"))
    state = model(ld_library_path=[str(tmp_path / "env")]).new_process()
    state.load(str(top))
    assert state.resolve(str(top), "libdep.so") == str(env_dep)
    assert model().find("libdep.so", FactsReader()(str(top))) == str(run_dep)  # type: ignore[arg-type]


def test_loaded_soname_satisfies_later_request_and_records_shadow(tmp_path: Path) -> None:
    d1 = dep(tmp_path / "one", "1")
    d2 = dep(tmp_path / "two", "2")
    a = ext("a", tmp_path / "a", needed=("libdep.so",), runpath=str(tmp_path / "one"))
    b = ext("b", tmp_path / "b", needed=("libdep.so",), runpath=str(tmp_path / "two"))
    state = model().new_process()
    state.load(str(a))
    assert state.load(str(b)) == [str(b)]  # nothing new: libdep.so is already loaded
    assert state.resolve(str(b), "libdep.so") == str(d1)
    (shadow,) = state.shadows
    assert (shadow.requester, shadow.soname, shadow.loaded, shadow.would_find) == (
        str(b),
        "libdep.so",
        str(d1),
        str(d2),
    )


def test_two_copies_with_different_sonames_both_load(tmp_path: Path) -> None:
    d1 = dep(tmp_path / "one", "1", "libgomp-aaaa.so.1")
    d2 = dep(tmp_path / "two", "2", "libgomp-bbbb.so.1")
    a = ext("a", tmp_path / "a", needed=("libgomp-aaaa.so.1",), runpath=str(tmp_path / "one"))
    b = ext("b", tmp_path / "b", needed=("libgomp-bbbb.so.1",), runpath=str(tmp_path / "two"))
    state = model().new_process()
    state.load(str(a))
    state.load(str(b))
    assert {str(d1), str(d2)} <= set(state.loaded) and not state.shadows


def test_system_library_found_through_ld_cache(tmp_path: Path) -> None:
    cache = system_ld_cache()
    if "libstdc++.so.6" not in cache:
        pytest.skip("ldconfig -p lists no libstdc++.so.6 (install libstdc++6)")
    top = ext("top", tmp_path, needed=("libstdc++.so.6",))
    state = model(default_dirs=()).new_process()
    state.load(str(top))
    assert os.path.realpath(state.resolve(str(top), "libstdc++.so.6") or "") == os.path.realpath(
        cache["libstdc++.so.6"][0]
    )


def test_wrong_elf_class_is_skipped(tmp_path: Path) -> None:
    try:
        bad = cbuild.compile_shared(
            "int dep_32;",
            "libdep.so",
            flags=("-m32", "-Wl,-soname,libdep.so"),
            outdir=tmp_path / "m32",
        )
    except subprocess.CalledProcessError:
        pytest.skip("gcc cannot build 32-bit objects: apt-get install gcc-multilib")
    good = dep(tmp_path / "m64", "64")
    top = ext("top", tmp_path / "top", needed=("libdep.so",), runpath=f"{bad.parent}:{good.parent}")
    state = model().new_process()
    state.load(str(top))
    assert state.resolve(str(top), "libdep.so") == str(good)


def test_expand_tokens() -> None:
    assert expand_tokens("$ORIGIN/../lib", "/a/b", "lib64", "x86_64") == "/a/lib"
    assert (
        expand_tokens("${ORIGIN}/x/$LIB/${PLATFORM}", "/o", "lib/x86_64-linux-gnu", "x86_64")
        == "/o/x/lib/x86_64-linux-gnu/x86_64"
    )


def test_wheel_members_resolve_origin_inside_the_wheel(tmp_path: Path) -> None:
    d = dep(tmp_path / "b", "w")
    top = ext("wmod", tmp_path / "b", needed=("libdep.so",), runpath="$ORIGIN/../wpkg.libs")
    wheel = make_wheel(tmp_path, "wpkg", {"wpkg/sub/../wmod.so": top, "wpkg.libs/libdep.so": d})
    members = [c.path for c in path_candidates([str(wheel)])]
    mod = next(m for m in members if m.endswith("wmod.so"))
    assert mod.startswith(str(wheel) + "!/")
    state = model().new_process()
    state.load(mod)
    assert state.resolve(mod, "libdep.so") == f"{wheel}!/wpkg.libs/libdep.so"


def test_other_machine_candidate_is_skipped(tmp_path: Path) -> None:
    bad = dep(tmp_path / "arm", "arm")
    good = dep(tmp_path / "x86", "x86")
    top = ext("top", tmp_path / "top", needed=("libdep.so",), runpath=f"{bad.parent}:{good.parent}")
    reader = FactsReader()
    arm = dataclasses.replace(reader(str(bad)), machine="EM_AARCH64")  # type: ignore[type-var]
    loader = LoaderModel(lambda p: arm if p == str(bad) else reader(p), ld_library_path=())
    state = loader.new_process()
    state.load(str(top))
    assert state.resolve(str(top), "libdep.so") == str(good)
