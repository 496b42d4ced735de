"""The Docker lines of `devrouter ls` (devrouter.services.commands.format_docker/format_routes)."""

from __future__ import annotations

from devrouter.services.commands import format_docker, format_routes


def test_nothing_on_a_machine_without_docker() -> None:
    assert format_docker(None) == ""
    assert format_docker({"state": "starting"}) == ""
    assert format_docker({"state": "absent", "detail": "no Docker Engine socket at /x"}) == ""


def test_an_unreachable_engine_and_containers_without_a_route_are_said() -> None:
    down = {"state": "unreachable", "detail": "the Engine is not reachable at /x: refused"}
    assert format_docker(down) == "docker: the Engine is not reachable at /x: refused"
    up = {
        "state": "connected",
        "socket": "/var/run/docker.sock",
        "containers": [
            {"name": "shop_api_1", "reason": None},
            {"name": "shop_db_1", "reason": "publishes no port"},
        ],
    }
    assert format_docker(up).splitlines() == [
        "docker: watching the Engine at /var/run/docker.sock",
        "  container shop_db_1 has no route: it publishes no port",
    ]


def test_a_compose_project_is_grouped_apart_from_a_stack_of_the_same_name() -> None:
    def route(name: str, port: int, container: dict[str, str] | None) -> dict[str, object]:
        return {
            "url": f"http://{name}.localhost:7355/",
            "port": port,
            "source": "docker" if container else "stack",
            "owner_pid": None if container else 42,
            "stack": "shop",
            "listening": True,
            "container": container,
        }

    box = {"name": "shop_api_1", "image": "local/busybox", "health": "healthy"}
    text = format_routes(
        [route("api.shop", 32001, box), route("web.shop", 5173, None)], [], {"url": "x"}
    )
    lines = text.splitlines()
    assert lines[1] == "compose shop:"
    assert "listening (container shop_api_1, local/busybox, healthy)" in lines[2]
    assert lines[3] == "stack shop:"
