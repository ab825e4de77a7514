"""`python -m dth`: the same as the `dth` command."""

import sys

from dth.cli.main import main

sys.exit(main())
