"""The built-in pods A–E of kernel-facts.md as ``World`` values (IPv4 or IPv6).

Pod 192.0.2.10 / 2001:db8::10, peer 192.0.2.20 / 2001:db8::20, one app ``app`` (uid/gid 1000)
listening on 9001 (wildcard), 9002 (loopback) and 9003 (the pod IP), a service VIP
198.51.100.1 / 2001:db8:100::1 on each of those ports whose one endpoint is this pod, and a proxy
with uid/gid 1337.

* A — Istio 1.2: inbound and outbound REDIRECT to 15001, the 15001 listener hands pod-IP
  destinations to the inbound side, which forwards to localhost; ``ISTIO_OUTPUT`` = the seed's five
  rules (rule 1 = ``-o lo ! -d 127.0.0.1/32 -j ISTIO_REDIRECT``); ``-b 9001,9002,9003``.
* B — A with the inbound side forwarding to the original destination (the seed's first patch).
* C — B without rule 1 (the seed's plan 2).
* D — A without rule 1 (only ``DISABLE_REDIRECTION_ON_LOCAL_LOOPBACK``).
* E — Istio ≥1.25 default (Era I): inbound REDIRECT to 15006, forwarding to the original
  destination from 127.0.0.6 / ::6.

IPv4 pods of the 1.2 era also carry the ip6tables filter INPUT rules istio-init 1.1–1.2 wrote.
"""

from __future__ import annotations

from meshsolve.errors import WorldError
from meshsolve.model.net import Family, IPAddress, to_address
from meshsolve.model.rules import (
    Accept,
    Chain,
    Destination,
    InInterface,
    Jump,
    Match,
    OutInterface,
    OwnerMatch,
    PortMatch,
    Protocol,
    Redirect,
    Reject,
    Return,
    Rule,
    Ruleset,
    Rulesets,
    Source,
    StateMatch,
    Table,
    Target,
)
from meshsolve.model.world import App, Endpoint, ProxyBehavior, Service, Socket, World

__all__ = ["APP_PORTS", "SETUPS", "setup_addresses", "setup_world"]

SETUPS: tuple[str, ...] = ("A", "B", "C", "D", "E")
APP_PORTS: tuple[int, ...] = (9001, 9002, 9003)

_ADDRS: dict[Family, dict[str, str]] = {
    "ipv4": {"pod": "192.0.2.10", "peer": "192.0.2.20", "vip": "198.51.100.1", "wild": "0.0.0.0",
             "lo": "127.0.0.1", "lo_net": "127.0.0.1/32", "inbound_src": "127.0.0.6",
             "inbound_src_net": "127.0.0.6/32"},
    "ipv6": {"pod": "2001:db8::10", "peer": "2001:db8::20", "vip": "2001:db8:100::1", "wild": "::",
             "lo": "::1", "lo_net": "::1/128", "inbound_src": "::6", "inbound_src_net": "::6/128"},
}


def setup_addresses(family: Family) -> dict[str, IPAddress]:
    """The addresses of the built-in pods for ``family``: pod, peer, vip, wild, lo, inbound_src."""
    return {k: to_address(v) for k, v in _ADDRS[family].items() if not k.endswith("_net")}


def _r(*matches: Match, target: Target | None) -> Rule:
    return Rule(matches, target)


_TCP = Protocol("tcp")


def _dport(port: int, negated: bool = False) -> PortMatch:
    return PortMatch("tcp", dport=port, dport_negated=negated)


def _nat_1_2(family: Family, loopback_rule: bool) -> Table:
    """Istio 1.2 nat table (V1.2, ``-b 9001,9002,9003``, inbound capture port = 15001)."""
    lo_net = _ADDRS[family]["lo_net"]
    output = [
        _r(OutInterface("lo"), Destination(lo_net, negated=True), target=Jump("ISTIO_REDIRECT")),
        _r(OwnerMatch(uid="1337"), target=Return()),
        _r(OwnerMatch(gid="1337"), target=Return()),
        _r(Destination(lo_net), target=Return()),
        _r(target=Jump("ISTIO_REDIRECT")),
    ]
    if not loopback_rule:
        output = output[1:]
    return Table("nat", (
        Chain("PREROUTING", (_r(_TCP, target=Jump("ISTIO_INBOUND")),), "ACCEPT"),
        Chain("OUTPUT", (_r(_TCP, target=Jump("ISTIO_OUTPUT")),), "ACCEPT"),
        Chain("ISTIO_INBOUND", tuple(_r(_TCP, _dport(p), target=Jump("ISTIO_IN_REDIRECT"))
                                     for p in APP_PORTS)),
        Chain("ISTIO_IN_REDIRECT", (_r(_TCP, target=Redirect(15001)),)),
        Chain("ISTIO_REDIRECT", (_r(_TCP, target=Redirect(15001)),)),
        Chain("ISTIO_OUTPUT", tuple(output)),
    ))


