"""``python -m flowforge``: the command line (see :mod:`flowforge.cli`)."""

import sys

from flowforge.cli import main

if __name__ == "__main__":
    sys.exit(main())
