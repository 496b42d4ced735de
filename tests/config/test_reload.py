"""devrouter.config.reload and devrouter.core.state: finding, reading and hot-reloading the
config file.

Real files in tmp_path, the real watchfiles watcher, and (where requests matter) the
in-process router. Every wait is a bounded poll of the state; nothing asserts a duration.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from devrouter.config.reload import MAX_CONFIG_BYTES, Reloader, find_config, read_config
from devrouter.config.schema import parse_config
from devrouter.core.errors import ConfigError
from devrouter.core.model import Config
from devrouter.core.state import Snapshot, State

#: Upper bound for any one wait on the watcher, in seconds.
WAIT_S = 5.0


async def eventually(cond: Callable[[], bool], timeout_s: float = WAIT_S) -> bool:
    """Poll `cond` until it holds or `timeout_s` passes; returns its last value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not cond():
        if loop.time() >= deadline:
            return cond()
        await asyncio.sleep(0.02)
    return True


def routes_text(**ports: int) -> str:
    return "routes:\n" + "".join(f"  {name}: {port}\n" for name, port in ports.items())


def table_ports(state: State) -> dict[str, int]:
    return {r.name: r.upstream.port for r in state.snapshot.table.routes}


def _put(path: Path, text: str) -> None:
    path.write_text(text)


async def prime(state: State, path: Path, text: str) -> None:
    """Write `text` until the watcher has applied it from `path`.

    A write made before the watch is armed is not seen, and the reloader does not load the
    file when it starts, so the first write is repeated until it lands. After this, the watch
    is known to be live and every later edit in a test is made exactly once.
    """
    source = str(path)
    await asyncio.sleep(0.01)  # let a just-created reloader task arm its watch
    for _ in range(10):
        _put(path, text)
        if await eventually(lambda: state.snapshot.config.source == source, 0.5):
            return
    raise AssertionError(f"the watcher never picked up {path}; last error {state.last_error}")


@dataclass
class Watched:
    path: Path
    state: State
    reloader: Reloader

    def ports(self) -> dict[str, int]:
        return table_ports(self.state)

    async def becomes(self, **ports: int) -> None:
        ok = await eventually(lambda: self.ports() == ports)
        assert ok, f"table is {self.ports()}, wanted {ports}; last error {self.state.last_error}"
        assert self.state.last_error is None

    async def fails(self, before: Snapshot) -> str:
        """Wait for the reload error, then check the last good table is still in force."""
        ok = await eventually(lambda: self.state.last_error is not None)
        assert ok, f"no error reported; table is {self.ports()}"
        assert self.state.snapshot is before
        error = self.state.last_error
        assert error is not None
        return error


WatchFactory = Callable[..., Awaitable[Watched]]


@pytest.fixture
async def watch(tmp_path: Path) -> AsyncIterator[WatchFactory]:
    """`w = await watch(text)` runs a Reloader on a real file and waits until it is live."""
    running: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    async def start(
        text: str, path: Path | None = None, own_ports: tuple[int, ...] = (7355,)
    ) -> Watched:
        path = path if path is not None else tmp_path / "devrouter.yaml"
        state = State(Config())
        reloader = Reloader(state, path, own_ports)
        stop = asyncio.Event()
        running.append((stop, asyncio.create_task(reloader.run(stop))))
        await prime(state, path, text)
        return Watched(path, state, reloader)

    yield start
    for stop, _task in running:
        stop.set()
    for _stop, task in running:
        await asyncio.wait_for(task, WAIT_S)


# --- backends ---------------------------------------------------------------------------


def text_app(body: str) -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=body)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


async def fetch(session: aiohttp.ClientSession, port: int, name: str = "api") -> tuple[int, str]:
    async with session.get(
        f"http://127.0.0.1:{port}/", headers={"Host": f"{name}.localhost"}
    ) as resp:
        return resp.status, await resp.text()


# --- hot reload through the in-process router ----------------------------------------------


