"""Building pod worlds from what users have: an Istio capture configuration, a pod manifest, or a
dumped ruleset (iptables or nftables: ``read_rules`` tells them apart). The app sockets and addresses
a manifest does not say are filled with explicit, documented defaults (documentation addresses; one
app listening on the wildcard address). A TPROXY-mode configuration also gives the world
istio-init's policy routing (``istio_routing``); a ``--native-nftables`` one has Istio's nftables
tables instead of iptables rules."""

from __future__ import annotations

from collections.abc import Iterable

import attrs

import meshsolve.defaults as defaults
from meshsolve.istio.config import WILDCARD, CaptureConfig
from meshsolve.istio.generate import generate
from meshsolve.istio.nft import nft_generate
from meshsolve.istio.proxy import proxy_behavior
from meshsolve.istio.routing import policy_routing
from meshsolve.model.net import Family, IPAddress, to_address
from meshsolve.model.routing import Routing
from meshsolve.model.rules import Rulesets
from meshsolve.model.world import App, ProxyBehavior, Service, Socket, World
from meshsolve.nftables.lower import lower

__all__ = ["DEFAULT_PEER", "DEFAULT_POD", "default_apps", "istio_routing", "read_rules", "says_ipv6",
           "world_from_config", "world_from_rules"]

DEFAULT_POD = {fam: to_address(a) for fam, a in defaults.POD_IP.items()}
DEFAULT_PEER = {fam: to_address(a) for fam, a in defaults.PEER_IP.items()}


def default_apps(ports: Iterable[int] = (defaults.APP_PORT,), *, ipv6: bool = False) -> tuple[App, ...]:
    """One app (the default uid/gid) listening on the wildcard address on each port."""
    bind = "::" if ipv6 else "0.0.0.0"
    sockets = tuple(Socket(bind, p) for p in sorted(set(ports)))
    return (App("app", uid=defaults.APP_UID, gid=defaults.APP_GID, sockets=sockets),)


def _addresses(ipv4: bool, ipv6: bool, table: dict[str, IPAddress]) -> tuple[IPAddress, ...]:
    out = []
    if ipv4:
        out.append(table["ipv4"])
    if ipv6:
        out.append(table["ipv6"])
    return tuple(out)


def istio_routing(config: CaptureConfig, families: tuple[Family, ...] = ("ipv4", "ipv6")) -> Routing:
    """The policy routing istio-init adds (``meshsolve.istio.routing.policy_routing``)."""
    return policy_routing(config, families)


def read_rules(path: str, source: str | None = None) -> Rulesets:
    """A rules file in any form users have: nftables (``nft -f`` input, ``nft list ruleset``,
    ``nft -j`` JSON, told apart by ``meshsolve.nftables.detect_form``; what nft would refuse to load
    is in ``load_problems``) or iptables (every form ``meshsolve.iptables`` reads)."""
    from meshsolve.iptables import parse_text as iptables_text
    from meshsolve.nftables import is_nft
    from meshsolve.nftables.loadcheck import load_rulesets
    from meshsolve.nftables.parse import read_input

    text, name = read_input(path, source)
    if is_nft(text):
        return load_rulesets(text, name)
    return iptables_text(text, name)


def says_ipv6(rules: Rulesets) -> bool:
    """Whether rules are about IPv6 traffic: ip6tables rules, an ``ip6`` nftables table, or an IPv6
    address or family test in an ``inet`` one (an ``inet`` table alone serves both families and says
    nothing about the pod's addresses)."""
    if rules.ipv6.tables:
        return True
    for t in rules.ipv6.nft:
        if t.family == "ip6":
            return True
        for c in t.table.chains:
            for r in c.rules:
                if any(_ipv6_match(x) for x in r.matches):
                    return True
    return False


def _ipv6_match(x: object) -> bool:
    from meshsolve.model.rules import AddressSet, Destination, FamilyMatch, Source

    if isinstance(x, FamilyMatch):
        return x.family == "ipv6" and not x.negated
    if isinstance(x, Source | Destination):
        return x.net.version == 6
    if isinstance(x, AddressSet):
        return x.nets[0].version == 6
    return False


def world_from_rules(rules: Rulesets, proxy: ProxyBehavior, *, apps: tuple[App, ...] | None = None,
                     services: tuple[Service, ...] = (), pod_ips: tuple[IPAddress, ...] | None = None,
                     name: str = "pod", namespace: str = "default", routing: Routing | None = None) -> World:
    """A world around a given ruleset (e.g. an ``iptables-save`` dump from a pod); without
    ``pod_ips`` the pod has an IPv6 address when the rules are about IPv6 (``says_ipv6``)."""
    has6 = says_ipv6(rules)
    if pod_ips is None:
        pod_ips = _addresses(True, has6, DEFAULT_POD)
    fams = {a.version for a in pod_ips}
    peers = _addresses(4 in fams, 6 in fams, DEFAULT_PEER)
    if apps is None:
        apps = default_apps(ipv6=6 in fams)
    return World(pod_ips=pod_ips, peer_ips=peers, apps=apps, proxy=proxy, services=services, rules=rules,
                 routing=routing or Routing(), name=name, namespace=namespace)


def world_from_config(config: CaptureConfig, *, rules: Rulesets | None = None,
                      apps: tuple[App, ...] | None = None, services: tuple[Service, ...] = (),
                      pod_ips: tuple[IPAddress, ...] | None = None, name: str = "pod",
                      namespace: str = "default") -> World:
    """The world of a pod captured with ``config`` (its rules generated unless given), with the
    sidecar of ``config.version`` and, in TPROXY mode, istio-init's policy routing."""
    if rules is None:
        rules = lower(nft_generate(config)) if config.native_nftables else generate(config)
    proxy = proxy_behavior(config.version, config)
    if apps is None:
        ports = (defaults.APP_PORT,) if config.inbound_ports == WILDCARD or not config.inbound_ports else \
            tuple(config.inbound_ports)
        ipv6 = bool(pod_ips and any(a.version == 6 for a in pod_ips)) or says_ipv6(rules)
        apps = default_apps(ports, ipv6=ipv6)
    world = world_from_rules(rules, proxy, apps=apps, services=services, pod_ips=pod_ips, name=name,
                             namespace=namespace)
    routing = istio_routing(config, world.families)
    return world if routing.empty else attrs.evolve(world, routing=routing)
