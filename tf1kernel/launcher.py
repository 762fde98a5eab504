"""`python -m tf1kernel.launcher`: the argv of kernelspecs installed before the launcher moved to
tf1kernel.jupyter.launcher. Kept so that those kernelspecs start unchanged."""

import sys

from tf1kernel.jupyter.launcher import main

if __name__ == "__main__":
    sys.exit(main())
