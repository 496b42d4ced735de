"""A real Vite dev server for the HTTPS end-to-end tests: installed once with npm into a cache
directory outside the repository, a tiny vanilla project in the test's tmp directory, and the
`vite` process with everything it prints kept in `lines`.

The install goes to $XDG_CACHE_HOME/devrouter-test-vite (or /tmp/devrouter-test-vite when
XDG_CACHE_HOME is unset, so the real ~/.cache is never written), one directory per version,
made under a temporary name and renamed when complete, so a broken install is never reused.
npm runs with its cache in that directory and HOME the test's. `install()` returns None and
a reason when npm is missing or the install fails (no network, no registry): the tests skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

#: The Vite the tests run, pinned so a run tests what was checked; DEVROUTER_TEST_VITE picks
#: another (`DEVROUTER_TEST_VITE=5.4.21 pytest -k vite`).
VITE_VERSION = os.environ.get("DEVROUTER_TEST_VITE", "8.4.1")
#: Upper bound for `npm install`, and for Vite to say it is ready, in seconds.
INSTALL_S = 240.0
START_S = 30.0

NPM = shutil.which("npm")
NODE = shutil.which("node")


#: Versions whose install failed in this run, with the reason.
_failed: dict[str, str] = {}


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME")
    return Path(base) / "devrouter-test-vite" if base else Path("/tmp/devrouter-test-vite")


def install(home: Path, version: str = VITE_VERSION) -> tuple[Path | None, str]:
    """Vite's bin/vite.js, installed if needed; else (None, why not)."""
    if NPM is None or NODE is None:
        return None, "npm and node are needed for the Vite test"
    if version in _failed:  # once per run is enough to know
        return None, _failed[version]
    target = cache_root() / f"vite-{version}"
    vite_js = target / "node_modules" / "vite" / "bin" / "vite.js"
    if vite_js.is_file():
        return vite_js, ""
    cache_root().mkdir(parents=True, exist_ok=True)
    tmp = cache_root() / f".vite-{version}.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    (tmp / "package.json").write_text('{"private": true}\n')
    env = {
        **os.environ,
        "HOME": str(home),
        "npm_config_cache": str(cache_root() / "npm-cache"),
        "npm_config_update_notifier": "false",
    }
    argv = [NPM, "install", "--no-audit", "--no-fund", "--loglevel=error", f"vite@{version}"]
    try:
        proc = subprocess.run(
            argv, cwd=tmp, env=env, capture_output=True, text=True, timeout=INSTALL_S
        )
    except subprocess.TimeoutExpired:
        shutil.rmtree(tmp, ignore_errors=True)
        _failed[version] = f"`npm install vite@{version}` took longer than {INSTALL_S:.0f}s"
        return None, _failed[version]
    if proc.returncode != 0 or not (tmp / "node_modules" / "vite" / "bin" / "vite.js").is_file():
        shutil.rmtree(tmp, ignore_errors=True)
        lines = (proc.stderr or proc.stdout).strip().splitlines() or ["no output"]
        said = [line for line in lines if "complete log" not in line][:2]
        _failed[version] = f"`npm install vite@{version}` failed: {' / '.join(said)}"
        return None, _failed[version]
    try:
        tmp.rename(target)
    except OSError:  # another run installed it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return (vite_js, "") if vite_js.is_file() else (None, f"no {vite_js} after the install")


INDEX_HTML = """<!doctype html>
<html>
  <head>
    <meta charset="utf-8">
    <link rel="icon" href="data:,">
    <title>vite through devrouter</title>
  </head>
  <body>
    <p id="out"></p>
    <script type="module" src="/main.js"></script>
  </body>
</html>
"""


def main_js(text: str) -> str:
    """A module that writes `text` into the page and accepts its own hot updates, so an edit
    is applied by re-running it, without a reload."""
    return (
        f'document.getElementById("out").textContent = {json.dumps(text)};\n'
        "if (import.meta.hot) import.meta.hot.accept();\n"
    )


def scaffold(root: Path, server: dict[str, object]) -> Path:
    """A vanilla project in `root`: index.html, main.js, and vite.config.mjs with `server`."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "index.html").write_text(INDEX_HTML)
    (root / "main.js").write_text(main_js("version 1"))
    config = {"clearScreen": False, "server": server}
    (root / "vite.config.mjs").write_text(f"export default {json.dumps(config, indent=2)};\n")
    return root


@dataclass
class Vite:
    """A running `vite` dev server; its output (stdout and stderr) line by line in `lines`."""

    proc: asyncio.subprocess.Process
    port: int
    lines: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    _reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, vite_js: Path, root: Path, port: int, home: Path) -> Vite:
        assert NODE is not None
        env = {**os.environ, "HOME": str(home), "NO_COLOR": "1", "FORCE_COLOR": "0"}
        proc = await asyncio.create_subprocess_exec(
            NODE, str(vite_js), "--port", str(port), "--strictPort", "--host", "127.0.0.1",
            cwd=root, env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() ends its children
        )  # fmt: skip
        vite = cls(proc, port)
        ready = asyncio.Event()
        vite._reader = asyncio.create_task(vite._read(ready))
        try:
            async with asyncio.timeout(START_S):
                await ready.wait()
        except BaseException:
            await vite.stop()
            raise
        return vite

    async def _read(self, ready: asyncio.Event) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            self.lines.append(line)
            if "ready in" in line:
                ready.set()
            if "hmr update" in line or "page reload" in line:
                self.changed.set()
        ready.set()  # it exited: the caller sees it

    @property
    def running(self) -> bool:
        return self.proc.returncode is None

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                async with asyncio.timeout(10):
                    await self.proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                await self.proc.wait()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
