"""istio-iptables ``--native-nftables`` as data: a ``CaptureConfig`` → the nft transaction Istio's
sidecar init applies (Istio 1.27+), as commands and as the ruleset they build.

Three ``inet`` tables, one rule set for both families: ``istio-proxy-nat`` (``prerouting`` and
``output``, ``type nat`` priority -100), ``istio-proxy-mangle`` (``prerouting`` filter and ``output``
``type route``, priority -150, for TPROXY and drop-invalid) and ``istio-proxy-raw`` (priority -300,
the DNS conntrack zones). The rules follow the iptables generator's order (``generate.py``, the
current era) with the nft backend's differences, read off Istio's 28 sidecar nft goldens:

* one rule per logical rule: a family-specific rule is written for IPv4 (``ip daddr``) and, only
  when IPv6 is enabled, right after it for IPv6 (``ip6 daddr``); rules without an address match are
  written once and apply to both families (so with IPv6 off, IPv6 TCP is still redirected);
* ``counter`` goes before the rule's last statement; TCP matches say ``meta l4proto tcp``;
* the iptables ``-I CHAIN n`` inserts become ``insert rule ... index n-1``, the IPv6 twin at the
  same index, and an insert at an index the chain does not have yet in this transaction (into an
  empty chain, say) becomes an ``add`` (Istio's fix for the kernel refusing it);
* a table is written only when it gets a rule, as ``add table`` + ``flush table``, then its chains
  that get a rule (in a fixed order per table), then the rules in emission order;
* DNS: the TCP redirects for every IPv4 then every IPv6 server, then the UDP ones; the raw-table
  zone rules per server (``udp sport 53 ip saddr S`` for replies);
* the loopback rules of several owner groups are one rule (``skgid != a skgid != b return``).

Checked against all 28 goldens (``tests/test_istio_nft_goldens.py``: commands in order and final
rules). Not covered by a golden, so derived: several DNS servers of one family, ``-o`` (outbound
ports exclude: a ``tcp dport`` and a ``udp dport`` return per port), capture-all DNS. Releases
1.27–1.30 are generated like the snapshot (counters and the empty-chain insert fix landed during
that time; which release has which is not modelled).
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs

from meshsolve.errors import UnsupportedError
from meshsolve.istio.config import NATIVE_NFTABLES_SINCE, WILDCARD, CaptureConfig
from meshsolve.model.net import IPNetwork, to_network
from meshsolve.nftables import (
    Counter,
    Flags,
    HookSpec,
    Item,
    MarkValue,
    Match,
    Redirect,
    Rule,
    Ruleset,
    Selector,
    SetCtZone,
    SetMark,
    Tproxy,
    Verdict,
    replay,
)
from meshsolve.nftables.commands import AddChain, AddRule, AddTable, Command, FlushTable
from meshsolve.nftables.kinds import ValueKind
from meshsolve.nftables.model import AnonSet
from meshsolve.nftables.values import make_set, scalar

__all__ = ["CHAINS", "FIRST_MINOR", "MANGLE", "NAT", "RAW", "nft_emission", "nft_generate"]

#: The first Istio minor with ``--native-nftables`` for sidecars.
FIRST_MINOR = NATIVE_NFTABLES_SINCE
NAT, MANGLE, RAW = "istio-proxy-nat", "istio-proxy-mangle", "istio-proxy-raw"
#: Each table's chains in the order the transaction declares them (base chains with their hook).
CHAINS: dict[str, tuple[tuple[str, HookSpec | None], ...]] = {
    NAT: (("prerouting", HookSpec("nat", "prerouting", -100)), ("output", HookSpec("nat", "output", -100)),
          ("istio-inbound", None), ("istio-redirect", None), ("istio-in-redirect", None), ("istio-output", None),
          ("istio-output-dns", None)),
    MANGLE: (("prerouting", HookSpec("filter", "prerouting", -150)), ("output", HookSpec("route", "output", -150)),
             ("istio-divert", None), ("istio-tproxy", None), ("istio-inbound", None), ("istio-drop", None)),
    RAW: (("prerouting", HookSpec("filter", "prerouting", -300)), ("output", HookSpec("filter", "output", -300)),
          ("istio-inbound", None), ("istio-output-dns", None)),
}
DNS_PORT = 53
DNS_LISTENER_PORT = 15053
OUTBOUND_MARK = 1338
LOOPBACK6 = to_network("::1/128")
PASSTHROUGH4, PASSTHROUGH6 = to_network("127.0.0.6/32"), to_network("::6/128")


# ---------------------------------------------------------------------------------------------
# Items


def _m(base: str, key: str, value: object, op: str = "==") -> Match:
    return Match(Selector(base, key), value, op)  # type: ignore[arg-type]


def tcp() -> Match:
    return _m("meta", "l4proto", "tcp")


def dport(port: int, proto: str = "tcp", op: str = "==") -> Match:
    return _m(proto, "dport", port, op)


def sport(port: int, proto: str = "udp") -> Match:
    return _m(proto, "sport", port)


def daddr(net: IPNetwork, op: str = "==") -> Match:
    return _m("ip" if net.version == 4 else "ip6", "daddr", net, op)


def saddr(net: IPNetwork) -> Match:
    return _m("ip" if net.version == 4 else "ip6", "saddr", net)


def oif(name: str, op: str = "==") -> Match:
    return _m("meta", "oifname", name, op)


def iif(name: str) -> Match:
    return _m("meta", "iifname", name)


def owner(kind: str, ident: str, op: str = "==") -> Match:
    """``skuid``/``skgid`` of a number or a name (names are resolved by nft on the host)."""
    value = scalar(ValueKind.UID if kind == "skuid" else ValueKind.GID, ident)
    return _m("meta", kind, value, op)


def mark(value: int, op: str = "==") -> Match:
    return _m("meta", "mark", value, op)


def set_mark(value: int) -> SetMark:
    return SetMark("meta", MarkValue.constant(value))


def ret() -> Verdict:
    return Verdict("return")


def jump(chain: str) -> Verdict:
    return Verdict("jump", chain)


def rule(*items: Item) -> Rule:
    """A rule as Istio writes it: ``counter`` before the last statement."""
    last = max(k for k, i in enumerate(items) if not isinstance(i, Match))
    return Rule((*items[:last], Counter(), *items[last:]))


# ---------------------------------------------------------------------------------------------
# Emission


@attrs.frozen
class _Op:
    table: str
    chain: str
    rule: Rule
    index: int | None = None


class _Recorder:
    def __init__(self, config: CaptureConfig) -> None:
        self.ipv6 = config.enable_ipv6
        self.ops: list[_Op] = []

    def add(self, table: str, chain: str, *items: Item) -> None:
        self.ops.append(_Op(table, chain, rule(*items)))

    def add6(self, table: str, chain: str, *items: Item) -> None:
        if self.ipv6:
            self.add(table, chain, *items)

    def insert(self, table: str, chain: str, index: int, *items: Item) -> None:
        self.ops.append(_Op(table, chain, rule(*items), index))

    def insert6(self, table: str, chain: str, index: int, *items: Item) -> None:
        if self.ipv6:
            self.insert(table, chain, index, *items)


def _split(nets: tuple[IPNetwork, ...]) -> tuple[tuple[IPNetwork, ...], tuple[IPNetwork, ...]]:
    return tuple(n for n in nets if n.version == 4), tuple(n for n in nets if n.version == 6)


def _record(c: CaptureConfig) -> _Recorder:
    b = _Recorder(c)
    tproxy = c.mode == "TPROXY"
    lb4 = c.host_ipv4_loopback_cidr
    tunnel = c.inbound_tunnel_port
    capture = c.effective_inbound_capture_port()
    dns = c.dns_enabled()
    exclude4, exclude6 = _split(c.outbound_cidrs_exclude)
    wildcard_out = c.outbound_cidrs == WILDCARD
    include4, include6 = ((), ()) if wildcard_out else _split(c.outbound_cidrs)  # type: ignore[arg-type]
    loopback_include = any(n.network_address.is_loopback for n in (*include4, *include6))

    # excluded interfaces, kube-virt interfaces, drop invalid
    for nic in c.exclude_interfaces:
        b.add(NAT, "prerouting", iif(nic), ret())
        b.add(NAT, "output", oif(nic), ret())
    if tproxy:
        for nic in c.exclude_interfaces:
            b.add(MANGLE, "prerouting", iif(nic), ret())
            b.add(MANGLE, "output", oif(nic), ret())
    for nic in c.reroute_interfaces:
        b.insert(NAT, "prerouting", 0, iif(nic), ret())
    if c.drop_invalid:
        b.add(MANGLE, "prerouting", tcp(), _m("ct", "state", Flags(("invalid",)), "in"), jump("istio-drop"))
        b.add(MANGLE, "istio-drop", Verdict("drop"))
    # tunnel port, the two redirect chains
    b.add(NAT, "istio-inbound", tcp(), dport(tunnel), ret())
    b.add(NAT, "istio-redirect", tcp(), Redirect(c.proxy_port))
    b.add(NAT, "istio-in-redirect", tcp(), Redirect(capture))
    # inbound
    if c.inbound_ports:
        wildcard_in = c.inbound_ports == WILDCARD
        established = _m("ct", "state", Flags(("related", "established")), "in")
        if tproxy:
            b.add(MANGLE, "istio-divert", set_mark(c.tproxy_mark))
            b.add(MANGLE, "istio-divert", Verdict("accept"))
            b.add(MANGLE, "istio-tproxy", tcp(), daddr(lb4, "!="), Tproxy("ip", None, capture),
                  set_mark(c.tproxy_mark), Verdict("accept"))
            b.add6(MANGLE, "istio-tproxy", tcp(), daddr(LOOPBACK6, "!="), Tproxy("ip6", None, capture),
                   set_mark(c.tproxy_mark), Verdict("accept"))
        table = MANGLE if tproxy else NAT
        b.add(table, "prerouting", tcp(), jump("istio-inbound"))
        if wildcard_in:
            for p in c.inbound_ports_exclude:
                b.add(table, "istio-inbound", tcp(), dport(p), ret())
            if tproxy:
                b.add(MANGLE, "istio-inbound", tcp(), established, jump("istio-divert"))
                b.add(MANGLE, "istio-inbound", tcp(), jump("istio-tproxy"))
            else:
                b.add(NAT, "istio-inbound", tcp(), jump("istio-in-redirect"))
        else:
            for p in c.inbound_port_list:
                if tproxy:
                    b.add(MANGLE, "istio-inbound", tcp(), established, dport(p), jump("istio-divert"))
                    b.add(MANGLE, "istio-inbound", tcp(), dport(p), jump("istio-tproxy"))
                else:
                    b.add(NAT, "istio-inbound", tcp(), dport(p), jump("istio-in-redirect"))
    # output: the jump, excluded ports, the inbound passthrough source
    b.add(NAT, "output", jump("istio-output"))
    for p in c.outbound_ports_exclude:
        b.add(NAT, "istio-output", dport(p), ret())
        b.add(NAT, "istio-output", dport(p, "udp"), ret())
    b.add(NAT, "istio-output", oif("lo"), saddr(PASSTHROUGH4), ret())
    b.add6(NAT, "istio-output", oif("lo"), saddr(PASSTHROUGH6), ret())
    # per proxy uid and gid: loopback back to the inbound side, other loopback out, own traffic out
    for kind, ids in (("skuid", c.proxy_uids), ("skgid", c.proxy_gids)):
        for ident in ids:
            ports: int | AnonSet = AnonSet(make_set([DNS_PORT, tunnel])) if dns and kind == "skuid" else tunnel
            for lb in (lb4, LOOPBACK6):
                (b.add if lb.version == 4 else b.add6)(
                    NAT, "istio-output", oif("lo"), tcp(), daddr(lb, "!="), _m("tcp", "dport", ports, "!="),
                    owner(kind, ident), jump("istio-in-redirect"))
            if not loopback_include:
                if dns:
                    b.add(NAT, "istio-output", oif("lo"), tcp(), dport(DNS_PORT, op="!="), owner(kind, ident, "!="),
                          ret())
                else:
                    b.add(NAT, "istio-output", oif("lo"), owner(kind, ident, "!="), ret())
            b.add(NAT, "istio-output", owner(kind, ident), ret())
    # owner groups
    if c.owner_groups_include != WILDCARD:
        b.add(NAT, "istio-output", *(owner("skgid", g, "!=") for g in c.owner_groups_include), ret())
    else:
        for g in c.owner_groups_exclude:
            b.add(NAT, "istio-output", owner("skgid", g), ret())
    if dns:
        _dns(b, c)
    # loopback, excluded CIDRs, included ports, included CIDRs
    b.add(NAT, "istio-output", daddr(lb4), ret())
    b.add6(NAT, "istio-output", daddr(LOOPBACK6), ret())
    for net in exclude4:
        b.add(NAT, "istio-output", daddr(net), ret())
    for net in exclude6:
        b.add6(NAT, "istio-output", daddr(net), ret())
    for p in c.outbound_ports:
        b.add(NAT, "istio-output", dport(p), jump("istio-redirect"))
    if wildcard_out:
        b.add(NAT, "istio-output", jump("istio-redirect"))
        for nic in c.reroute_interfaces:
            b.insert(NAT, "prerouting", 0, iif(nic), jump("istio-redirect"))
    else:
        for nets, v6 in ((include4, False), (include6, True)):
            for net in nets:
                for nic in c.reroute_interfaces:
                    (b.insert6 if v6 else b.insert)(NAT, "prerouting", 0, iif(nic), daddr(net), jump("istio-redirect"))
                (b.add6 if v6 else b.add)(NAT, "istio-output", daddr(net), jump("istio-redirect"))
    if tproxy:
        _tproxy_marks(b, c)
    return b


def _dns(b: _Recorder, c: CaptureConfig) -> None:
    """DNS capture: nat redirects to the agent's DNS port, raw-table conntrack zones."""
    servers4 = tuple(to_network(s) for s in c.dns_servers_v4)
    servers6 = tuple(to_network(s) for s in c.dns_servers_v6)
    b.add(RAW, "output", jump("istio-output-dns"))
    b.add(NAT, "istio-output", jump("istio-output-dns"))
    for proto in ("tcp", "udp"):
        if c.capture_all_dns:
            b.add(NAT, "istio-output-dns", *((tcp(),) if proto == "tcp" else ()), dport(DNS_PORT, proto),
                  Redirect(DNS_LISTENER_PORT))
            continue
        for s in servers4:
            b.add(NAT, "istio-output-dns", daddr(s), dport(DNS_PORT, proto), Redirect(DNS_LISTENER_PORT))
        for s in servers6:
            b.add6(NAT, "istio-output-dns", daddr(s), dport(DNS_PORT, proto), Redirect(DNS_LISTENER_PORT))
    for kind, ids in (("skuid", c.proxy_uids), ("skgid", c.proxy_gids)):
        for ident in ids:
            b.add(RAW, "istio-output-dns", dport(DNS_PORT, "udp"), owner(kind, ident), SetCtZone(1))
            b.add(RAW, "istio-output-dns", sport(DNS_LISTENER_PORT), owner(kind, ident), SetCtZone(2))
    if c.capture_all_dns:
        b.add(RAW, "prerouting", jump("istio-inbound"))
        b.add(RAW, "istio-output-dns", dport(DNS_PORT, "udp"), SetCtZone(2))
        b.add(RAW, "istio-inbound", sport(DNS_PORT), SetCtZone(1))
        return
    b.add(RAW, "prerouting", jump("istio-inbound"))
    for servers, add in ((servers4, b.add), (servers6, b.add6)):
        for s in servers:
            add(RAW, "istio-output-dns", dport(DNS_PORT, "udp"), daddr(s), SetCtZone(2))
            add(RAW, "istio-inbound", sport(DNS_PORT), saddr(s), SetCtZone(1))


