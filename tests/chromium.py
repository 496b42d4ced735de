"""Headless Chromium for the HTTPS end-to-end tests, driven over the DevTools protocol with
aiohttp's websocket client (no Playwright), and trusting a CA the honest way: through an NSS
database in a throw-away $HOME, as `devrouter trust` would set up for a real user.

No certificate error is ever ignored here (no `--ignore-certificate-errors`): a page over
https:// loads only if Chromium verified the router's leaf against the CA imported by
`nss_trust`. Chromium on Linux reads user trust anchors from `$HOME/.pki/nssdb`, so each test
gets its own HOME and its own profile (`--user-data-dir`), and the real ones are never read.

Every wait is bounded; `close()` ends Chromium's whole process group.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM = Path("/usr/bin/chromium")
CERTUTIL = shutil.which("certutil")
#: Upper bound for the browser to start, and for any one DevTools call or wait, in seconds.
BROWSER_START_S = 30.0
PAGE_WAIT_S = 20.0
#: Upper bound for one certutil run, in seconds.
CERTUTIL_S = 30.0
#: The nickname the CA gets in the NSS database.
NSS_NICKNAME = "devrouter"


def missing_tools() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is not installed"
    if CERTUTIL is None:
        return "certutil is not installed (Debian: libnss3-tools)"
    return None


def nss_trust(home: Path, ca_pem: Path) -> Path:
    """Create `home/.pki/nssdb` (an empty password) and import `ca_pem` as a trusted CA for
    TLS servers (`-t C,,`), as a user's `certutil` command would; returns the database."""
    assert CERTUTIL is not None
    db = home / ".pki" / "nssdb"
    db.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HOME": str(home)}
    for argv in (
        [CERTUTIL, "-N", "--empty-password", "-d", f"sql:{db}"],
        [CERTUTIL, "-A", "-d", f"sql:{db}", "-t", "C,,", "-n", NSS_NICKNAME, "-i", str(ca_pem)],
    ):
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=CERTUTIL_S)
        assert proc.returncode == 0, f"{argv}: {proc.stdout}{proc.stderr}"
    return db


