"""istio-iptables as data: a ``CaptureConfig`` → the ``Rulesets`` Istio installs in the pod.

``generate(config)`` dispatches on the era. 1.0–1.4 use the shell-script algorithm (``legacy.py``;
1.4's first Go port emits the same rules). From 1.5 on this module follows the Go generator
(``tools/istio-iptables/pkg/capture/run.go``), issuing appends and ``-I`` inserts in Istio's own
emission order per family and replaying them (``builder.RuleBuilder``), with these era deltas
(istio-capture-facts.md §2.2):

* 1.5: the loopback rule is split per owner (``--uid-owner U -j ISTIO_IN_REDIRECT`` then
  ``! --uid-owner U -j RETURN``); ``ISTIO_IN_REDIRECT`` goes to 15006 only with ``-b '*'``;
  TPROXY diverts with ``-m socket`` and listens on the proxy port.
* 1.6: ``ISTIO_IN_REDIRECT`` always to the inbound capture port; TPROXY uses conntrack
  RELATED,ESTABLISHED, plus the 1.6–1.8 mangle ``OUTPUT`` 127.0.0.1 mark rule.
* 1.7: ``ISTIO_INBOUND --dport 15008 -j RETURN`` first; ``-q``.
* 1.9: TPROXY ``--on-port`` = inbound capture port, CONNMARK save/restore, insert #1.
* 1.11: TPROXY self-call marks (1338) and inserts #2/#3.  1.12: ``-c``.
* 1.13: no ``--dport 22`` RETURN.  1.14: owner groups.  1.18: ``-p tcp ! --dport 15008`` on the
  loopback IN_REDIRECT rules.  1.21: host IPv4 loopback CIDR.  1.23: no trailing RETURN after the
  include CIDRs.  1.24: ``ISTIO_DROP``.  1.25 (= current): ``OUTPUT -j ISTIO_OUTPUT`` without
  ``-p tcp``, ``-o`` for tcp and udp, ``ISTIO_OUTPUT_DNS`` (nat and raw) and raw ``ISTIO_INBOUND``.

What is checked (tests/test_istio_*): current against Istio's 28 master goldens — the final chains
*and* the command stream (every ``-A``/``-I`` in order, and the ``-N`` order) — and against the CNI
default golden; 1.12 against its golden; 1.10, 1.13, 1.18 and 1.6 against the fact sheet's derived
era vectors; everything on a real kernel (restore, dump, compare). Other eras follow the timeline
above and are derived, not checked against an Istio output. DNS capture is modelled for 1.25+
only (older DNS forms raise ``UnsupportedError``). Doubtful details: the TPROXY rules of 1.5–1.10
(the exact 1.9/1.10 mangle set) and whether the IPv4 host-loopback CIDR also replaces
``127.0.0.1/32`` in the TPROXY/mark rules (assumed yes).
"""

from __future__ import annotations

from meshsolve.errors import UnsupportedError
from meshsolve.istio.builder import (
    Op,
    RuleBuilder,
    dport,
    dst,
    in_if,
    not_dports,
    out_if,
    owner_gid,
    owner_uid,
    sport,
    src,
    tcp,
    udp,
)
from meshsolve.istio.config import WILDCARD, CaptureConfig
from meshsolve.model.net import Family, IPNetwork, to_network
from meshsolve.model.rules import (
    Accept,
    ConnmarkMatch,
    ConnmarkTarget,
    ConntrackMatch,
    CtTarget,
    Drop,
    Jump,
    MarkMatch,
    Match,
    Redirect,
    Return,
    Rulesets,
    SetMark,
    SocketMatch,
    Tproxy,
)

__all__ = ["DNS_LISTENER_PORT", "DNS_PORT", "OUTBOUND_MARK", "emission", "generate", "record", "require"]

DNS_PORT = 53
DNS_LISTENER_PORT = 15053  # istio-agent's DNS proxy
OUTBOUND_MARK = 1338
_LO = "lo"


def require(config: CaptureConfig, minor: int, what: str, present: bool) -> None:
    """Raise if a setting that exists only from Istio 1.<minor> is used with an older version."""
    if present and config.minor < minor:
        raise UnsupportedError(f"{what} does not exist in Istio {config.version} (added in 1.{minor})")


def generate(config: CaptureConfig) -> Rulesets:
    """The rules Istio's init step installs for ``config`` (empty for mode ``NONE``)."""
    return record(config).build()


