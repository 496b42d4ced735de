"""`devrouter export`: the route table handed to an engine built for shared machines.

A config becomes an export plan (`plan`, pure: sorted names, path routes longest first, the
backends with --upstream-host applied, timeouts, the gaps every format shares); each format
is a pure function of that plan to text (`caddy`, `nginx`, `traefik`, `kubernetes`), which
adds the gaps of its own engine; `command` reads the config and prints. docs/export.md maps
each route feature to each engine.
"""
