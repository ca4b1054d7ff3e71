"""The matrix's parts without building environments: the catalogue and its pyproject table,
the planner's --rc-pairs-between restriction, the shard split, rows read from a real run
report's shape, the table, the exit status, the merge of shard files, the HTML page, the
installer commands and bad input as one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_runtimeconflict.errors import UsageError
from pytest_runtimeconflict.matrix.catalogue import CATALOGUE, Partner, choose_partners
from pytest_runtimeconflict.matrix.envs import Installer, create_command, install_command
from pytest_runtimeconflict.matrix.page import render
from pytest_runtimeconflict.matrix.results import (
    Matrix,
    Row,
    exit_code,
    load_matrix,
    merge_matrices,
    table_lines,
)
from pytest_runtimeconflict.matrix.rows import row_from_report
from pytest_runtimeconflict.model.plan import PlanContext, RuntimeLibrary
from pytest_runtimeconflict.options import OPTIONS, read_settings
from pytest_runtimeconflict.planning.from_scan import build_plan
from pytest_runtimeconflict.planning.shards import Shard
from pytest_runtimeconflict.planning.variants import parse_variants

# One crashed run with its diagnosis and one latent run, as the plugin's report writes them.
CRASH = {
    "nodeid": "runtime-conflicts::a>b",
    "outcome": "crashed",
    "steps": ["zoo_iomp_a", "zoo_iomp_b", "exercise"],
    "minimal_steps": ["zoo_iomp_a", "zoo_iomp_b"],
    "verdict": {"rule": "openmp-duplicate", "key": "openmp-duplicate:x"},
    "library_details": [
        {"path": "/v/site-packages/zoo_iomp_a.libs/libiomp5-bdc2b695.so", "distribution": "zoo-iomp-a"},
        {"path": "/v/site-packages/zoo_iomp_b.libs/libiomp5-7ca17c6f.so", "distribution": "zoo-iomp-b"},
    ],
    "reproduces": True,
    "child_runs": 14,
}  # fmt: skip
LATENT = {
    "nodeid": "runtime-conflicts::c>d",
    "outcome": "latent",
    "loaded_runtimes": [
        {"family": "blas", "path": "/nowhere/zoo_blas32.libs/libscipy_openblas-1234abcd.so"},
        {"family": "blas", "path": "/nowhere/zoo_blas64.libs/libscipy_openblas64_-5678abcd.so"},
    ],
    "child_runs": 3,
}
OMP_KEY = "openmp-duplicate: zoo-iomp-a/libiomp5.so + zoo-iomp-b/libiomp5.so"


def test_catalogue_has_twelve_partners_each_with_a_reason() -> None:
    assert len(CATALOGUE) >= 12
    assert all(p.why for p in CATALOGUE)
    assert len({p.name for p in CATALOGUE}) == len(CATALOGUE)
    assert Partner("torch==2.13.0") in [Partner(p.requirement) for p in CATALOGUE]


def test_pyproject_table_extends_and_narrows_the_catalogue(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        "[tool.pytest-runtimeconflict.matrix]\n"
        'partners = ["mylib>=2", {requirement = "Other_Lib==1", why = "bundles libgomp"}]\n'
        'exclude = ["tensorflow-cpu", "numpy"]\n'
    )
    names = [p.name for p in choose_partners([], tmp_path)]
    assert names[-2:] == ["mylib", "other-lib"]
    assert "numpy" not in names and "tensorflow-cpu" not in names and "scipy" in names
    (tmp_path / "pyproject.toml").write_text(
        '[tool.pytest-runtimeconflict.matrix]\npartners = ["mylib"]\ncatalogue = false\n'
    )
    assert [p.requirement for p in choose_partners([], tmp_path)] == ["mylib"]
    # --with wins over the catalogue and the table
    assert [p.name for p in choose_partners(["zoo-ctl-a", "zoo_ctl_a"], tmp_path)] == ["zoo-ctl-a"]


def test_bad_pyproject_table_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        "[tool.pytest-runtimeconflict.matrix]\npartners = [3]\n"
    )
    with pytest.raises(UsageError, match=r"each partner is a requirement string"):
        choose_partners([], tmp_path)


def _plan_items(between: Any = ()) -> list[tuple[str, tuple[str, ...]]]:
    runtime = RuntimeLibrary("/x/libgomp.so.1", "openmp", "libgomp", ("a1",), "a")
    context = PlanContext(
        ("a1", "a2", "b1"), native=("a1", "a2", "b1"), runtimes=(runtime,), scanned=True
    )
    plan = build_plan(context, 2, parse_variants("--rc-variants", "auto", "test"), between=between)
    return [(item.name, item.modules) for item in plan.items]


def test_pairs_between_keeps_only_items_that_import_both_groups() -> None:
    everything = _plan_items()
    assert ("fork:a1", ("a1",)) in everything  # one module's probe: no pairing
    kept = _plan_items([["a1", "a2"], ["b1"]])
    assert kept == [(n, m) for n, m in everything if "b1" in m and {"a1", "a2"} & set(m)]
    assert "fork:a1" not in [n for n, _ in kept] and len(kept) == len(everything) - 1


def test_pairs_between_option_is_validated() -> None:
    def settings(value: str) -> Any:
        given = {"--runtime-conflicts": "false", "--rc-pairs-between": value}
        return read_settings(lambda o: (given.get(o.flag), True))

    assert settings("mywheel:numpy,scipy").pairs_between == (("mywheel",), ("numpy", "scipy"))
    assert settings("").pairs_between == ()
    with pytest.raises(UsageError, match=r"invalid --rc-pairs-between 'numpy'.*two non-empty"):
        settings("numpy")
    assert any(o.flag == "--rc-pairs-between" for o in OPTIONS)


def test_row_from_report_conflicts_latent_and_child_runs() -> None:
    row = row_from_report("zoo-iomp-b", "1.0", {"scenarios": [CRASH, dict(CRASH), LATENT]}, 2.5)
    assert row.outcome == "conflict" and row.child_runs == 14 + 14 + 3
    (conflict,) = row.conflicts  # two entries, one distinct conflict
    assert conflict.key == OMP_KEY
    assert conflict.to_json() == {
        "rule": "openmp-duplicate",
        "libraries": [
            {"distribution": "zoo-iomp-a", "file": "libiomp5.so"},
            {"distribution": "zoo-iomp-b", "file": "libiomp5.so"},
        ],
        "minimal_order": ["zoo_iomp_a", "zoo_iomp_b"],
        "reproduces": True,
    }
    assert [x["rule"] for x in row.latent] == ["latent-blas"]
    assert row_from_report("p", "1", {"scenarios": [LATENT]}, 1).outcome == "latent"
    assert row_from_report("p", "1", {"scenarios": []}, 1).outcome == "clean"


def _rows() -> tuple[Row, ...]:
    conflict = row_from_report("zoo-iomp-b", "1.0", {"scenarios": [CRASH]}, 3.0)
    clean = Row("zoo-ctl-a", "1.0", "clean", child_runs=2, seconds=1.0)
    return conflict, clean


def test_exit_status_new_conflict_known_conflict_error() -> None:
    rows = _rows()
    assert exit_code(rows, frozenset()) == 1
    assert exit_code(rows, frozenset({OMP_KEY})) == 0
    error = Row("zoo-nope", None, "error", error="ERROR: No matching distribution")
    assert exit_code((*rows, error), frozenset({OMP_KEY})) == 2
    assert exit_code(rows, frozenset({OMP_KEY}), missing=True) == 2


def test_table_marks_known_conflicts_and_names_new_ones() -> None:
    lines = table_lines(_rows(), frozenset())
    assert lines[0].split() == [
        "partner",
        "version",
        "outcome",
        "rules",
        "child",
        "runs",
        "seconds",
    ]
    assert lines[2].split()[:5] == ["zoo-iomp-b", "1.0", "conflict", "openmp-duplicate", "14"]
    assert f"zoo-iomp-b: NEW {OMP_KEY}" in lines
    known = table_lines(_rows(), frozenset({OMP_KEY}))
    assert "openmp-duplicate (known)" in known[2] and f"zoo-iomp-b: known {OMP_KEY}" in known


def test_json_has_exactly_the_contract_keys() -> None:
    data = Matrix(("a.whl",), _rows()).to_json()
    assert set(data) == {"candidate", "rows"}
    assert set(data["rows"][0]) == {
        "partner", "version", "outcome", "conflicts", "latent", "error", "child_runs", "seconds"
    }  # fmt: skip
    assert set(data["rows"][0]["conflicts"][0]) == {
        "rule",
        "libraries",
        "minimal_order",
        "reproduces",
    }
    again = Row.from_json(json.loads(json.dumps(data["rows"][0])))
    assert again.conflicts[0].key == OMP_KEY and again.to_json() == data["rows"][0]


def _shard_file(tmp_path: Path, index: int, rows: tuple[Row, ...]) -> str:
    partners = ("zoo-iomp-b", "zoo-ctl-a", "zoo-blas64")
    path = tmp_path / f"m{index}.json"
    path.write_text(json.dumps(Matrix(("a.whl",), rows, Shard(index, 2), partners).to_json()))
    return str(path)


def test_merge_puts_shard_rows_in_partner_order_and_names_missing(tmp_path: Path) -> None:
    conflict, clean = _rows()
    latent = Row("zoo-blas64", "1.0", "latent", child_runs=1)
    one = _shard_file(tmp_path, 1, (conflict, latent))
    two = _shard_file(tmp_path, 2, (clean,))
    merged, missing = merge_matrices([(p, load_matrix(p)) for p in (two, one)])
    assert [r.partner for r in merged.rows] == ["zoo-iomp-b", "zoo-ctl-a", "zoo-blas64"]
    assert missing == () and set(merged.to_json()) == {"candidate", "rows"}
    _, missing = merge_matrices([(one, load_matrix(one))])
    assert missing == (2,)
    with pytest.raises(UsageError, match=r"shard 1/2 is in both"):
        merge_matrices([(one, load_matrix(one)), (one, load_matrix(one))])


def test_merge_command_on_matrix_files(tmp_path: Path) -> None:
    conflict, clean = _rows()
    files = [_shard_file(tmp_path, 1, (conflict,)), _shard_file(tmp_path, 2, (clean,))]
    baseline = tmp_path / "b.json"
    baseline.write_text(json.dumps({
        "schema": "pytest-runtimeconflict/baseline/1",
        "conflicts": [{"rule": "openmp-duplicate", "libraries": [
            {"distribution": "zoo-iomp-a", "file": "libiomp5.so"},
            {"distribution": "zoo-iomp-b", "file": "libiomp5.so"}]}],
    }))  # fmt: skip
    cmd = [sys.executable, "-m", "pytest_runtimeconflict", "merge", *files]
    merged = tmp_path / "merged.json"
    new = subprocess.run([*cmd, "--json", str(merged)], capture_output=True, text=True)
    assert new.returncode == 1 and f"zoo-iomp-b: NEW {OMP_KEY}" in new.stdout
    assert [r["partner"] for r in json.loads(merged.read_text())["rows"]] == [
        "zoo-iomp-b",
        "zoo-ctl-a",
    ]
    known = subprocess.run([*cmd, "--baseline", str(baseline)], capture_output=True, text=True)
    assert known.returncode == 0, known.stdout + known.stderr
    partial = subprocess.run(cmd[:-1], capture_output=True, text=True)
    assert partial.returncode == 2 and "MISSING shard(s) 2 of 2" in partial.stdout
    mixed = subprocess.run([*cmd[:-1], str(baseline)], capture_output=True, text=True)
    assert mixed.returncode == 2 and "not matrix files" in mixed.stderr
    assert len(mixed.stderr.strip().splitlines()) == 1


def test_html_page_is_self_contained_and_escaped() -> None:
    hostile = Row("<script>alert(1)</script>", "1&2", "error", error="<b>pip</b> said no")
    page = render(Matrix(("<x>.whl",), (*_rows(), hostile)), frozenset({OMP_KEY}))
    assert "<script>" not in page and "&lt;script&gt;" in page and "&lt;b&gt;pip" in page
    assert "<style>" in page and "http" not in page.split("<body>")[0].lower()
    assert "known: <code>openmp-duplicate</code>" in page


def test_installer_commands_pass_the_sources_through(tmp_path: Path) -> None:
    pip = Installer(sys.executable, tmp_path, ("/w",), True, "https://i/simple", uv=None)
    cmd = install_command("/e/bin/python", ["a.whl", "numpy"], pip)
    assert cmd[:5] == [sys.executable, "-m", "pip", "--python", "/e/bin/python"]
    assert cmd[-5:] == [
        "--find-links=/w",
        "--no-index",
        "--index-url=https://i/simple",
        "a.whl",
        "numpy",
    ]
    assert create_command(tmp_path / "e", pip)[1:4] == ["-m", "venv", "--without-pip"]
    uv = Installer(sys.executable, tmp_path, ("/w",), True, None, uv="/bin/uv")
    assert install_command("/e/bin/python", ["numpy"], uv)[:6] == [
        "/bin/uv", "pip", "install", "-q", "--python", "/e/bin/python"
    ]  # fmt: skip
    assert create_command(tmp_path / "e", uv)[:2] == ["/bin/uv", "venv"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.whl"], "candidate 'missing.whl': no such wheel file"),
        (["x", "--jobs", "0"], "invalid --jobs 0"),
        (["x", "--update-baseline"], "it needs --baseline FILE"),
        (["x", "--shard", "3/2"], "invalid --shard '3/2'"),
        (["x", "--find-links", "/no/such/dir"], "invalid --find-links"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest_runtimeconflict", "matrix", *args,
         "--cache-dir", str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2 and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_conflicts_among_the_partners_own_packages_are_left_out() -> None:
    from pytest_runtimeconflict.matrix.results import candidate_part

    theirs = dict(
        CRASH,
        minimal_steps=["scipy", "# workload scipy:linalg (catalogue)\nimport numpy\n"],
        library_details=[
            {"path": "/v/site-packages/numpy.libs/libscipy_openblas64_-1a2b3c4d.so", "distribution": "numpy"},
            {"path": "/v/site-packages/scipy.libs/libscipy_openblas-5e6f7a8b.so", "distribution": "scipy"},
        ],
    )  # fmt: skip
    row = row_from_report("scipy", "1.17.1", {"scenarios": [theirs, CRASH]}, 1.0)
    assert row.conflicts[0].minimal_order == ("scipy", "workload scipy:linalg")
    mine = candidate_part(row, ["zoo-iomp-a"], ["zoo_iomp_a"])
    assert [c.key for c in mine.conflicts] == [OMP_KEY] and mine.outcome == "conflict"
    only_theirs = row_from_report("scipy", "1", {"scenarios": [theirs, LATENT]}, 1.0)
    assert candidate_part(only_theirs, ["zoo-iomp-a"], ["zoo_iomp_a"]).outcome == "clean"
    blas = {"rule": "latent-blas", "libraries": [{"distribution": "zoo-blas32", "file": "x.so"}]}
    latent_row = Row("zoo-blas64", "1", "latent", latent=(blas,))
    assert candidate_part(latent_row, ["zoo-blas32"], ["zoo_blas32"]).outcome == "latent"
    assert candidate_part(latent_row, ["zoo-iomp-a"], ["zoo_iomp_a"]).outcome == "clean"