async def test_edit_swaps_table_and_requests_follow(
    tmp_path: Path, backend: Callable[..., Awaitable[int]], router: Callable[..., Awaitable]
) -> None:
    port_a = await backend(text_app("from A"))
    port_b = await backend(text_app("from B"))
    path = tmp_path / "devrouter.yaml"
    path.write_text(routes_text(api=port_a))
    r = await router(
        parse_config(routes_text(api=port_a), "<initial>", own_ports=()), config_path=path
    )
    await prime(r.state, path, routes_text(api=port_a))

    async with aiohttp.ClientSession() as s:
        assert await fetch(s, r.port) == (200, "from A")
        gen = r.state.snapshot.generation

        # a valid edit: the new table is swapped in and requests reach the new backend
        path.write_text(routes_text(api=port_b, web=port_a))
        assert await eventually(lambda: table_ports(r.state) == {"api": port_b, "web": port_a})
        assert r.state.snapshot.generation > gen
        assert r.state.last_error is None
        assert await fetch(s, r.port) == (200, "from B")
        assert await fetch(s, r.port, "web") == (200, "from A")

        # a broken edit: the error is recorded and the last good table keeps serving
        good = r.state.snapshot
        path.write_text("routes:\n  api: [\n")
        assert await eventually(lambda: r.state.last_error is not None)
        assert str(path) in (r.state.last_error or "")
        assert r.state.snapshot is good
        assert await fetch(s, r.port) == (200, "from B")

        # a route into the router itself (its real, bound port) is refused on reload too
        path.write_text(routes_text(api=r.port))
        assert await eventually(lambda: str(r.port) in (r.state.last_error or ""))
        assert r.state.snapshot is good
        assert await fetch(s, r.port) == (200, "from B")

        # fixing the file applies it
        path.write_text(routes_text(api=port_a))
        assert await eventually(lambda: table_ports(r.state) == {"api": port_a})
        assert r.state.last_error is None
        assert await fetch(s, r.port) == (200, "from A")
        status, _ = await fetch(s, r.port, "web")
        assert status == 404


async def test_reload_does_not_cut_an_inflight_stream(
    tmp_path: Path, backend: Callable[..., Awaitable[int]], router: Callable[..., Awaitable]
) -> None:
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_type = "text/plain"
        await resp.prepare(request)
        await resp.write(b"first\n")
        await asyncio.wait_for(release.wait(), 20)
        for i in range(20):
            await resp.write(b"chunk %d\n" % i)
            await asyncio.sleep(0.005)
        await resp.write_eof()
        return resp

    slow_app = web.Application()
    slow_app.router.add_get("/", slow)
    port_a = await backend(slow_app)
    port_b = await backend(text_app("from B"))
    path = tmp_path / "devrouter.yaml"
    path.write_text(routes_text(api=port_a))
    r = await router(
        parse_config(routes_text(api=port_a), "<initial>", own_ports=()), config_path=path
    )
    await prime(r.state, path, routes_text(api=port_a))

    async with aiohttp.ClientSession() as s:
        async with s.get(r.url("api"), headers={"Host": "api.localhost"}) as resp:
            assert resp.status == 200
            first = await asyncio.wait_for(resp.content.readline(), 10)
            assert first == b"first\n"

            # reload mid-stream, to a table where the name goes somewhere else entirely
            path.write_text(routes_text(api=port_b))
            assert await eventually(lambda: table_ports(r.state) == {"api": port_b})
            assert await fetch(s, r.port) == (200, "from B")  # new requests: new table

            release.set()
            rest = await asyncio.wait_for(resp.content.read(), 10)
        expected = b"".join(b"chunk %d\n" % i for i in range(20))
        assert rest == expected


async def test_reload_does_not_cut_an_open_websocket(
    tmp_path: Path, backend: Callable[..., Awaitable[int]], router: Callable[..., Awaitable]
) -> None:
    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str("echo " + msg.data)
        return ws

    ws_app = web.Application()
    ws_app.router.add_get("/ws", echo)
    port_a = await backend(ws_app)
    port_b = await backend(text_app("from B"))
    path = tmp_path / "devrouter.yaml"
    path.write_text(routes_text(api=port_a))
    r = await router(
        parse_config(routes_text(api=port_a), "<initial>", own_ports=()), config_path=path
    )
    await prime(r.state, path, routes_text(api=port_a))

    url = f"http://127.0.0.1:{r.port}/ws"
    async with (
        aiohttp.ClientSession() as s,
        s.ws_connect(url, headers={"Host": "api.localhost"}) as ws,
    ):
        await ws.send_str("one")
        assert (await asyncio.wait_for(ws.receive_str(), 10)) == "echo one"
        path.write_text(routes_text(api=port_b))
        assert await eventually(lambda: table_ports(r.state) == {"api": port_b})
        await ws.send_str("two")
        assert (await asyncio.wait_for(ws.receive_str(), 10)) == "echo two"
        assert not ws.closed


# --- bad files keep the last good table -------------------------------------------------


def _write(text: str) -> Callable[[Path], None]:
    return lambda path: path.write_text(text)


