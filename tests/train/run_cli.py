"""``python run_cli.py ARGS`` = ``lightsr ARGS`` with the tiny test network registered."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tiny_net  # noqa: F401  (registers the network)

from lightsr.cli import main

if __name__ == "__main__":
    sys.exit(main())