def _tproxy_marks(b: _Recorder, c: CaptureConfig) -> None:
    """TPROXY: keep the proxy's mark on the connection, mark its own loopback traffic, and the three
    inserts at the head of mangle ``istio-inbound``."""
    m = c.tproxy_mark
    b.add(MANGLE, "prerouting", tcp(), mark(m), SetMark("ct", MarkValue("meta")))
    b.add(MANGLE, "output", oif("lo"), tcp(), mark(m), ret())
    for kind, ids in (("skuid", c.proxy_uids), ("skgid", c.proxy_gids)):
        for ident in ids:
            b.add(MANGLE, "output", oif("lo"), tcp(), daddr(c.host_ipv4_loopback_cidr, "!="), owner(kind, ident),
                  set_mark(OUTBOUND_MARK))
            b.add6(MANGLE, "output", oif("lo"), tcp(), daddr(LOOPBACK6, "!="), owner(kind, ident),
                   set_mark(OUTBOUND_MARK))
    b.add(MANGLE, "output", tcp(), _m("ct", "mark", m), SetMark("meta", MarkValue("ct")))
    b.insert(MANGLE, "istio-inbound", 0, tcp(), mark(m), ret())
    b.insert(MANGLE, "istio-inbound", 1, iif("lo"), tcp(), saddr(PASSTHROUGH4), ret())
    b.insert6(MANGLE, "istio-inbound", 1, iif("lo"), tcp(), saddr(PASSTHROUGH6), ret())
    b.insert(MANGLE, "istio-inbound", 2, iif("lo"), tcp(), mark(OUTBOUND_MARK, "!="), ret())


