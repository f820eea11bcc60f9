"""`python -m omnibyte ...` = `omnibyte ...`, also under torchrun:
`torchrun --nproc-per-node 2 -m omnibyte train configs/tiny.toml --out runs/ddp`."""

import sys

from omnibyte.cli import main

if __name__ == "__main__":
    sys.exit(main())
