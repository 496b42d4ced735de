"""The wiring: the Router (app: binds, starts the engines, the reloader, the probes, the
control socket, and stops them), the HTTP server for an engine with its limits
(app.make_server, limits), the llhttp gate in front of aiohttp's pure-Python parser
(strictgate), and what both engines need to reach backends (upstream)."""
