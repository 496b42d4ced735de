"""WebSocket bridging: hot-module reload sockets and every other WebSocket.

The backend is dialled first, and only when it has accepted the handshake does the client
get its 101, so a backend's 403/404 reaches the client as that status, not as a 101 followed
by a close (what a browser's HMR client needs to tell "wrong URL" from "server gone").
The subprotocol the backend chose (Vite's `vite-hmr`) is the one offered back to the client;
without it Chrome fails the handshake.

Messages are relayed one by one in both directions; close codes and reasons pass through.
A backend that vanishes without a close frame becomes a 1011 close for the client, and a
client that vanishes becomes a 1001 for the backend, so neither side sees a bare TCP reset.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import WSMsgType, hdrs, web
from multidict import CIMultiDict
from yarl import URL

from ..core.errors import BadGateway, BadRequest, UpstreamStatus
from ..core.model import Route, Upstream
from ..server.upstream import translate_errors

if TYPE_CHECKING:
    from .handler import Proxy

log = logging.getLogger("devrouter.websocket")

#: How long to wait for the other side's close frame, in seconds.
CLOSE_TIMEOUT_S = 5.0

_HANDSHAKE_HEADERS = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-protocol",
        "sec-websocket-extensions",
        "sec-websocket-accept",
    }
)
# Close codes that may be sent on the wire (RFC 6455 §7.4); others are replaced.
_SENDABLE = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})


def is_upgrade(request: web.BaseRequest) -> bool:
    return (
        request.method == hdrs.METH_GET
        and request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"
        and "upgrade" in request.headers.get(hdrs.CONNECTION, "").lower()
    )


def sendable(code: int | None, fallback: int) -> int:
    if code is not None and (code in _SENDABLE or 3000 <= code <= 4999):
        return code
    return fallback


async def bridge(
    proxy: Proxy,
    request: web.BaseRequest,
    route: Route,
    upstream: Upstream,
    target: str,
    headers: CIMultiDict[str],
) -> web.StreamResponse:
    for name in list(headers.keys()):
        if name.lower() in _HANDSHAKE_HEADERS:
            headers.popall(name, None)
    offered = [
        p.strip()
        for v in request.headers.getall(hdrs.SEC_WEBSOCKET_PROTOCOL, ())
        for p in v.split(",")
        if p.strip()
    ]

    # aiohttp refuses a message of max_msg_size bytes or more: one more lets exactly N MiB in
    max_msg_bytes = route.max_websocket_message_bytes + 1
    if not web.WebSocketResponse().can_prepare(request).ok:  # check before dialling
        raise BadRequest("this WebSocket handshake is malformed (Sec-WebSocket-Key/Version)")

    async def attempt(base: str) -> aiohttp.ClientWebSocketResponse:
        try:
            return await proxy.session.ws_connect(
                URL(base.replace("http", "ws", 1) + target, encoded=True),
                headers=headers,
                protocols=offered,
                autoclose=False,
                autoping=True,
                compress=0,
                max_msg_size=max_msg_bytes,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=CLOSE_TIMEOUT_S),
            )
        except aiohttp.WSServerHandshakeError as exc:
            # Here, not in translate_errors: a refusal is the backend's answer, passed on.
            if exc.status and exc.status != 101:
                raise UpstreamStatus(
                    exc.status,
                    f"the backend on port {upstream.port} refused the WebSocket with {exc.status}",
                ) from None
            raise BadGateway(
                f"the backend on port {upstream.port} answered the WebSocket handshake "
                f"wrongly ({exc.message})"
            ) from None

    with translate_errors(upstream, route.timeout_s):
        async with asyncio.timeout(route.timeout_s):
            up: aiohttp.ClientWebSocketResponse = await proxy.open(upstream, attempt)

    down = web.WebSocketResponse(
        protocols=(up.protocol,) if up.protocol else (),
        autoclose=False,
        autoping=True,
        compress=False,
        max_msg_size=max_msg_bytes,
    )
    try:
        await down.prepare(request)
    except BaseException:
        await up.close(code=1001)
        raise
    try:
        await _relay(up, down)
    except asyncio.CancelledError:
        # The client vanished (aiohttp cancels the handler): tell the backend in words, so
        # an HMR server sees "going away", not a dropped TCP connection.
        await _close(up, 1001, b"client went away")
        raise
    return down


async def _relay(up: aiohttp.ClientWebSocketResponse, down: web.WebSocketResponse) -> None:
    to_up = asyncio.ensure_future(_pump(down, up))
    to_down = asyncio.ensure_future(_pump(up, down))
    try:
        done, _ = await asyncio.wait((to_up, to_down), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (to_up, to_down):
            task.cancel()
        await asyncio.gather(to_up, to_down, return_exceptions=True)
    if to_down in done and not to_down.cancelled() and to_down.exception() is None:
        # The backend ended first: give the client its code, or 1011 for a dropped backend.
        code, reason = to_down.result()
        await _close(down, sendable(code, 1011), reason or b"backend closed the connection")
        await _close(up, 1000, b"")
    else:
        code, reason = (
            to_up.result()
            if to_up.done() and not to_up.cancelled() and not to_up.exception()
            else (None, b"")
        )
        await _close(up, sendable(code, 1001), reason)
        await _close(down, sendable(code, 1001), reason)


async def _close(
    ws: aiohttp.ClientWebSocketResponse | web.WebSocketResponse, code: int, reason: bytes
) -> None:
    if ws.closed:
        return
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await ws.close(code=code, message=reason)
    except (TimeoutError, aiohttp.ClientError, OSError, RuntimeError):
        pass


async def _pump(
    src: aiohttp.ClientWebSocketResponse | web.WebSocketResponse,
    dst: aiohttp.ClientWebSocketResponse | web.WebSocketResponse,
) -> tuple[int | None, bytes]:
    """Copy messages until `src` closes; return its close code and reason."""
    while True:
        msg = await src.receive()
        if msg.type is WSMsgType.TEXT:
            await dst.send_str(msg.data)
        elif msg.type is WSMsgType.BINARY:
            await dst.send_bytes(msg.data)
        elif msg.type is WSMsgType.CLOSE:
            return msg.data, (msg.extra or "").encode()
        elif msg.type is WSMsgType.ERROR:
            exc = msg.data
            if isinstance(exc, aiohttp.WebSocketError):
                return exc.code, str(exc).encode()[:120]
            return None, b""
        elif msg.type in (WSMsgType.CLOSING, WSMsgType.CLOSED):
            return src.close_code, b""
