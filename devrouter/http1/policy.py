"""The header policy: one list for both engines of what the router never forwards, what it
sets itself, and which requests it leaves to the aiohttp engine's full rules.

Hop-by-hop fields (RFC 9110 §7.6.1) describe one connection and are never relayed. The
forwarding fields (Forwarded, X-Forwarded-*, X-Real-IP) are set by the router only: a
client's values must never reach a backend as if the router had set them. The hop counter
stops loops (a dev server that proxies back to a .localhost name) with a 508.
"""

from __future__ import annotations

from ..core.access import TOKEN_HEADER

#: A request head larger than this, in bytes, goes to aiohttp (which answers 431 or 400);
#: a response head larger than this is llhttp's to frame.
MAX_HEAD_BYTES = 16 * 1024
#: The router's loop counter, added to every forwarded request.
HOPS_HEADER = "X-Devrouter-Hops"
#: A request that has passed through the router this many times is a loop (508).
MAX_HOPS = 5

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authorization",
        "proxy-authenticate",
        "http2-settings",
    }
)
#: Request fields never forwarded as the client sent them.
REQUEST_DROP = HOP_BY_HOP | {
    "expect",  # answered by the router itself; forwarding it can hang a backend
    "forwarded",
    "x-real-ip",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "x-forwarded-ssl",
    "x-forwarded-scheme",
    HOPS_HEADER.lower(),
    TOKEN_HEADER.lower(),  # the router's own credential, never an app's
}
#: Response fields never relayed as the backend sent them (the router frames the response).
RESPONSE_DROP = HOP_BY_HOP | {"content-length"}
#: Fields a Connection header cannot remove: framing and routing are the router's business.
NEVER_NAMED = frozenset({"host", "content-length"})

# The same lists as bytes, for the fast path.
REQUEST_DROP_B = frozenset(h.encode() for h in REQUEST_DROP)
RESPONSE_DROP_B = frozenset(h.encode() for h in RESPONSE_DROP)
NEVER_NAMED_B = frozenset(h.encode() for h in NEVER_NAMED)
HOPS_NAME_B = HOPS_HEADER.lower().encode()
TOKEN_NAME_B = TOKEN_HEADER.lower().encode()

#: Methods the fast path relays; any other (HEAD, CONNECT, TRACE, extensions) goes to aiohttp.
FAST_METHODS = frozenset({b"GET", b"POST", b"PUT", b"PATCH", b"DELETE", b"OPTIONS"})
#: Methods a request may be retried with once on a pooled connection the backend had closed
#: (RFC 9112 §9.3.1).
IDEMPOTENT = frozenset({b"GET", b"PUT", b"DELETE", b"OPTIONS"})
#: Request fields that send a request to the aiohttp engine: a chunked body, Expect (the
#: router answers 100-continue itself), an h2c upgrade's settings.
HANDOFF_FIELDS = frozenset({b"transfer-encoding", b"expect", b"http2-settings"})
#: Statuses whose responses have no body whatever their framing fields say (RFC 9110 §6.4.1).
NO_BODY_STATUS = frozenset({204, 304})
