"""``python -m lightsr`` runs the CLI (also under ``torchrun -m lightsr train ...``)."""

from lightsr.cli import run

if __name__ == "__main__":
    run()
