"""Shared fixtures: real compiled objects (tests/cbuild.py) and the scenario zoo."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from zoo_support import *  # noqa: E402,F403  (fixtures zoo_wheels, zoo_venv)
