"""The Docker Engine API over its unix socket: the three calls devrouter needs.

aiohttp's UnixConnector speaks HTTP over the socket, so no Docker client library is needed
(docker-py blocks the event loop; aiodocker would be a dependency for three GETs). Paths are
unversioned, so the Engine answers in its own current version; every field read is present
from API v1.24 on, and in Podman's compatible API.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from .containers import Container, containers_from_list

#: Connecting to the socket and each answer of a plain call, in seconds. The Engine answers
#: a list of a hundred containers in milliseconds; a stuck one should not hold the watcher.
CALL_TIMEOUT_S = 10.0
#: The longest line of the event stream read, in bytes (an event is well under 4 KiB; one
#: with many labels a few KiB more).
MAX_EVENT_BYTES = 1024 * 1024
#: The longest container list read, in bytes.
MAX_LIST_BYTES = 64 * 1024 * 1024
#: Only container events, which are the ones that change routes.
EVENTS_FILTER = json.dumps({"type": ["container"]})


class EngineError(Exception):
    """The Engine could not be reached, or answered something unusable. Its text is shown
    on the dashboard and by doctor."""


class Engine:
    """One Engine at one socket. Use as an async context manager."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket
        self.version = ""  # the Engine's API version, from /_ping
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Engine:
        connector = aiohttp.UnixConnector(path=str(self.socket))
        # "localhost" is only the Host header; the connector decides where bytes go.
        self._session = aiohttp.ClientSession(
            base_url="http://localhost",
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=CALL_TIMEOUT_S),
            auto_decompress=False,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use Engine as an async context manager"
        return self._session

    async def ping(self) -> str:
        """Check the Engine answers; returns its API version."""
        try:
            async with self.session.get(
                "/_ping", timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT_S)
            ) as resp:
                body = await _read_all(resp, 64)
                if resp.status != 200:
                    raise EngineError(f"the Engine answered /_ping with {resp.status}")
                self.version = resp.headers.get("Api-Version", "")
                if body.strip() != b"OK":
                    raise EngineError("the socket answered, but not as a Docker Engine")
                return self.version
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise EngineError(_why(exc, self.socket)) from None

    async def containers(self) -> list[Container]:
        """The running (and paused) containers."""
        return containers_from_list(await self._json("/containers/json", MAX_LIST_BYTES))

    async def _json(self, path: str, limit_bytes: int) -> Any:
        try:
            async with self.session.get(
                path, timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT_S)
            ) as resp:
                body = await _read_all(resp, limit_bytes)
                if resp.status != 200:
                    raise EngineError(
                        f"the Engine answered {path} with {resp.status}: "
                        f"{body[:200].decode('utf-8', 'replace').strip()}"
                    )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise EngineError(_why(exc, self.socket)) from None
        if len(body) > limit_bytes:
            raise EngineError(f"the Engine's answer to {path} is over {limit_bytes} bytes")
        try:
            return json.loads(body)
        except ValueError:
            raise EngineError(f"the Engine's answer to {path} is not JSON") from None

    @contextlib.asynccontextmanager
    async def event_stream(self) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        """Subscribe to container events; the subscription is in place when this enters, so
        a list made after it misses no change. The iterator ends when the Engine ends the
        stream (it stopped or restarted); EngineError when the stream breaks."""
        try:
            async with self.session.get(
                "/events", params={"filters": EVENTS_FILTER}, read_bufsize=MAX_EVENT_BYTES
            ) as resp:
                if resp.status != 200:
                    raise EngineError(f"the Engine answered /events with {resp.status}")
                yield self._events(resp)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise EngineError(_why(exc, self.socket)) from None

    async def _events(self, resp: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
        while True:
            try:
                line = await resp.content.readline()
            except (aiohttp.ClientError, OSError, ValueError) as exc:  # ValueError: too long
                raise EngineError(_why(exc, self.socket)) from None
            if not line:
                return
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a blank or broken line changes nothing
            if isinstance(event, dict):
                yield event


async def _read_all(resp: aiohttp.ClientResponse, limit_bytes: int) -> bytes:
    """The whole body, or its first `limit_bytes` + 1 bytes (one read returns one chunk)."""
    body = bytearray()
    while len(body) <= limit_bytes:
        chunk = await resp.content.read(64 * 1024)
        if not chunk:
            break
        body += chunk
    return bytes(body)


def _why(exc: BaseException, socket: Path) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
        if isinstance(os_error, PermissionError):
            return (
                f"no permission to use {socket}: add yourself to its group (`sudo usermod "
                "-aG docker $USER`, then log in again) or set docker.socket in the config"
            )
        return f"the Engine is not reachable at {socket}: {os_error.strerror or os_error}"
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError):
        return f"the Engine at {socket} went away in the middle of an answer"
    if isinstance(exc, TimeoutError):
        return f"the Engine at {socket} did not answer within {CALL_TIMEOUT_S:g} s"
    return f"the Engine at {socket} broke off: {exc or type(exc).__name__}"
