"""nftables lowered to the rule model: every construct the reader types, what it becomes, and what the
one semantics then does with it (the interpreter; the solver agrees on random nft worlds)."""

from __future__ import annotations

import ipaddress
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nft_worlds import nft_worlds

from meshsolve import Flow, interpret
from meshsolve.analysis.worlds import world_from_rules
from meshsolve.errors import UnsupportedError
from meshsolve.model import rules as m
from meshsolve.model.net import PortRange
from meshsolve.model.path import EPHEMERAL_PORTS
from meshsolve.model.world import ProxyBehavior, World
from meshsolve.nftables import parse_text
from meshsolve.nftables.loadcheck import load_rulesets
from meshsolve.nftables.lower import lower
from meshsolve.nftables.strategies import rulesets
from meshsolve.semantics.trace import Delivered, Dropped, Egress, Rejected
from meshsolve.smt.query import AllOf, DeliveredTo, EndsAs, ObservedExactly, Pred, Scope, SourceIs
from meshsolve.smt.solve import Candidate, NoWitness, search

M32 = 0xFFFFFFFF
POD = (ipaddress.ip_address("192.0.2.10"), ipaddress.ip_address("2001:db8::10"))


def _rule(text: str, family: str = "inet", pre: str = "") -> m.Rule:
    """The one rule ``text`` of chain ``c`` (chains ``x``/``y`` exist for jumps) lowered."""
    src = (f"add table {family} t\n{pre}add chain {family} t c\nadd chain {family} t x\nadd chain {family} t y\n"
           f"add rule {family} t c {text}\n")
    rs = lower(parse_text(src, source="case.nft"))
    ruleset = rs.ipv6 if family == "ip6" else rs.ipv4
    chain = ruleset.chain(f"{family} t", "c")
    assert chain is not None and len(chain.rules) == 1
    return chain.rules[0]


