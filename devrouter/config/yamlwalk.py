"""A YAML walker with file:line errors, for every file devrouter reads (the config, a stack
file).

Theory of operation: the text is *composed* into a YAML node tree with PyYAML's SafeLoader
(so no Python object tag is ever constructed) and the tree is walked by hand instead of being
turned into dicts by `safe_load`. The walk keeps every node's line number for error messages,
and it sees duplicate keys, which `safe_load` silently merges. The walk only descends into the
shapes a schema allows, so an alias bomb is rejected as a wrong type before it is expanded.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode

from ..core.errors import ConfigError

SAFE_TAGS = frozenset(
    "tag:yaml.org,2002:" + t for t in ("str", "int", "float", "bool", "null", "map", "seq")
)


def compose(text: str, source: str) -> Node | None:
    """The YAML node tree of `text`; a ConfigError with the line for bad YAML."""
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        msg = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        raise ConfigError(source, line, f"invalid YAML: {msg}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, None, f"invalid YAML: {exc}") from None


def is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:null"


class Walker:
    """Walks one file's node tree; every error names the file, the line and the route."""

    def __init__(self, source: str):
        self.source = source
        self._constructor = yaml.constructor.SafeConstructor()

    def error(self, node: Node | None, message: str, route: str | None = None) -> ConfigError:
        line = node.start_mark.line + 1 if node is not None else None
        return ConfigError(self.source, line, message, route)

    def check_tag(self, node: Node, what: str, route: str | None = None) -> None:
        """Only plain YAML types: a `!!python/...` tag is refused before anything is built."""
        if node.tag not in SAFE_TAGS:
            raise self.error(node, f"{what}: the YAML tag {node.tag!r} is not allowed", route)

    def scalar(self, node: Node, what: str, route: str | None = None) -> object:
        if not isinstance(node, ScalarNode):
            raise self.error(node, f"{what} must be a single value, not a list or mapping", route)
        if node.tag not in SAFE_TAGS:
            raise self.error(node, f"{what}: the YAML tag {node.tag!r} is not allowed", route)
        return self._constructor.construct_object(node)

    def mapping(
        self, node: Node, what: str, allowed: Iterable[str] | None, route: str | None = None
    ) -> Iterator[tuple[str, Node, Node]]:
        """Yield (key, key node, value node), rejecting duplicates and unknown keys."""
        if not isinstance(node, MappingNode) or node.tag not in SAFE_TAGS:
            raise self.error(node, f"{what} must be a mapping (key: value lines)", route)
        allowed = tuple(allowed) if allowed is not None else None
        seen: dict[str, int] = {}
        for knode, vnode in node.value:
            key = self.scalar(knode, "a key", route)
            if not isinstance(key, str | int):
                raise self.error(knode, f"key {key!r} in {what} must be text", route)
            key = str(key)
            if allowed is not None and key not in allowed:
                hint = difflib.get_close_matches(key, allowed, n=1)
                expected = ", ".join(allowed)
                more = f"; did you mean '{hint[0]}'?" if hint else f"; expected {expected}"
                raise self.error(knode, f"unknown key '{key}' in {what}{more}", route)
            if key in seen:
                if what == "routes":
                    raise self.error(knode, f"duplicate route (also on line {seen[key]})", key)
                raise self.error(
                    knode, f"'{key}' appears twice in {what} (first on line {seen[key]})", route
                )
            seen[key] = knode.start_mark.line + 1
            yield key, knode, vnode
