"""How paths, code and long texts show on one terminal line: short, whole, and with nothing
that breaks the line.

A path inside an environment shows from its ``site-packages`` (``<site>/numpy.libs/x.so``),
a system library by its last parts; code by its first line (never with a literal ``\\n``);
a text clipped to a width ends with ``...`` and never leaves a parenthesis open. Full paths
stay in the JSON report.
"""

from __future__ import annotations

import os
import re

HEADLINE_WIDTH = 160
DETAIL_WIDTH = 240
ELLIPSIS = "..."
_SITE_DIRS = ("site-packages", "dist-packages")
# Control characters (a file name or a message may carry them) never reach the terminal raw.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u2028\u2029]")


def short_path(path: str) -> str:
    """``<site>/pkg.libs/libx.so`` for a path in an environment's site directory, else the
    normalised path's last two or three parts (``lib/x86_64-linux-gnu/libgomp.so.1``)."""
    parts = os.path.normpath(path).split(os.sep)
    for site in _SITE_DIRS:
        if site in parts:
            at = len(parts) - 1 - parts[::-1].index(site)
            return "/".join(["<site>", *parts[at + 1 :]])
    keep = 3 if len(parts) > 3 and parts[-2].endswith("-linux-gnu") else 2
    return "/".join(parts[-keep:])


def one_line(text: str) -> str:
    """``text`` on one line: code by its first line (``+N lines`` after it), control
    characters escaped."""
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    if not lines:
        return ""
    first = lines[0].strip()
    more = f" (+{len(lines) - 1} lines)" if len(lines) > 1 else ""
    return _CONTROL.sub(lambda m: repr(m.group(0))[1:-1], first) + more


def clip(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, ending in ``...`` when cut, with no parenthesis
    or bracket left open by the cut."""
    indent = str(text)[: len(str(text)) - len(str(text).lstrip(" "))]
    text = indent + one_line(text)
    if len(text) <= width:
        return text
    cut = text[: max(0, width - len(ELLIPSIS))].rstrip()
    cut = _close_open(cut)
    return cut + ELLIPSIS


def _close_open(text: str) -> str:
    """``text`` without its tail from the first bracket that is still open."""
    stack: list[int] = []
    pairs = {")": "(", "]": "[", "}": "{"}
    for at, char in enumerate(text):
        if char in "([{":
            stack.append(at)
        elif char in pairs and stack and text[stack[-1]] == pairs[char]:
            stack.pop()
    return text[: stack[0]].rstrip() if stack else text


def runtime_message(stderr: str) -> str:
    """The line of a child's stderr a user would search for: what the runtime itself said
    (an OpenMP error, an uncaught C++ exception, a heap check), not Python's traceback."""
    for line in reversed(stderr.splitlines()):
        text = line.strip()
        if text.startswith(("OMP: Error", "terminate called", "free():", "double free", "malloc")):
            return text
    return ""
