"""The shell-script era: ``istio-iptables.sh`` of Istio 1.0–1.3 (and 1.4's Go port, which emits the
same rules), replayed command by command (istio-capture-facts.md §1.6).

Era differences that matter here:

* 1.0: no ``-k``/``-o``; the loopback rule ``-o lo ! -d 127.0.0.1/32 -j ISTIO_REDIRECT`` is always
  there; the IPv6 ``filter INPUT`` lockdown has no ``-i lo -d ::1`` line.
* 1.1–1.2: the loopback rule is left out when ``DISABLE_REDIRECTION_ON_LOCAL_LOOPBACK`` is set;
  ``-k`` inserts at ``PREROUTING`` position 1 (so they end up in reverse order); 1.2 adds ``-o``.
* 1.3 (and 1.4): inbound capture port 15006 when ``-b '*'``; ``-o lo -s 127.0.0.6/32 -j RETURN``;
  the loopback rule jumps to ``ISTIO_IN_REDIRECT``.

For an IPv4 pod (``ENABLE_INBOUND_IPV6`` empty) the script locks down ip6tables' ``filter INPUT``.
IPv6 pods in 1.1–1.4 got a partial mirror of the nat rules that is not modelled (``UnsupportedError``).
"""

from __future__ import annotations

from meshsolve.errors import UnsupportedError
from meshsolve.istio.builder import RuleBuilder, dport, dst, in_if, out_if, owner_gid, owner_uid, src, tcp
from meshsolve.istio.config import WILDCARD, CaptureConfig
from meshsolve.model.rules import (
    Accept,
    Jump,
    Match,
    Redirect,
    Reject,
    Return,
    Rulesets,
    SetMark,
    SocketMatch,
    StateMatch,
    Tproxy,
)

__all__ = ["generate_legacy", "record_legacy"]

_V4 = "ipv4"


def generate_legacy(c: CaptureConfig) -> Rulesets:
    """Rules of the 1.0–1.4 script algorithm for ``c`` (``c.minor`` ≤ 4)."""
    return record_legacy(c).build()


