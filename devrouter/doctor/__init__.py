"""`devrouter doctor`: why does http://NAME.localhost:7355 not work? Checks and explains.

Theory of operation. Doctor gathers facts about this machine, judges them, and prints one
line per check, `ok`, `info`, `warn` or `fail`, with a fix under every problem:

1. router: found as every command finds it (`devrouter.services.locate`: `--port`, else the control
   socket in the state directory, else the config's `listen:`, else 7355), then
   GET http://127.0.0.1:PORT/api/status (then [::1]). devrouter's status document means
   devrouter; any other answer on the port is named with the process that holds it. A
   devrouter that is not the one behind this state directory's control socket (another
   user's, or one started with another DEVROUTER_HOME) is said to be that, not "running".
2. resolver: do `*.localhost` names resolve to loopback for ordinary programs?
3. config: the file is read and validated as `devrouter check` does.
4. routes (the running router's live table through its control socket, which holds the
   `run`, `alias` and stack routes too; else its /api/status; else the config file's): a
   TCP connect to each loopback
   address a route may use, compared with the LISTEN sockets in /proc/net/tcp{,6}, to say
   where the service listens instead and which process holds the port.
5. ports: ports in `devrouter run`'s assignment range that other processes hold.
6. trust: the local CA (HTTPS), if there is one, and whether the system store and the
   user's NSS databases (Chrome/Chromium, Firefox) trust it (`devrouter.tls.trust`).

The `judge_*` functions are pure: observations in, `Check`s out, testable without sockets.

Only loopback addresses are contacted (127.0.0.1, ::1, or another loopback a route names),
and every connect and request has a timeout. The resolver check calls getaddrinfo only when
the system resolver answers `.localhost` names without the network (a `myhostname` or
`resolve` source in /etc/nsswitch.conf, or only loopback DNS servers). With plain
`files dns`, glibc would send the name to the DNS server, which doctor never does.

Process names come from /proc (Linux): a LISTEN socket's inode is matched to a
/proc/PID/fd link and /proc/PID/cmdline is read. Other users' processes cannot be
inspected without root and are "unknown (another user's process)". Without /proc only the
connects are used.

Exit codes: 0 nothing failed (warnings allowed), 1 a check failed, 2 usage.

Where things are. Facts (I/O, at the edges), then pure rules, then the command:

- `facts`: the probes of the router's port and of route ports (loopback only, bounded), the
  `*.localhost` lookup, reading the resolver's files, the port-assignment range, and the
  timeouts that bound them.
- `listeners`: the LISTEN sockets in /proc/net/tcp{,6} and the processes that hold them.
- `targets`: what to check, as `RouteTarget`s from the live table, /api/status or the file.
- `resolver`: the rules over nsswitch.conf and resolv.conf, and the resolver's verdict.
- `judges`: the verdicts on the router, the config, each route and the port range.
- `trust`: the local CA's facts (its files, each trust store's answer) and their verdict.
- `report`: `Check` and `Report` (the exit status and the JSON document).
- `render`: the report as text.
- `command`: `diagnose` (gather, then judge), and the command line (`add_parser`, `run`,
  `main`; `python -m devrouter.doctor` runs `main`).
"""
