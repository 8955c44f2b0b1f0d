"""The rule model as JSON (``-o json``) and back.

Every attrs value becomes an object whose first key is ``"type"`` (the class name) followed by its
fields in declaration order; addresses and networks become strings, ``PortRange`` becomes
``"lo:hi"`` (or ``"p"``), tuples become lists. A field that is itself called ``type`` (an nft base
chain's filter/nat/route) is written under ``"type_"``, since ``"type"`` names the class.
Provenance (``origin``) is left out; counters are kept when present. Keys are stable: the same
model always gives the same text.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import attrs

from meshsolve.errors import ParseError
from meshsolve.model import rules as _rules
from meshsolve.model.net import PortRange
from meshsolve.model.rules import Origin, Rulesets

__all__ = ["from_json", "json_key", "to_json", "to_jsonable"]

_CLASSES: dict[str, type] = {
    name: obj for name in _rules.__all__
    if isinstance(obj := getattr(_rules, name), type) and attrs.has(obj)
}
_CLASSES["PortRange"] = PortRange


def json_key(field: str) -> str:
    """The JSON key of a field: its name, except that ``type`` is taken by the class name."""
    return "type_" if field == "type" else field


def to_jsonable(value: Any) -> Any:
    """A model value → plain JSON-able data."""
    if isinstance(value, PortRange):
        return str(value)
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address | ipaddress.IPv4Network
                  | ipaddress.IPv6Network):
        return str(value)
    if attrs.has(type(value)):
        out: dict[str, Any] = {"type": type(value).__name__}
        for f in attrs.fields(type(value)):
            if not f.init:  # derived state (e.g. a table's chain index), rebuilt on construction
                continue
            v = getattr(value, f.name)
            if f.name == "origin" or isinstance(v, Origin):
                continue
            if f.name == "counters" and v is None:
                continue
            out[json_key(f.name)] = to_jsonable(v)
        return out
    if isinstance(value, tuple | list):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    return value


def to_json(value: Any, *, indent: int | None = 2) -> str:
    """A model value (usually ``Rulesets``) → JSON text."""
    return json.dumps(to_jsonable(value), indent=indent, ensure_ascii=False)


def _decode(data: Any) -> Any:
    if isinstance(data, list):
        return tuple(_decode(v) for v in data)
    if not isinstance(data, dict):
        return data
    name = data.get("type")
    cls = _CLASSES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ParseError(f"unknown or missing \"type\" in JSON object: {name!r}", source="<json>")
    kwargs: dict[str, Any] = {}
    for f in attrs.fields(cls):
        if json_key(f.name) not in data or not f.init:
            continue
        v = _decode(data[json_key(f.name)])
        if f.name in ("sport", "dport", "to_ports") and isinstance(v, str):
            v = PortRange.parse(v)
        if f.name == "ports":
            v = tuple(PortRange.parse(p) if isinstance(p, str) else p for p in v)
        if f.name == "on_ip" and isinstance(v, str):
            v = ipaddress.ip_address(v)
        if f.name == "counters" and v is not None:
            v = (int(v[0]), int(v[1]))
        kwargs[f.name] = v
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ParseError(f"bad JSON for {name}: {exc}", source="<json>") from None


def from_json(text: str) -> Rulesets:
    """JSON text written by :func:`to_json` for a ``Rulesets`` → the ``Rulesets``."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParseError(f"not JSON: {exc.msg}", source="<json>", lineno=exc.lineno) from None
    value = _decode(data)
    if not isinstance(value, Rulesets):
        raise ParseError("JSON does not describe a Rulesets", source="<json>")
    return value
