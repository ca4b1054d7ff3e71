"""The probes of exported reproducers: the text of this module after its marker line is copied
into each reproducer, which must run without this package, so it uses the standard library
only and keeps to Python 3.8 syntax (type comments, no annotations).

Each probe is one small function doing what the sandbox's child does after the steps
(``sandbox/child.py``) on one runtime a run exercised: a parallel region through
``GOMP_parallel`` (libgomp and the LLVM and Intel runtimes that provide the GOMP entry points),
a parallel region, a ``fork`` and a parallel region in the forked child (the fork probe, with
a deadline), a 64x64 OpenBLAS ``cblas_dgemm`` (large enough for its thread server) and a
``std::locale`` with the common facets of one libstdc++ copy. ``run_probe`` dispatches by the
kind the run recorded; a kind it does not know is said, never guessed.
"""

from __future__ import annotations

# ---- copied into reproducers from here on ----
import ctypes
import os
import signal
import sys
import time
from typing import Any  # noqa: F401 (type comments)

GEMM_N = 64
OPENBLAS_AFFIXES = (("", ""), ("scipy_", ""), ("", "64_"), ("scipy_", "64_"))
LOCALE_CTOR, LOCALE_DTOR = "_ZNSt6localeC1Ev", "_ZNSt6localeD1Ev"
LOCALE_FACETS = (
    ("ctype<char>", "_ZSt9use_facetISt5ctypeIcEERKT_RKSt6locale"),
    (
        "num_put<char>",
        "_ZSt9use_facetISt7num_putIcSt19ostreambuf_iteratorIcSt11char_traitsIcEEEERKT_RKSt6locale",
    ),
    ("collate<char>", "_ZSt9use_facetISt7collateIcEERKT_RKSt6locale"),
)


class ForkHang(Exception):
    """The fork probe's forked child did not finish within its deadline (it was killed)."""


def say_probe(text):  # type: (str) -> None
    sys.stderr.write("[repro] " + text + "\n")
    sys.stderr.flush()


def gomp_parallel(lib):  # type: (ctypes.CDLL) -> Any
    func = lib.GOMP_parallel
    func.restype = None
    func.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
    return func


def region_threads():  # type: () -> int
    """The runtime's default team size once OMP_NUM_THREADS is set, else two threads (so a
    pool starts even on one core), as the sandbox does."""
    return 0 if os.environ.get("OMP_NUM_THREADS") else 2


def probe_openmp(lib, path):  # type: (ctypes.CDLL, str) -> str
    """One parallel region; each thread runs libc's ``free(NULL)`` (no Python callback)."""
    noop = ctypes.cast(ctypes.CDLL(None).free, ctypes.c_void_p)
    gomp_parallel(lib)(noop, None, region_threads(), 0)
    return "parallel region ok"


def probe_fork(lib, path, deadline):  # type: (ctypes.CDLL, str, float) -> str
    """A parallel region, a fork, and a parallel region in the forked child, which must end
    within ``deadline`` seconds; else it is killed and ``ForkHang`` raised. A runtime whose
    worker threads (or a lock one of them holds) do not survive fork waits forever there."""
    func = gomp_parallel(lib)
    noop = ctypes.cast(ctypes.CDLL(None).free, ctypes.c_void_p)
    threads = region_threads()
    func(noop, None, threads, 0)
    what = "the forked child's parallel region"
    fork_and_wait(lambda: func(noop, None, threads, 0), deadline, 1, what, FORK_STALL)
    return "parallel region, fork, parallel region in the forked child: ok"


FORK_STALL = 1.5  # seconds a forked child may sit without progress (as the sandbox's)


def fork_and_wait(body, deadline, failed, what, stall=0.0):
    # type: (object, float, int, str, float) -> None
    """Run ``body`` in a forked child, which exits 0 after it (``failed`` if it raised) and
    must end within ``deadline`` seconds, and (``stall`` > 0) must not sit ``stall`` seconds
    without progress (no CPU time, none of its threads running, runnable or in a disk wait);
    else it is killed and ``ForkHang`` says ``what`` did not finish."""
    pid = os.fork()
    if pid == 0:  # the forked child never returns into Python's normal flow
        code = failed
        try:
            body()  # type: ignore[operator]
            code = 0
        finally:
            os._exit(code)
    now = time.monotonic()
    end, mark, since = now + deadline, None, now
    while now < end:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            if status != 0:
                raise RuntimeError(f"the forked child ended with wait status {status}")
            return
        time.sleep(0.05)
        now = time.monotonic()
        seen = idle_ticks(pid) if stall > 0 else None
        if seen is None or seen != mark:
            mark, since = seen, now
        elif now - since >= stall:
            break
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    waited = time.monotonic() - (end - deadline)
    raise ForkHang(f"{what} did not finish (no progress after {waited:.1f} s; killed)")


