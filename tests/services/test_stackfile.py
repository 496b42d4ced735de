"""devrouter.services.stackfile: the stack file (errors with file:line) and stack names."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from devrouter.config.schema import parse_config
from devrouter.core.errors import ConfigError
from devrouter.services.stackfile import (
    ServiceSpec,
    linked_worktree_branch,
    parse_stack,
    stack_name,
)

# --- the file -----------------------------------------------------------------------------


def test_the_issue_example_parses():
    text = (
        "stack: shop\n"
        "services:\n"
        '  api: {run: "uvicorn app:app --port $PORT"}\n'
        '  web: {run: "npm run dev", paths: {/api: api}}\n'
    )
    f = parse_stack(text, "devrouter.yaml")
    assert f.stack == "shop"
    assert f.services == (
        ServiceSpec("api", "uvicorn app:app --port $PORT"),
        ServiceSpec("web", "npm run dev", paths=(("/api", "api"),)),
    )


def test_every_service_key():
    text = (
        "services:\n"
        "  db: {run: [postgres, -p, $PORT], port: 5433}\n"
        "  docs: mkdocs serve\n"
        "  web:\n"
        "    run: vite\n"
        "    cwd: frontend\n"
        "    env: {NODE_ENV: development, DEBUG: 1}\n"
        "    paths: {/api: db, /raw: 9000}\n"
    )
    db, docs, web = parse_stack(text).services
    assert db == ServiceSpec("db", ("postgres", "-p", "$PORT"), port=5433)
    assert docs.run == "mkdocs serve"
    assert web.cwd == "frontend"
    assert web.env == (("NODE_ENV", "development"), ("DEBUG", "1"))
    assert web.paths == (("/api", "db"), ("/raw", 9000))


def test_the_router_accepts_a_file_with_a_stack_section():
    """`devrouter serve` reads the same devrouter.yaml and ignores the stack keys."""
    text = "routes:\n  legacy: 4001\nstack: shop\nservices:\n  api: {run: x}\n"
    config = parse_config(text, "devrouter.yaml", own_ports=())
    assert [r.name for r in config.routes] == ["legacy"]
    assert [s.name for s in parse_stack(text).services] == ["api"]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("services:\n  api: {run: x, prot: 1}\n", 2, "did you mean 'port'"),
        ("services:\n  api: {port: 4000}\n", 2, "needs a `run:` command"),
        ("services:\n  web: {run: x, paths: {/api: nope}}\n", 2, "unknown service 'nope'"),
        ("services:\n  Web_1: x\n", 2, "one DNS label"),
        ("services:\n  api: {run: x, port: 70000}\n", 2, "port number"),
        ("services:\n  api: {run: x, paths: {api: 1}}\n", 2, "must start with '/'"),
        ("services:\n  api: x\n  api: y\n", 3, "appears twice"),
        ("stack: a_b\nservices:\n  api: x\n", 1, "DNS name"),
        ("routes:\n  api: 4000\n", 1, "no `services:`"),
        ("services:\n  api: !!python/object/apply:os.system [id]\n", 2, "not allowed"),
        ("services: [\n", None, "invalid YAML"),
    ],
)
def test_errors_name_file_and_line(text, line, message):
    with pytest.raises(ConfigError) as err:
        parse_stack(text, "proj/devrouter.yaml")
    where = f"proj/devrouter.yaml:{line}:" if line else "proj/devrouter.yaml"
    assert str(err.value).startswith(where), str(err.value)
    assert message in str(err.value)


# --- names --------------------------------------------------------------------------------


def test_stack_name_defaults_to_the_directory(tmp_path):
    project = tmp_path / "My Shop"
    project.mkdir()
    assert stack_name(None, project) == "my-shop"
    assert stack_name("shop", project) == "shop"


def _git(*args: str, cwd: Path) -> None:
    subprocess.run(
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        timeout=30,
    )


@pytest.mark.skipif(
    subprocess.run(["git", "--version"], capture_output=True).returncode != 0, reason="git"
)
def test_a_linked_worktree_is_named_after_its_branch(tmp_path):
    main = tmp_path / "shop"
    main.mkdir()
    _git("init", "-q", "-b", "main", cwd=main)
    (main / "devrouter.yaml").write_text("services:\n  api: x\n")
    _git("add", ".", cwd=main)
    _git("commit", "-q", "-m", "x", cwd=main)
    _git("worktree", "add", "-q", "-b", "Feature/Cart", str(tmp_path / "wt"), cwd=main)
    assert linked_worktree_branch(main) is None
    assert stack_name(None, main) == "shop"
    assert linked_worktree_branch(tmp_path / "wt") == "Feature/Cart"
    assert stack_name(None, tmp_path / "wt") == "feature-cart"
    assert stack_name("shop", tmp_path / "wt") == "feature-cart.shop"
    (tmp_path / "wt" / "sub").mkdir()
    assert stack_name("shop", tmp_path / "wt" / "sub") == "feature-cart.shop"
