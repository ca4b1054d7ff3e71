"""Child side of the sandbox: run one scenario's steps in this (fresh) interpreter.

Run by path by the *target* interpreter (``python child.py SPEC.json``), maybe another venv
without this package: standard library only, Python 3.8 syntax, never the plugin.

It appends one JSON line per event to the progress file named in the spec (flushed at once):
``start``, ``preload``, ``step`` (``begin``, ``ok``/``error``), ``sandbox`` (what its own ctypes
mapped), ``exercise`` (a fork probe's ``hung`` too), ``fork`` (the parent's threads at the
probe's fork), ``done``; with ``new`` (ELF objects newly mapped), a step's ``env`` (changes).
"""

from __future__ import annotations

import faulthandler
import functools
import json
import os
import re
import signal
import sys
import time
from typing import IO, Any

MAGIC = b"\x7fELF"
# Only a mapped file whose name looks like an OpenMP/BLAS runtime makes the child import ctypes
# (when the steps did not import it already): keeps the sandbox overhead small for plain runs.
RUNTIME_NAME = re.compile(r"omp|openblas|blas|lapack|mkl|stdc\+\+", re.IGNORECASE)
# Used when the parent sends no probes (the family registry's list arrives in the spec).
DEFAULT_PROBES = [
    {"probe": "gomp-parallel", "symbols": ["GOMP_parallel"]},
    {
        "probe": "openblas-dgemm",
        "symbols": [p + "openblas_get_config" + s for p in ("", "scipy_") for s in ("", "64_")],
    },
    {"probe": "libstdcxx-locale", "symbols": ["_ZNSt6localeC1Ev"]},
]
GEMM_N = 64  # large enough that OpenBLAS hands the dgemm to its thread server
# What every iostream or std::regex use does first: build a std::locale and fetch its facets.
# With two libstdc++ copies sharing the merged STB_GNU_UNIQUE facet ids, the second copy's
# use_facet throws std::bad_cast (std::terminate, SIGABRT), as real C++ code does.
LOCALE_CTOR, LOCALE_DTOR = "_ZNSt6localeC1Ev", "_ZNSt6localeD1Ev"
LOCALE_FACETS = (
    ("ctype<char>", "_ZSt9use_facetISt5ctypeIcEERKT_RKSt6locale"),
    (
        "num_put<char>",
        "_ZSt9use_facetISt7num_putIcSt19ostreambuf_iteratorIcSt11char_traitsIcEEEERKT_RKSt6locale",
    ),
    ("collate<char>", "_ZSt9use_facetISt7collateIcEERKT_RKSt6locale"),
)
FORK_DEADLINE = 6.0  # seconds a forked child may take for one parallel region
FORK_STALL = 1.5  # seconds it may sit without CPU time or a runnable thread
# The probes that re-run the run's steps after them (forked.py): in a forked child (what
# fork-based multiprocessing does) or in a spawned interpreter (its counter-experiment).
FORK_WORKLOAD, SPAWN_WORKLOAD = "fork-after-workload", "spawn-after-workload"

_elf_cache = {}  # type: dict


class Progress:
    """Append-only JSON-lines writer; every line is flushed before the next action."""

    def __init__(self, path: str) -> None:
        self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives for the run

    def write(self, **event: object) -> None:
        self._fh.write(json.dumps(event) + "\n")
        self._fh.flush()


def _is_elf(path: str) -> bool:
    if path not in _elf_cache:
        try:
            with open(path, "rb") as fh:
                _elf_cache[path] = fh.read(4) == MAGIC
        except OSError:
            _elf_cache[path] = False
    return bool(_elf_cache[path])


def mapped_objects() -> list:
    """Absolute paths of the file-backed ELF objects mapped now, in address order, deduplicated."""
    seen = []
    known = set()
    with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            parts = line.split(None, 5)
            if len(parts) < 6:
                continue
            path = parts[5].rstrip("\n")
            if not path.startswith("/") or path.endswith(" (deleted)") or path in known:
                continue
            known.add(path)
            if _is_elf(path):
                seen.append(path)
    return seen


