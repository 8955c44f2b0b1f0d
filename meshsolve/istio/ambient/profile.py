"""ztunnel as meshsolve's proxy model, the pod's policy routing, and an ambient pod's ``World``.

ztunnel (``ProxyBehavior``):

* listeners in the pod: 15001 (outbound capture), 15006 (inbound plaintext), and its own
  listeners where it ends connections itself: 15008 (HBONE, the mesh's mTLS tunnel) and, with DNS
  capture, 15053 (its DNS proxy);
* ``SO_MARK`` 0x539 on every socket: its listeners' SYN-ACKs and every upstream carry it — the
  rules tell ztunnel's traffic apart by that mark alone, never by owner ids;
* outbound: to the original destination (meshsolve does not model the HBONE tunnel to the peer's
  ztunnel; for capture, what matters is the marked upstream socket);
* inbound: to the original destination from the client's own address (``IP_TRANSPARENT`` and
  freebind), which is why the replies need the connmark and the policy route;
* listeners ``IP_TRANSPARENT`` in the TPROXY era (1.21–1.23, 1.24's option).

ztunnel runs as a process of the node; its uid and gid play no part in ambient capture (no rule
matches an owner), so the model gives it uid 0 and gid 0 and no property relies on them.

Routing: ``ip rule add fwmark 0x111/0xfff pref 32764 lookup 100`` and ``ip route add local
0.0.0.0/0 dev lo table 100`` (and the same for IPv6 when it is enabled), which istio-cni adds with
netlink next to the rules.
"""

from __future__ import annotations

from collections.abc import Iterable

import meshsolve.defaults as defaults
from meshsolve.istio.ambient.config import (
    CONNMARK,
    CONNMARK_MASK,
    DNS_LISTENER_PORT,
    HBONE_PORT,
    INBOUND_PLAINTEXT_PORT,
    INPOD_MARK,
    OUTBOUND_PORT,
    ROUTE_TABLE,
    RULE_PRIORITY,
    AmbientConfig,
)
from meshsolve.istio.ambient.iptables import inpod_rules
from meshsolve.istio.ambient.nft import inpod_nft_ruleset
from meshsolve.model.net import IPAddress, family_of, to_address
from meshsolve.model.routing import Route, Routing, RoutingRule
from meshsolve.model.rules import Rulesets
from meshsolve.model.world import App, ProxyBehavior, Service, Socket, World
from meshsolve.nftables.lower import lower

__all__ = ["ZTUNNEL_GID", "ZTUNNEL_UID", "ambient_routing", "ambient_world", "inpod_model_rules", "ztunnel_behavior"]

ZTUNNEL_UID = 0
ZTUNNEL_GID = 0


def ztunnel_behavior(c: AmbientConfig) -> ProxyBehavior:
    """What ztunnel does with the connections ``c``'s rules hand it (see the module docstring)."""
    own = (HBONE_PORT, DNS_LISTENER_PORT) if c.dns else (HBONE_PORT,)
    return ProxyBehavior(uid=ZTUNNEL_UID, gid=ZTUNNEL_GID, outbound_port=OUTBOUND_PORT,
                         inbound_port=INBOUND_PLAINTEXT_PORT, inbound_endpoint="original_dst",
                         outbound="passthrough", transparent=c.is_tproxy, inbound_original_source=True,
                         tunnel_port=HBONE_PORT, socket_mark=INPOD_MARK, own_listeners=own)


def ambient_routing(c: AmbientConfig, families: Iterable[str] = ("ipv4", "ipv6")) -> Routing:
    """The pod's policy routing for ztunnel's replies, per family the rules cover."""
    rules, routes = [], []
    for fam in c.families:
        if fam not in families:
            continue
        rules.append(RoutingRule(fam, RULE_PRIORITY, ROUTE_TABLE, CONNMARK, CONNMARK_MASK))
        routes.append(Route("0.0.0.0/0" if fam == "ipv4" else "::/0", "local", "lo", ROUTE_TABLE))
    return Routing(tuple(rules), tuple(routes))


def inpod_model_rules(c: AmbientConfig) -> Rulesets:
    """The in-pod rules of ``c``'s backend in the rule model."""
    if c.backend == "nftables":
        return lower(inpod_nft_ruleset(c))
    return inpod_rules(c)


def _default_apps(pod_ips: tuple[IPAddress, ...], ports: Iterable[int]) -> tuple[App, ...]:
    bind = "::" if any(a.version == 6 for a in pod_ips) else "0.0.0.0"
    return (App("app", uid=defaults.APP_UID, gid=defaults.APP_GID,
                sockets=tuple(Socket(bind, p) for p in sorted(set(ports)))),)


def ambient_world(c: AmbientConfig, *, apps: tuple[App, ...] | None = None, pod_ips: Iterable[IPAddress | str] = (),
                  peer_ips: Iterable[IPAddress | str] = (), services: tuple[Service, ...] = (),
                  interface: str = "eth0", name: str = "pod", namespace: str = "default") -> World:
    """An ambient pod: ``c``'s rules in its namespace, ztunnel, the policy route. Addresses nobody
    gives are meshsolve's defaults (documentation addresses): IPv4, and IPv6 too when ``c`` enables
    it; one app listening on 8080 on the wildcard address.

    The rules are ``c``'s backend's: the iptables rules, or the nft transaction (``nft.py``) lowered
    into the rule model (``meshsolve.nftables.lower``), one ``inet`` table set for both families."""
    ips = tuple(to_address(a) for a in pod_ips) or tuple(
        to_address(defaults.POD_IP[f]) for f in c.families)
    fams = {family_of(a) for a in ips}
    peers = tuple(to_address(a) for a in peer_ips) or tuple(
        to_address(defaults.PEER_IP[f]) for f in ("ipv4", "ipv6") if f in fams)
    if apps is None:
        apps = _default_apps(ips, (defaults.APP_PORT,))
    return World(pod_ips=ips, peer_ips=peers, apps=apps, proxy=ztunnel_behavior(c), services=services,
                 rules=inpod_model_rules(c), routing=ambient_routing(c, fams), interface=interface, name=name,
                 namespace=namespace)
