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
from meshsolve.iptables import parse_text
from meshsolve.model.net import Family, IPAddress, to_address
from meshsolve.model.rules import Rulesets
from meshsolve.model.world import App, Endpoint, ProxyBehavior, Service, Socket, World

__all__ = ["APP_PORTS", "SETUPS", "setup_addresses", "setup_rules_text", "setup_world"]

SETUPS: tuple[str, ...] = ("A", "B", "C", "D", "E")
APP_PORTS: tuple[int, ...] = (9001, 9002, 9003)

_ADDRS: dict[Family, dict[str, str]] = {
    "ipv4": {"pod": "192.0.2.10", "peer": "192.0.2.20", "vip": "198.51.100.1", "wild": "0.0.0.0",
             "lo": "127.0.0.1", "lo_net": "127.0.0.1/32", "inbound_src": "127.0.0.6",
             "inbound_src_net": "127.0.0.6/32", "prog": "iptables"},
    "ipv6": {"pod": "2001:db8::10", "peer": "2001:db8::20", "vip": "2001:db8:100::1", "wild": "::",
             "lo": "::1", "lo_net": "::1/128", "inbound_src": "::6", "inbound_src_net": "::6/128",
             "prog": "ip6tables"},
}
_TEXT_ONLY = ("lo_net", "inbound_src_net", "prog")


def setup_addresses(family: Family) -> dict[str, IPAddress]:
    """The addresses of the built-in pods for ``family``: pod, peer, vip, wild, lo, inbound_src."""
    return {k: to_address(v) for k, v in _ADDRS[family].items() if k not in _TEXT_ONLY}


# Istio 1.2 (V1.2 of istio-capture-facts.md) with -b 9001,9002,9003: both captures go to 15001.
_NAT_1_2 = """\
{prog} -t nat -N ISTIO_REDIRECT
{prog} -t nat -A ISTIO_REDIRECT -p tcp -j REDIRECT --to-port 15001
{prog} -t nat -N ISTIO_IN_REDIRECT
{prog} -t nat -A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-port 15001
{prog} -t nat -N ISTIO_INBOUND
{prog} -t nat -A PREROUTING -p tcp -j ISTIO_INBOUND
{prog} -t nat -A ISTIO_INBOUND -p tcp --dport 9001 -j ISTIO_IN_REDIRECT
{prog} -t nat -A ISTIO_INBOUND -p tcp --dport 9002 -j ISTIO_IN_REDIRECT
{prog} -t nat -A ISTIO_INBOUND -p tcp --dport 9003 -j ISTIO_IN_REDIRECT
{prog} -t nat -N ISTIO_OUTPUT
{prog} -t nat -A OUTPUT -p tcp -j ISTIO_OUTPUT
{loopback_rule}{prog} -t nat -A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
{prog} -t nat -A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
{prog} -t nat -A ISTIO_OUTPUT -d {lo_net} -j RETURN
{prog} -t nat -A ISTIO_OUTPUT -j ISTIO_REDIRECT
"""
_LOOPBACK_RULE_1_2 = "{prog} -t nat -A ISTIO_OUTPUT -o lo ! -d {lo_net} -j ISTIO_REDIRECT\n"

# What istio-init 1.1–1.2 writes into ip6tables for an IPv4 pod.
_IP6_FILTER_1_2 = """\
ip6tables -F INPUT
ip6tables -A INPUT -m state --state ESTABLISHED -j ACCEPT
ip6tables -A INPUT -i lo -d ::1 -j ACCEPT
ip6tables -A INPUT -j REJECT
"""

# The current default sidecar (Era I: -b '*' -d 15090,15021,15020 -i '*').
_NAT_ERA_I = """\
{prog} -t nat -N ISTIO_INBOUND
{prog} -t nat -N ISTIO_REDIRECT
{prog} -t nat -N ISTIO_IN_REDIRECT
{prog} -t nat -N ISTIO_OUTPUT
{prog} -t nat -A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN
{prog} -t nat -A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
{prog} -t nat -A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
{prog} -t nat -A PREROUTING -p tcp -j ISTIO_INBOUND
{prog} -t nat -A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN
{prog} -t nat -A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN
{prog} -t nat -A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN
{prog} -t nat -A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
{prog} -t nat -A OUTPUT -j ISTIO_OUTPUT
{prog} -t nat -A ISTIO_OUTPUT -o lo -s {src_net} -j RETURN
{out} -o lo ! -d {lo_net} -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
{prog} -t nat -A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
{prog} -t nat -A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
{out} -o lo ! -d {lo_net} -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT
{prog} -t nat -A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
{prog} -t nat -A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
{prog} -t nat -A ISTIO_OUTPUT -d {lo_net} -j RETURN
{prog} -t nat -A ISTIO_OUTPUT -j ISTIO_REDIRECT
"""


def _nat_text(name: str, family: Family) -> str:
    a = _ADDRS[family]
    if name == "E":
        return _NAT_ERA_I.format(prog=a["prog"], lo_net=a["lo_net"], src_net=a["inbound_src_net"],
                                 out=f"{a['prog']} -t nat -A ISTIO_OUTPUT")
    rule1 = _LOOPBACK_RULE_1_2.format(prog=a["prog"], lo_net=a["lo_net"]) if name in ("A", "B") else ""
    return _NAT_1_2.format(prog=a["prog"], lo_net=a["lo_net"], loopback_rule=rule1)


def setup_rules_text(name: str, family: Family = "ipv4") -> str:
    """The iptables/ip6tables command lines of set-up ``name`` (what its rules are parsed from).

    An IPv4 pod gets the IPv4 rules (plus, for the 1.2 era, the ip6tables filter INPUT rules);
    an IPv6 pod gets the rules for both families.
    """
    key = _key(name)
    text = _nat_text(key, "ipv4")
    if family == "ipv6":
        text += _nat_text(key, "ipv6")
    elif key != "E":
        text += _IP6_FILTER_1_2
    return text


def _rulesets(name: str, family: Family) -> Rulesets:
    return parse_text(setup_rules_text(name, family), source=f"<setup {name} {family}>")


def _key(name: str) -> str:
    key = name.strip().upper()
    if key not in SETUPS:
        raise WorldError(f"unknown set-up {name!r}: choose one of {', '.join(SETUPS)}")
    return key


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
    key = _key(name)
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