def record_legacy(c: CaptureConfig) -> RuleBuilder:
    """The script's command stream for ``c``, recorded (not yet replayed)."""
    m = c.minor
    if m < 1 and c.reroute_interfaces:
        raise UnsupportedError("-k (kube-virt interfaces) does not exist in Istio 1.0")
    if m < 2 and c.outbound_ports_exclude:
        raise UnsupportedError(f"-o (outbound ports exclude) does not exist in Istio {c.version}")
    unsupported = [name for name, used in (
        ("-q (outbound ports include)", bool(c.outbound_ports)),
        ("-c (exclude interfaces)", bool(c.exclude_interfaces)),
        ("DNS capture", c.dns_enabled()),
        ("drop invalid", c.drop_invalid),
        ("owner groups", c.owner_groups_include != WILDCARD or bool(c.owner_groups_exclude)),
    ) if used]
    if unsupported:
        raise UnsupportedError(f"not available in Istio {c.version}: {', '.join(unsupported)}")
    if c.enable_ipv6 and m >= 1:
        raise UnsupportedError(f"the IPv6 rules of Istio {c.version}'s script are not modelled")

    b = RuleBuilder()
    lb = "127.0.0.1/32"

    def a(table: str, chain: str, *ms: Match, target: object) -> None:
        b.append(_V4, table, chain, *ms, target=target)  # type: ignore[arg-type]

    def ins(table: str, chain: str, *ms: Match, target: object) -> None:
        b.insert(_V4, table, chain, 1, *ms, target=target)  # type: ignore[arg-type]

    tproxy = c.mode == "TPROXY"
    # 2–3. the redirect chains
    a("nat", "ISTIO_REDIRECT", tcp(), target=Redirect(c.proxy_port))
    a("nat", "ISTIO_IN_REDIRECT", tcp(), target=Redirect(c.effective_inbound_capture_port()))
    # 4. inbound
    if c.inbound_ports:
        table = "mangle" if tproxy else "nat"
        if tproxy:
            a("mangle", "ISTIO_DIVERT", target=SetMark(c.tproxy_mark))
            a("mangle", "ISTIO_DIVERT", target=Accept())
            a("mangle", "ISTIO_TPROXY", dst(lb, negated=True), tcp(),
              target=Tproxy(c.proxy_port, mark=c.tproxy_mark, mask=0xFFFFFFFF))
        a(table, "PREROUTING", tcp(), target=Jump("ISTIO_INBOUND"))
        if c.inbound_ports == WILDCARD:
            a(table, "ISTIO_INBOUND", tcp(), dport(22), target=Return())
            for p in c.inbound_ports_exclude:
                a(table, "ISTIO_INBOUND", tcp(), dport(p), target=Return())
            if tproxy:
                a(table, "ISTIO_INBOUND", tcp(), SocketMatch(), target=Jump("ISTIO_DIVERT"))
                a(table, "ISTIO_INBOUND", tcp(), target=Jump("ISTIO_TPROXY"))
            else:
                a(table, "ISTIO_INBOUND", tcp(), target=Jump("ISTIO_IN_REDIRECT"))
        else:
            for p in c.inbound_port_list:
                if tproxy:
                    # the script issues this line twice
                    a(table, "ISTIO_INBOUND", tcp(), dport(p), SocketMatch(), target=Jump("ISTIO_DIVERT"))
                    a(table, "ISTIO_INBOUND", tcp(), dport(p), SocketMatch(), target=Jump("ISTIO_DIVERT"))
                    a(table, "ISTIO_INBOUND", tcp(), dport(p), target=Jump("ISTIO_TPROXY"))
                else:
                    a(table, "ISTIO_INBOUND", tcp(), dport(p), target=Jump("ISTIO_IN_REDIRECT"))
    # 5–12. outbound
    a("nat", "OUTPUT", tcp(), target=Jump("ISTIO_OUTPUT"))
    for p in c.outbound_ports_exclude:
        a("nat", "ISTIO_OUTPUT", tcp(), dport(p), target=Return())
    if m >= 3:
        a("nat", "ISTIO_OUTPUT", out_if("lo"), src("127.0.0.6/32"), target=Return())
    if m == 0 or not c.disable_redirection_on_local_loopback:
        back = "ISTIO_IN_REDIRECT" if m >= 3 else "ISTIO_REDIRECT"
        a("nat", "ISTIO_OUTPUT", out_if("lo"), dst(lb, negated=True), target=Jump(back))
    for uid in c.proxy_uids:
        a("nat", "ISTIO_OUTPUT", owner_uid(uid), target=Return())
    for gid in c.proxy_gids:
        a("nat", "ISTIO_OUTPUT", owner_gid(gid), target=Return())
    a("nat", "ISTIO_OUTPUT", dst(lb), target=Return())
    for net in c.outbound_cidrs_exclude:
        if net.version == 4:
            a("nat", "ISTIO_OUTPUT", dst(net), target=Return())
    # 13–14. virtual interfaces and the include CIDRs
    for nic in c.reroute_interfaces:
        ins("nat", "PREROUTING", in_if(nic), target=Return())
    if c.outbound_cidrs == WILDCARD:
        a("nat", "ISTIO_OUTPUT", target=Jump("ISTIO_REDIRECT"))
        for nic in c.reroute_interfaces:
            ins("nat", "PREROUTING", in_if(nic), target=Jump("ISTIO_REDIRECT"))
    elif c.outbound_cidrs:
        for net in c.outbound_cidrs:
            if net.version != 4:
                continue
            for nic in c.reroute_interfaces:
                ins("nat", "PREROUTING", in_if(nic), dst(net), target=Jump("ISTIO_REDIRECT"))
            a("nat", "ISTIO_OUTPUT", dst(net), target=Jump("ISTIO_REDIRECT"))
        a("nat", "ISTIO_OUTPUT", target=Return())
    # 15. IPv6: an IPv4 pod locks down ip6tables filter INPUT
    if not c.enable_ipv6:
        b.append("ipv6", "filter", "INPUT", StateMatch(("ESTABLISHED",)), target=Accept())
        if m >= 1:
            b.append("ipv6", "filter", "INPUT", in_if("lo"), dst("::1/128"), target=Accept())
        b.append("ipv6", "filter", "INPUT", target=Reject())
    return b
