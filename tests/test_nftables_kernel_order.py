"""Where the kernel runs native nftables base chains among iptables' tables and among each other
(``model.path.kernel_order``, ``Ruleset.stages``, ``semantics.kernel.run_hook``), pinned on the
kernel: each case states the kernel's answer on its own (so it cannot pass by both sides being
wrong), then the interpreter must agree with the kernel (outcome and the nat rules' packet counters:
a nat chain the kernel skips counts nothing) and the solver must find no first connection of the
case's scope that ends otherwise."""

from __future__ import annotations

import ipaddress
from typing import Any

import attrs
import pytest
from nft_kernel import nft_unavailable_reason

from meshsolve.analysis.check import holds, outcome_kind
from meshsolve.analysis.worlds import world_from_rules
from meshsolve.iptables import parse_text as iptables_text
from meshsolve.model.path import EPHEMERAL_PORTS
from meshsolve.model.rules import RuleRef, Ruleset, Rulesets
from meshsolve.model.world import App, Flow, ProxyBehavior, Socket, World
from meshsolve.nftables.loadcheck import load_rulesets
from meshsolve.oracle.compare import differences, explain, nft_nat_chains, replay_command
from meshsolve.oracle.run import KernelWorld
from meshsolve.semantics.interpret import interpret
from meshsolve.semantics.trace import Delivered, Dropped, Rejected, Result
from meshsolve.smt.query import AllOf, DeliveredTo, EndsAs, ObservedExactly, Pred, Scope
from meshsolve.smt.solve import Candidate, NoWitness, search

_reason = nft_unavailable_reason()
pytestmark = [pytest.mark.kernel, pytest.mark.skipif(_reason is not None, reason=f"kernel test skipped: {_reason}")]

APPS = (App("app", uid=1000, gid=1000, sockets=(Socket("0.0.0.0", 9001), Socket("0.0.0.0", 9002),
                                                Socket("0.0.0.0", 9003))),)
FLOW = Flow("app", "127.0.0.1", 9999)


def _world(nft: str, iptables: str = "") -> World:
    low = load_rulesets(nft, "case.nft")
    ipt = iptables_text(iptables, "case.rules").ipv4.tables if iptables else ()
    rules = Rulesets(Ruleset("ipv4", ipt, low.ipv4.nft), low.ipv6)
    return attrs.evolve(world_from_rules(rules, ProxyBehavior(), apps=APPS,
                                         pod_ips=(ipaddress.ip_address("192.0.2.10"),)), rules=rules)


def _signature(r: Result) -> Pred:
    parts: list[Pred] = [EndsAs({outcome_kind(r)}), ObservedExactly(r.observed)]
    if isinstance(r.outcome, Delivered):
        o = r.outcome
        parts.append(DeliveredTo(app=o.app, bind=o.socket.bind, port=o.socket.port))
    return AllOf(parts)


def _kernel_then_agree(world: World, flow: Flow = FLOW) -> Any:
    """The kernel's result for ``flow``, after checking that the interpreter and the solver agree."""
    with KernelWorld(world) as kw:
        actual = kw.run(flow)
    expected = interpret(world, flow)
    assert not differences(expected, actual, hits=True, nat_chains=nft_nat_chains(world)), \
        explain(world, flow, expected, actual, replay_command(flow))
    scope = Scope(family="ipv4", client="app", app=flow.client, dst=(str(flow.dst),), dports=(str(flow.dport),))
    sig = _signature(actual)
    ans = search(world, scope, sig)
    if not isinstance(ans, NoWitness):
        # the scope ranges over every source port the app can bind, the kernel picks an ephemeral one:
        # a witness may differ only there (a reply to a port a rule names), and must replay as found
        assert isinstance(ans, Candidate), ans
        lo, hi = EPHEMERAL_PORTS
        assert ans.flow.sport is not None and not lo <= ans.flow.sport <= hi, ans.flow
        assert not holds(sig, interpret(ans.world, ans.flow)), ans.flow
    return actual


def _port(res: Any) -> int:
    assert isinstance(res.outcome, Delivered), res.outcome
    return int(res.outcome.socket.port)


def _nat_chain(table: str, name: str, prio: int, to: int, dport: int = 9999, hook: str = "output") -> str:
    return (f"add table ip {table}\nadd chain ip {table} {name} {{ type nat hook {hook} priority {prio} ; }}\n"
            f"add rule ip {table} {name} tcp dport {dport} counter redirect to :{to}\n")


# 1. Every nat chain of a hook (iptables' nat table is one too) runs inside one nat hook, in priority
#    order, and the first that binds the connection ends the others (nf_nat_inet_fn).
ONE_NAT_HOOK = _nat_chain("t", "out", -110, 9001)
ONE_NAT_HOOK_IPT = "*nat\n-A OUTPUT -p tcp -m tcp --dport 9001 -j REDIRECT --to-ports 9002\nCOMMIT\n"


def test_one_nat_hook_stops_at_the_first_binding() -> None:
    """nft at -110 redirects 9999 to 9001; iptables' nat (-100) would send 9001 on to 9002: it never
    sees the connection."""
    assert _port(_kernel_then_agree(_world(ONE_NAT_HOOK, ONE_NAT_HOOK_IPT))) == 9001