def idle_ticks(pid):  # type: (int) -> object
    """The CPU ticks of the process ``pid`` when none of its threads is running, runnable or
    in a disk wait; None otherwise or when it cannot be read."""
    ticks = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            if fields[0] in ("R", "D"):
                return None
            ticks += int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return None
    return ticks


def probe_blas(lib, path):  # type: (ctypes.CDLL, str) -> str
    """A 64x64 cblas_dgemm through whichever OpenBLAS symbol names this copy exports."""
    c = ctypes
    for prefix, suffix in OPENBLAS_AFFIXES:
        gemm = getattr(lib, prefix + "cblas_dgemm" + suffix, None)
        if gemm is not None:
            break
    else:
        return "no cblas_dgemm in this library: not exercised"
    get_config = getattr(lib, prefix + "openblas_get_config" + suffix, None)
    config = b""
    if get_config is not None:
        get_config.restype = c.c_char_p
        config = get_config() or b""
    integer = c.c_int64 if (suffix or b"USE64BITINT" in config) else c.c_int
    n = GEMM_N
    matrix = c.c_double * (n * n)
    a, b, out = matrix(*([1.0] * (n * n))), matrix(*([1.0] * (n * n))), matrix()
    gemm.restype = None
    gemm.argtypes = [c.c_int, c.c_int, c.c_int, integer, integer, integer, c.c_double]
    gemm.argtypes += [matrix, integer, matrix, integer, c.c_double, matrix, integer]
    gemm(101, 111, 111, n, n, n, 1.0, a, n, b, n, 0.0, out, n)  # row-major, no transpose
    return f"cblas_dgemm {n}x{n} ok"


def defined_in(lib, name, path):  # type: (ctypes.CDLL, str, str) -> bool
    """True when ``path`` itself defines ``name`` (dlsym also searches its dependencies;
    dladdr names the defining object)."""
    c = ctypes

    class DlInfo(c.Structure):
        _fields_ = [("fname", c.c_char_p), ("fbase", c.c_void_p)]
        _fields_ += [("sname", c.c_char_p), ("saddr", c.c_void_p)]

    try:
        address = c.cast(getattr(lib, name), c.c_void_p).value
    except AttributeError:
        return False
    dladdr = c.CDLL(None).dladdr
    dladdr.argtypes = [c.c_void_p, c.POINTER(DlInfo)]
    info = DlInfo()
    if not dladdr(address, c.byref(info)) or not info.fname:
        return False
    return os.path.realpath(os.fsdecode(info.fname)) == os.path.realpath(path)


def probe_locale(lib, path):  # type: (ctypes.CDLL, str) -> str
    """Build a ``std::locale`` with this libstdc++ copy and fetch its common facets (what
    every iostream or std::regex use does first)."""
    c = ctypes
    ctor, dtor = getattr(lib, LOCALE_CTOR), getattr(lib, LOCALE_DTOR)
    ctor.restype = dtor.restype = None
    ctor.argtypes = dtor.argtypes = [c.c_void_p]
    locale = c.create_string_buffer(64)  # std::locale is one pointer
    ctor(locale)
    fetched = []
    try:
        for facet, symbol in LOCALE_FACETS:
            if defined_in(lib, symbol, path):
                use_facet = getattr(lib, symbol)
                use_facet.restype = c.c_void_p
                use_facet.argtypes = [c.c_void_p]
                use_facet(locale)
                fetched.append(facet)
    finally:
        dtor(locale)
    return "std::locale(): use_facet<" + ", ".join(fetched) + "> ok"


def run_probe(kind, path, fork_deadline):  # type: (str, str, float) -> str
    """Run the ``kind`` probe on the runtime ``path`` when it is mapped now (RTLD_NOLOAD never
    maps or initialises a library); what happened, in words."""
    try:
        lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LOCAL)
    except OSError:
        return "not mapped, not exercised"
    if kind == "openmp":
        return probe_openmp(lib, path)
    if kind == "fork":
        return probe_fork(lib, path, fork_deadline)
    if kind == "blas":
        return probe_blas(lib, path)
    if kind == "libstdc++":
        return probe_locale(lib, path)
    return "no probe of kind " + repr(kind) + " in this script: not exercised"
