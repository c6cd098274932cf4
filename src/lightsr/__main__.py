"""``python -m lightsr`` runs the CLI (also under ``torchrun -m lightsr train ...``)."""

import sys

from lightsr.cli import main

if __name__ == "__main__":
    sys.exit(main())