def test_two_nft_nat_chains_the_first_binding_wins() -> None:
    """Two nft nat chains on output: the lower priority binds first (9999 to 9001); the other, which
    would send 9001 on to 9002, never sees the connection."""
    text = _nat_chain("a", "out", 10, 9002, dport=9001) + _nat_chain("b", "out", -10, 9001)
    assert _port(_kernel_then_agree(_world(text))) == 9001


def test_a_nat_chain_that_does_not_bind_passes_the_connection_on() -> None:
    """The first nat chain matches nothing here (a null result, not a binding): the next one binds."""
    text = _nat_chain("a", "out", -10, 9001, dport=1234) + _nat_chain("b", "out", 10, 9002)
    assert _port(_kernel_then_agree(_world(text))) == 9002


def test_a_nat_chain_that_accepts_without_nat_does_not_bind() -> None:
    text = ("add table ip a\nadd chain ip a out { type nat hook output priority -10 ; }\n"
            "add rule ip a out tcp dport 9999 counter accept\n") + _nat_chain("b", "out", 10, 9003)
    assert _port(_kernel_then_agree(_world(text))) == 9003


# 2. The nat hook itself sits at the nat priority (-100 for prerouting/output): an nft nat chain at -110
#    runs after a filter chain at -105, whatever its own priority says.
NAT_PRIORITY = ("add table ip t\nadd chain ip t out { type nat hook output priority -110 ; }\n"
                "add chain ip t f { type filter hook output priority -105 ; }\n"
                "add rule ip t out tcp dport 9999 counter redirect to :9001\n"
                "add rule ip t f tcp dport 9001 counter drop\n")


def test_nat_runs_at_the_nat_hook_priority() -> None:
    assert _port(_kernel_then_agree(_world(NAT_PRIORITY))) == 9001


def test_a_nat_chain_at_a_late_priority_still_runs_before_filter() -> None:
    """A nat output chain at 50 runs at -100: before a filter chain at 0 that would drop the original
    port, which so never sees it."""
    text = (_nat_chain("t", "out", 50, 9001) + "add chain ip t f { type filter hook output priority 0 ; }\n"
            "add rule ip t f tcp dport 9999 counter drop\n")
    assert _port(_kernel_then_agree(_world(text))) == 9001


# 3. On equal priority the base chain registered last runs first (nf_hook_entries_grow inserts a new hook
#    before existing ones of its priority). The model takes the world's order as the registration
#    order (iptables' tables, then the nft tables as listed, their base chains as listed), and the
#    oracle loads them in that order.
TIE = ("add table ip t\nadd chain ip t f { type filter hook output priority 0 ; }\n"
       "add rule ip t f tcp dport 9999 counter drop\n")
TIE_IPT = "*filter\n-A OUTPUT -p tcp -m tcp --dport 9999 -j REJECT\nCOMMIT\n"


def test_a_later_base_chain_runs_first_on_a_tie() -> None:
    assert _kernel_then_agree(_world(TIE, TIE_IPT)).outcome == Dropped(RuleRef("ip t", "f", 1))


def test_a_later_nft_table_runs_first_on_a_tie() -> None:
    """Two filter tables at priority 0, each ending the connection its own way: the one listed (and
    loaded) second ends it; swap them and the other does."""
    drop = "add table ip d\nadd chain ip d f { type filter hook output priority 0 ; }\nadd rule ip d f tcp dport 9999 counter drop\n"
    reject = ("add table ip r\nadd chain ip r f { type filter hook output priority 0 ; }\n"
              "add rule ip r f tcp dport 9999 counter reject with tcp reset\n")
    assert isinstance(_kernel_then_agree(_world(drop + reject)).outcome, Rejected)
    assert _kernel_then_agree(_world(reject + drop)).outcome == Dropped(RuleRef("ip d", "f", 1))


def test_a_later_nat_chain_runs_first_on_a_tie() -> None:
    """Two nat chains at -100 in two tables: the one listed second binds first."""
    a, b = _nat_chain("a", "out", -100, 9001), _nat_chain("b", "out", -100, 9002)
    assert _port(_kernel_then_agree(_world(a + b))) == 9002
    assert _port(_kernel_then_agree(_world(b + a))) == 9001


@pytest.mark.parametrize("nat_first", [True, False])
def test_the_nat_hook_ties_as_registered_with_the_first_nat_chain(nat_first: bool) -> None:
    """A filter chain at exactly -100 and the nat hook: the nat hook registers with the family's first
    nat chain, so whichever of the two was created later runs first."""
    nat = "add chain ip t out { type nat hook output priority -100 ; }\n"
    flt = "add chain ip t f { type filter hook output priority -100 ; }\n"
    text = ("add table ip t\n" + (nat + flt if nat_first else flt + nat)
            + "add rule ip t out tcp dport 9999 counter redirect to :9001\n"
            + "add rule ip t f tcp dport 9001 counter drop\n")
    res = _kernel_then_agree(_world(text))
    if nat_first:  # the filter chain ran first and saw 9999, then nat redirected
        assert _port(res) == 9001
    else:  # nat redirected first, the filter chain dropped 9001
        assert res.outcome == Dropped(RuleRef("ip t", "f", 1))
