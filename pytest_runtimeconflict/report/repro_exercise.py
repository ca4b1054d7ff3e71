"""Runtime exercising for exported reproducers: the text of this module after its marker line
is copied into each reproducer, which must run without this package, so it
uses the standard library only and keeps to Python 3.8 syntax.

It does what the sandbox's child does after the steps (``sandbox/child.py``), on the runtimes a
run exercised, in that order: a parallel region through ``GOMP_parallel`` (libgomp, and the
LLVM and Intel runtimes that provide the GOMP entry points) and a small OpenBLAS ``cblas_dgemm``,
large enough that OpenBLAS hands it to its thread server. A latent duplicate then turns into the
crash it causes in real use.
"""

from __future__ import annotations

# ---- copied into reproducers from here on ----
import ctypes
import os
import sys

GEMM_N = 64
OPENBLAS_AFFIXES = (("", ""), ("scipy_", ""), ("", "64_"), ("scipy_", "64_"))


def say_exercise(text):  # type: (str) -> None
    sys.stderr.write("[repro] " + text + "\n")
    sys.stderr.flush()


def parallel_region(lib):  # type: (ctypes.CDLL) -> None
    """One parallel region with 2 threads through the GOMP entry point."""
    callback_type = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
    noop = callback_type(lambda data: None)
    func = lib.GOMP_parallel
    func.restype = None
    func.argtypes = [callback_type, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
    func(noop, None, 2, 0)


def dgemm(lib):  # type: (ctypes.CDLL) -> None
    """A 64x64 cblas_dgemm through whichever OpenBLAS symbol names this copy exports."""
    for prefix, suffix in OPENBLAS_AFFIXES:
        gemm = getattr(lib, prefix + "cblas_dgemm" + suffix, None)
        if gemm is not None:
            break
    else:
        say_exercise("no cblas_dgemm in this library: not exercised")
        return
    c = ctypes
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


def exercise(runtimes):  # type: (list) -> None
    """Call into each ``(kind, path)`` runtime that is mapped now, in order; a runtime the
    steps did not map is skipped (RTLD_NOLOAD never maps or initialises a library)."""
    for kind, path in runtimes:
        try:
            lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LOCAL)
        except OSError:
            say_exercise("not mapped, not exercised: " + path)
            continue
        say_exercise("calling into the " + kind + " runtime " + path)
        if kind == "openmp":
            parallel_region(lib)
        else:
            dgemm(lib)
