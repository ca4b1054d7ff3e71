"""The verdict from the crashing thread: the thread that received the signal, never an idle
one, and the crashing frames' objects (with the bindings into them) before runtime-family
counts.

Real C builds, three distributions: two copies of an OpenBLAS-like runtime (its identity
symbols, two thread-server threads each, spinning in the copy's own code as OpenBLAS's servers
do, in the copy's code), and a library whose worker thread crashes while the main thread waits for it in
``pthread_join``. Before, the two runtime copies' threads made a family duplicate the verdict;
now the crashing library is named. With a global preload of a fourth distribution's library
that serves the worker's call, the verdict is the interposition, naming both objects and the
symbol."""

from __future__ import annotations

from pathlib import Path

import cbuild
import pytest
from venvs import make_venv

from pytest_runtimeconflict.diagnosis import diagnose
from pytest_runtimeconflict.diagnosis.evidence import crashing_thread_frames
from pytest_runtimeconflict.model import RunResult, RunSpec
from pytest_runtimeconflict.report.text import format_failure
from pytest_runtimeconflict.sandbox.runner import run_spec

SERVER = r"""
#include <pthread.h>
static volatile int stop;
static void *blas_thread_server(void *arg) {
    (void)arg;
    while (!stop) {}
    return 0;
}
char *openblas_get_config(void) { return "rct"; }
void openblas_set_num_threads(int n) { (void)n; }
__attribute__((constructor)) static void start(void) {
    pthread_t t;
    for (int i = 0; i < 2; i++) pthread_create(&t, 0, blas_thread_server, 0);
}
"""

CRASHER = r"""
#include <pthread.h>
__attribute__((noinline)) void rct_step(volatile int *p) { if (p) *p += 1; }
__attribute__((noinline)) void rct_fault(volatile int *p) { *p = 1; }
static void *worker(void *arg) {
    int value = 0;
    rct_step(&value);
    if (arg) rct_fault((volatile int *)0);
    return 0;
}
void rct_run(int fault) {
    pthread_t t;
    pthread_create(&t, 0, worker, fault ? (void *)1 : 0);
    pthread_join(t, 0);
}
"""

# Another distribution's rct_step: same name, another contract (it writes where it is told
# to read); served to the crasher's worker by a global preload.
OTHER = r"""
__attribute__((noinline)) void rct_step(volatile int *p) { p = 0; *p = 2; }
"""


def _distribution(site: Path, dist: str, name: str, source: str) -> Path:
    # no debug info: gdb then names each frame's object (``from /path``), as for wheels
    flags = ("-pthread", f"-Wl,-soname,{name}")
    lib = cbuild.compile_shared(source, name, flags=flags, outdir=site / f"{dist}.libs")
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "RECORD").write_text(f"{dist}.libs/{name},,\n{dist}-1.0.dist-info/METADATA,,\n")
    return lib


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Path]]:
    python, site = make_venv(tmp_path_factory.mktemp("thread") / "venv")
    libs = {
        "blas_a": _distribution(site, "rct-blas-a", "libopenblas-rcta.so", SERVER),
        "blas_b": _distribution(site, "rct-blas-b", "libopenblas-rctb.so", SERVER),
        "crash": _distribution(site, "rct-crash", "librctcrash.so", CRASHER),
        "other": _distribution(site, "rct-other", "librctother.so", OTHER),
    }
    return python, libs


def _step(libs: dict[str, Path], fault: int) -> str:
    return (
        "import ctypes, time\n"
        f"a = ctypes.CDLL({str(libs['blas_a'])!r})\n"
        f"b = ctypes.CDLL({str(libs['blas_b'])!r})\n"
        "time.sleep(0.3)\n"
        f"ctypes.CDLL({str(libs['crash'])!r}).rct_run({fault})\n"
    )


def _crashed(spec: RunSpec) -> RunResult:
    result = run_spec(spec)
    assert (result.outcome, result.signal) == ("crashed", "SIGSEGV"), result.message
    if not result.core_found or not result.gdb_backtrace:
        pytest.skip("no core or no gdb here: the crashing thread's frames are not available")
    return result


