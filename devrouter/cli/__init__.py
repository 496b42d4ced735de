"""The command line: `main` (the one boundary: parse, log, call, exit code), `commands` (the
registry), and the router's own commands (`serve`, `check`, `demo`). Every other command
lives with what it drives (devrouter.bench, devrouter.doctor, ...) and is listed in
`commands`."""
