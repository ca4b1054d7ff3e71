"""Fuzz ``read_elf_facts`` with mutated real ELF objects.

Each example takes a real compiled shared object, overwrites bytes inside one of its
structures (ELF header, program headers, section headers, .dynamic, .dynsym/.dynstr, symbol
versioning, .symtab, .shstrtab) with boundary values or random bytes and optionally truncates
it. The contract: ``read_elf_facts`` returns ``ElfFacts`` or raises ``ElfReadError``, nothing
else, and every call ends within a watchdog (SIGALRM; pyelftools is pure Python, so the alarm
interrupts any loop). The number of inputs tried is reported in docs/reliability.md.
"""

from __future__ import annotations

import signal
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cbuild import compile_shared
from elftools.elf.elffile import ELFFile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_runtimeconflict.errors import ElfReadError
from pytest_runtimeconflict.model import ElfFacts
from pytest_runtimeconflict.static.elffacts import read_elf_facts

WATCHDOG_S = 5.0
MAX_EXAMPLES = 300
FUZZED_SECTIONS = (
    ".dynamic",
    ".dynsym",
    ".dynstr",
    ".gnu.version",
    ".gnu.version_r",
    ".gnu.version_d",
    ".symtab",
    ".shstrtab",
    ".rodata",
    ".tbss",
)
BOUNDARY_WORDS = (0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 2**63, 2**64 - 1)

C_SOURCE = """
__thread int counter = 1;
int exported(int x) { return x + counter; }
int PyInit_fuzzmod(void) { return 0; }
"""
CXX_SOURCE = """
#include <sstream>
#include <string>
namespace fuzz { std::string show(long x) { std::ostringstream s; s << x; return s.str(); } }
extern "C" int answer(void) { return (int)fuzz::show(42).size(); }
"""


class Watchdog(Exception):
    """Raised by SIGALRM when one call exceeds ``WATCHDOG_S``."""


@contextmanager
def watchdog(seconds: float) -> Iterator[None]:
    def _fire(signum: int, frame: object) -> None:
        raise Watchdog(f"read_elf_facts still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, _fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _regions(path: Path) -> list[tuple[str, int, int]]:
    """(name, start, end) of the structures worth mutating in ``path``."""
    with open(path, "rb") as fh:
        elf = ELFFile(fh)
        out = [
            ("ehdr", 0, elf["e_ehsize"]),
            ("phdrs", elf["e_phoff"], elf["e_phoff"] + elf["e_phnum"] * elf["e_phentsize"]),
            ("shdrs", elf["e_shoff"], elf["e_shoff"] + elf["e_shnum"] * elf["e_shentsize"]),
        ]
        for section in elf.iter_sections():
            if section.name in FUZZED_SECTIONS and section["sh_type"] != "SHT_NOBITS":
                start = section["sh_offset"]
                out.append((section.name, start, start + section["sh_size"]))
    return [r for r in out if r[2] > r[1]]


@pytest.fixture(scope="module")
def seeds() -> list[tuple[bytes, list[tuple[str, int, int]]]]:
    """Real objects: a C object with TLS and PyInit_, a C++ object needing libstdc++."""
    paths = [
        compile_shared(C_SOURCE, "libfuzzc.so"),
        compile_shared(CXX_SOURCE, "libfuzzcxx.so", lang="c++"),
    ]
    return [(p.read_bytes(), _regions(p)) for p in paths]


mutation = st.tuples(
    st.integers(0, 10**9),  # which region (modulo)
    st.integers(0, 10**9),  # offset inside it (modulo)
    st.one_of(
        st.binary(min_size=1, max_size=8),
        st.sampled_from(BOUNDARY_WORDS).map(lambda v: struct.pack("<Q", v)),
        st.sampled_from(BOUNDARY_WORDS).map(lambda v: struct.pack("<I", v & 0xFFFFFFFF)),
    ),
)

TRIED = {"inputs": 0, "facts": 0, "errors": 0}
_lock = threading.Lock()


def mutate(
    data: bytes, regions: list[tuple[str, int, int]], edits: list, cut: float | None
) -> bytes:
    """Apply ``edits`` (region pick, offset pick, bytes) and an optional truncation."""
    out = bytearray(data)
    for which, where, patch in edits:
        _, start, end = regions[which % len(regions)]
        at = start + where % (end - start)
        out[at : at + len(patch)] = patch
    if cut is not None:
        out = out[: int(len(out) * cut)]
    return bytes(out)


@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    seed_index=st.integers(0, 1),
    edits=st.lists(mutation, min_size=1, max_size=6),
    cut=st.one_of(st.none(), st.floats(0.0, 1.0)),
)
def test_mutated_elf_gives_facts_or_elf_read_error(
    seeds: list[tuple[bytes, list[tuple[str, int, int]]]],
    tmp_path_factory: pytest.TempPathFactory,
    seed_index: int,
    edits: list,
    cut: float | None,
) -> None:
    data, regions = seeds[seed_index]
    path = tmp_path_factory.mktemp("fuzz", numbered=True) / "mutant.so"
    path.write_bytes(mutate(data, regions, edits, cut))
    with _lock:
        TRIED["inputs"] += 1
    try:
        with watchdog(WATCHDOG_S):
            facts = read_elf_facts(str(path))
    except ElfReadError as exc:
        assert str(path) in str(exc), "the error must name the file"
        TRIED["errors"] += 1
    else:
        assert isinstance(facts, ElfFacts)
        TRIED["facts"] += 1


def test_fuzz_tried_enough_inputs() -> None:
    """Runs after the fuzz test (file order): the bound really was exercised."""
    if TRIED["inputs"] == 0:
        pytest.skip("the fuzz test did not run in this process (xdist split or -k)")
    assert TRIED["inputs"] >= MAX_EXAMPLES // 2, TRIED
    # Both branches of the contract were reached: mutants that still parse and mutants refused.
    assert TRIED["facts"] > 0 and TRIED["errors"] > 0, TRIED


@pytest.mark.parametrize(
    ("field_offset", "fmt", "value", "what"),
    [
        (0x28, "<Q", 2**40, "e_shoff far past EOF"),
        (0x3C, "<H", 0xFFFF, "e_shnum 65535"),
        (0x3E, "<H", 0xFFF0, "e_shstrndx out of range"),
        (0x20, "<Q", 2**40, "e_phoff far past EOF"),
        (0x38, "<H", 0xFFFF, "e_phnum 65535"),
        (0x3A, "<H", 0, "e_shentsize 0"),
        (0x36, "<H", 0, "e_phentsize 0"),
        (0x04, "<B", 7, "bogus EI_CLASS"),
        (0x05, "<B", 9, "bogus EI_DATA"),
    ],
)
def test_bogus_headers(tmp_path: Path, field_offset: int, fmt: str, value: int, what: str) -> None:
    """Hand-picked header corruptions of a real object (deterministic twins of the fuzz)."""
    data = bytearray(compile_shared(C_SOURCE, "libfuzzc.so").read_bytes())
    struct.pack_into(fmt, data, field_offset, value)
    path = tmp_path / "bogus.so"
    path.write_bytes(bytes(data))
    try:
        with watchdog(WATCHDOG_S):
            facts = read_elf_facts(str(path))
    except ElfReadError as exc:
        assert "bogus.so" in str(exc)
    else:
        assert isinstance(facts, ElfFacts), what
