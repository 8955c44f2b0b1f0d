"""The pod's policy routing: ``ip rule`` entries and the routes of the tables they select.

The kernel routes a packet by trying its rules in priority order; a rule that matches the packet
(its ``fwmark``/mask, or every packet) sends the lookup to its table, and the longest prefix that
matches the destination there decides: ``local`` (deliver to a socket in the pod), ``unicast``
(send out of ``dev``), or an error type. A table with no matching route passes the lookup on to
the next rule. Besides the rules given here every namespace has the kernel's own: priority 0
``lookup local`` (the pod's own addresses, always local), 32766 ``lookup main`` (the default route
out of the pod interface) and 32767 ``lookup default``.

Istio's TPROXY mode adds ``ip rule add fwmark 1337 lookup 133`` and ``ip route add local default
dev lo table 133``: a packet marked 1337 is delivered locally whatever its destination.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, TypeAlias

import attrs

from meshsolve.errors import WorldError
from meshsolve.model.net import Family, IPNetwork, family_of, to_network

__all__ = ["LOCAL_TABLE", "MAIN_TABLE", "Route", "RouteKind", "Routing", "RoutingRule"]

LOCAL_TABLE = 255
MAIN_TABLE = 254
DEFAULT_TABLE = 253
RouteKind: TypeAlias = Literal["unicast", "local", "blackhole", "unreachable", "prohibit", "throw"]
_TABLE_NAMES = {"local": LOCAL_TABLE, "main": MAIN_TABLE, "default": DEFAULT_TABLE}


def table_id(value: int | str) -> int:
    """A routing table number from a number or the names ``local``, ``main``, ``default``."""
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text in _TABLE_NAMES:
        return _TABLE_NAMES[text]
    try:
        n = int(text, 0)
    except ValueError:
        raise WorldError(f"not a routing table: {value!r}") from None
    if not 0 <= n <= 0xFFFFFFFF:
        raise WorldError(f"routing table out of range: {value!r}")
    return n


@attrs.frozen
class RoutingRule:
    """``ip [-6] rule add [not] fwmark V[/M] lookup T priority P`` (no fwmark: every packet)."""

    family: Family
    priority: int
    table: int = attrs.field(converter=table_id)
    fwmark: int | None = None
    mask: int = 0xFFFFFFFF
    invert: bool = False

    def __str__(self) -> str:
        what = "from all" if self.fwmark is None else f"from all {'not ' if self.invert else ''}fwmark " \
                                                      f"{self.fwmark:#x}/{self.mask:#x}"
        return f"{self.priority}: {what} lookup {self.table}"


@attrs.frozen
class Route:
    """``ip route add [TYPE] PREFIX [dev DEV] table T``."""

    dst: IPNetwork = attrs.field(converter=to_network)
    kind: RouteKind = "unicast"
    dev: str | None = None
    table: int = attrs.field(default=MAIN_TABLE, converter=table_id)

    @property
    def family(self) -> Family:
        return family_of(self.dst)

    def __str__(self) -> str:
        dev = f" dev {self.dev}" if self.dev else ""
        kind = "" if self.kind == "unicast" else f"{self.kind} "
        return f"{kind}{self.dst}{dev} table {self.table}"


def _rules(values: Iterable[RoutingRule]) -> tuple[RoutingRule, ...]:
    return tuple(sorted(values, key=lambda r: (r.family, r.priority)))


def _routes(values: Iterable[Route]) -> tuple[Route, ...]:
    return tuple(values)


@attrs.frozen
class Routing:
    """The rules and routes a pod adds to the kernel's own (see the module docstring)."""

    rules: tuple[RoutingRule, ...] = attrs.field(default=(), converter=_rules)
    routes: tuple[Route, ...] = attrs.field(default=(), converter=_routes)

    def rules_for(self, family: Family) -> tuple[RoutingRule, ...]:
        return tuple(r for r in self.rules if r.family == family)

    def routes_in(self, family: Family, table: int) -> tuple[Route, ...]:
        return tuple(r for r in self.routes if r.family == family and r.table == table)

    @property
    def empty(self) -> bool:
        return not self.rules and not self.routes

    @classmethod
    def tproxy(cls, mark: int, mask: int = 0xFFFFFFFF, table: int = 133,
               families: Iterable[Family] = ("ipv4", "ipv6")) -> Routing:
        """What Istio's TPROXY mode adds: ``fwmark MARK lookup TABLE`` and a local default route."""
        rules, routes = [], []
        for fam in families:
            rules.append(RoutingRule(fam, 32765, table, mark, mask))
            routes.append(Route("0.0.0.0/0" if fam == "ipv4" else "::/0", "local", "lo", table))
        return cls(tuple(rules), tuple(routes))
