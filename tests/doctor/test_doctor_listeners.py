"""doctor.listeners: /proc/net/tcp{,6} parsed from sample text, then a real socket of this
process found with its pid; process names sanitised."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from devrouter.doctor import listeners

# --- pure: /proc parsing -------------------------------------------------------------------

PROC_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:0FA1 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 111 1
   1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 222 1
   2: 0100007F:BDD4 0100007F:D3AD 06 00000000:00000000 03:00000DC4 00000000     0        0 0 3
   3: 0501A8C0:0FA2 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 333 1
"""
PROC_TCP6 = """\
  sl  local_address                         remote_address                        st
   0: 00000000000000000000000001000000:0FA1 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 444 1
   1: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 555 1
"""  # noqa: E501


@pytest.mark.skipif(sys.byteorder != "little", reason="sample is little-endian /proc text")
def test_parse_proc_net_reads_listen_sockets_only() -> None:
    v4 = listeners.parse_proc_net(PROC_TCP, v6=False)
    assert [(x.host, x.port, x.uid, x.inode) for x in v4] == [
        ("127.0.0.1", 4001, 1000, 111),
        ("0.0.0.0", 8080, 0, 222),
        ("192.168.1.5", 4002, 1000, 333),
    ]
    v6 = listeners.parse_proc_net(PROC_TCP6, v6=True)
    assert [(x.host, x.port, x.inode) for x in v6] == [("::1", 4001, 444), ("::", 8080, 555)]
    assert [x.wildcard for x in v4] == [False, True, False]
    assert [x.loopback for x in v4] == [True, False, False]
    assert v6[0].where == "[::1]:4001"


def test_parse_proc_net_matches_a_real_socket(listening: Callable[[str], int]) -> None:
    port = listening("127.0.0.1")
    found = listeners.read_listeners()
    if found is None:
        pytest.skip("no /proc/net here")
    mine = [x for x in found if x.port == port]
    assert [x.host for x in mine] == ["127.0.0.1"]
    owned = listeners.with_owners(mine, 0)
    import os

    assert owned[0].pid == os.getpid()
    assert "pytest" in (owned[0].process or "") or "python" in (owned[0].process or "")


def test_unknown_owner_names_the_reason() -> None:
    assert listeners.unknown_owner(1000, 1001) == "unknown (another user's process)"
    assert "namespace" in listeners.unknown_owner(1000, 1000)


def test_cmdline_is_sanitised(tmp_path: Path) -> None:
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "cmdline").write_bytes(b"evil\0\x1b[31mred\nline\0" + b"x" * 500)
    text = listeners.process_cmdline(42, tmp_path)
    assert "\x1b" not in text and "\n" not in text
    assert text.startswith("evil [31mred line x")
    assert len(text) == listeners.MAX_CMDLINE_CHARS and text.endswith("...")
    assert listeners.process_cmdline(43, tmp_path) == "unknown (it has exited)"
