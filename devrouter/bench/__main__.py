"""`python -m devrouter.bench ARGS`: the `bench` command without the rest of the CLI."""

from __future__ import annotations

import sys

from .command import main

if __name__ == "__main__":
    sys.exit(main())