class MapTracker:
    """Remembers what was mapped so each event can report only the newly mapped objects."""

    def __init__(self) -> None:
        self.order = []  # type: list
        self._seen = set()  # type: set

    def new(self) -> list:
        fresh = [p for p in mapped_objects() if p not in self._seen]
        self._seen.update(fresh)
        self.order.extend(fresh)
        return fresh


class EnvTracker:
    """Which environment variables each step set, changed or removed, in ``os.environ`` and in
    the C ``environ`` native code writes (``setenv``; read through ctypes once native code ran,
    so a plain run stays free of ctypes): ``{"name", "before", "after", "view"}`` (``None`` for
    unset; view ``both``, ``c``: native code only, or ``python``: ``os.environ`` only)."""

    def __init__(self, tracker: MapTracker, progress: Progress) -> None:
        self._maps, self._progress = tracker, progress
        self.own_ctypes = False  # True when the sandbox, not a step, imported ctypes
        self._ctypes = sys.modules.get("ctypes")  # type: Any
        self._python = dict(os.environ)
        self._c = self._read_c() if self._ctypes is not None else dict(self._python)

    def _read_c(self) -> dict:
        c = self._ctypes
        array = c.POINTER(c.c_char_p).in_dll(c.CDLL(None), "environ")
        out = {}  # type: dict
        index = 0
        while array and array[index] is not None:
            name, _, value = array[index].partition(b"=")
            out.setdefault(os.fsdecode(name), os.fsdecode(value))  # getenv takes the first
            index += 1
        return out

    def changes(self, native: bool) -> list:
        """The changes since the previous call; ``native``: the step mapped new objects."""
        if self._ctypes is None and native:
            self.own_ctypes = "ctypes" not in sys.modules
            import ctypes

            self._ctypes = ctypes
            # what importing ctypes mapped is the sandbox's, not the step's: an event of its own
            self._progress.write(event="sandbox", what="ctypes", new=self._maps.new())
        python = dict(os.environ)
        c_now = self._read_c() if self._ctypes is not None else dict(python)
        out = []
        for name in sorted(set(self._c) | set(c_now) | set(self._python) | set(python)):
            c_old, c_new = self._c.get(name), c_now.get(name)
            py_old, py_new = self._python.get(name), python.get(name)
            if c_old == c_new and py_old == py_new:
                continue
            view = "python" if c_old == c_new else ("both" if py_old != py_new else "c")
            before, after = (py_old, py_new) if view == "python" else (c_old, c_new)
            out.append({"name": name, "before": before, "after": after, "view": view})
        self._python, self._c = python, c_now
        return out


def _describe_exception(exc: BaseException) -> dict:
    import traceback

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return {
        "exc_type": type(exc).__name__,
        "message": f"{type(exc).__name__}: {exc}",
        "traceback": text[-16000:],
    }


def is_module_name(step: str) -> bool:
    """True when ``step`` is a dotted module name (``import NAME``), not a statement."""
    import keyword

    parts = step.strip().split(".")
    return all(p.isidentifier() and not keyword.iskeyword(p) for p in parts)


def run_step(step: str, index: int, namespace: dict, global_imports: tuple = ()) -> None:
    """Import a dotted name (binding its top-level package) or exec a statement.

    A name in ``global_imports`` is imported with ``RTLD_GLOBAL | RTLD_NOW`` (what
    ``sys.setdlopenflags`` users do), the interpreter's flags restored afterwards: every object
    the import loads joins the global scope, searched before a later object's own dependencies.
    """
    name = step.strip()
    if is_module_name(name):
        if name not in global_imports:
            namespace[name.split(".")[0]] = __import__(name)
            return
        flags = sys.getdlopenflags()
        sys.setdlopenflags(os.RTLD_GLOBAL | os.RTLD_NOW)
        try:
            namespace[name.split(".")[0]] = __import__(name)
        finally:
            sys.setdlopenflags(flags)
        return
    code = compile(step, f"<step {index}>", "exec")
    exec(code, namespace)


