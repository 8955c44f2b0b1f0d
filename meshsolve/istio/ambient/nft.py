"""istio-cni's ambient rules with the native nftables backend (Istio 1.28+): an ``AmbientConfig`` →
the ``nft -f`` transaction the node agent applies in the pod (and on the node), as text, as the
reader's commands and as the ruleset they build.

Three ``inet`` tables, one rule set for both families: ``istio-ambient-nat`` (``prerouting`` and
``output``, ``type nat`` priority -100), ``istio-ambient-mangle`` (``prerouting`` filter and
``output`` ``type route``, priority -150: the connection mark) and ``istio-ambient-raw``
(priority -300, DNS's conntrack zone; only with DNS capture). Each table is written as ``add
table`` + ``flush table``, its base chains and its two regular chains, the jumps, then the rules.
A rule with an address is written for IPv4 (``ip``) and, with IPv6 enabled, right after it for
IPv6 (``ip6``); a rule without one is written once and applies to both families.

Differences from the iptables rules, read off Istio's 14 nft goldens: the host rule matches
kubelet's uid (``meta skuid``), where iptables matches any socket of the node
(``--socket-exists``) — nft has no such test; the node's rule has its own table
``istio-ambient-nat`` with a ``postrouting`` base chain. The text is written with Istio's spacing
(two spaces in two of the rules), so that it is the goldens' text byte for byte.
"""

from __future__ import annotations

from meshsolve.errors import UnsupportedError
from meshsolve.istio.ambient.config import (
    CONNMARK,
    DNS_LISTENER_PORT,
    DNS_PORT,
    HBONE_PORT,
    INBOUND_PLAINTEXT_PORT,
    INPOD_MARK,
    INPOD_MASK,
    NFT_MINOR,
    OUTBOUND_PORT,
    PROBE_SET,
    AmbientConfig,
)
from meshsolve.nftables import Command, Ruleset, parse_text, read_commands

__all__ = ["MANGLE", "NAT", "RAW", "host_nft_text", "inpod_nft_commands", "inpod_nft_ruleset", "inpod_nft_text",
           "host_nft_ruleset"]

NAT, MANGLE, RAW = "istio-ambient-nat", "istio-ambient-mangle", "istio-ambient-raw"
_M = f"{INPOD_MASK:#x}"
_NOT_MINE = f"mark and {_M} != {INPOD_MARK:#x}"


class _Table:
    def __init__(self, name: str, bases: tuple[tuple[str, str], ...]) -> None:
        self.name = name
        self.lines = [f"add table inet {name}", f"flush table inet {name}"]
        self.lines += [f"add chain inet {name} {chain} {{ {spec} ; }}" for chain, spec in bases]

    def chain(self, name: str) -> None:
        self.lines.append(f"add chain inet {self.name} {name}")

    def rule(self, chain: str, text: str) -> None:
        self.lines.append(f"add rule inet {self.name} {chain} {text}")


def _twice(c: AmbientConfig, v4: str, v6: str) -> list[str]:
    return [v4, v6] if c.enable_ipv6 else [v4]


def _nat(c: AmbientConfig) -> _Table:
    t = _Table(NAT, (("prerouting", "type nat hook prerouting priority -100"),
                     ("output", "type nat hook output priority -100")))
    t.chain("istio-prerouting")
    t.chain("istio-output")
    t.rule("output", "jump istio-output")
    t.rule("prerouting", "jump istio-prerouting")
    for nic in c.virtual_interfaces:
        t.rule("istio-prerouting", f"iifname {nic} meta l4proto tcp counter redirect to :{OUTBOUND_PORT}")
        t.rule("istio-prerouting", f"iifname {nic} meta l4proto tcp counter return")
    v4, v6 = c.probe_snat_v4, c.probe_snat_v6
    if not c.ingress:
        for r in _twice(c, f"meta l4proto tcp ip saddr {v4} counter accept",
                        f"meta l4proto tcp ip6 saddr {v6} counter accept"):
            t.rule("istio-prerouting", r)
    for r in _twice(c, f"meta l4proto tcp ip daddr {v4} counter accept",
                    f"meta l4proto tcp ip6 daddr {v6} counter accept"):
        t.rule("istio-output", r)
    if not c.ingress:
        for r in _twice(c, f"ip daddr != 127.0.0.1/32 tcp dport != {HBONE_PORT} mark and {_M}  != {INPOD_MARK:#x} "
                           f"counter redirect to :{INBOUND_PLAINTEXT_PORT}",
                        f"ip6 daddr != ::1/128 tcp dport != {HBONE_PORT} {_NOT_MINE} "
                        f"counter redirect to :{INBOUND_PLAINTEXT_PORT}"):
            t.rule("istio-prerouting", r)
    if c.dns:
        t.rule("istio-output", f"oifname != lo {_NOT_MINE} udp dport {DNS_PORT} counter redirect to "
                               f":{DNS_LISTENER_PORT}")
        for r in _twice(c, f"ip daddr != 127.0.0.1/32 tcp dport {DNS_PORT} {_NOT_MINE} counter redirect to "
                           f":{DNS_LISTENER_PORT}",
                        f"ip6 daddr != ::1/128 tcp dport {DNS_PORT} {_NOT_MINE} counter redirect to "
                        f":{DNS_LISTENER_PORT}"):
            t.rule("istio-output", r)
    t.rule("istio-output", f"meta l4proto tcp mark and {_M} == {CONNMARK:#x} counter accept")
    for r in _twice(c, "oifname lo ip daddr != 127.0.0.1/32 counter accept",
                    "oifname lo ip6 daddr != ::1/128 counter accept"):
        t.rule("istio-output", r)
    for r in _twice(c, f"meta l4proto tcp ip daddr != 127.0.0.1/32 {_NOT_MINE} counter redirect to :{OUTBOUND_PORT}",
                    f"meta l4proto tcp ip6 daddr != ::1/128 {_NOT_MINE} counter redirect to :{OUTBOUND_PORT}"):
        t.rule("istio-output", r)
    return t


