"""devrouter.services.client: the name rule both ends of the channel share, the socket's
address, and what a command sees when no router answers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from devrouter.core.errors import EXIT_STARTUP, StartupError
from devrouter.services import client
from devrouter.services.client import (
    ControlError,
    RouterNotRunning,
    call,
    check_name,
    socket_address,
    socket_path,
    status,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("api", "api"),
        ("API", "api"),
        (" web.shop ", "web.shop"),
        ("web.shop.localhost", "web.shop"),
        ("api.localhost.", "api"),
        ("a-b.c-d", "a-b.c-d"),
        ("x" * 63, "x" * 63),
    ],
)
def test_check_name_accepts_dns_labels(raw, expected):
    assert check_name(raw) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (7, "a name must be text"),
        (None, "a name must be text"),
        ("", "is not a usable name"),
        ("*.api", "is not a usable name"),  # no wildcard registrations
        ("-api", "is not a usable name"),
        ("api-", "is not a usable name"),
        ("a..b", "is not a usable name"),
        ("a_b", "is not a usable name"),
        ("x" * 64, "is not a usable name"),
        (".".join(["x" * 50] * 5), "is not a usable name"),  # over 200 characters
        ("devrouter", "reserved for devrouter's own pages"),
        ("shop.devrouter", "reserved for devrouter's own pages"),
    ],
)
def test_check_name_refusals(raw, message):
    with pytest.raises(ControlError, match=message):
        check_name(raw)


def test_a_control_error_ends_a_command_as_a_startup_error():
    assert issubclass(RouterNotRunning, ControlError)
    assert issubclass(ControlError, StartupError)
    assert ControlError("x").exit_code == EXIT_STARTUP


def test_socket_address_is_the_path_when_it_fits(tmp_path):
    path = socket_path(tmp_path)
    assert path == tmp_path / client.SOCKET_NAME
    with socket_address(path) as address:
        assert address == str(path)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_socket_address_of_a_long_path_goes_through_its_directory(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = socket_path(deep)
    with socket_address(path) as address:
        assert len(address) < 100
        assert address.endswith("/" + client.SOCKET_NAME)
        assert os.path.samefile(os.path.dirname(address), deep)
    assert not os.path.exists(os.path.dirname(address))  # the descriptor is closed after


def test_no_router_means_router_not_running(tmp_path):
    with pytest.raises(RouterNotRunning):
        call(tmp_path, "status")
    assert status(tmp_path) is None
