"""`python -m omnibyte.cli ...` = `omnibyte ...` (works without the console script on PATH)."""

import sys

from omnibyte.cli import main

if __name__ == "__main__":
    sys.exit(main())
