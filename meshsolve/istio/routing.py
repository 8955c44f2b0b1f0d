"""The policy routing istio-init adds next to its rules (TPROXY mode only)."""

from __future__ import annotations

from collections.abc import Iterable

from meshsolve.istio.config import CaptureConfig
from meshsolve.model.net import Family
from meshsolve.model.routing import Routing

__all__ = ["policy_routing"]


def policy_routing(config: CaptureConfig, families: Iterable[Family] = ("ipv4", "ipv6")) -> Routing:
    """What istio-init runs besides iptables: nothing outside TPROXY mode; in TPROXY mode ``ip rule
    add fwmark MARK lookup TABLE`` and ``ip route add local default dev lo table TABLE``, for IPv4
    and, when IPv6 is enabled, IPv6; restricted to ``families``."""
    if config.mode != "TPROXY":
        return Routing()
    wanted = tuple(families)
    fams = tuple(f for f in ("ipv4", "ipv6") if f in wanted and (f == "ipv4" or config.enable_ipv6))
    return Routing.tproxy(config.tproxy_mark, table=config.tproxy_route_table, families=fams)
