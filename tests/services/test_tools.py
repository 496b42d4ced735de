"""devrouter.services.tools: which dev servers get port flags, and the argv that comes out.

Each row is a command as typed (argv in) and the command devrouter runs (argv out: the same
words plus the flags `tool_flags` adds); "already has a port" rows come out unchanged.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from devrouter.services.tools import shell_command, substitute, tool_flags

VITE = ["--port", "4100", "--strictPort", "--host", "127.0.0.1"]
PORT_HOST = ["--port", "4100", "--host", "127.0.0.1"]
NEXT = ["--port", "4100", "--hostname", "127.0.0.1"]
STORYBOOK = ["-p", "4100", "--host", "127.0.0.1"]


def run(argv: list[str], tmp_path) -> list[str]:
    """What `devrouter run NAME -- argv` starts (port 4100)."""
    return argv + tool_flags(argv, 4100, cwd=tmp_path)


@pytest.mark.parametrize(
    ("argv", "added"),
    [
        (["vite"], VITE),
        (["npx", "vite", "dev"], VITE),
        (["./node_modules/.bin/vite"], VITE),
        (["vite", "build"], []),
        (["vite", "--port", "5"], []),
        (["astro", "dev"], PORT_HOST),
        (["pnpm", "exec", "astro", "preview"], PORT_HOST),
        (["ng", "serve"], PORT_HOST),
        (["ng", "build"], []),
        (["nuxi", "dev"], PORT_HOST),
        (["uvicorn", "app:app"], PORT_HOST),
        (["python3", "-m", "uvicorn", "app:app", "--reload"], PORT_HOST),
        (["uvicorn", "app:app", "--port=9"], []),
        (["uvicorn"], PORT_HOST),
        (["python", "manage.py", "runserver"], ["127.0.0.1:4100"]),
        (["python", "manage.py", "runserver", "0:8000"], []),
        (["cross-env", "NODE_ENV=dev", "vite"], VITE),
        (["node", "server.js"], []),
        ([], []),
        # Flask: the subcommand after options that take a value; FLASK_RUN_PORT is a port given
        (["flask", "run"], PORT_HOST),
        (["flask", "--app", "app", "run"], PORT_HOST),
        (["flask", "--app", "app", "--debug", "run"], PORT_HOST),
        (["flask", "-A", "app:create_app()", "run", "--reload"], PORT_HOST),
        (["flask", "--app=app", "run"], PORT_HOST),
        (["python", "-m", "flask", "--app", "app", "run"], PORT_HOST),
        (["uv", "run", "flask", "--app", "app", "run"], PORT_HOST),
        (["flask", "--app", "app", "run", "--port", "5001"], []),
        (["flask", "--app", "app", "run", "-p", "5001"], []),
        (["FLASK_RUN_PORT=5001", "flask", "--app", "app", "run"], []),
        (["env", "FLASK_RUN_PORT=5001", "flask", "run"], []),
        (["flask", "--app", "app", "routes"], []),
        (["flask", "--app", "run"], []),  # an app named `run`, no subcommand
        # Expo: the port only (its --host takes lan/tunnel/localhost)
        (["expo", "start"], ["--port", "4100"]),
        (["npx", "expo", "start", "--clear"], ["--port", "4100"]),
        (["npx", "expo"], ["--port", "4100"]),  # `expo` alone is `expo start`
        (["expo", "start", "--port", "8082"], []),
        (["expo", "export"], []),
        # React Router: the binary, and the package as npx names it
        (["react-router", "dev"], VITE),
        (["npx", "@react-router/dev", "dev"], VITE),
        (["npx", "@react-router/dev@7.1.0", "dev"], VITE),
        (["react-router", "build"], []),
        (["react-router", "dev", "--port", "3000"], []),
        # Storybook
        (["storybook", "dev"], STORYBOOK),
        (["npx", "storybook@latest", "dev", "--no-open"], STORYBOOK),
        (["storybook", "dev", "-p", "6006"], []),
        (["storybook", "dev", "--port=6006"], []),
        (["storybook", "build"], []),
        (["start-storybook"], STORYBOOK),
        # Next.js
        (["next", "dev"], NEXT),
        (["next"], NEXT),  # `next` alone is `next dev`
        (["next", "dev", "--turbopack"], NEXT),
        (["next", "dev", "--turbo"], NEXT),
        (["next", "start"], NEXT),
        (["npx", "next", "dev"], NEXT),
        (["npx", "next@15", "dev", "--turbopack"], NEXT),
        (["bunx", "--bun", "next", "dev"], NEXT),
        (["pnpm", "exec", "next", "dev"], NEXT),
        (["pnpm", "next", "dev"], NEXT),  # no such script: pnpm runs the binary
        (["yarn", "next", "dev", "--turbopack"], NEXT),
        (["bun", "next", "dev"], NEXT),
        (["next", "dev", "-p", "3000"], []),
        (["next", "dev", "--port", "3000"], []),
        (["next", "dev", "--turbopack", "-p", "3000"], []),
        (["pnpm", "next", "dev", "-p", "3000"], []),
        (["next", "build"], []),
        (["next", "lint"], []),
    ],
)  # fmt: skip
def test_argv_in_argv_out(argv, added, tmp_path):
    assert run(argv, tmp_path) == argv + added


def test_through_package_scripts(tmp_path):
    (tmp_path / "package.json").write_text(
        json.dumps(
            {
                "scripts": {
                    "dev": "vite",
                    "both": "vite & tsc -w",
                    "start": "next start",
                    "next": "next dev --turbopack",
                    "web": "expo start",
                    "storybook": "storybook dev",
                    "api": "flask --app api run",
                }
            }
        )
    )
    assert run(["npm", "run", "dev"], tmp_path) == ["npm", "run", "dev", "--", *VITE]
    assert run(["pnpm", "dev"], tmp_path) == ["pnpm", "dev", *VITE]
    assert run(["yarn", "run", "dev"], tmp_path) == ["yarn", "run", "dev", *VITE]
    assert run(["bun", "run", "dev"], tmp_path) == ["bun", "run", "dev", *VITE]
    assert run(["npm", "start"], tmp_path) == ["npm", "start", "--", *NEXT]
    # A script named like the binary is the script (pnpm runs scripts first).
    assert run(["pnpm", "next"], tmp_path) == ["pnpm", "next", *NEXT]
    assert run(["npm", "run", "web"], tmp_path) == ["npm", "run", "web", "--", "--port", "4100"]
    assert run(["pnpm", "storybook"], tmp_path) == ["pnpm", "storybook", *STORYBOOK]
    assert run(["yarn", "api"], tmp_path) == ["yarn", "api", *PORT_HOST]
    for unchanged in (
        ["npm", "run", "both"],  # not one command
        ["npm", "run", "nosuch"],
        ["npm", "run", "dev", "--", "--port", "1"],
        ["npm", "next", "dev"],  # npm runs no binaries this way
        ["pnpm", "run", "vite"],  # `run` runs scripts only
    ):
        assert run(unchanged, tmp_path) == unchanged


def test_substitute():
    env = {
        "PORT": "5",
        "HOST": "127.0.0.1",
        "DEVROUTER_URL": "http://a.localhost:7355",
        "DEVROUTER_INTERNAL_URL": "http://127.0.0.1:5",
    }
    assert substitute(["--port", "$PORT", "${PORT}x", "$PORTS", "$HOST:$PORT"], env) == [
        "--port",
        "5",
        "5x",
        "$PORTS",
        "127.0.0.1:5",
    ]
    assert substitute(["$DEVROUTER_URL/cb"], env) == ["http://a.localhost:7355/cb"]
    assert substitute(["--api=${DEVROUTER_INTERNAL_URL}/v1"], env) == [
        "--api=http://127.0.0.1:5/v1"
    ]


@pytest.mark.parametrize(
    ("text", "argv"),
    [
        ("vite", ["/bin/sh", "-c", "exec vite " + " ".join(VITE)]),
        ("next dev --turbopack", ["/bin/sh", "-c", "exec next dev --turbopack " + " ".join(NEXT)]),
        ("NEXT_PUBLIC_API=$API_URL next dev",
         ["/bin/sh", "-c", "exec env NEXT_PUBLIC_API=$API_URL next dev " + " ".join(NEXT)]),
        ("npm run build && node server.js", ["/bin/sh", "-c", "npm run build && node server.js"]),
        ("echo 'unclosed", ["/bin/sh", "-c", "echo 'unclosed"]),
    ],
)  # fmt: skip
def test_shell_command(text, argv, tmp_path):
    assert shell_command(text, 4100, cwd=tmp_path) == argv


def test_a_stack_run_string_that_starts_with_an_assignment_runs(tmp_path):
    show = f"{sys.executable} -c 'import os; print(os.environ[\"GREETING\"])'"
    argv = shell_command(f"GREETING=$WHO {show}", 4100, cwd=tmp_path)
    env = {"WHO": "hello", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=10)
    assert (out.returncode, out.stdout.strip()) == (0, "hello"), out.stderr