V4, V6 = m.FamilyMatch("ipv4"), m.FamilyMatch("ipv6")
CASES: list[tuple[str, tuple[Any, ...], Any]] = [
    # (rule text in an inet table, matches, target)
    ("meta l4proto tcp accept", (m.Protocol("tcp"),), m.Accept()),
    ("meta l4proto != udp drop", (m.Protocol("udp", True),), m.Drop()),
    ("meta l4proto { tcp, udp } return", (m.ProtocolSet(("tcp", "udp")),), m.Return()),
    ("tcp dport 15008 counter return", (m.PortMatch("tcp", dport=15008),), m.Return()),
    ("tcp sport != 53 jump x", (m.PortMatch("tcp", sport=53, sport_negated=True),), m.Jump("x")),
    ("udp dport 1000-2000 goto y", (m.PortMatch("udp", dport=PortRange(1000, 2000)),), m.Goto("y")),
    ("tcp dport < 1024 return", (m.PortMatch("tcp", dport=PortRange(0, 1023)),), m.Return()),
    ("tcp dport != { 53, 15008 } return",
     (m.PortMatch("tcp"), m.MultiportMatch("dports", (PortRange(53, 53), PortRange(15008, 15008)), True)), m.Return()),
    ("th dport 53 accept", (m.MultiportMatch("dports", (PortRange(53, 53),)),), m.Accept()),
    # nft 1.0.6 stores both != compares as one: "either differs"
    ("tcp dport != 5 tcp sport != 6 return", (m.PortPair("tcp", 6, 5, True),), m.Return()),
    ("tcp dport 5 tcp sport 6 return", (m.PortMatch("tcp", sport=6), m.PortMatch("tcp", dport=5)), m.Return()),
    ("ip daddr 10.0.0.0/8 return", (m.Destination("10.0.0.0/8"), V4), m.Return()),
    ("ip6 saddr != ::6 return", (m.Source("::6/128", True), V6), m.Return()),
    ("ip daddr != 127.0.0.1 ip daddr 10.0.0.0/8 return",
     (m.Destination("127.0.0.1/32", True), V4, m.AddressSet("dst", ("10.0.0.0/8",))), m.Return()),
    ("ip saddr { 10.0.0.0/8, 192.0.2.1 } return", (m.AddressSet("src", ("10.0.0.0/8", "192.0.2.1/32")), V4),
     m.Return()),
    ("ip daddr 192.0.2.1-192.0.2.3 return", (m.AddressSet("dst", ("192.0.2.1/32", "192.0.2.2/31")), V4),
     m.Return()),
    ("ip protocol tcp return", (V4, m.Protocol("tcp")), m.Return()),
    ("meta nfproto ipv6 return", (V6,), m.Return()),
    ("meta nfproto != ipv6 return", (V4,), m.Return()),
    ('iifname "lo" accept', (m.InInterface("lo"),), m.Accept()),
    ('oifname != "eth*" accept', (m.InterfaceSet("out", ("eth+",), True),), m.Accept()),
    ('iifname { "lo", "eth0" } accept', (m.InterfaceSet("in", ("eth0", "lo")),), m.Accept()),
    ("meta skuid 1337 return", (m.SocketOwner("uid", ("1337",)),), m.Return()),
    ("skgid != { 1, 2 } return", (m.SocketOwner("gid", ("1", "2"), True),), m.Return()),
    ("meta skgid java return", (m.SocketOwner("gid", ("java",)),), m.Return()),
    ("ct state established,related jump x", (m.ConntrackMatch(("RELATED", "ESTABLISHED")),), m.Jump("x")),
    ("ct state != new return", (m.ConntrackMatch(("NEW",), True),), m.Return()),
    ("ct state { new, untracked } return", (m.ConntrackMatch(("NEW", "UNTRACKED")),), m.Return()),
    ("meta mark & 0xfff != 0x539 return", (m.MarkMatch(0x539, 0xFFF, True),), m.Return()),
    ("mark and 0xfff == 0x111 accept", (m.MarkMatch(0x111, 0xFFF),), m.Accept()),
    ("ct mark 0x539 return", (m.ConnmarkMatch(0x539),), m.Return()),
    ("meta mark { 1, 2 } return", (m.MarkRanges("meta", ((1, 1), (2, 2))),), m.Return()),
    ("ct mark 0x10-0x1f return", (m.MarkRanges("ct", ((0x10, 0x1F),)),), m.Return()),
    # a value outside the mask never equals the masked mark
    ("meta mark & 0xff == 0x100 return", (m.MarkRanges("meta", ((0x100, 0x100),), 0xFF),), m.Return()),
    # statements
    ("meta l4proto tcp counter redirect to :15001", (m.Protocol("tcp"),), m.Redirect(15001)),
    ("redirect", (), m.Redirect()),
    ("tcp dport 80 dnat ip to 192.0.2.1:8080", (m.PortMatch("tcp", dport=80), V4), m.Dnat("192.0.2.1:8080")),
    ("masquerade", (), m.Masquerade()),
    ("reject with tcp reset", (m.Protocol("tcp"),), m.Reject("tcp-reset")),  # nft adds the tcp dependency
    ("reject", (), m.Reject()),
    ("meta mark set 1337", (), m.SetMark(1337)),
    ("meta mark set mark & 0xffff00ff | 0x200", (), m.SetMark(0x200, 0xFF00)),
    ("ct mark set meta mark", (), m.ConnmarkTarget("save-mark", 0, M32, M32, M32)),
    ("meta mark set ct mark", (), m.ConnmarkTarget("restore-mark", 0, M32, M32, M32)),
    ("ct mark set ct mark & 0xfffff000 | 0x111", (), m.ConnmarkTarget("set-xmark", 0x111, 0xFFF)),
    ("ct zone set 1", (), m.CtTarget(1)),
    ("meta mark set 1 ct mark set 2", (),
     m.MarkStatements((m.MarkStep("mark", None, 0, 1), m.MarkStep("ctmark", None, 0, 2)))),
    ("ct mark set meta mark ^ 0x1", (), m.MarkStatements((m.MarkStep("ctmark", "mark", M32, 1),))),
    ("meta l4proto tcp ip daddr != 127.0.0.1 tproxy ip to :15006 meta mark set 1337 counter accept",
     (m.Destination("127.0.0.1/32", True), m.Protocol("tcp"), V4, m.TproxySocket(15006)), m.Tproxy(15006, None, 1337)),
    ('counter log prefix "x" accept', (), m.Accept()),
    ("tcp dport 1 continue", (m.PortMatch("tcp", dport=1),), None),
    ("meta mark set 1 drop", (), m.Drop()),
    ("meta mark set 1 continue", (), m.SetMark(1)),
]


