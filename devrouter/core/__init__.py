"""Pure data and rules, with no I/O: the model (routes, backends, config), route names and
addresses, matching a Host and path to a route (routes), the immutable snapshot both engines
read (state), access rules (access), and the error types with the status or exit code they
map to (errors)."""
