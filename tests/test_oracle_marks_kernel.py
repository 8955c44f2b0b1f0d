"""Apps whose sockets carry a mark (``App.mark``: ``SO_MARK`` on their connections and listeners) on
the real kernel: iptables ``-m mark`` and nft ``meta mark`` rules treat their connections, and the
SYN-ACKs of their listeners, as the interpreter says; the solver's mark witness replays there."""

from __future__ import annotations

import pytest

from meshsolve.iptables import parse_text
from meshsolve.model.rules import Rulesets
from meshsolve.model.world import App, Flow, ProxyBehavior, Socket, World
from meshsolve.nftables.loadcheck import load_rulesets
from meshsolve.oracle.compare import differences, explain, replay_command
from meshsolve.oracle.run import KernelWorld, OracleConfig
from meshsolve.semantics.interpret import interpret
from meshsolve.semantics.trace import Dropped, Egress, Result
from meshsolve.smt.query import Captured, Scope
from meshsolve.smt.solve import Candidate, search

pytestmark = pytest.mark.kernel

CONFIG = OracleConfig(connect_timeout=0.5, upstream_timeout=0.5)
ADDR = {"ipv4": dict(pod="192.0.2.10", peer="192.0.2.20", lo="127.0.0.1", wild="0.0.0.0", out="203.0.113.9"),
        "ipv6": dict(pod="2001:db8::10", peer="2001:db8::20", lo="::1", wild="::", out="2001:db8:2::9")}

# the connections of a process with mark 0x10 are let through; a mark whose bits 0xf0 are 0x20 goes to
# the proxy's inbound listener; every other connection of a non-proxy process to a non-loopback
# address to its outbound listener. A SYN-ACK from a listener marked 0x10 on port 9002 is dropped.
IPTABLES = """*nat
-A OUTPUT -p tcp -m mark --mark 0x10 -j RETURN
-A OUTPUT -p tcp -m mark --mark 0x20/0xf0 -j REDIRECT --to-ports 15006
-A OUTPUT -p tcp ! -d {lo} -m owner ! --uid-owner 1337 -j REDIRECT --to-ports 15001
COMMIT
*filter
-A OUTPUT -p tcp -m tcp --sport 9002 -m mark --mark 0x10 -j DROP
COMMIT
"""

NFT = """table {fam} marks {{
 chain out {{
  type nat hook output priority -100; policy accept;
  meta l4proto tcp meta mark 0x10 return
  meta l4proto tcp meta mark & 0xf0 == 0x20 redirect to :15006
  meta l4proto tcp {daddr} != {lo} meta skuid != 1337 redirect to :15001
 }}
 chain filter_out {{
  type filter hook output priority 0; policy accept;
  tcp sport 9002 meta mark 0x10 drop
 }}
}}
"""


def _world(family: str, rules: Rulesets) -> World:
    a = ADDR[family]
    apps = (App("plain", uid=1000, sockets=(Socket(a["wild"], 9001),)),
            App("marked", uid=1001, gid=1001, mark=0x10, sockets=(Socket(a["wild"], 9002),)),
            App("inward", uid=1002, gid=1002, mark=0x1020),
            App("other", uid=1003, gid=1003, mark=0x30))
    return World(pod_ips=(a["pod"],), peer_ips=(a["peer"],), apps=apps, rules=rules, proxy=ProxyBehavior())


def _rules(form: str, family: str) -> Rulesets:
    a = ADDR[family]
    if form == "iptables":
        rs = parse_text(IPTABLES.format(lo=a["lo"]), "<marks>")  # the family its addresses say
        assert rs.for_family(family).tables
        return rs
    fam, daddr = ("ip", "ip daddr") if family == "ipv4" else ("ip6", "ip6 daddr")
    return load_rulesets(NFT.format(fam=fam, daddr=daddr, lo=a["lo"]), "<marks.nft>")


def _flows(family: str) -> tuple[Flow, ...]:
    a = ADDR[family]
    return (Flow("plain", a["out"], 80), Flow("marked", a["out"], 80), Flow("inward", a["out"], 80),
            Flow("other", a["out"], 80), Flow("marked", a["pod"], 9001), Flow("plain", a["lo"], 9002),
            Flow("peer", a["pod"], 9001), Flow("peer", a["pod"], 9002))


def _agree(world: World, flows: tuple[Flow, ...]) -> dict[Flow, Result]:
    out: dict[Flow, Result] = {}
    with KernelWorld(world, CONFIG) as kw:
        for flow in flows:
            expected, actual = interpret(world, flow), kw.run(flow)
            assert not differences(expected, actual, hits=True), \
                explain(world, flow, expected, actual, replay_command(flow))
            out[flow] = actual
    return out


@pytest.mark.parametrize("form", ["iptables", "nft"])
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_marked_apps_agree_with_the_kernel(form: str, family: str) -> None:
    world = _world(family, _rules(form, family))
    got = _agree(world, _flows(family))
    a = ADDR[family]
    # what the rules say, as the kernel did it: the mark decides, not the uid
    assert got[Flow("plain", a["out"], 80)].observed == ("out",)
    assert got[Flow("marked", a["out"], 80)].observed == () and \
        isinstance(got[Flow("marked", a["out"], 80)].outcome, Egress)
    assert got[Flow("inward", a["out"], 80)].observed[:1] == ("in",)
    assert got[Flow("other", a["out"], 80)].observed == ("out",)
    # a listener's mark is on its SYN-ACK: the peer's connection to the marked app's port is dropped
    assert isinstance(got[Flow("peer", a["pod"], 9002)].outcome, Dropped)
    assert got[Flow("peer", a["pod"], 9001)].summary.startswith("plain<-")


@pytest.mark.parametrize("form", ["iptables", "nft"])
def test_the_solvers_mark_witness_replays_on_the_kernel(form: str) -> None:
    """Over every mark, the solver finds the one the rules let through; its made-up process, marked so,
    escapes capture on the kernel too."""
    world = _world("ipv4", _rules(form, "ipv4"))
    scope = Scope(family="ipv4", client="any-app", uid_not=(1337,), local=False, dst=("203.0.113.9/32",),
                  dports=("80",), any_mark=True)
    ans = search(world, scope, Captured())
    assert isinstance(ans, Candidate)
    assert ans.world.app(ans.flow.client).mark == 0x10
    (actual,) = _agree(ans.world, (ans.flow,)).values()
    assert actual.observed == () and isinstance(actual.outcome, Egress)
