"""`python -m pciback.cli`: the `pciback` command, where the console script is not installed."""

import sys

from pciback.cli import main

sys.exit(main())
