"""Text of a static scan: runtimes per distribution, then findings."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TextIO

from pytest_runtimeconflict.model import SEVERITIES, Finding, ObjectInfo
from pytest_runtimeconflict.static.scan import ScanResult


def render_text(result: ScanResult, out: TextIO) -> None:
    """Human output: runtimes per distribution, then findings."""
    rows = [o for o in result.objects if o.kind or o.static_libstdcxx]
    out.write(f"Native runtimes ({result.python or 'paths only'}):\n")
    if not rows:
        out.write("  none found\n")
    by_dist: dict[str, list[ObjectInfo]] = {}
    for obj in rows:
        by_dist.setdefault(obj.distribution or "(no distribution)", []).append(obj)
    width = max((len(d) for d in by_dist), default=0)
    for dist in sorted(by_dist):
        for obj in sorted(by_dist[dist], key=lambda o: o.path):
            what = f"{obj.kind.family}/{obj.kind.runtime}" if obj.kind else "-"
            static = obj.static_libstdcxx
            if static:
                what += f" static-libstdc++={static}"
            out.write(f"  {dist:<{width}}  {what:<24} {obj.path}\n")
    out.write(f"\nFindings: {len(result.findings)}\n")
    for f in result.findings:
        out.write(f"\n[{f.severity}] {f.rule} ({f.family}): {f.title}\n")
        out.write(f"  {f.detail}\n")
        out.write(f"  distributions: {', '.join(f.distributions) or '-'}\n")
        out.write(f"  advice: {f.advice}\n")
    if result.skipped:
        out.write(f"\nSkipped {len(result.skipped)} file(s) that are not readable ELF objects.\n")
    out.write(f"\n{len(result.objects)} objects scanned in {result.seconds:.2f}s\n")


def exit_code(findings: Iterable[Finding], fail_on: str) -> int:
    """1 when a finding reaches ``fail_on`` severity, else 0."""
    threshold = SEVERITIES.index(fail_on)
    return int(any(SEVERITIES.index(f.severity) >= threshold for f in findings))