def _delete(path: Path) -> None:
    path.unlink()


def _make_directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _not_utf8(path: Path) -> None:
    path.write_bytes(b"routes:\n  api: 4001\n  caf\xe9: 4002\n")


def _too_large(path: Path) -> None:
    path.write_text(routes_text(api=4001) + "#" * (MAX_CONFIG_BYTES + 10) + "\n")


BREAKS = {
    "yaml-error": _write("routes:\n  api: 4001\n   web: [\n"),
    "bad-port": _write(routes_text(api=70000)),
    "port-abc": _write("routes:\n  api: abc\n"),
    "empty": _write(""),
    "non-loopback": _write("routes:\n  api: http://10.0.0.1:80\n"),
    "duplicate": _write("routes:\n  api: 4001\n  API: 4002\n"),
    "self-route": _write(routes_text(api=7355)),
    "unsafe-yaml": _write('routes:\n  api: !!python/object/apply:os.system ["id"]\n'),
    "deleted": _delete,
    "directory": _make_directory,
    "not-utf8": _not_utf8,
    "too-large": _too_large,
}


@pytest.mark.parametrize("breaking", BREAKS.values(), ids=BREAKS.keys())
async def test_bad_file_keeps_last_good_table_until_fixed(
    watch: WatchFactory, breaking: Callable[[Path], None]
) -> None:
    w = await watch(routes_text(api=4001, web=4002))
    assert w.ports() == {"api": 4001, "web": 4002}
    before = w.state.snapshot

    breaking(w.path)
    error = await w.fails(before)
    assert str(w.path) in error
    assert w.ports() == {"api": 4001, "web": 4002}

    if w.path.is_dir():
        w.path.rmdir()
    w.path.write_text(routes_text(api=4011))
    await w.becomes(api=4011)
    assert w.state.snapshot.generation == before.generation + 1


async def test_each_distinct_problem_is_reported(watch: WatchFactory) -> None:
    w = await watch(routes_text(api=4001))
    before = w.state.snapshot
    w.path.write_text("routes:\n  api: [\n")
    first = await w.fails(before)
    w.path.write_text(routes_text(api=70000))
    assert await eventually(lambda: w.state.last_error not in (None, first))
    assert "70000" in (w.state.last_error or "")
    assert w.state.snapshot is before


# --- editor save patterns -------------------------------------------------------------------


def _save_replace(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _save_vim(path: Path, text: str) -> None:
    backup = path.with_name(path.name + "~")
    os.rename(path, backup)
    path.write_text(text)
    backup.unlink()


def _save_delete_recreate(path: Path, text: str) -> None:
    path.unlink()
    path.write_text(text)


def _save_in_place(path: Path, text: str) -> None:
    with open(path, "r+") as f:
        f.truncate(0)
        f.flush()
        os.fsync(f.fileno())
        f.write(text)


SAVES = {
    "rename-over": _save_replace,
    "vim-backup": _save_vim,
    "delete-recreate": _save_delete_recreate,
    "truncate-write": _save_in_place,
}


@pytest.mark.parametrize("save", SAVES.values(), ids=SAVES.keys())
async def test_editor_saves_are_picked_up(
    watch: WatchFactory, save: Callable[[Path, str], None]
) -> None:
    w = await watch(routes_text(api=4001))
    save(w.path, routes_text(api=4002, web=4003))
    await w.becomes(api=4002, web=4003)
    # and the watch survives the save: a second one is seen too
    save(w.path, routes_text(api=4004))
    await w.becomes(api=4004)


async def test_delete_then_recreate_later(watch: WatchFactory) -> None:
    w = await watch(routes_text(api=4001))
    before = w.state.snapshot
    w.path.unlink()
    assert "does not exist" in await w.fails(before)
    w.path.write_text(routes_text(api=4002))
    await w.becomes(api=4002)


async def test_burst_of_writes_ends_with_the_last_valid_file(watch: WatchFactory) -> None:
    w = await watch(routes_text(api=4001))
    for i in range(100):
        if i % 10 == 3:
            w.path.write_text("routes:\n  api: [\n")  # broken states mid-burst
        elif i % 10 == 6:
            w.path.write_text("")
        elif i % 2:
            _save_replace(w.path, routes_text(api=5000 + i))
        else:
            w.path.write_text(routes_text(api=5000 + i))
        if i % 5 == 0:
            await asyncio.sleep(0.001)
    await w.becomes(api=5099)
    assert w.reloader.reloads >= 1


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can read a mode-000 file"
)
async def test_unreadable_file_keeps_table(watch: WatchFactory) -> None:
    w = await watch(routes_text(api=4001))
    before = w.state.snapshot
    tmp = w.path.with_name(".unreadable.tmp")
    tmp.write_text(routes_text(api=4002))
    tmp.chmod(0)
    os.replace(tmp, w.path)
    error = await w.fails(before)
    assert "permission" in error.lower()
    w.path.chmod(0o644)
    _save_replace(w.path, routes_text(api=4003))
    await w.becomes(api=4003)


