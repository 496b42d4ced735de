"""`python -m devrouter.doctor [--config PATH] [--port PORT] [--json]`."""

from __future__ import annotations

import sys

from .command import main

if __name__ == "__main__":
    sys.exit(main())