def test_a_crash_in_a_worker_thread_is_named_not_the_idle_runtime_copies(
    built: tuple[str, dict[str, Path]],
) -> None:
    python, libs = built
    spec = RunSpec(steps=(_step(libs, 1),), python=python, exercise=False)
    result = _crashed(spec)
    crashing = result.threads[0]
    assert crashing["signalled"] and crashing["library"] == str(libs["crash"]), result.threads
    assert sum(t["library"] and "openblas-rct" in t["library"] for t in result.threads) >= 2
    frames = crashing_thread_frames(result)
    assert "rct_fault" in frames[0] and "librctcrash.so" in frames[0], frames
    d = diagnose(spec, result, max_runs=6, experiments=False)
    text = format_failure(result, d)
    assert [lib.path for lib in d.libraries] == [str(libs["crash"])], text
    assert d.libraries[0].role == "crashing thread's library", text
    assert "blas" not in (d.rule or "") and "openblas-rct" not in d.key, text


def test_a_crash_in_a_copy_another_distribution_served_is_the_interposition(
    built: tuple[str, dict[str, Path]],
) -> None:
    python, libs = built
    spec = RunSpec(
        steps=(_step(libs, 0),), python=python, exercise=False, preload=(str(libs["other"]),)
    )
    result = _crashed(spec)
    assert result.threads[0]["library"] == str(libs["other"]), result.threads
    d = diagnose(spec, result, max_runs=6, experiments=False)
    text = format_failure(result, d)
    assert d.rule == "symbol-interposition", text
    named = {Path(lib.path).name for lib in d.libraries}
    assert {"librctcrash.so", "librctother.so"} <= named, text
    assert "openblas-rct" not in d.key and "'rct_step'" in d.cause, text
    assert "preload" in d.cause, d.cause


def test_the_signalled_thread_is_chosen_over_the_first_and_over_an_idle_one() -> None:
    """gdb's blocks of three threads: thread 1 (listed by gdb as current) waits in a futex;
    the core's NT_SIGINFO thread is another one, whose stack went through faulthandler."""
    backtrace = "\n".join(
        [
            "[Current thread is 1 (Thread 0x7f01 (LWP 101))]",
            "Thread 3 (Thread 0x7f03 (LWP 103)):",
            "#0  0x1 in blas_thread_server () from /x/libopenblas.so",
            "Thread 2 (Thread 0x7f02 (LWP 102)):",
            "#0  0x2 in __pthread_kill_implementation () from /lib/libc.so.6",
            "#1  0x3 in faulthandler_fatal_error () from /lib/libpython3.11.so.1.0",
            "#2  <signal handler called>",
            "#3  0x4 in crash_here () from /y/libcrash.so",
            "Thread 1 (Thread 0x7f01 (LWP 101)):",
            "#0  0x5 in __futex_abstimed_wait_common () from /lib/libc.so.6",
        ]
    )
    threads = ({"tid": 101}, {"tid": 102, "signalled": True}, {"tid": 103})
    result = RunResult(RunSpec(steps=()), "crashed", gdb_backtrace=backtrace, threads=threads)
    assert crashing_thread_frames(result) == ["#3  0x4 in crash_here () from /y/libcrash.so"]
    # without the core's note: gdb's current thread is idle, the handler's thread is chosen
    unsignalled = RunResult(RunSpec(steps=()), "crashed", gdb_backtrace=backtrace)
    assert crashing_thread_frames(unsignalled)[0].endswith("/y/libcrash.so")
    # faulthandler's "Current thread" (a pthread id) names a thread gdb lists too
    plain = backtrace.replace("<signal handler called>", "0x9 in other () from /z/libz.so")
    named = RunResult(
        RunSpec(steps=()),
        "crashed",
        gdb_backtrace=plain.replace("[Current thread is 1", "[Current thread is 9"),
        python_traceback="Fatal Python error: Segmentation fault\n\n"
        "Current thread 0x0000000000007f02 (most recent call first):\n  <no Python frame>",
    )
    assert crashing_thread_frames(named)[0].startswith("#0  0x2 in __pthread_kill")