async def test_symlinked_config_follows_its_target_and_a_repointed_link(
    tmp_path: Path, watch: WatchFactory
) -> None:
    conf = tmp_path / "project"
    store = tmp_path / "dotfiles"
    conf.mkdir()
    store.mkdir()
    v1 = store / "v1.yaml"
    v2 = store / "v2.yaml"
    v1.write_text(routes_text(api=4001))
    v2.write_text(routes_text(api=4002))
    link = conf / "devrouter.yaml"
    link.symlink_to(v1)

    w = await watch(routes_text(api=4001), path=link)  # writes through the link, into v1

    # an edit of the target, in its own directory
    v1.write_text(routes_text(api=4011))
    await w.becomes(api=4011)

    # repoint the link atomically, the way `ln -sfn` and dotfile managers do
    new_link = conf / ".devrouter.yaml.new"
    new_link.symlink_to(v2)
    os.replace(new_link, link)
    await w.becomes(api=4002)

    # the new target is watched now
    v2.write_text(routes_text(api=4022))
    await w.becomes(api=4022)


# --- Reloader.apply and State, without the watcher ---------------------------------------


def test_apply_swaps_only_valid_and_different_configs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="devrouter")
    path = tmp_path / "devrouter.yaml"
    path.write_text(routes_text(api=4001))
    state = State(Config())
    first = state.snapshot
    assert first.generation == 1
    assert first.table.routes == ()
    reloader = Reloader(state, path, own_ports=(7355,))

    assert reloader.apply() is True
    assert state.snapshot is not first
    assert state.snapshot.generation == 2
    assert table_ports(state) == {"api": 4001}
    assert state.snapshot.config.source == str(path)

    # the same content again: nothing to swap
    good = state.snapshot
    path.write_text(routes_text(api=4001))
    assert reloader.apply() is False
    assert state.snapshot is good

    # a bad file: one error line per distinct problem, table kept
    caplog.clear()
    path.write_text(routes_text(api=70000))
    assert reloader.apply() is False
    assert reloader.apply() is False
    errors = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert f"{path}:2" in errors[0].getMessage()
    assert state.last_error is not None and "70000" in state.last_error
    assert state.snapshot is good

    # back to the same good content: error cleared, nothing swapped
    path.write_text(routes_text(api=4001))
    assert reloader.apply() is False
    assert state.last_error is None
    assert state.snapshot is good

    # a real change is swapped in whole
    path.write_text(routes_text(api=4002, web=4003))
    assert reloader.apply() is True
    assert state.snapshot.generation == 3
    assert table_ports(state) == {"api": 4002, "web": 4003}
    assert reloader.reloads == 2


def test_apply_uses_the_routers_own_ports(tmp_path: Path) -> None:
    path = tmp_path / "devrouter.yaml"
    path.write_text(routes_text(api=9000))
    state = State(Config())
    assert Reloader(state, path, own_ports=(9000,)).apply() is False
    assert state.last_error is not None and "9000" in state.last_error
    assert Reloader(state, path, own_ports=(7355,)).apply() is True
    assert table_ports(state) == {"api": 9000}


def test_listen_change_is_applied_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="devrouter")
    path = tmp_path / "devrouter.yaml"
    path.write_text("listen: 8000\n" + routes_text(api=4001))
    state = State(Config())
    assert Reloader(state, path, own_ports=(7355,)).apply() is True
    assert table_ports(state) == {"api": 4001}
    assert any(
        rec.levelno == logging.WARNING and "listen" in rec.getMessage() for rec in caplog.records
    )


def test_state_swap_builds_a_new_snapshot() -> None:
    one = parse_config(routes_text(api=4001), "a.yaml", own_ports=())
    two = parse_config(routes_text(web=4002), "b.yaml", own_ports=())
    state = State(one)
    old = state.snapshot
    state.last_error = "something"
    new = state.swap(two)
    assert state.snapshot is new
    assert new.generation == old.generation + 1
    assert new.config is two
    assert [r.name for r in new.table.routes] == ["web"]
    assert state.last_error is None
    # the old snapshot is untouched: a request holding it still routes by it
    assert old.config is one
    assert old.table.lookup("api") is not None
    assert old.table.lookup("web") is None


