"""The stack file: the `stack:` and `services:` keys of a devrouter.yaml, for `devrouter up`
(`devrouter serve` reads the same file and ignores them), and the stack's name. Parsing is
pure: text in, a frozen `StackFile` out, every error a ConfigError naming file:line, through
the YAML walker the config file uses (devrouter.config.yamlwalk). Naming reads only a linked
git worktree's `.git` file, for the branch."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from yaml.nodes import Node, ScalarNode, SequenceNode

from ..config.yamlwalk import Walker, compose
from ..core.errors import ConfigError
from ..core.names import DOTTED_RE, LABEL_RE, to_label

STACK_FILE = "devrouter.yaml"
_SERVICE_KEYS = ("run", "port", "paths", "env", "cwd")
_PREFIX_RE = re.compile(r"^/[^\s?#]*\Z")
_VARIABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    name: str
    run: str | tuple[str, ...]  # a shell string, or argv
    port: int | None = None  # fixed; None: the stable assigned port
    paths: tuple[tuple[str, str | int], ...] = ()  # prefix -> sibling name or port
    env: tuple[tuple[str, str], ...] = ()
    cwd: str | None = None


@dataclass(frozen=True, slots=True)
class StackFile:
    source: str
    stack: str | None
    services: tuple[ServiceSpec, ...]


class _StackWalker(Walker):
    """The walker with the stack file's value rules."""

    def text(self, node: Node, what: str) -> str:
        value = self.scalar(node, what)
        if isinstance(value, bool) or value is None:
            raise self.error(node, f"{what} must be text")
        return str(value)

    def port(self, node: Node, what: str) -> int:
        value = self.scalar(node, what)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            raise self.error(node, f"{what} must be a port number (1-65535), got {value!r}")
        return value

    def service(self, name: str, node: Node) -> ServiceSpec:
        what = f"service '{name}'"
        self.check_tag(node, what)
        if isinstance(node, ScalarNode):
            return ServiceSpec(name, self.text(node, what))
        run: str | tuple[str, ...] | None = None
        port: int | None = None
        paths: list[tuple[str, str | int]] = []
        env: list[tuple[str, str]] = []
        cwd: str | None = None
        for key, _knode, vnode in self.mapping(node, what, _SERVICE_KEYS):
            if key == "run":
                self.check_tag(vnode, f"{what}: run")
                if isinstance(vnode, SequenceNode):
                    run = tuple(self.text(n, f"{what}: run") for n in vnode.value)
                    if not run:
                        raise self.error(vnode, f"{what}: run is empty")
                else:
                    run = self.text(vnode, f"{what}: run")
            elif key == "port":
                port = self.port(vnode, f"{what}: port")
            elif key == "paths":
                paths = self.paths(name, vnode)
            elif key == "env":
                for var, vk, vv in self.mapping(vnode, f"the env of '{name}'", None):
                    if not _VARIABLE_RE.match(var):
                        raise self.error(vk, f"{var!r} is not an environment variable name")
                    env.append((var, self.text(vv, f"env {var}")))
            else:
                cwd = self.text(vnode, f"{what}: cwd")
        if run is None:
            raise self.error(node, f"{what} needs a `run:` command")
        return ServiceSpec(name, run, port, tuple(paths), tuple(env), cwd)

    def paths(self, name: str, node: Node) -> list[tuple[str, str | int]]:
        out: list[tuple[str, str | int]] = []
        for prefix, pk, pv in self.mapping(node, f"the paths of '{name}'", None):
            if not _PREFIX_RE.match(prefix):
                raise self.error(pk, f"path prefix {prefix!r} must start with '/'")
            value = self.scalar(pv, f"path {prefix}")
            if isinstance(value, int) and not isinstance(value, bool):
                out.append((prefix, self.port(pv, f"path {prefix}")))
            elif isinstance(value, str):
                out.append((prefix, value.strip().lower()))
            else:
                raise self.error(pv, f"path {prefix} needs a service name or a port")
        return out


def parse_stack(text: str, source: str = STACK_FILE) -> StackFile:
    """The `stack:` and `services:` keys of a devrouter.yaml; other keys are `serve`'s."""
    root = compose(text, source)
    if root is None:
        raise ConfigError(source, None, "the file is empty; expected `services:`")
    w = _StackWalker(source)
    stack: str | None = None
    services_node: Node | None = None
    for key, _knode, vnode in w.mapping(root, "the top level", None):
        if key == "stack":
            stack = w.text(vnode, "stack").strip().lower()
            if not DOTTED_RE.match(stack):
                raise w.error(vnode, f"stack name {stack!r} must be a DNS name")
        elif key == "services":
            services_node = vnode
    if services_node is None:
        raise w.error(root, "no `services:` section")
    services: list[ServiceSpec] = []
    for name, knode, vnode in w.mapping(services_node, "services", None):
        if not LABEL_RE.match(name):
            raise w.error(knode, f"service name '{name}' must be one DNS label (a-z, 0-9, -)")
        services.append(w.service(name, vnode))
    if not services:
        raise w.error(services_node, "`services:` is empty")
    names = {s.name for s in services}
    for s in services:
        for prefix, target in s.paths:
            if isinstance(target, str) and target not in names:
                raise w.error(
                    services_node,
                    f"service '{s.name}': path {prefix} -> unknown "
                    f"service '{target}' (services: {', '.join(sorted(names))})",
                )
    return StackFile(source, stack, tuple(services))


def load_stack(path: Path) -> StackFile:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), None, "no such file (create one with `services:`)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), None, f"cannot read the file: {exc}") from None
    return parse_stack(text, str(path))


# --- naming -------------------------------------------------------------------------------


def dns_label(text: str) -> str:
    return to_label(text) or "stack"


def linked_worktree_branch(directory: Path) -> str | None:
    """The branch checked out in a linked git worktree containing `directory` (its
    directory name when detached), or None when this is not a linked worktree."""
    for d in (directory, *directory.parents):
        dot_git = d / ".git"
        if dot_git.is_dir():
            return None  # the main checkout
        if not dot_git.is_file():
            continue
        try:
            first = dot_git.read_text().strip().splitlines()[0]
        except (OSError, IndexError):
            return None
        if not first.startswith("gitdir:"):
            return None
        gitdir = Path(first[len("gitdir:") :].strip())
        if not gitdir.is_absolute():
            gitdir = (d / gitdir).resolve()
        if gitdir.parent.name != "worktrees":
            return None  # a submodule
        try:
            head = (gitdir / "HEAD").read_text().strip()
        except OSError:
            return d.name
        prefix = "ref: refs/heads/"
        return head[len(prefix) :] if head.startswith(prefix) else d.name
    return None


def stack_name(declared: str | None, directory: Path) -> str:
    branch = linked_worktree_branch(directory)
    if declared:
        return f"{dns_label(branch)}.{declared}" if branch else declared
    return dns_label(branch or directory.resolve().name)


def env_prefix(service: str) -> str:
    """`web-app` -> `WEB_APP` (for WEB_APP_URL, WEB_APP_INTERNAL_URL and WEB_APP_PORT)."""
    return re.sub(r"[^A-Z0-9]", "_", service.upper())
