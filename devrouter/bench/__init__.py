"""`devrouter bench`: a load generator for local services that reports latency honestly.

Theory of operation. A run is split over `--workers` processes, each with its own event loop
(uvloop when importable), its share of the connections, requests and rate, and its own
`Histogram`; the parent merges their results. Each worker has a `Driver`, which decides
*when* each request is due and what its latency is, and `Connection`s, lean asyncio
protocols that write one pre-built request and parse the response by hand (status line,
then a body framed by Content-Length, chunked encoding or the end of the connection).

There are two modes:

- Closed loop (the default, like wrk): every connection sends its next request as soon as
  the previous response is complete, and latency runs from the write to the last byte.
- Constant rate (`--rate N`, like wrk2): request *i* is due at `start + i / N`. A free
  connection takes the next due time, waits for it, and sends; latency runs from the due
  time, not from the send. When the service stalls, the requests that fell due meanwhile
  are sent late, back to back, and each carries its wait, so the stall shows in the tail
  instead of hiding as one slow sample (Gil Tene's "coordinated omission"). Timers have
  millisecond granularity, so the last millisecond before a due time is spent polling the
  loop with `call_soon`, keeping the send within microseconds of its due time.

The Driver does no I/O: it is given a clock, timer functions and a connection opener, so
the correction can be tested against synthetic service times in virtual time.

Only this machine is ever a target: loopback IP literals, `localhost` and `*.localhost`
names (RFC 6761 §6.3, connected at 127.0.0.1 with the name in the Host header). Anything
else is refused before a socket is opened or a name resolved.

Errors are counted by kind: `refused` (connect refused), `reset` (the connection closed or
was reset before a complete response), `timeout` (no complete response within
`--timeout`) and `other` (a malformed response, another OS error).

Modules, from the pure rules to the edges (tests mirror them in tests/bench/):

- `errors`: UsageError and StartupError, the error kinds, and OS exception -> kind.
- `options`: the grammar of option values (durations, rates, headers, bodies).
- `target`: `Target` and `parse_target`: what is on this machine, and what is refused.
- `plan`: the request bytes (`build_request`) and one worker's share (`Plan`, `Plan.split`).
- `driver`: the `Driver`: pacing, coordinated-omission correction, timeouts, the end of a
  run. No I/O.
- `connection`: `Connection`, the asyncio protocol and its hand-written response parser.
- `result`: a worker's share and the merged `Result`, with its JSON figures.
- `progress`: live progress on stderr.
- `workers`: `run_worker` (one share on an event loop) and `execute` (a run over worker
  processes).
- `report`: the text of a run and of a comparison, and the line when nothing answers.
- `router`: which router a route target goes through, and --compare-direct's backend.
- `command`: the `bench` subcommand's options (`add_parser`) and handler (`run`, `main`).
"""
