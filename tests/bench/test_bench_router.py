"""bench's router glue: --compare-direct's backend, from the config file when no router
shows its table."""

from __future__ import annotations

from pathlib import Path

import pytest

from devrouter.bench import command, router
from devrouter.bench.target import parse_target
from devrouter.core.errors import StartupError

# No router, config or state of the machine running the tests (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("isolated_home")


def test_compare_direct_needs_a_route(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config_path = tmp_path / "devrouter.yaml"
    config_path.write_text("routes:\n  web: 3000\n")
    target = parse_target("api")
    with pytest.raises(StartupError, match=r"no route for api\.localhost"):
        router.direct_target(target, str(config_path))  # no live table: the config file
    assert command.main(["http://127.0.0.1:9/", "--compare-direct"]) == 2
    assert "needs a route" in capsys.readouterr().err