# --- read_config ------------------------------------------------------------------------


def test_read_config_parses_and_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "devrouter.yaml"
    path.write_text(routes_text(api=4001))
    config = read_config(path)
    assert config.source == str(path)
    assert config.routes[0].upstream.port == 4001


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.mkdir(), "directory"),
        (lambda p: p.write_bytes(b"routes:\n  \xff\xfe: 1\n"), "UTF-8"),
        (lambda p: p.write_text("#" * (MAX_CONFIG_BYTES + 1)), "larger"),
        (lambda p: p.write_text(""), "empty"),
        (lambda p: p.write_text("routes:\n  api: 0\n"), ":2: route 'api'"),
    ],
    ids=["missing", "directory", "not-utf8", "too-large", "empty", "invalid"],
)
def test_read_config_errors_name_the_file(
    tmp_path: Path, make: Callable[[Path], object], words: str
) -> None:
    path = tmp_path / "devrouter.yaml"
    make(path)
    with pytest.raises(ConfigError) as info:
        read_config(path)
    assert str(info.value).startswith(str(path))
    assert words in str(info.value)


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can read a mode-000 file"
)
def test_read_config_permission_denied(tmp_path: Path) -> None:
    path = tmp_path / "devrouter.yaml"
    path.write_text(routes_text(api=4001))
    path.chmod(0)
    with pytest.raises(ConfigError) as info:
        read_config(path)
    assert str(path) in str(info.value)
    assert "permission" in str(info.value).lower()


# --- find_config ------------------------------------------------------------------------


@pytest.fixture
def places(tmp_path: Path) -> dict[str, Path]:
    cwd = tmp_path / "cwd"
    home = tmp_path / "home"
    xdg = tmp_path / "xdg"
    for d in (cwd, home, xdg):
        d.mkdir()
    return {"cwd": cwd, "home": home, "xdg": xdg, "env": tmp_path / "env.yaml"}


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(routes_text(api=4001))
    return path


def test_find_config_lookup_order(places: dict[str, Path]) -> None:
    cwd, home, xdg = places["cwd"], places["home"], places["xdg"]
    env = {"HOME": str(home), "XDG_CONFIG_HOME": str(xdg)}

    # nothing anywhere
    assert find_config(None, env, cwd) is None

    # $XDG_CONFIG_HOME/devrouter/config.yaml
    user = _touch(xdg / "devrouter" / "config.yaml")
    assert find_config(None, env, cwd) == user

    # ./devrouter.yaml beats it
    local = _touch(cwd / "devrouter.yaml")
    assert find_config(None, env, cwd) == local

    # $DEVROUTER_CONFIG beats both, even before the file exists (so the error can say so)
    assert find_config(None, {**env, "DEVROUTER_CONFIG": str(places["env"])}, cwd) == places["env"]
    # an empty variable counts as unset
    assert find_config(None, {**env, "DEVROUTER_CONFIG": ""}, cwd) == local

    # --config beats everything
    explicit = cwd / "other.yaml"
    assert (
        find_config(str(explicit), {**env, "DEVROUTER_CONFIG": str(places["env"])}, cwd) == explicit
    )


def test_find_config_defaults_xdg_to_home_dot_config(places: dict[str, Path]) -> None:
    cwd, home = places["cwd"], places["home"]
    env = {"HOME": str(home)}
    assert find_config(None, env, cwd) is None
    user = _touch(home / ".config" / "devrouter" / "config.yaml")
    assert find_config(None, env, cwd) == user
    # an empty XDG_CONFIG_HOME means the default, too
    assert find_config(None, {**env, "XDG_CONFIG_HOME": ""}, cwd) == user
    # a set XDG_CONFIG_HOME replaces ~/.config
    assert find_config(None, {**env, "XDG_CONFIG_HOME": str(places["xdg"])}, cwd) is None


def test_find_config_ignores_a_directory_named_like_the_file(places: dict[str, Path]) -> None:
    cwd, xdg = places["cwd"], places["xdg"]
    (cwd / "devrouter.yaml").mkdir()
    (xdg / "devrouter" / "config.yaml").mkdir(parents=True)
    assert find_config(None, {"XDG_CONFIG_HOME": str(xdg)}, cwd) is None
