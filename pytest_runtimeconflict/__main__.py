"""``python -m pytest_runtimeconflict scan|run|demo``."""

from __future__ import annotations

import sys

from pytest_runtimeconflict.cli import main

if __name__ == "__main__":
    sys.exit(main())
