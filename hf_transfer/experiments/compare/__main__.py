"""``python -m hf_transfer.experiments.compare``: one cell, as a launcher starts it (see :mod:`.cell`)."""

import sys

from hf_transfer.experiments.compare.cell import cell_main

if __name__ == "__main__":
    sys.exit(cell_main())
