"""Post-mortem evidence of a crashed child: core dump, loader log, gdb backtrace.

- ``read_core``: the core's NT_FILE note (which file is mapped where) and every NT_PRSTATUS
  (one per thread: thread id and registers), so each thread's program counter is attributed to
  the library it was executing (the seed's dump showed two OpenBLAS thread servers this way).
  NT_SIGINFO follows the NT_PRSTATUS of the thread that received the fatal signal: that
  thread is the crashing one (put first), whatever the others (idle thread pools) were doing.
- ``parse_loader_log``: glibc's ``LD_DEBUG=files`` output (``calling init:`` and ``file=``
  lines): which library was being loaded or initialised last.
- ``gdb_backtrace``: ``thread apply all bt`` from the core when gdb is installed.

Everything here works on files left in the run directory; nothing touches a live process.
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import os
import re
import shutil
import struct
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from pytest_runtimeconflict.vocabulary import JsonObject

log = logging.getLogger(__name__)

# struct elf_prstatus on 64-bit Linux: pr_pid at 32, pr_reg (user_regs_struct) at 112.
PRSTATUS_PID_OFFSET = 32
PRSTATUS_REG_OFFSET = 112
PRSTATUS_CURSIG_OFFSET = 12
# Index of the program counter / stack pointer in pr_reg: x86_64 rip/rsp, aarch64 pc/sp.
PC_REGISTER = {"EM_X86_64": 16, "EM_AARCH64": 32}
SP_REGISTER = {"EM_X86_64": 19, "EM_AARCH64": 31}
# x86_64 kernel rt_sigframe: pretcode, ucontext (flags, link, stack_t, sigcontext...), siginfo.
FRAME_FLAGS, FRAME_UC_LINK, FRAME_RIP, FRAME_CS, FRAME_FPSTATE = 8, 16, 176, 192, 232
USER_CS_X86_64 = 0x33
SIGFRAME_SCAN_BYTES = 256 * 1024
GDB_TIMEOUT = 60.0
GDB_MAX_LINES = 400
SYMBOLIZE_MAX_BYTES = 256 * 1024 * 1024

_INIT_RE = re.compile(r"^\s*(\d+):\s+calling init: (.+?)\s*$")
_FILE_RE = re.compile(
    r"^\s*(\d+):\s+file=(\S+) \[(\d+)\];\s+(needed by|dynamically loaded by) (\S+)"
)


@dataclass(frozen=True)
class Mapping:
    """One file-backed range of the crashed process (from NT_FILE)."""

    start: int
    end: int
    offset: int
    path: str


@dataclass(frozen=True)
class ThreadState:
    """One thread of the crashed process: id, program counter, signal it was stopped with."""

    tid: int
    pc: int | None
    signal: int
    sp: int | None = None
    handler_pc: int | None = None  # where the thread stopped, when pc came from a signal frame
    signalled: bool = False  # the thread the core's NT_SIGINFO belongs to


@dataclass
class CoreInfo:
    """What a core file says: mappings (sorted by start) and threads (crashing thread first)."""

    mappings: list[Mapping] = field(default_factory=list)
    threads: list[ThreadState] = field(default_factory=list)
    machine: str = ""
    segments: list[tuple[int, int, int]] = field(default_factory=list)  # vaddr, filesz, offset
    path: str = ""
    siginfo: dict[str, int] = field(default_factory=dict)  # signo, code, addr of NT_SIGINFO

    def read_memory(self, address: int, size: int) -> bytes:
        """Bytes of the crashed process's memory saved in the core ('' when not dumped)."""
        for vaddr, filesz, offset in self.segments:
            if vaddr <= address < vaddr + filesz:
                size = min(size, vaddr + filesz - address)
                with open(self.path, "rb") as fh:
                    fh.seek(offset + address - vaddr)
                    return fh.read(size)
        return b""

    def library_at(self, address: int | None) -> str | None:
        """The path of the file mapped at ``address``, or None (anonymous memory, JIT, NULL)."""
        if address is None:
            return None
        starts = [m.start for m in self.mappings]
        i = bisect.bisect_right(starts, address) - 1
        if i >= 0 and self.mappings[i].start <= address < self.mappings[i].end:
            return self.mappings[i].path
        return None

    def load_base(self, path: str) -> int | None:
        """Where ``path`` is mapped with file offset 0 (its load base for a shared object)."""
        bases = [m.start for m in self.mappings if m.path == path and m.offset == 0]
        return min(bases) if bases else None

    def files(self) -> list[str]:
        """Distinct mapped file paths in address order."""
        return list(dict.fromkeys(m.path for m in self.mappings))