def emission(config: CaptureConfig) -> tuple[Op, ...]:
    """Istio's command stream for ``config``: every ``-A``/``-I`` in the order the tool issues it
    (per family; ``generate`` is this stream replayed)."""
    return tuple(record(config).ops)


def record(config: CaptureConfig) -> RuleBuilder:
    """The recorded command stream (and chain declarations) for ``config``."""
    if config.mode == "NONE":
        return RuleBuilder()
    if config.script_era:
        from meshsolve.istio.legacy import record_legacy

        return record_legacy(config)
    _check_era(config)
    b = RuleBuilder()
    families: tuple[Family, ...] = ("ipv4", "ipv6") if config.enable_ipv6 else ("ipv4",)
    for fam in families:
        _emit_family(b, config, fam)
    return b


def _check_era(c: CaptureConfig) -> None:
    require(c, 7, "include outbound ports (-q)", bool(c.outbound_ports))
    require(c, 12, "exclude interfaces (-c)", bool(c.exclude_interfaces))
    require(c, 14, "outbound owner groups (ISTIO_OUTBOUND_OWNER_GROUPS[_EXCLUDE])",
            c.owner_groups_include != WILDCARD or bool(c.owner_groups_exclude))
    require(c, 21, "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR",
            c.host_ipv4_loopback_cidr != to_network("127.0.0.1/32"))
    require(c, 24, "drop invalid (ISTIO_DROP)", c.drop_invalid)
    if c.dns_enabled() and c.minor < 25:
        raise UnsupportedError(f"DNS capture rules of Istio {c.version} are not modelled (only 1.25+)")
    if c.disable_redirection_on_local_loopback:
        raise UnsupportedError("DISABLE_REDIRECTION_ON_LOCAL_LOOPBACK was removed in Istio 1.5")


def _in_family(nets: tuple[IPNetwork, ...], fam: Family) -> tuple[IPNetwork, ...]:
    want = 4 if fam == "ipv4" else 6
    return tuple(n for n in nets if n.version == want)


