"""The fast path: plain HTTP/1.1 exchanges relayed at the protocol level, on the event
loop's callbacks, with no per-request task, request object or stream reader.

Theory of operation. aiohttp's per-request machinery (request and response objects, stream
readers, a task per request, on both the server and the client side) costs about 100 us per
request, more than everything else together. Most dev traffic is the simplest kind of
exchange: a request with no body or a Content-Length body to a routed name. For those, this
module reads the request head with one strict regular expression, rewrites the headers once,
writes them to a pooled upstream connection, and relays the response as bytes: framed by a
strict pattern and its Content-Length when it is that simple, by llhttp (httptools)
otherwise. A WebSocket handshake is relayed the same way, and after the backend's 101 the
bytes both ways (devrouter.fast.wsrelay).

Each connection keeps what the last head decided (RequestPlan, ResponsePlan): a field block
that repeats byte for byte, under the same config snapshot, is not checked again. At one
connection the router's code runs with caches that the client and the backend have just
used, where every step costs several times what it costs in a loop; the memos take most of
the steps away for repeated traffic, and the metrics are counted in batches for the same
reason (devrouter.observe.metrics).

Everything else is handed to the aiohttp handler in `devrouter.proxy`, with the bytes read so
far, before anything has been answered: heads the strict pattern does not accept (odd
syntax, obs-fold, control bytes, oversize, absolute-form, HTTP/0.9 or 2.0, a chunked or
ambiguous body, Expect, an Upgrade other than a well-formed WebSocket handshake, HEAD),
names that are not routes (404, 421, the router's own pages), loops and ambiguous paths
(devrouter.http1.request_head decides). The hand-off happens at a request boundary and the
connection stays with aiohttp from then on. So every rule of the proxy has one
implementation that decides hard cases, and the fast path only ever takes requests whose
handling is unambiguous.

Flow control: when the client's socket buffer is full the upstream socket stops being read,
and the other way round for uploads, so memory stays bounded for any body size.

The modules: `server` (FastServer, what aiohttp's runner serves), `client` (one client
connection), `exchange` (one request and its response), `upstream` (one connection to a
backend), `pool` (idle upstream connections), `wsrelay` (WebSocket bytes after a 101). The
decisions about heads are devrouter.http1's; this package only moves bytes and calls them.
"""
