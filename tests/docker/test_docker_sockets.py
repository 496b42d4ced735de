"""devrouter.docker.sockets: where the Engine is looked for, by a table of environments; and
that only a real unix socket is taken."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from devrouter.core.model import DockerSettings
from devrouter.docker.sockets import candidates, describe, find_socket

HOME = Path("/home/dev")
USUAL_WITHOUT_XDG = [
    "/var/run/docker.sock",
    "/home/dev/.docker/run/docker.sock",
    "/home/dev/.orbstack/run/docker.sock",
    "/home/dev/.colima/default/docker.sock",
    "/home/dev/.colima/docker.sock",
]


@pytest.mark.parametrize(
    ("settings", "env", "paths", "origin"),
    [
        (DockerSettings(), {}, USUAL_WITHOUT_XDG, ""),
        (
            DockerSettings(),
            {"XDG_RUNTIME_DIR": "/run/user/1000"},
            [*USUAL_WITHOUT_XDG, "/run/user/1000/docker.sock", "/run/user/1000/podman/podman.sock"],
            "",
        ),
        (DockerSettings(), {"DOCKER_HOST": "unix:///tmp/d.sock"}, ["/tmp/d.sock"], "DOCKER_HOST"),
        (DockerSettings(), {"DOCKER_HOST": "/tmp/d.sock"}, ["/tmp/d.sock"], "DOCKER_HOST"),
        (
            DockerSettings(socket="~/.orbstack/run/docker.sock"),
            {"DOCKER_HOST": "unix:///tmp/d.sock"},
            ["/home/dev/.orbstack/run/docker.sock"],
            "docker.socket in the config",
        ),
    ],
)
def test_candidates(
    settings: DockerSettings, env: dict[str, str], paths: list[str], origin: str
) -> None:
    found = candidates(settings, env, HOME)
    assert [str(p) for p in found.paths] == paths
    assert found.origin == origin and found.problem is None


def test_a_tcp_docker_host_is_named_not_guessed() -> None:
    found = candidates(DockerSettings(), {"DOCKER_HOST": "tcp://127.0.0.1:2375"}, HOME)
    assert found.paths == () and find_socket(found) is None
    assert found.problem is not None and "DOCKER_HOST=tcp://127.0.0.1:2375" in found.problem
    assert describe(found) == found.problem


def test_only_a_unix_socket_is_taken(tmp_path: Path) -> None:
    plain = tmp_path / "plain.sock"
    plain.write_text("not a socket")
    real = tmp_path / "real.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(real))
        env = {"DOCKER_HOST": f"unix://{plain}"}
        assert find_socket(candidates(DockerSettings(), env, HOME)) is None
        config = DockerSettings(socket=str(real))
        assert find_socket(candidates(config, {}, HOME)) == real
        assert (
            describe(candidates(config, {}, HOME)) == f"{real} (from docker.socket in the config)"
        )
