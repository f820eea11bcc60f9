"""`python -m omnibyte.train ...` = `omnibyte train ...` (handy under torchrun:
`torchrun --nproc-per-node 2 -m omnibyte.train configs/tiny.toml`)."""

import sys

from omnibyte.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
