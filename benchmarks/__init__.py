"""Benchmarks: devrouter against direct access and the proxies installed on this machine.

Run `python -m benchmarks` (or `--quick`, `--smoke`); see docs/benchmarks.md.
"""