def preload(libs: list, mode: str, progress: Progress, tracker: MapTracker) -> bool:
    """dlopen each preload library; False (and an ``error`` event) if one fails to load."""
    if not libs:
        return True
    import ctypes

    flag = ctypes.RTLD_GLOBAL if mode == "global" else ctypes.RTLD_LOCAL
    for index, lib in enumerate(libs):
        progress.write(event="preload", index=index, lib=lib, status="begin")
        try:
            ctypes.CDLL(lib, mode=flag)
        except BaseException as exc:
            progress.write(
                event="preload",
                index=index,
                lib=lib,
                status="error",
                new=tracker.new(),
                **_describe_exception(exc),
            )
            return False
        progress.write(event="preload", index=index, lib=lib, status="ok", new=tracker.new())
    return True


def _finished(tracker: MapTracker, env: EnvTracker) -> dict:
    """What a finished step left: newly mapped objects and environment changes."""
    new = tracker.new()
    changes = env.changes(bool(new))
    return {"new": new, "env": changes} if changes else {"new": new}


def run_steps(
    steps: list,
    progress: Progress,
    tracker: MapTracker,
    env: EnvTracker,
    global_imports: tuple = (),
) -> bool:
    """Run every step in one namespace; stop at the first exception (``error`` event)."""
    namespace = {"__name__": "__rc_steps__"}  # type: dict
    for index, step in enumerate(steps):
        progress.write(event="step", index=index, status="begin")
        try:
            run_step(step, index, namespace, global_imports)
        except BaseException as exc:
            progress.write(
                event="step",
                index=index,
                status="error",
                **_finished(tracker, env),
                **_describe_exception(exc),
            )
            return False
        progress.write(event="step", index=index, status="ok", **_finished(tracker, env))
    return True


def _noload(ctypes: Any, path: str) -> Any:
    """A handle on an already-mapped object, or None; RTLD_NOLOAD never maps or initialises."""
    try:
        return ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LOCAL)
    except OSError:
        return None


def exercise_openmp(ctypes: Any, lib: Any) -> str:
    """Run one parallel region with 2 threads through the GOMP entry point."""
    c = ctypes
    callback_type = c.CFUNCTYPE(None, c.c_void_p)
    noop = callback_type(lambda data: None)
    func = lib.GOMP_parallel
    func.restype = None
    func.argtypes = [callback_type, c.c_void_p, c.c_uint, c.c_uint]
    func(noop, None, 2, 0)
    return "GOMP_parallel(num_threads=2)"


class _Dlinfo:
    """Lazily built ctypes view of glibc's ``dladdr`` (which object defines an address)."""

    func = None  # type: Any
    struct = None  # type: Any


def defined_in(ctypes: Any, lib: Any, name: str, path: str) -> bool:
    """True if ``name`` is defined by ``path`` itself.

    dlsym on a handle also searches the object's dependencies, so an extension linked against
    libgomp would otherwise look like an OpenMP runtime; dladdr names the defining object.
    """
    c = ctypes
    try:
        address = c.cast(getattr(lib, name), c.c_void_p).value
    except AttributeError:
        return False
    if _Dlinfo.func is None:

        class DlInfo(c.Structure):  # type: ignore[name-defined]
            _fields_ = [
                ("dli_fname", c.c_char_p),
                ("dli_fbase", c.c_void_p),
                ("dli_sname", c.c_char_p),
                ("dli_saddr", c.c_void_p),
            ]

        func = c.CDLL(None).dladdr
        func.argtypes = [c.c_void_p, c.POINTER(DlInfo)]
        _Dlinfo.func, _Dlinfo.struct = func, DlInfo
    info = _Dlinfo.struct()
    if not _Dlinfo.func(address, c.byref(info)) or not info.dli_fname:
        return False
    owner = os.fsdecode(info.dli_fname)
    return os.path.realpath(owner) == os.path.realpath(path)