def _parse_prstatus(desc: bytes, machine: str) -> ThreadState | None:
    pc_index = PC_REGISTER.get(machine)
    if len(desc) < PRSTATUS_REG_OFFSET:
        return None
    (cursig,) = struct.unpack_from("<h", desc, PRSTATUS_CURSIG_OFFSET)
    (tid,) = struct.unpack_from("<i", desc, PRSTATUS_PID_OFFSET)
    return ThreadState(
        tid=tid,
        pc=_register(desc, pc_index),
        signal=cursig,
        sp=_register(desc, SP_REGISTER.get(machine)),
    )


def _register(desc: bytes, index: int | None) -> int | None:
    if index is None or len(desc) < PRSTATUS_REG_OFFSET + 8 * (index + 1):
        return None
    (value,) = struct.unpack_from("<Q", desc, PRSTATUS_REG_OFFSET + 8 * index)
    return int(value)


def _parse_nt_file(desc: Any) -> list[Mapping]:
    page = desc["page_size"]
    return [
        Mapping(e["vm_start"], e["vm_end"], e["page_offset"] * page, _decode(name))
        for e, name in zip(desc["Elf_Nt_File_Entry"], desc["filename"])
    ]


def read_core(path: str) -> CoreInfo:
    """Parse a core file's notes. Raises ``ELFError``/``OSError`` on an unreadable core.

    The thread that received the signal (the one whose NT_PRSTATUS the NT_SIGINFO note
    follows) comes first in ``threads``, marked ``signalled``."""
    info = CoreInfo()
    signalled: int | None = None
    with open(path, "rb") as fh:
        elf = ELFFile(fh)
        if elf["e_type"] != "ET_CORE":
            raise ELFError(f"{path} is not a core file ({elf['e_type']})")
        info.machine, info.path = elf["e_machine"], path
        for segment in elf.iter_segments():
            if segment["p_type"] == "PT_LOAD" and segment["p_filesz"]:
                info.segments.append((segment["p_vaddr"], segment["p_filesz"], segment["p_offset"]))
            if segment["p_type"] != "PT_NOTE":
                continue
            for note in segment.iter_notes():  # type: ignore[attr-defined]
                if note["n_type"] == "NT_FILE":
                    info.mappings.extend(_parse_nt_file(note["n_desc"]))
                elif note["n_type"] == "NT_PRSTATUS":
                    thread = _parse_prstatus(bytes(note["n_descdata"]), info.machine)
                    if thread is not None:
                        info.threads.append(thread)
                elif note["n_type"] == "NT_SIGINFO" and info.threads and signalled is None:
                    signalled = len(info.threads) - 1
                    info.siginfo = _parse_siginfo(bytes(note["n_descdata"]))
    info.mappings.sort(key=lambda m: m.start)
    if signalled is not None:
        thread = info.threads.pop(signalled)
        info.threads.insert(0, dataclasses.replace(thread, signalled=True))
    if info.threads:
        info.threads[0] = _through_signal_frame(info, info.threads[0])
    return info


