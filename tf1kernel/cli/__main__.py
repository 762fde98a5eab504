"""`python -m tf1kernel.cli`: the `tf1kernel` command."""

import sys

from tf1kernel.cli import main

sys.exit(main())