def exercise_openblas(ctypes: Any, lib: Any, prefix: str, suffix: str) -> str:
    """openblas_get_config / get_num_threads and a 64x64 cblas_dgemm (starts the thread server)."""
    c = ctypes
    get_config = getattr(lib, prefix + "openblas_get_config" + suffix)
    get_config.restype = c.c_char_p
    config = (get_config() or b"").decode("ascii", "replace").strip()
    get_threads = getattr(lib, prefix + "openblas_get_num_threads" + suffix, None)
    threads = get_threads() if get_threads is not None else None
    detail = f"{config}; threads={threads}"
    gemm = getattr(lib, prefix + "cblas_dgemm" + suffix, None)
    if gemm is None:
        return detail + "; no cblas_dgemm"
    integer = c.c_int64 if (suffix or "USE64BITINT" in config) else c.c_int
    n = GEMM_N
    matrix = c.c_double * (n * n)
    a, b, out = matrix(*([1.0] * (n * n))), matrix(*([1.0] * (n * n))), matrix()
    gemm.restype = None
    gemm.argtypes = [
        c.c_int,
        c.c_int,
        c.c_int,
        integer,
        integer,
        integer,
        c.c_double,
        matrix,
        integer,
        matrix,
        integer,
        c.c_double,
        matrix,
        integer,
    ]
    gemm(101, 111, 111, n, n, n, 1.0, a, n, b, n, 0.0, out, n)  # row-major, no transpose
    if out[0] != float(n):
        raise RuntimeError(f"cblas_dgemm returned {out[0]!r}, expected {float(n)!r}")
    return detail + f"; cblas_dgemm {n}x{n} ok"


def exercise_locale(ctypes: Any, lib: Any, path: str) -> str:
    """Build a ``std::locale`` with this libstdc++ copy and fetch its common facets."""
    c = ctypes
    ctor, dtor = getattr(lib, LOCALE_CTOR), getattr(lib, LOCALE_DTOR)
    ctor.restype = dtor.restype = None
    ctor.argtypes = dtor.argtypes = [c.c_void_p]
    locale = c.create_string_buffer(64)  # std::locale is one pointer
    ctor(locale)
    fetched = []
    try:
        for facet, symbol in LOCALE_FACETS:
            if defined_in(ctypes, lib, symbol, path):
                use_facet = getattr(lib, symbol)
                use_facet.restype = c.c_void_p
                use_facet.argtypes = [c.c_void_p]
                use_facet(locale)
                fetched.append(facet)
    finally:
        dtor(locale)
    return "std::locale(): use_facet<" + ", ".join(fetched) + "> ok"


def exercise_fork(ctypes: Any, lib: Any, deadline: float) -> str:
    """A parallel region, a fork, and a parallel region in the forked child.

    GNU libgomp's thread pool does not survive fork: the child's region waits forever for
    workers that were not copied. The region runs libc's ``free(NULL)`` on each thread (no
    Python callback, so no GIL in the forked child). Raises ``ForkHang`` when the forked child
    has not finished within ``deadline`` seconds or made no progress for ``FORK_STALL``.
    """
    c = ctypes
    func = lib.GOMP_parallel
    func.restype = None
    func.argtypes = [c.c_void_p, c.c_void_p, c.c_uint, c.c_uint]
    noop = c.cast(c.CDLL(None).free, c.c_void_p)
    # The runtime's default team size, as real code gets it, once OMP_NUM_THREADS is set (a
    # counter-experiment); else two threads, so that a pool starts even on one core.
    threads = 0 if os.environ.get("OMP_NUM_THREADS") else 2
    func(noop, None, threads, 0)
    pid = os.fork()
    if pid == 0:  # the forked child: never returns into Python's normal flow
        code = 1
        try:
            func(noop, None, threads, 0)
            code = 0
        finally:
            os._exit(code)
    began = time.monotonic()
    status = _fork_helpers().wait_for(pid, deadline, stall=FORK_STALL)
    if status is not None:
        if status != 0:
            raise RuntimeError(f"the forked child ended with wait status {status}")
        return "parallel region, fork, parallel region in the forked child: ok"
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise ForkHang(
        f"the forked child's parallel region did not finish (no progress after "
        f"{time.monotonic() - began:.1f} s) after a parallel region in the parent (the "
        "runtime's thread pool does not survive fork); the child was killed"
    )


