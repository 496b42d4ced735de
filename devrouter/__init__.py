"""devrouter: one loopback port, a name for every local dev service."""

__version__ = "0.1.0"