def _mangle(c: AmbientConfig) -> _Table:
    t = _Table(MANGLE, (("prerouting", "type filter hook prerouting priority -150"),
                        ("output", "type route hook output priority -150")))
    t.chain("istio-prerouting")
    t.chain("istio-output")
    t.rule("prerouting", "jump istio-prerouting")
    t.rule("output", "jump istio-output")
    if c.ingress_connmark:
        t.rule("istio-prerouting", f"meta mark & {_M} == {INPOD_MARK:#x} counter ct mark set ct mark & 0xfffff000 |  "
                                   f"{CONNMARK:#x}")
    t.rule("istio-output", f"ct mark and {_M} == {CONNMARK:#x} counter meta mark set ct mark")
    return t


def _raw(c: AmbientConfig) -> _Table:
    t = _Table(RAW, (("prerouting", "type filter hook prerouting priority -300"),
                     ("output", "type filter hook output priority -300")))
    t.chain("istio-prerouting")
    t.chain("istio-output")
    t.rule("prerouting", "jump istio-prerouting")
    t.rule("output", "jump istio-output")
    t.rule("istio-output", f"udp dport {DNS_PORT} meta mark and {_M} == {INPOD_MARK:#x} counter ct zone set 1")
    t.rule("istio-prerouting", f"udp sport {DNS_PORT} meta mark and {_M} != {INPOD_MARK:#x} counter ct zone set 1")
    return t


def _check(c: AmbientConfig) -> None:
    if c.minor < NFT_MINOR:
        raise UnsupportedError(f"Istio {c.version} has no native nftables backend for ambient (from 1.{NFT_MINOR})")
    if c.is_tproxy:
        raise UnsupportedError("the TPROXY in-pod rules have no nftables form")


def inpod_nft_text(c: AmbientConfig) -> str:
    """The ``nft -f`` transaction the node agent applies in the pod (Istio's text)."""
    _check(c)
    tables = [_nat(c), _mangle(c)] + ([_raw(c)] if c.dns else [])
    return "\n".join(line for t in tables for line in t.lines) + "\n"


def inpod_nft_commands(c: AmbientConfig) -> tuple[Command, ...]:
    """The transaction as the nftables reader's commands, in order."""
    commands, _ = read_commands(inpod_nft_text(c), source=f"{c.describe()} (generated)")
    return commands


def inpod_nft_ruleset(c: AmbientConfig) -> Ruleset:
    """The nftables tables the transaction builds in the pod."""
    return parse_text(inpod_nft_text(c), source=f"{c.describe()} (generated)")


def host_nft_text(c: AmbientConfig) -> str:
    """The node's probe rule: kubelet's connections (its uid) to a pod in the probe set get the
    source the pod rules exempt."""
    _check(c)
    t = _Table(NAT, (("postrouting", "type nat hook postrouting priority 100"),))
    uid = c.kubelet_uid
    t.rule("postrouting", f"meta l4proto tcp skuid {uid} ip daddr @{PROBE_SET}-v4 counter snat to {c.probe_snat_v4}")
    if c.enable_ipv6:
        t.rule("postrouting", f"meta l4proto tcp skuid {uid} ip6 daddr @{PROBE_SET}-v6 counter snat to "
                              f"{c.probe_snat_v6}")
    return "\n".join(t.lines) + "\n"


def host_nft_ruleset(c: AmbientConfig) -> Ruleset:
    return parse_text(host_nft_text(c), source=f"{c.describe()} host rules (generated)")