@pytest.mark.parametrize(("text", "matches", "target"), CASES, ids=[c[0] for c in CASES])
def test_construct_lowers_to(text: str, matches: tuple[Any, ...], target: Any) -> None:
    r = _rule(text)
    assert sorted(map(repr, r.matches)) == sorted(map(repr, matches))  # a conjunction: order is not meaning
    assert r.target == target


def test_an_ip_field_in_an_ip_table_needs_no_family_test() -> None:
    assert _rule("ip daddr 10.0.0.0/8 return", "ip").matches == (m.Destination("10.0.0.0/8"),)
    assert _rule("ip6 daddr ::1 return", "ip6").matches == (m.Destination("::1/128"),)


def test_named_sets_are_looked_up_in_the_table() -> None:
    pre = "add set inet t s { type ipv4_addr ; elements = { 192.0.2.1, 192.0.2.7 } ; }\n"
    assert set(_rule("ip saddr != @s return", pre=pre).matches) == {
        m.AddressSet("src", ("192.0.2.1/32", "192.0.2.7/32"), True), V4}
    pre = "add set inet t p { type inet_service ; elements = { 9001 } ; }\n"
    assert _rule("tcp dport @p return", pre=pre).matches == (m.PortMatch("tcp", dport=9001),)


@pytest.mark.parametrize("text", [
    "fib daddr type local accept", "limit rate 10/second accept", "tcp flags syn accept",
    "ip daddr . tcp dport { 10.0.0.1 . 80 } accept"])
def test_an_unmodelled_match_is_opaque(text: str) -> None:
    r = _rule(text)
    assert any(isinstance(x, m.OpaqueMatch) for x in r.matches) and r.target == m.Accept()


@pytest.mark.parametrize("text", [
    "meta nftrace set 1", "queue num 1", "notrack", "meta mark set 1 accept", "ct zone set 1 meta mark set 2",
    "tproxy ip to :15006", "meta mark set 1 tcp dport 1 accept",
    "ip daddr vmap { 10.0.0.1 : accept }", "redirect to :1 persistent"])
def test_an_unmodelled_statement_makes_the_target_opaque(text: str) -> None:
    assert isinstance(_rule(text).target, m.OpaqueTarget)


def test_rules_keep_their_nft_text_and_line() -> None:
    text = "add table inet t\nadd chain inet t c\n\nadd rule inet t c meta skuid 1337 counter return\n"
    rs = lower(parse_text(text, source="r.nft"))
    rule = rs.ipv4.rule(m.RuleRef("inet t", "c", 1))
    assert rule.origin is not None and (rule.origin.source, rule.origin.lineno) == ("r.nft", 4)
    assert rule.origin.text == "meta skuid 1337 counter return"
    assert rs.ipv6.rule(m.RuleRef("inet t", "c", 1)) == rule  # an inet table serves both families


def test_tables_by_family_and_base_chains() -> None:
    text = ("add table ip a\nadd chain ip a pre { type nat hook prerouting priority -100 ; }\n"
            "add table ip6 b\nadd chain ip6 b out { type filter hook output priority 10 ; policy drop ; }\n"
            "add table bridge c\nadd chain bridge c x\n")
    rs = lower(parse_text(text))
    assert [t.key for t in rs.ipv4.nft] == ["ip a"] and [t.key for t in rs.ipv6.nft] == ["ip6 b"]
    assert rs.ipv4.nft[0].bases == (m.BaseChain("pre", "PREROUTING", -100, "nat"),)
    assert rs.ipv6.chain("ip6 b", "out") == m.Chain("out", (), "DROP")
    assert rs.ipv4.nft[0].text is not None and "add chain ip a pre" in rs.ipv4.nft[0].text


def test_ingress_chains_are_not_modelled() -> None:
    text = ("add table netdev n\nadd chain netdev n i { type filter hook ingress device lo priority 0 ; }\n"
            "add rule netdev n i drop\n")
    with pytest.raises(UnsupportedError, match="netdev"):
        lower(parse_text(text))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(rulesets())
