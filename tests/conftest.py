"""Shared fixtures: real compiled objects (tests/cbuild.py) and the scenario zoo."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

try:  # the zoo fixtures (zoo_wheels, zoo_venv) live in tests/zoo_support.py
    from zoo_support import *  # noqa: F403
except ImportError:  # pragma: no cover - only while the zoo is being written
    pass
