"""Frozen values: addresses, rules, rulesets, pod worlds and flows. No I/O, no solver."""

from meshsolve.model.net import Family, IPAddress, IPNetwork, PortRange, family_of, to_address, to_network
from meshsolve.model.rules import *  # noqa: F403
from meshsolve.model.rules import __all__ as _rules_all
from meshsolve.model.world import App, Endpoint, Flow, ProxyBehavior, Service, Socket, World

__all__ = [
    "App", "Endpoint", "Family", "Flow", "IPAddress", "IPNetwork", "PortRange", "ProxyBehavior",
    "Service", "Socket", "World", "family_of", "to_address", "to_network", *_rules_all,
]