class ForkHang(Exception):
    """The fork probe's child did not finish: reported as a hang of the run."""


def _probe_calls(ctypes: Any, lib: Any, path: str, probes: list, extra: list) -> list:
    """The exercise calls the parent's family registry asks for on ``path``: a probe applies
    when ``path`` itself defines one of its identity symbols. ``extra`` names the spec's
    additional probes (``fork-after-parallel``)."""
    calls = []
    for probe in probes:
        defined = [s for s in probe["symbols"] if defined_in(ctypes, lib, s, path)]
        if not defined:
            continue
        if probe["probe"] == "gomp-parallel" and defined_in(ctypes, lib, "GOMP_parallel", path):
            calls.append(("openmp", lambda: exercise_openmp(ctypes, lib)))
            if "fork-after-parallel" in extra:
                calls.append(("fork", functools.partial(exercise_fork, ctypes, lib, FORK_DEADLINE)))
        elif probe["probe"] == "openblas-dgemm":
            config = next((s for s in defined if "openblas_get_config" in s), None)
            if config is not None:
                prefix, suffix = config.split("openblas_get_config", 1)
                calls.append(
                    ("blas", functools.partial(exercise_openblas, ctypes, lib, prefix, suffix))
                )
        elif probe["probe"] == "libstdcxx-locale" and defined_in(ctypes, lib, LOCALE_DTOR, path):
            calls.append(("libstdc++", functools.partial(exercise_locale, ctypes, lib, path)))
    return calls


def _exercise_one(ctypes: Any, path: str, progress: Progress, probes: list, extra: list) -> None:
    lib = _noload(ctypes, path)
    if lib is None:
        return
    for kind, call in _probe_calls(ctypes, lib, path, probes, extra):
        progress.write(event="exercise", path=path, kind=kind, status="begin")
        try:
            detail = call()
        except ForkHang as exc:
            progress.write(event="exercise", path=path, kind=kind, status="hung", detail=str(exc))
        except Exception as exc:
            progress.write(
                event="exercise", path=path, kind=kind, status="error", **_describe_exception(exc)
            )
        else:
            progress.write(event="exercise", path=path, kind=kind, status="ok", detail=detail)


def exercise(
    tracker: MapTracker, progress: Progress, probes: list, extra: list, own_ctypes: bool = False
) -> None:
    """Call into every mapped OpenMP runtime, OpenBLAS and libstdc++ copy, so latent
    duplicates show. Every mapped object is a candidate once one looks like a runtime (a
    statically linked, exported libstdc++ lives in an ordinary extension module), or once the
    steps imported ctypes (``own_ctypes``: the sandbox imported it, not the steps)."""
    candidates = tracker.order
    steps_ctypes = "ctypes" in sys.modules and not own_ctypes
    if not steps_ctypes and not any(RUNTIME_NAME.search(os.path.basename(p)) for p in candidates):
        return
    import ctypes

    for path in candidates:
        _exercise_one(ctypes, path, progress, probes, extra)