def _parse_siginfo(desc: bytes) -> dict[str, int]:
    """``si_signo``, ``si_code`` and (for a fault) ``si_addr`` of a 64-bit ``siginfo_t``."""
    if len(desc) < 24:
        return {}
    signo, _errno, code = struct.unpack_from("<iii", desc, 0)
    (addr,) = struct.unpack_from("<Q", desc, 16)
    return {"signo": signo, "code": code, "addr": addr}


def _through_signal_frame(core: CoreInfo, thread: ThreadState) -> ThreadState:
    """The PC where the signal hit, when the thread stopped inside a signal handler.

    Python's faulthandler catches SIGSEGV/SIGABRT/..., dumps the tracebacks and re-raises, so
    the core shows the thread in libc's ``raise``. The kernel saved the interrupted context in
    an ``rt_sigframe`` above the handler's stack pointer; find it (x86_64 only) by its shape:
    restorer in a mapped file, small ``uc_flags``, NULL ``uc_link``, user code segment 0x33
    and the FPU state pointer just above the frame (faulthandler sets no SA_SIGINFO, so there
    is no siginfo to check).
    """
    if core.machine != "EM_X86_64" or thread.sp is None or not thread.signal:
        return thread
    memory = core.read_memory(thread.sp, SIGFRAME_SCAN_BYTES)
    for frame in range(0, len(memory) - FRAME_FPSTATE - 8, 8):
        if _is_sigframe(core, memory, frame, thread.sp + frame):
            (rip,) = struct.unpack_from("<Q", memory, frame + FRAME_RIP)
            return dataclasses.replace(thread, pc=int(rip), handler_pc=thread.pc)
    return thread


def _is_sigframe(core: CoreInfo, memory: bytes, frame: int, address: int) -> bool:
    def word(offset: int) -> int:
        return int(struct.unpack_from("<Q", memory, frame + offset)[0])

    return (
        word(FRAME_CS) & 0xFFFF == USER_CS_X86_64
        and word(FRAME_UC_LINK) == 0
        and word(FRAME_FLAGS) < 16
        and address < word(FRAME_FPSTATE) <= address + 4096
        and core.library_at(word(0)) is not None  # the restorer (__restore_rt in libc)
    )


def is_elf(path: str) -> bool:
    """Whether ``path`` is a readable file starting with the ELF magic."""
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"\x7fELF"
    except OSError:
        return False


def find_core(run_dir: str, pid: int | None) -> str | None:
    """The core file the kernel wrote for ``pid`` in ``run_dir`` (``core`` or ``core.<pid>``)."""
    names = [f"core.{pid}"] if pid is not None else []
    names.append("core")
    for name in names:
        candidate = os.path.join(run_dir, name)
        if os.path.isfile(candidate):
            return candidate
    others = sorted(n for n in os.listdir(run_dir) if n.startswith("core"))
    return os.path.join(run_dir, others[0]) if others else None


@dataclass
class LoaderLog:
    """Events of one process's ``LD_DEBUG=files`` log, in order."""

    inits: list[str] = field(default_factory=list)
    loads: list[tuple[str, str, str]] = field(default_factory=list)  # (file, how, by)
    last_event: tuple[str, str] | None = None  # ("init"|"file", path)


def parse_loader_log(lines: Iterable[str]) -> LoaderLog:
    """Collect ``calling init:`` and ``file=... needed by / dynamically loaded by`` events."""
    result = LoaderLog()
    for line in lines:
        match = _INIT_RE.match(line)
        if match:
            result.inits.append(match.group(2))
            result.last_event = ("init", match.group(2))
            continue
        match = _FILE_RE.match(line)
        if match:
            result.loads.append((match.group(2), match.group(4), match.group(5)))
            result.last_event = ("file", match.group(2))
    return result


def read_loader_log(run_dir: str, prefix: str, pid: int | None) -> LoaderLog:
    """Parse ``<prefix>.<pid>`` in ``run_dir`` (glibc appends the pid to LD_DEBUG_OUTPUT)."""
    if pid is None:
        return LoaderLog()
    path = os.path.join(run_dir, f"{prefix}.{pid}")
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return parse_loader_log(fh)
    except OSError:
        return LoaderLog()


