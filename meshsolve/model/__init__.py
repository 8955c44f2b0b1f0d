"""Frozen values: addresses, rules, rulesets, pod worlds and flows. No I/O, no solver.

The world's values (``App``, ``World``, ``Flow``...) are imported on first use: reading rules
(``meshsolve parse``) needs only addresses and rules, and starts sooner without them."""

from typing import TYPE_CHECKING, Any

from meshsolve.model.net import Family, IPAddress, IPNetwork, PortRange, family_of, to_address, to_network
from meshsolve.model.rules import *  # noqa: F403
from meshsolve.model.rules import __all__ as _rules_all

if TYPE_CHECKING:
    from meshsolve.model.world import App, Endpoint, Flow, ProxyBehavior, Service, Socket, World

_WORLD = ("App", "Endpoint", "Flow", "ProxyBehavior", "Service", "Socket", "World")

__all__ = [
    "App", "Endpoint", "Family", "Flow", "IPAddress", "IPNetwork", "PortRange", "ProxyBehavior",
    "Service", "Socket", "World", "family_of", "to_address", "to_network", *_rules_all,
]


def __getattr__(name: str) -> Any:
    if name in _WORLD:
        from meshsolve.model import world

        return getattr(world, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
