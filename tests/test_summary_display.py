"""The terminal summary reads at a glance: one conflict is a headline of at most 160
characters with the runtime's own message, then detail lines of at most 240; paths relative
to the environment, code never with a literal ``\\n``, skip reasons listed."""

from __future__ import annotations

from typing import Any

from pytest_runtimeconflict.planning.workloads import step_label
from pytest_runtimeconflict.report.aggregate import skipped_lines, summary_lines
from pytest_runtimeconflict.report.display import clip, short_path

SITE = "/home/someone/work/project/.venv-with-a-long-name/lib/python3.11/site-packages"
OMP = (
    "OMP: Error #15: Initializing libiomp5.so, but found libomp.so.5 already initialized. "
    "OMP: Hint This means that multiple copies of the OpenMP runtime have been linked into "
    "the program."
)


def crashed_entry() -> dict[str, Any]:
    code = "import numpy as np\nx = np.ones((400, 400))\nprint((x @ x).sum())"
    return {
        "id": "a>b",
        "outcome": "crashed",
        "signal": "SIGABRT",
        "signum": 6,
        "stderr_tail": f"Fatal Python error: Aborted\n{OMP}\n",
        "message": "",
        "steps": ["zoo_iomp_a", "zoo_iomp_b", code],
        "minimal_steps": ["zoo_iomp_a", "zoo_iomp_b", code],
        "library_details": [
            {"path": f"{SITE}/zoo_iomp_a.libs/libiomp5.so", "distribution": "zoo-iomp-a"},
            {"path": f"{SITE}/zoo_iomp_b.libs/libomp.so.5", "distribution": "zoo-iomp-b"},
        ],
        "verdict": {
            "rule": "openmp-duplicate",
            "key": "openmp-duplicate:x",
            "cause": "two OpenMP runtimes in one process " * 20,
            "user_advice": "import zoo_iomp_b first (found to avoid it)",
        },
    }


def test_a_conflict_headline_is_short_and_carries_the_runtime_message() -> None:
    node = "runtime-conflicts::seq-01[" + "x" * 300 + "]"
    lines = summary_lines([(node, crashed_entry())])
    conflict = [ln for ln in lines if ln.startswith("- openmp-duplicate")]
    assert len(conflict) == 1
    headline = conflict[0]
    assert len(headline) <= 160
    assert "libiomp5.so vs libomp.so.5" in headline
    assert "crashed SIGABRT: OMP: Error #15" in headline
    assert headline.endswith("[1 item]")
    assert headline.count("(") == headline.count(")")
    assert all(len(line) <= 240 for line in lines), [len(x) for x in lines]
    assert not any("\\n" in line for line in lines)
    text = "\n".join(lines)
    assert "<site>/zoo_iomp_a.libs/libiomp5.so (zoo-iomp-a)" in text
    assert SITE not in text
    assert "import numpy as np (+2 lines)" in text


def test_clip_never_leaves_a_parenthesis_open() -> None:
    text = "hung (while exercising the fork probe on /tmp/x/lib/python3.11/site-packages/y.so)"
    clipped = clip(text, 40)
    assert len(clipped) <= 40 and clipped.endswith("...")
    assert clipped.count("(") == clipped.count(")")
    assert clip("short", 40) == "short"
    assert clip("a\x1b[31mb", 40) == "a\\x1b[31mb"
    assert clip("    indented detail", 40) == "    indented detail"


def test_paths_show_relative_to_the_environment() -> None:
    assert short_path(f"{SITE}/numpy.libs/../numpy.libs/libx.so") == "<site>/numpy.libs/libx.so"
    assert short_path("/usr/lib/x86_64-linux-gnu/libgomp.so.1") == (
        "lib/x86_64-linux-gnu/libgomp.so.1"
    )


def test_code_steps_show_by_their_first_line() -> None:
    assert step_label("a = 1\nb = 2\n") == "a = 1 (+1 lines)"
    assert step_label("numpy") == "numpy"


def test_skipped_items_are_listed_with_their_reason() -> None:
    lines = skipped_lines({"runtime-conflicts::b>a": "same conflict as an earlier sequence: k"})
    assert lines == [
        "skipped plan items (1):",
        "- runtime-conflicts::b>a: same conflict as an earlier sequence: k",
    ]