def test_any_ruleset_lowers_or_is_refused_as_unsupported(rs: Any) -> None:
    try:
        out = lower(rs)
    except UnsupportedError as exc:
        assert "not modelled" in str(exc)
        return
    total = sum(len(c.rules) for t in rs.tables if t.family in ("ip", "ip6", "inet") for c in t.chains)
    assert sum(len(c.rules) for n in {t.key: t for t in (*out.ipv4.nft, *out.ipv6.nft)}.values()
               for c in n.table.chains) == total


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(rulesets(kernel=True))
def test_loadable_rulesets_make_valid_worlds(rs: Any) -> None:
    """What the kernel loads is a world the model accepts (the nft placement rules of the registry)."""
    world_from_rules(lower(rs), ProxyBehavior(), pod_ips=POD)


# --- what the semantics does with nft's own meanings ---------------------------------------------


def _world(text: str, proxy: ProxyBehavior | None = None) -> World:
    return world_from_rules(load_rulesets(text, "w.nft"), proxy or ProxyBehavior(), pod_ips=POD)


NAT = ("add table inet t\nadd chain inet t out { type nat hook output priority -100 ; }\n"
       "add rule inet t out oifname != \"lo\" ip daddr != 127.0.0.1 tcp dport 80 redirect to :15001\n")


def test_an_ip_field_in_an_inet_table_restricts_the_rule_to_ipv4() -> None:
    w = _world(NAT)
    assert interpret(w, Flow("app", "203.0.113.9", 80)).observed == ("out",)
    six = interpret(w, Flow("app", "2001:db8:2::9", 80))
    assert six.observed == () and isinstance(six.outcome, Egress)  # != 127.0.0.1 does not hold for IPv6


def test_a_family_free_rule_applies_to_both_families() -> None:
    w = _world(NAT.replace(' ip daddr != 127.0.0.1', ''))
    assert interpret(w, Flow("app", "2001:db8:2::9", 80)).observed == ("out",)


def test_the_port_pair_holds_when_either_port_differs() -> None:
    """``tcp dport != 80 tcp sport != 1`` as nft 1.0.6 stores it: the source port (the kernel's
    pick) differs, so it holds for a connection to port 80 too."""
    w = _world(NAT.replace("tcp dport 80", "tcp dport != 80 tcp sport != 1"))
    assert interpret(w, Flow("app", "203.0.113.9", 80)).observed == ("out",)


def test_socket_owner_does_not_match_without_a_socket() -> None:
    """``meta skuid != 1337`` on a packet from another host (no socket): no match, unlike ``-m owner``."""
    text = ("add table inet t\nadd chain inet t pre { type filter hook prerouting priority 0 ; }\n"
            "add rule inet t pre meta skuid != 1337 drop\n")
    assert isinstance(interpret(_world(text), Flow("peer", "192.0.2.10", 8080)).outcome, Delivered)
    assert isinstance(interpret(_world(text.replace("prerouting priority 0", "output priority 0")),
                                Flow("app", "192.0.2.10", 8080)).outcome, Dropped)


TPROXY = ("add table inet t\nadd chain inet t pre { type filter hook prerouting priority -150 ; }\n"
          "add rule inet t pre meta l4proto tcp ip daddr 192.0.2.10 tproxy ip to :15006 meta mark set 1337 accept\n"
          "add rule inet t pre tcp dport 8080 reject\n")


def test_tproxy_without_a_transparent_socket_lets_the_chain_go_on() -> None:
    res = interpret(_world(TPROXY), Flow("peer", "192.0.2.10", 8080))
    assert res.outcome == Rejected(m.RuleRef("inet t", "pre", 2))  # iptables' TPROXY would drop it


def test_tproxy_with_a_transparent_listener_hands_the_connection_over() -> None:
    from meshsolve.model.routing import Routing

    w = _world(TPROXY, ProxyBehavior(uid=0, transparent=True))
    import attrs

    w = attrs.evolve(w, routing=Routing.tproxy(1337, table=133, families=("ipv4",)))
    assert interpret(w, Flow("peer", "192.0.2.10", 8080)).observed == ("in",)


