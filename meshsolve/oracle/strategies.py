"""Hypothesis strategies for random pod worlds and their flows (kernel-oracle campaigns).

Kept here until ``meshsolve/strategies.py`` (the rule-model strategies) exists; then they move to a
clearly separated section at its end.

A random world has one address family, one to three apps (uids/gids around 1000 and 1337) with
sockets on ports 9001–9003 bound to the wildcard, loopback or pod address, a proxy with random knobs
(inbound port or none, virtual dispatch, inbound port list, endpoint, inbound source, passthrough or
blackhole), one service VIP with endpoints in the pod and outside it, and a nat table in the shape
istio-init writes: ``PREROUTING`` → ``ISTIO_INBOUND`` (per-port RETURN / redirect rules) and ``OUTPUT``
→ ``ISTIO_OUTPUT`` (a random list over ``-o lo``, ``-s``/``-d`` CIDRs, owner uid/gid, ``--dport``,
each ``RETURN`` or a jump to ``ISTIO_REDIRECT`` / ``ISTIO_IN_REDIRECT``).
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from meshsolve.model.net import Family
from meshsolve.model.rules import (
    Chain,
    Destination,
    Jump,
    Match,
    OutInterface,
    OwnerMatch,
    PortMatch,
    Protocol,
    Redirect,
    Return,
    Rule,
    Ruleset,
    Rulesets,
    Source,
    Table,
    Target,
)
from meshsolve.model.world import App, Endpoint, Flow, ProxyBehavior, Service, Socket, World

__all__ = ["ADDRS", "APP_PORTS", "flows_for", "rulesets", "worlds", "worlds_and_flows"]

APP_PORTS = (9001, 9002, 9003)
SERVICE_PORT = 80

# Per family: the pod, the peer, loopback, the wildcard, the proxy's passthrough source, a service VIP,
# an address outside the pod, and the CIDRs rules may name (all documentation or loopback addresses).
ADDRS: dict[str, dict[str, Any]] = {
    "ipv4": {
        "pod": "192.0.2.10", "peer": "192.0.2.20", "lo": "127.0.0.1", "wild": "0.0.0.0",
        "six": "127.0.0.6", "vip": "198.51.100.1", "out": "203.0.113.9",
        "cidrs": ("127.0.0.1/32", "127.0.0.6/32", "127.0.0.0/8", "192.0.2.10/32", "192.0.2.0/24",
                  "198.51.100.0/24", "203.0.113.0/24"),
    },
    "ipv6": {
        "pod": "2001:db8::10", "peer": "2001:db8::20", "lo": "::1", "wild": "::",
        "six": "::6", "vip": "2001:db8:1::1", "out": "2001:db8:2::9",
        "cidrs": ("::1/128", "::6/128", "2001:db8::10/128", "2001:db8::/64", "2001:db8:1::/48",
                  "2001:db8:2::/48", "2001:db8::/32"),
    },
}

IDS = (1000, 1001, 1337)


@st.composite
def _apps(draw: st.DrawFn, fam: Family) -> tuple[App, ...]:
    a = ADDRS[fam]
    n = draw(st.integers(1, 3))
    used: set[tuple[str, int]] = set()
    wild_ports: set[int] = set()
    apps = []
    for i in range(n):
        socks = []
        for port in APP_PORTS:
            if not draw(st.booleans()):
                continue
            bind = draw(st.sampled_from((a["wild"], a["lo"], a["pod"])))
            if (bind, port) in used or (bind == a["wild"] and port in wild_ports):
                continue
            v6only = fam == "ipv6" and bind == a["wild"] and draw(st.booleans())
            used.add((bind, port))
            if bind == a["wild"]:
                wild_ports.add(port)
            socks.append(Socket(bind, port, v6only))
        uid = draw(st.sampled_from(IDS[:2])) if i == 0 else draw(st.sampled_from(IDS))
        gid = draw(st.sampled_from(IDS))
        apps.append(App(f"app{i}", uid=uid, gid=gid, sockets=tuple(socks)))
    return tuple(apps)


@st.composite
def _proxy(draw: st.DrawFn, fam: Family) -> ProxyBehavior:
    inbound_port = draw(st.sampled_from((15006, None)))
    ports = draw(st.one_of(st.none(), st.sets(st.sampled_from(APP_PORTS), max_size=3).map(tuple)))
    source = draw(st.sampled_from((None, ADDRS[fam]["six"])))
    return ProxyBehavior(
        inbound_port=inbound_port,
        virtual_inbound_dispatch=draw(st.booleans()),
        inbound_ports=ports,
        inbound_endpoint=draw(st.sampled_from(("localhost", "original_dst"))),
        inbound_source_v4=source if fam == "ipv4" else None,
        inbound_source_v6=source if fam == "ipv6" else None,
        outbound=draw(st.sampled_from(("passthrough", "passthrough", "blackhole"))),
    )


def _jump(name: str) -> Target:
    return Jump(name)


@st.composite
def _output_rule(draw: st.DrawFn, fam: Family) -> Rule:
    a = ADDRS[fam]
    matches: list[Match] = []
    if draw(st.booleans()):
        matches.append(OutInterface("lo", negated=draw(st.booleans())))
    if draw(st.integers(0, 2)) == 0:
        matches.append(Source(draw(st.sampled_from(a["cidrs"])), negated=draw(st.booleans())))
    if draw(st.booleans()):
        matches.append(Destination(draw(st.sampled_from(a["cidrs"])), negated=draw(st.booleans())))
    if draw(st.integers(0, 3)) == 0:
        matches.append(Protocol("tcp"))
        port = draw(st.sampled_from((*APP_PORTS, SERVICE_PORT)))
        matches.append(PortMatch("tcp", dport=port, dport_negated=draw(st.booleans())))
    owner = draw(st.integers(0, 3))
    if owner == 1:
        matches.append(OwnerMatch(uid=str(draw(st.sampled_from(IDS))), uid_negated=draw(st.booleans())))
    elif owner == 2:
        matches.append(OwnerMatch(gid=str(draw(st.sampled_from(IDS))), gid_negated=draw(st.booleans())))
    target = draw(st.sampled_from((Return(), Return(), _jump("ISTIO_REDIRECT"), _jump("ISTIO_IN_REDIRECT"))))
    return Rule(tuple(matches), target)


@st.composite
def _inbound_rule(draw: st.DrawFn) -> Rule:
    port = draw(st.sampled_from(APP_PORTS))
    target = draw(st.sampled_from((Return(), _jump("ISTIO_IN_REDIRECT"))))
    return Rule((Protocol("tcp"), PortMatch("tcp", dport=port)), target)


@st.composite
def rulesets(draw: st.DrawFn, fam: Family, proxy: ProxyBehavior) -> Rulesets:
    """A random istio-init-shaped nat table for one family (the other family stays empty)."""
    inbound_to = proxy.inbound_port if proxy.inbound_port is not None else proxy.outbound_port
    inbound = draw(st.lists(_inbound_rule(), max_size=3))
    if draw(st.booleans()):
        inbound.append(Rule((Protocol("tcp"),), _jump("ISTIO_IN_REDIRECT")))
    output = draw(st.lists(_output_rule(fam), max_size=6))
    if draw(st.integers(0, 3)) > 0:
        output.append(Rule((), _jump("ISTIO_REDIRECT")))
    nat = Table("nat", (
        Chain("PREROUTING", (Rule((Protocol("tcp"),), _jump("ISTIO_INBOUND")),), "ACCEPT"),
        Chain("OUTPUT", (Rule((Protocol("tcp"),), _jump("ISTIO_OUTPUT")),), "ACCEPT"),
        Chain("ISTIO_INBOUND", tuple(inbound)),
        Chain("ISTIO_OUTPUT", tuple(output)),
        Chain("ISTIO_REDIRECT", (Rule((Protocol("tcp"),), Redirect(proxy.outbound_port)),)),
        Chain("ISTIO_IN_REDIRECT", (Rule((Protocol("tcp"),), Redirect(inbound_to)),)),
    ))
    rs = Ruleset(fam, (nat,))
    return Rulesets(ipv4=rs) if fam == "ipv4" else Rulesets(ipv6=rs)


@st.composite
def worlds(draw: st.DrawFn, families: tuple[Family, ...] = ("ipv4", "ipv6")) -> World:
    """A random single-family pod world (see the module docstring)."""
    fam = draw(st.sampled_from(families))
    a = ADDRS[fam]
    proxy = draw(_proxy(fam))
    endpoints = (*(Endpoint(a["pod"], p) for p in APP_PORTS), Endpoint(a["out"], APP_PORTS[0]))
    return World(
        pod_ips=(a["pod"],), peer_ips=(a["peer"],), apps=draw(_apps(fam)), proxy=proxy,
        services=(Service("svc", a["vip"], SERVICE_PORT, endpoints),),
        rules=draw(rulesets(fam, proxy)),
    )


def flows_for(world: World, *, endpoint: int = 0) -> tuple[Flow, ...]:
    """Every flow of the bind matrix for ``world``: the peer and each app to the pod IP, loopback,
    the service VIP (through ``endpoint``) and an outside address, on every app port."""
    fam = world.families[0]
    a = ADDRS[fam]
    flows = [Flow("peer", a["pod"], p) for p in APP_PORTS]
    for app in world.apps:
        for p in APP_PORTS:
            flows.append(Flow(app.name, a["lo"], p))
            flows.append(Flow(app.name, a["pod"], p))
        flows.append(Flow(app.name, a["out"], APP_PORTS[0]))
        flows.append(Flow(app.name, a["vip"], SERVICE_PORT, endpoint=endpoint))
    flows.append(Flow("proxy", a["pod"], APP_PORTS[0]))
    flows.append(Flow("proxy", a["out"], APP_PORTS[0]))
    return tuple(flows)


@st.composite
def worlds_and_flows(draw: st.DrawFn) -> tuple[World, tuple[Flow, ...]]:
    world = draw(worlds())
    endpoint = draw(st.integers(0, len(world.services[0].endpoints) - 1))
    return world, flows_for(world, endpoint=endpoint)

