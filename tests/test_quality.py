"""The package stays ruff-clean and mypy --strict clean; both run as part of the test suite."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    "argv",
    [
        [sys.executable, "-m", "ruff", "check", "devrouter", "tests", "benchmarks"],
        [
            sys.executable,
            "-m",
            "ruff",
            "format",
            "--check",
            "--quiet",
            "devrouter",
            "tests",
            "benchmarks",
        ],
        [sys.executable, "-m", "mypy"],
    ],
    ids=["ruff", "ruff-format", "mypy"],
)
def test_static_checks(argv: list[str]) -> None:
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- the layout (docs/architecture.md) --------------------------------------------------------

PKG = ROOT / "devrouter"
#: No module is longer than this, in lines (docs/architecture.md: a module per idea).
MAX_MODULE_LINES = 600


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_imports(path: Path) -> set[str]:
    """The devrouter modules `path` imports when it is imported: module-level imports, not
    those under `if TYPE_CHECKING:` nor inside functions."""
    import ast

    tree = ast.parse(path.read_text())
    package = _module_name(path)  # what a relative import is relative to
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    out: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.If | ast.Try):
                for part in (node.body, node.orelse, *getattr(node, "handlers", [])):
                    visit(part if isinstance(part, list) else part.body)
            elif isinstance(node, ast.ImportFrom):
                base = package.split(".")
                if node.level:
                    base = base[: len(base) - node.level + 1]
                    mod = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    mod = node.module or ""
                if not mod.startswith("devrouter"):
                    continue
                for alias in node.names:  # `from . import x` may name a module
                    sub = f"{mod}.{alias.name}"
                    out.add(sub if _is_module(sub) else mod)
            elif isinstance(node, ast.Import):
                out.update(a.name for a in node.names if a.name.startswith("devrouter"))

    visit(tree.body)
    return out


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def test_no_import_cycle() -> None:
    graph = {_module_name(p): _runtime_imports(p) for p in PKG.rglob("*.py")}
    done: set[str] = set()

    def walk(mod: str, trail: list[str]) -> None:
        if mod in trail:
            cycle = [*trail[trail.index(mod) :], mod]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if mod in done:
            return
        for dep in sorted(graph.get(mod, ())):
            if dep != mod and not mod.startswith(dep + "."):  # a package's own __init__
                walk(dep, [*trail, mod])
        done.add(mod)

    for mod in sorted(graph):
        walk(mod, [])


def test_no_module_is_too_long() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in PKG.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_the_architecture_map_names_every_package_and_module() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text()
    missing = []
    for p in PKG.rglob("*.py"):
        rel = p.relative_to(PKG)
        if p.name in ("__init__.py", "__main__.py"):
            if len(rel.parts) > 1 and f"{rel.parts[0]}/" not in doc:
                missing.append(str(rel.parent))
        elif p.stem not in doc:
            missing.append(str(rel))
    assert not missing, f"docs/architecture.md does not name: {sorted(set(missing))}"
