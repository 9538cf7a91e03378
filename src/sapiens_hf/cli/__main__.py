"""`python -m sapiens_hf.cli`: the same as the `sapiens-hf` command."""

import sys

from . import main


if __name__ == "__main__":
    sys.exit(main())
