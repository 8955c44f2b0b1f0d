"""A ``World`` as JSON and back, so a random world that disagrees can be replayed from a file.

The rulesets use the rule model's JSON (:mod:`meshsolve.iptables.jsonio`); the world's own values
(apps, sockets, proxy, services, routing, address sets) are objects with a ``"type"`` key and their fields.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from meshsolve.errors import ParseError
from meshsolve.iptables import from_json, json_key, to_jsonable
from meshsolve.model.routing import Route, Routing, RoutingRule
from meshsolve.model.rules import Rulesets
from meshsolve.model.world import App, Endpoint, IpSet, ProxyBehavior, Service, Socket, World

__all__ = ["dump_world", "load_world", "world_from_json"]

_CLASSES: dict[str, type] = {c.__name__: c for c in (App, Endpoint, IpSet, ProxyBehavior, Route, Routing,
                                                     RoutingRule, Service, Socket, World)}


def dump_world(world: World) -> str:
    """JSON text for ``world`` (stable keys)."""
    return json.dumps(to_jsonable(world), indent=1)


def _decode(data: Any) -> Any:
    if isinstance(data, list):
        return tuple(_decode(v) for v in data)
    if not isinstance(data, dict):
        return data
    name = data.get("type")
    if name == "Rulesets":
        return from_json(json.dumps(data))
    cls = _CLASSES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ParseError(f"unknown or missing \"type\" in world JSON: {name!r}", source="<json>")
    kwargs = {f.name: _decode(data[json_key(f.name)]) for f in attrs.fields(cls) if json_key(f.name) in data}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ParseError(f"bad JSON for {name}: {exc}", source="<json>") from None


def world_from_json(text: str) -> World:
    """The ``World`` that :func:`dump_world` wrote."""
    try:
        value = _decode(json.loads(text))
    except json.JSONDecodeError as exc:
        raise ParseError(f"not JSON: {exc.msg}", source="<json>", lineno=exc.lineno) from None
    if not isinstance(value, World):
        raise ParseError("JSON does not describe a World", source="<json>")
    assert isinstance(value.rules, Rulesets)
    return value


def load_world(path: str) -> World:
    with open(path, encoding="utf-8") as f:
        return world_from_json(f.read())
