"""pytest-runtimeconflict: find and explain native runtime conflicts between Python wheels."""

from __future__ import annotations

__version__ = "0.1.0"
