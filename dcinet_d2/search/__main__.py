"""``python -m dcinet_d2.search {index,query} ...`` (see :mod:`dcinet_d2.search.cli`)."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