def _emit_family(b: RuleBuilder, c: CaptureConfig, fam: Family) -> None:
    """One family's command stream, in istio-iptables' order (facts §2.4)."""
    m = c.minor
    v4 = fam == "ipv4"
    lb: IPNetwork = (c.host_ipv4_loopback_cidr if m >= 21 else to_network("127.0.0.1/32")) if v4 \
        else to_network("::1/128")
    pass_src = to_network("127.0.0.6/32" if v4 else "::6/128")
    tproxy = c.mode == "TPROXY"
    cap = c.effective_inbound_capture_port()
    dns = c.dns_enabled()
    servers = c.dns_servers_v4 if v4 else c.dns_servers_v6
    dns_here = dns and (c.capture_all_dns or bool(servers))

    def a(table: str, chain: str, *ms: Match, target: object) -> None:
        b.append(fam, table, chain, *ms, target=target)  # type: ignore[arg-type]

    def ins(table: str, chain: str, pos: int, *ms: Match, target: object) -> None:
        b.insert(fam, table, chain, pos, *ms, target=target)  # type: ignore[arg-type]

    # 1. excluded interfaces; 2. reroute (kube-virt) interfaces; 3. drop invalid
    for nic in c.exclude_interfaces:
        for table in ("mangle", "nat") if tproxy else ("nat",):
            a(table, "PREROUTING", in_if(nic), target=Return())
            a(table, "OUTPUT", out_if(nic), target=Return())
    for nic in c.reroute_interfaces:
        ins("nat", "PREROUTING", 1, in_if(nic), target=Return())
    if c.drop_invalid:
        a("mangle", "PREROUTING", ConntrackMatch(("INVALID",)), target=Jump("ISTIO_DROP"))
        a("mangle", "ISTIO_DROP", target=Drop())
    # 4–6. tunnel port, the two redirect chains
    if m >= 7:
        a("nat", "ISTIO_INBOUND", tcp(), dport(c.inbound_tunnel_port), target=Return())
    a("nat", "ISTIO_REDIRECT", tcp(), target=Redirect(c.proxy_port))
    a("nat", "ISTIO_IN_REDIRECT", tcp(), target=Redirect(cap))
    # 7. inbound
    if c.inbound_ports:
        wildcard = c.inbound_ports == WILDCARD
        if tproxy:
            a("mangle", "ISTIO_DIVERT", target=SetMark(c.tproxy_mark))
            a("mangle", "ISTIO_DIVERT", target=Accept())
            on_port = cap if m >= 9 else c.proxy_port
            a("mangle", "ISTIO_TPROXY", dst(lb, negated=True), tcp(),
              target=Tproxy(on_port, mark=c.tproxy_mark, mask=0xFFFFFFFF))
            a("mangle", "PREROUTING", tcp(), target=Jump("ISTIO_INBOUND"))
            est: Match = ConntrackMatch(("RELATED", "ESTABLISHED")) if m >= 6 else SocketMatch()
            if wildcard:
                if m < 13:
                    a("mangle", "ISTIO_INBOUND", tcp(), dport(22), target=Return())
                for p in c.inbound_ports_exclude:
                    a("mangle", "ISTIO_INBOUND", tcp(), dport(p), target=Return())
                a("mangle", "ISTIO_INBOUND", tcp(), est, target=Jump("ISTIO_DIVERT"))
                a("mangle", "ISTIO_INBOUND", tcp(), target=Jump("ISTIO_TPROXY"))
            else:
                for p in c.inbound_port_list:
                    a("mangle", "ISTIO_INBOUND", tcp(), dport(p), est, target=Jump("ISTIO_DIVERT"))
                    a("mangle", "ISTIO_INBOUND", tcp(), dport(p), target=Jump("ISTIO_TPROXY"))
        else:
            a("nat", "PREROUTING", tcp(), target=Jump("ISTIO_INBOUND"))
            if wildcard:
                if m < 13:
                    a("nat", "ISTIO_INBOUND", tcp(), dport(22), target=Return())
                for p in c.inbound_ports_exclude:
                    a("nat", "ISTIO_INBOUND", tcp(), dport(p), target=Return())
                a("nat", "ISTIO_INBOUND", tcp(), target=Jump("ISTIO_IN_REDIRECT"))
            else:
                for p in c.inbound_port_list:
                    a("nat", "ISTIO_INBOUND", tcp(), dport(p), target=Jump("ISTIO_IN_REDIRECT"))
    # 8–9. the OUTPUT jump and outbound port exclusions
    a("nat", "OUTPUT", *((tcp(),) if m < 25 else ()), target=Jump("ISTIO_OUTPUT"))
    for p in c.outbound_ports_exclude:
        a("nat", "ISTIO_OUTPUT", tcp(), dport(p), target=Return())
        if m >= 25:
            a("nat", "ISTIO_OUTPUT", udp(), dport(p, "udp"), target=Return())
    # 10. the inbound passthrough hop (source 127.0.0.6 / ::6)
    a("nat", "ISTIO_OUTPUT", out_if(_LO), src(pass_src), target=Return())
    # 11–12. per proxy uid / gid: loopback to inbound, other loopback out, own traffic out
    include = c.outbound_cidrs
    loopback_include = include != WILDCARD and any(n.network_address.is_loopback for n in include)
    for kind, ids in (("uid", c.proxy_uids), ("gid", c.proxy_gids)):
        owner = owner_uid if kind == "uid" else owner_gid
        for ident in ids:
            ports: tuple[Match, ...] = ()
            if m >= 18:
                if dns and kind == "uid":
                    ports = (tcp(), not_dports((DNS_PORT, c.inbound_tunnel_port)))
                else:
                    ports = (tcp(), dport(c.inbound_tunnel_port, negated=True))
            a("nat", "ISTIO_OUTPUT", out_if(_LO), dst(lb, negated=True), *ports, owner(ident),
              target=Jump("ISTIO_IN_REDIRECT"))
            if not loopback_include:
                dns_ports = (tcp(), dport(DNS_PORT, negated=True)) if dns else ()
                a("nat", "ISTIO_OUTPUT", out_if(_LO), *dns_ports, owner(ident, negated=True), target=Return())
            a("nat", "ISTIO_OUTPUT", owner(ident), target=Return())
    # 13. owner groups
    if c.owner_groups_include != WILDCARD:
        a("nat", "ISTIO_OUTPUT", *(owner_gid(g, negated=True) for g in c.owner_groups_include),
          target=Return())
    else:
        for g in c.owner_groups_exclude:
            a("nat", "ISTIO_OUTPUT", owner_gid(g), target=Return())
    # 14. DNS (nat)
    if dns_here:
        a("nat", "ISTIO_OUTPUT", target=Jump("ISTIO_OUTPUT_DNS"))
        targets = [()] if c.capture_all_dns else [(dst(to_network(s)),) for s in servers]
        for d in targets:
            a("nat", "ISTIO_OUTPUT_DNS", tcp(), dport(DNS_PORT), *d, target=Redirect(DNS_LISTENER_PORT))
            a("nat", "ISTIO_OUTPUT_DNS", udp(), dport(DNS_PORT, "udp"), *d,
              target=Redirect(DNS_LISTENER_PORT))
    # 15–18. loopback, excluded CIDRs, included ports, included CIDRs
    a("nat", "ISTIO_OUTPUT", dst(lb), target=Return())
    for net in _in_family(c.outbound_cidrs_exclude, fam):
        a("nat", "ISTIO_OUTPUT", dst(net), target=Return())
    for p in c.outbound_ports:
        a("nat", "ISTIO_OUTPUT", tcp(), dport(p), target=Jump("ISTIO_REDIRECT"))
    if include == WILDCARD:
        a("nat", "ISTIO_OUTPUT", target=Jump("ISTIO_REDIRECT"))
        for nic in c.reroute_interfaces:
            ins("nat", "PREROUTING", 1, in_if(nic), target=Jump("ISTIO_REDIRECT"))
    else:
        nets = _in_family(include, fam)
        for net in nets:
            for nic in c.reroute_interfaces:
                ins("nat", "PREROUTING", 1, in_if(nic), dst(net), target=Jump("ISTIO_REDIRECT"))
            a("nat", "ISTIO_OUTPUT", dst(net), target=Jump("ISTIO_REDIRECT"))
        if nets and m < 23:
            a("nat", "ISTIO_OUTPUT", target=Return())
    # DNS (raw): conntrack zones keep the proxy's DNS flows apart from the app's
    if dns:
        a("raw", "OUTPUT", target=Jump("ISTIO_OUTPUT_DNS"))
        for kind, ids in (("uid", c.proxy_uids), ("gid", c.proxy_gids)):
            owner = owner_uid if kind == "uid" else owner_gid
            for ident in ids:
                a("raw", "ISTIO_OUTPUT_DNS", udp(), dport(DNS_PORT, "udp"), owner(ident),
                  target=CtTarget(zone=1))
                a("raw", "ISTIO_OUTPUT_DNS", udp(), sport(DNS_LISTENER_PORT), owner(ident),
                  target=CtTarget(zone=2))
        if dns_here:
            a("raw", "PREROUTING", target=Jump("ISTIO_INBOUND"))
            addrs: list[IPNetwork | None] = [None] if c.capture_all_dns else [to_network(s) for s in servers]
            for server in addrs:
                to_server = (dst(server),) if server else ()
                a("raw", "ISTIO_OUTPUT_DNS", udp(), dport(DNS_PORT, "udp"), *to_server,
                  target=CtTarget(zone=2))
                a("raw", "ISTIO_INBOUND", udp(), sport(DNS_PORT), *((src(server),) if server else ()),
                  target=CtTarget(zone=1))
    # 19. TPROXY extras (mangle)
    if tproxy:
        if 6 <= m <= 8:
            a("mangle", "OUTPUT", tcp(), src(lb), dst(lb, negated=True), target=SetMark(c.tproxy_mark))
        if m >= 9:
            a("mangle", "PREROUTING", tcp(), MarkMatch(c.tproxy_mark), target=ConnmarkTarget("save-mark"))
        if m >= 11:
            a("mangle", "OUTPUT", tcp(), out_if(_LO), MarkMatch(c.tproxy_mark), target=Return())
            for ident in c.proxy_uids:
                a("mangle", "OUTPUT", dst(lb, negated=True), tcp(), out_if(_LO), owner_uid(ident),
                  target=SetMark(OUTBOUND_MARK))
            for ident in c.proxy_gids:
                a("mangle", "OUTPUT", dst(lb, negated=True), tcp(), out_if(_LO), owner_gid(ident),
                  target=SetMark(OUTBOUND_MARK))
        if m >= 9:
            a("mangle", "OUTPUT", tcp(), ConnmarkMatch(c.tproxy_mark), target=ConnmarkTarget("restore-mark"))
            ins("mangle", "ISTIO_INBOUND", 1, tcp(), MarkMatch(c.tproxy_mark), target=Return())
        if m >= 11:
            ins("mangle", "ISTIO_INBOUND", 2, tcp(), src(pass_src), in_if(_LO), target=Return())
            ins("mangle", "ISTIO_INBOUND", 3, tcp(), in_if(_LO), MarkMatch(OUTBOUND_MARK, negated=True),
                target=Return())