def test_accept_ends_only_its_base_chain() -> None:
    text = ("add table inet t\nadd chain inet t a { type filter hook input priority 0 ; }\n"
            "add chain inet t b { type filter hook input priority 10 ; }\n"
            "add rule inet t a accept\nadd rule inet t b tcp dport 8080 drop\n")
    assert interpret(_world(text), Flow("peer", "192.0.2.10", 8080)).outcome == Dropped(m.RuleRef("inet t", "b", 1))


def test_traces_show_nft_rules_as_nft() -> None:
    res = interpret(_world(NAT), Flow("app", "203.0.113.9", 80))
    assert any('inet t::out#1 oifname != "lo" ip daddr != 127.0.0.1 tcp dport 80 redirect to :15001' in h.text
               for h in res.trace)


# --- the solver agrees with the interpreter on random nft worlds ---------------------------------


def _signature(r: Any) -> Pred:
    from meshsolve.analysis.check import outcome_kind

    parts: list[Pred] = [EndsAs({outcome_kind(r)}), ObservedExactly(r.observed)]
    if isinstance(r.outcome, Delivered):
        o = r.outcome
        parts += [DeliveredTo(app=o.app, bind=o.socket.bind, port=o.socket.port), SourceIs(o.source)]
    return AllOf(parts)


# CI profile: SOLVER_WORLDS derandomized worlds (two flows each); the campaign (``--run-slow``) draws
# SOLVER_CAMPAIGN fresh ones on every run
SOLVER_WORLDS = int(os.environ.get("MESHSOLVE_NFT_SOLVER_WORLDS", "40"))
SOLVER_CAMPAIGN = int(os.environ.get("MESHSOLVE_NFT_SOLVER_CAMPAIGN", "300"))


def _reproduce(case: tuple[World, Any], data: st.DataObject) -> None:
    """For single flows of an nft world the solver proves exactly the interpreter's end."""
    from meshsolve.analysis.check import holds
    from meshsolve.strategies import flows

    world, _ = case
    for _ in range(2):
        flow = data.draw(flows(world, clients=("peer", "proxy", world.apps[0].name)))
        r = interpret(world, flow)
        client = flow.client if flow.client in ("peer", "proxy") else "app"
        scope = Scope(family=flow.family, client=client, app=flow.client if client == "app" else None,  # type: ignore[arg-type]
                      dst=(str(flow.dst),), dports=(str(flow.dport),))
        sig = _signature(r)
        ans = search(world, scope, sig)
        if not isinstance(ans, NoWitness):
            assert isinstance(ans, Candidate), ans
            other = interpret(ans.world, ans.flow)
            # the scope ranges over every endpoint and every source port a client can bind, the flow
            # over the kernel's choice (the ephemeral range): a witness may differ only there, and
            # the interpreter must then agree that it breaks the signature (a summary does not name
            # the socket: another endpoint may reach the same app on another port)
            lo, hi = EPHEMERAL_PORTS
            other_port = ans.flow.sport is not None and not lo <= ans.flow.sport <= hi
            assert (ans.flow.endpoint != flow.endpoint or other_port) and not holds(sig, other), (
                f"the solver says {ans.flow!r} does not end as the interpreter says for {flow} ({r.summary}; "
                f"replayed: {other.outcome}, observed {other.observed})\n{r}")


@settings(max_examples=SOLVER_WORLDS, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(nft_worlds(), st.data())
def test_solver_reproduces_the_interpreter_on_random_nft_worlds(case: tuple[World, Any], data: st.DataObject) -> None:
    """For single flows of random nft worlds the solver proves exactly the interpreter's end."""
    _reproduce(case, data)


@pytest.mark.slow
@settings(max_examples=SOLVER_CAMPAIGN, deadline=None, suppress_health_check=list(HealthCheck))
@given(nft_worlds(), st.data())
def test_solver_reproduces_the_interpreter_on_random_nft_worlds_campaign(case: tuple[World, Any],
                                                                         data: st.DataObject) -> None:
    """The same over fresh random worlds on every run (opt in with ``--run-slow``)."""
    _reproduce(case, data)