_BINDING_RE = re.compile(
    r"^\s*\d+:\s+binding file (?P<referrer>.+?) \[\d+\] to (?P<provider>.+?) \[\d+\]: "
    r"(?P<kind>\w+) symbol `(?P<symbol>[^']+)'"
)


def read_bindings(
    run_dir: str, prefix: str, pid: int | None, keep: Callable[[str, str], bool]
) -> list[tuple[str, str, str, str]]:
    """``(referrer, provider, symbol, kind)`` of every ``LD_DEBUG=bindings`` line of
    ``<prefix>.<pid>`` between two different files that ``keep(referrer, provider)`` wants
    (first occurrence of each)."""
    if pid is None:
        return []
    seen: dict[tuple[str, str, str, str], None] = {}
    try:
        with open(
            os.path.join(run_dir, f"{prefix}.{pid}"), encoding="utf-8", errors="replace"
        ) as fh:
            for line in fh:
                if "binding file" not in line:
                    continue
                match = _BINDING_RE.match(line)
                if match is None or match["referrer"] == match["provider"]:
                    continue
                if keep(match["referrer"], match["provider"]):
                    key = (match["referrer"], match["provider"], match["symbol"], match["kind"])
                    seen.setdefault(key, None)
    except OSError:
        return []
    return list(seen)


