"""`devrouter hosts sync|clean`: the route names as entries of a marked block in a hosts
file, for the programs that do not resolve `*.localhost` by themselves (docs/hosts.md)."""