def _fork_helpers() -> Any:
    """``forked.py`` beside this file (loaded by path: the package is not importable here)."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "forked.py")
    spec = importlib.util.spec_from_file_location("_rc_sandbox_forked", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _rerun(steps: list, global_imports: tuple) -> None:
    """Every step again in a fresh namespace (imports come from ``sys.modules``)."""
    namespace = {"__name__": "__rc_steps__"}  # type: dict
    for index, step in enumerate(steps):
        run_step(step, index, namespace, global_imports)


def _spawned(spec: dict) -> None:
    """The spawn probe's process (a fresh interpreter): the run's preloads and steps."""
    if spec.get("preload"):
        import ctypes

        mode = ctypes.RTLD_GLOBAL if spec.get("preload_mode", "global") == "global" else 0
        for lib in spec["preload"]:
            ctypes.CDLL(lib, mode=mode)
    _rerun(spec["steps"], tuple(spec.get("global_imports", ())))


def workload_probes(spec: dict, progress: Progress, began: tuple) -> list:
    """Run the probes that re-run the steps (before the runtime probes, whose parallel regions
    a forked child must not inherit); the extra probes left for :func:`exercise`. ``began``:
    the steps' start (monotonic clock, process CPU time)."""
    extra = list(spec.get("extra", []))
    if FORK_WORKLOAD not in extra and SPAWN_WORKLOAD not in extra:
        return extra
    helpers = _fork_helpers()
    elapsed = time.monotonic() - began[0]
    deadline = helpers.workload_deadline(FORK_DEADLINE, elapsed)
    budget = helpers.gdb_budget(spec.get("timeout"), elapsed, deadline)
    stall = helpers.stall_window(elapsed, time.process_time() - began[1])
    probe = functools.partial(helpers.fork_probe, dict(spec, gdb_budget=budget, stall=stall))
    if FORK_WORKLOAD in extra and not probe(progress.write, deadline, _rerun, _describe_exception):
        extra = [p for p in extra if p != "fork-after-parallel"]
    if SPAWN_WORKLOAD in extra:
        helpers.spawn_probe(spec, progress.write, deadline, _spawned)
    return extra


def _raise_core_limit() -> None:
    """Allow a core dump of this process only (the parent's limit is untouched)."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
        resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass


def _setup(spec: dict) -> IO[str]:
    # The loader has read these already; a subprocess started by a step must not inherit them.
    for name in ("LD_DEBUG", "LD_DEBUG_OUTPUT"):
        os.environ.pop(name, None)
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    sys.path.insert(0, spec.get("sys_path0") or "")
    if spec.get("core", True):
        _raise_core_limit()
    fault_file = open(spec["faulthandler"], "w")  # noqa: SIM115 - faulthandler keeps it
    faulthandler.enable(file=fault_file, all_threads=True)
    # The parent sends SIGUSR1 on timeout: every thread's Python stack lands in the file.
    faulthandler.register(signal.SIGUSR1, file=fault_file, all_threads=True, chain=False)
    return fault_file


def _own_executable() -> str:
    """The file this process runs (``--rc-python`` may be a wrapper script that execs it)."""
    try:
        return os.path.realpath("/proc/self/exe")
    except OSError:
        return sys.executable


def main(argv: list) -> int:
    """Run the spec named by ``argv[1]``; exit 0 when every step (and exercising) returned."""
    with open(argv[1], encoding="utf-8") as fh:
        spec = json.load(fh)
    fault_file = _setup(spec)
    progress = Progress(spec["progress"])
    tracker = MapTracker()
    progress.write(
        event="start",
        pid=os.getpid(),
        python=sys.version.split()[0],
        executable=sys.executable,
        exe=_own_executable(),
        new=tracker.new(),
    )
    began = (time.monotonic(), time.process_time())
    if not preload(spec.get("preload", []), spec.get("preload_mode", "global"), progress, tracker):
        return 1
    env = EnvTracker(tracker, progress)
    if not run_steps(spec["steps"], progress, tracker, env, tuple(spec.get("global_imports", ()))):
        return 1
    if spec.get("exercise", True):
        extra = workload_probes(spec, progress, began)
        probes = spec.get("probes") or DEFAULT_PROBES
        exercise(tracker, progress, probes, extra, env.own_ctypes)
    progress.write(event="done", new=tracker.new())
    fault_file.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