def _ip6_filter_1_2() -> Table:
    """The ip6tables filter INPUT chain istio-init 1.1–1.2 writes for an IPv4 pod."""
    return Table("filter", (Chain("INPUT", (
        _r(StateMatch(("ESTABLISHED",)), target=Accept()),
        _r(InInterface("lo"), Destination("::1/128"), target=Accept()),
        _r(target=Reject()),
    ), "ACCEPT"),))


def _nat_era_i(family: Family) -> Table:
    """The current default sidecar nat table (Era I, ``-b '*' -d 15090,15021,15020 -i '*'``)."""
    a = _ADDRS[family]
    lo_net, src_net = a["lo_net"], a["inbound_src_net"]
    inbound = [_r(_TCP, _dport(15008), target=Return())]
    inbound += [_r(_TCP, _dport(p), target=Return()) for p in (15090, 15021, 15020)]
    inbound.append(_r(_TCP, target=Jump("ISTIO_IN_REDIRECT")))
    output = [_r(OutInterface("lo"), Source(src_net), target=Return())]
    for key in ("uid", "gid"):
        own = OwnerMatch(uid="1337") if key == "uid" else OwnerMatch(gid="1337")
        not_own = (OwnerMatch(uid="1337", uid_negated=True) if key == "uid"
                   else OwnerMatch(gid="1337", gid_negated=True))
        output += [
            _r(OutInterface("lo"), Destination(lo_net, negated=True), _TCP, _dport(15008, negated=True), own,
               target=Jump("ISTIO_IN_REDIRECT")),
            _r(OutInterface("lo"), not_own, target=Return()),
            _r(own, target=Return()),
        ]
    output += [_r(Destination(lo_net), target=Return()), _r(target=Jump("ISTIO_REDIRECT"))]
    return Table("nat", (
        Chain("PREROUTING", (_r(_TCP, target=Jump("ISTIO_INBOUND")),), "ACCEPT"),
        Chain("OUTPUT", (_r(target=Jump("ISTIO_OUTPUT")),), "ACCEPT"),
        Chain("ISTIO_INBOUND", tuple(inbound)),
        Chain("ISTIO_IN_REDIRECT", (_r(_TCP, target=Redirect(15006)),)),
        Chain("ISTIO_REDIRECT", (_r(_TCP, target=Redirect(15001)),)),
        Chain("ISTIO_OUTPUT", tuple(output)),
    ))


def _rulesets(name: str, family: Family) -> Rulesets:
    if name == "E":
        return Rulesets(Ruleset("ipv4", (_nat_era_i("ipv4"),)),
                        Ruleset("ipv6", (_nat_era_i("ipv6"),) if family == "ipv6" else ()))
    keep = name in ("A", "B")
    v4 = Ruleset("ipv4", (_nat_1_2("ipv4", keep),))
    v6 = Ruleset("ipv6", (_nat_1_2("ipv6", keep),) if family == "ipv6" else (_ip6_filter_1_2(),))
    return Rulesets(v4, v6)


def _proxy(name: str) -> ProxyBehavior:
    if name == "E":
        return ProxyBehavior(uid=1337, gid=1337, outbound_port=15001, inbound_port=15006,
                             inbound_endpoint="original_dst", inbound_source_v4="127.0.0.6",
                             inbound_source_v6="::6")
    return ProxyBehavior(uid=1337, gid=1337, outbound_port=15001, inbound_port=None,
                         virtual_inbound_dispatch=True, inbound_ports=APP_PORTS,
                         inbound_endpoint="localhost" if name in ("A", "D") else "original_dst")


def setup_world(name: str, family: Family = "ipv4") -> World:
    """The built-in pod ``name`` (A–E, case-insensitive) for ``family``."""
    key = name.strip().upper()
    if key not in SETUPS:
        raise WorldError(f"unknown set-up {name!r}: choose one of {', '.join(SETUPS)}")
    if family not in ("ipv4", "ipv6"):
        raise WorldError(f"unknown family {family!r}: ipv4 or ipv6")
    a = _ADDRS[family]
    sockets = (Socket(a["wild"], 9001), Socket(a["lo"], 9002), Socket(a["pod"], 9003))
    services = tuple(Service(f"svc-{p}", a["vip"], p, (Endpoint(a["pod"], p),)) for p in APP_PORTS)
    return World(
        pod_ips=(a["pod"],), peer_ips=(a["peer"],),
        apps=(App("app", 1000, 1000, sockets),),
        proxy=_proxy(key), services=services, rules=_rulesets(key, family),
        name=f"setup-{key}-{family}",
    )