class Chromium:
    """One headless Chromium with one page target. Every DevTools event is kept in `events`
    (console messages, exceptions, log entries, and Network events when `network=True`)."""

    FLAGS = (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",  # the router speaks TCP only; no Alt-Svc probing either
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-dev-shm-usage",
        "--no-proxy-server",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
    )

    def __init__(self, proc: subprocess.Popen[bytes], stderr_path: Path) -> None:
        self.proc = proc
        self.stderr_path = stderr_path
        self.session: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.events: list[dict[str, Any]] = []
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next = 0
        self._reader: asyncio.Task[None] | None = None
        self._arrived = asyncio.Event()  # set when an event is added to `events`

    @classmethod
    async def launch(
        cls, home: Path, *, flags: tuple[str, ...] = (), network: bool = False
    ) -> Chromium:
        """Start Chromium with HOME=`home` and its profile in `home/profile`."""
        profile = home / "profile"
        proc = _spawn(home, profile, (*cls.FLAGS, *flags))
        b = cls(proc, home / "chromium.stderr")
        try:
            await b._connect(profile / "DevToolsActivePort")
            for domain in ("Page", "Runtime", "Log", *(("Network",) if network else ())):
                await b.call(f"{domain}.enable")
        except BaseException:
            await b.close()
            raise
        return b

    async def _connect(self, port_file: Path) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BROWSER_START_S
        port = _devtools_port(port_file)
        while port is None:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode}: {self.stderr()}")
            if loop.time() > deadline:
                raise TimeoutError("chromium did not open its DevTools port")
            await asyncio.sleep(0.05)
            port = _devtools_port(port_file)
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PAGE_WAIT_S))
        page: dict[str, Any] | None = None
        while page is None:
            async with self.session.get(f"http://127.0.0.1:{port}/json/list") as resp:
                pages = [t for t in await resp.json() if t.get("type") == "page"]
            page = pages[0] if pages else None
            if page is None:
                if loop.time() > deadline:
                    raise TimeoutError("chromium has no page target")
                await asyncio.sleep(0.05)
        self.ws = await self.session.ws_connect(
            page["webSocketDebuggerUrl"], max_msg_size=256 * 1024 * 1024
        )
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            fut = self._pending.pop(data.get("id", -1), None)
            if fut is not None:
                if not fut.done():
                    fut.set_result(data)
            elif "method" in data:
                self.events.append(data)
                self._arrived.set()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError("the DevTools connection closed"))

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        assert self.ws is not None
        self._next += 1
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[self._next] = fut
        await self.ws.send_json({"id": self._next, "method": method, "params": params})
        reply = await asyncio.wait_for(fut, PAGE_WAIT_S)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def eval(self, expression: str) -> Any:
        r = await self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in r:
            raise AssertionError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    async def wait_for(self, expression: str, timeout_s: float = PAGE_WAIT_S) -> Any:
        """Poll `expression` until it is truthy; fail after `timeout_s` with its last value
        and the page's errors."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        value = await self.eval(expression)
        while not value:
            if loop.time() > deadline:
                raise AssertionError(
                    f"still {value!r} after {timeout_s}s: {expression}; errors: {self.errors()}"
                )
            await asyncio.sleep(0.1)
            value = await self.eval(expression)
        return value

    async def wait_for_console(
        self, text: str, timeout_s: float = PAGE_WAIT_S, count: int = 1
    ) -> None:
        """Wait until the page has logged `count` console messages containing `text`."""
        async with asyncio.timeout(timeout_s):
            while sum(text in message for message in self.console()) < count:
                self._arrived.clear()
                await self._arrived.wait()

    def console(self) -> list[str]:
        """The page's console messages so far, each as its arguments joined by spaces."""
        return [
            " ".join(str(a.get("value", a.get("description", ""))) for a in e["params"]["args"])
            for e in self.events
            if e["method"] == "Runtime.consoleAPICalled"
        ]

    async def navigate(self, url: str) -> str | None:
        """Start loading `url`: None, or Chromium's error text when it failed at once (a
        certificate error among them: `net::ERR_CERT_AUTHORITY_INVALID`)."""
        reply = await self.call("Page.navigate", url=url)
        error: str | None = reply.get("errorText") or None
        return error

    async def goto(self, url: str, timeout_s: float = PAGE_WAIT_S) -> None:
        """Navigate and wait for the load event; a page that failed to load raises."""
        if error := await self.navigate(url):
            raise AssertionError(f"{url}: {error}")
        await self.wait_for(f"location.href === {json.dumps(url)}", timeout_s)
        await self.wait_for("document.readyState === 'complete'", timeout_s)

    def errors(self) -> list[dict[str, Any]]:
        """Console errors, uncaught exceptions and error log entries."""
        out = []
        for e in self.events:
            method, params = e["method"], e.get("params", {})
            if (
                (method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"))
                or method == "Runtime.exceptionThrown"
                or (method == "Log.entryAdded" and params["entry"].get("level") == "error")
            ):
                out.append(e)
        return out

    def stderr(self) -> str:
        with contextlib.suppress(OSError):
            return self.stderr_path.read_text(errors="replace")[-4000:]
        return ""

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self.session is not None:
            await self.session.close()
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, 10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                await asyncio.to_thread(self.proc.wait, 10)


def _spawn(home: Path, profile: Path, flags: tuple[str, ...]) -> subprocess.Popen[bytes]:
    """Chromium with HOME=`home` (its NSS database) and its profile in `profile`; its stderr
    goes to `home/chromium.stderr`."""
    profile.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
    env.pop("SSL_CERT_FILE", None)
    env.pop("SSL_CERT_DIR", None)
    with (home / "chromium.stderr").open("wb") as stderr:
        return subprocess.Popen(
            [str(CHROMIUM), *flags, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=env,
            start_new_session=True,  # its own process group: close() ends its children
        )


def _devtools_port(port_file: Path) -> int | None:
    """The port Chromium wrote to its profile's DevToolsActivePort file, once complete."""
    try:
        lines = port_file.read_text().splitlines()
    except FileNotFoundError:
        return None
    return int(lines[0]) if len(lines) >= 2 else None