def gdb_backtrace(python: str, core: str, timeout: float = GDB_TIMEOUT) -> str | None:
    """``thread apply all bt`` from the core, trimmed; None without gdb or when gdb fails."""
    gdb = shutil.which("gdb")
    if gdb is None or os.environ.get("PYTEST_RUNTIMECONFLICT_NO_GDB"):
        return None
    env = dict(os.environ)
    env.pop("DEBUGINFOD_URLS", None)  # never download symbols from a crash handler
    cmd = [gdb, "-batch", "-nx", "-ex", "set pagination off", "-ex", "thread apply all bt"]
    try:
        proc = subprocess.run(
            [*cmd, python, core],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("gdb on %s failed: %s", core, exc)
        return None
    return trim_backtrace(proc.stdout)


def trim_backtrace(text: str, max_lines: int = GDB_MAX_LINES) -> str | None:
    """Keep gdb's thread/frame lines (drop the banner and symbol-loading chatter)."""
    kept = ("Thread ", "#", "Program terminated", "[Current thread is")
    keep = [ln for ln in text.splitlines() if ln.startswith(kept)]
    if not keep:
        return None
    if len(keep) > max_lines:
        keep = [*keep[:max_lines], f"... ({len(keep) - max_lines} more lines)"]
    return "\n".join(keep)


_symbol_cache: dict[str, list[tuple[int, int, str]]] = {}


def _function_symbols(path: str) -> list[tuple[int, int, str]]:
    """(start, size, name) of the defined functions in ``path``'s symbol tables, sorted."""
    if path in _symbol_cache:
        return _symbol_cache[path]
    symbols: list[tuple[int, int, str]] = []
    try:
        if os.path.getsize(path) <= SYMBOLIZE_MAX_BYTES:
            with open(path, "rb") as fh:
                elf = ELFFile(fh)
                for name in (".symtab", ".dynsym"):
                    section = elf.get_section_by_name(name)
                    if section is None:
                        continue
                    for sym in section.iter_symbols():  # type: ignore[attr-defined]
                        if sym["st_info"]["type"] == "STT_FUNC" and sym["st_value"]:
                            symbols.append((sym["st_value"], sym["st_size"], sym.name))
    except (OSError, ELFError) as exc:
        log.debug("cannot read symbols of %s: %s", path, exc)
    symbols.sort()
    _symbol_cache[path] = symbols
    return symbols


def symbolize(core: CoreInfo, pc: int | None) -> str | None:
    """The function containing ``pc`` (from the library's own symbol tables), or None."""
    path = core.library_at(pc)
    if pc is None or path is None:
        return None
    base = core.load_base(path)
    if base is None:
        return None
    symbols = _function_symbols(path)
    # Shared objects are linked at 0, so the address in the file is pc - base.
    address = pc - base if _is_shared(path) else pc
    i = bisect.bisect_right(symbols, (address, float("inf"), "")) - 1
    if i >= 0:
        start, size, name = symbols[i]
        if start <= address < start + max(size, 1):
            return name
    return None


def _is_shared(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            return ELFFile(fh)["e_type"] == "ET_DYN"
    except (OSError, ELFError):
        return True


# Where a thread waits for work or time: a thread stopped here was idle at the crash (an
# OpenBLAS or OpenMP thread server parked in a futex), never the crashing one.
IDLE_FUNCTIONS = re.compile(
    r"futex|cond_wait|cond_timedwait|nanosleep|epoll_wait|^poll$|__poll|^select$|sem_wait|"
    r"sem_timedwait|pthread_join|sched_yield|^pause$|sigsuspend|sigtimedwait|^__GI___wait"
)


def is_idle(symbol: str | None) -> bool:
    """Whether a thread stopped in ``symbol`` was waiting (not running code) at the crash."""
    return bool(symbol) and IDLE_FUNCTIONS.search(symbol or "") is not None


def describe_threads(core: CoreInfo) -> list[JsonObject]:
    """One record per thread, the one that received the signal first: ``tid``, ``pc``
    (hex), ``library`` and ``symbol`` when known, ``signalled`` (the core's NT_SIGINFO
    thread) and ``idle`` (stopped in a wait: futex, condition variable, sleep, poll)."""
    rows = []
    for thread in core.threads:
        symbol = symbolize(core, thread.pc)
        rows.append(
            {
                "tid": thread.tid,
                "pc": None if thread.pc is None else f"0x{thread.pc:x}",
                "library": core.library_at(thread.pc),
                "symbol": symbol,
                "signal_frame": thread.handler_pc is not None,
                "signalled": thread.signalled,
                "idle": thread.handler_pc is None and is_idle(symbol),
            }
        )
    return rows


def crashing_thread(threads: Sequence[JsonObject]) -> JsonObject | None:
    """The thread record of the crash: the one that received the signal (NT_SIGINFO), else
    the first that was not waiting (a core without that note), else the first."""
    signalled = [t for t in threads if t.get("signalled")]
    running = [t for t in threads if not t.get("idle")]
    return next(iter(signalled or running or threads), None)


def crashing_init(log_: LoaderLog, backtrace: str | None, candidates: Sequence[str]) -> str | None:
    """The library whose initialiser was running at the crash, or None.

    The last loader event must be ``calling init: X`` for an X mapped by the crashing phase;
    when gdb gave a backtrace, the crashing thread must also be inside the loader's init call.
    """
    if log_.last_event is None or log_.last_event[0] != "init":
        return None
    path = log_.last_event[1]
    if path not in candidates and os.path.realpath(path) not in candidates:
        return None
    if backtrace is not None:
        crashing = thread_block(backtrace, 1)
        if "_dl_init" not in crashing and "call_init" not in crashing:
            return None
    return os.path.realpath(path)


def thread_block(backtrace: str, number: int) -> str:
    """gdb's frames of thread ``number`` (gdb numbers the crashing thread of a core 1)."""
    lines = backtrace.splitlines()
    out: list[str] = []
    inside = False
    for line in lines:
        if line.startswith("Thread "):
            inside = line.startswith(f"Thread {number} ")
        if inside:
            out.append(line)
    return "\n".join(out)


def _decode(name: str | bytes) -> str:
    return os.fsdecode(name) if isinstance(name, bytes) else name