def _transaction(ops: list[_Op]) -> Iterator[Command]:
    """Istio's transaction: per table with rules, add + flush, the chains with rules, the rules
    (an insert at an index past the chain's end so far is an add)."""
    for table, chains in CHAINS.items():
        mine = [op for op in ops if op.table == table]
        if not mine:
            continue
        used = {op.chain for op in mine}
        yield AddTable("inet", table)
        yield FlushTable("inet", table)
        for name, hook in chains:
            if name in used:
                yield AddChain("inet", table, name, hook)
        count: dict[str, int] = {}
        for op in mine:
            index = op.index if op.index is not None and op.index < count.get(op.chain, 0) else None
            yield AddRule("inet", table, op.chain, op.rule, insert=index is not None, index=index)
            count[op.chain] = count.get(op.chain, 0) + 1


def nft_emission(config: CaptureConfig) -> tuple[Command, ...]:
    """The nft commands ``istio-iptables --native-nftables`` applies for ``config``, in order."""
    if config.mode == "NONE":
        return ()
    if config.minor < FIRST_MINOR:
        raise UnsupportedError(f"Istio {config.version} has no native nftables backend "
                               f"(sidecar --native-nftables exists from 1.{FIRST_MINOR})")
    return tuple(_transaction(_record(config).ops))


def nft_generate(config: CaptureConfig) -> Ruleset:
    """The nftables ruleset Istio's sidecar init installs for ``config`` (empty for mode NONE)."""
    return replay(nft_emission(config), source=f"istio {config.version} --native-nftables")
