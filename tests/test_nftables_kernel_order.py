"""Where the kernel runs native nftables base chains among iptables' tables, and what the semantics
(``Ruleset.stages``, ``semantics.kernel.run_hook``) does not model yet: these expected failures pin
each case on the kernel (``xfail(strict=True)``: they pass, and must be changed, once the path logic
is). Each test also states the kernel's answer on its own, so it cannot pass by both sides being
wrong. The random nft worlds (``tests/nft_worlds.py``) do not draw these set-ups."""

from __future__ import annotations

import ipaddress

import attrs
import pytest
from nft_kernel import nft_unavailable_reason

from meshsolve.analysis.worlds import world_from_rules
from meshsolve.iptables import parse_text as iptables_text
from meshsolve.model.rules import RuleRef, Ruleset, Rulesets
from meshsolve.model.world import App, Flow, ProxyBehavior, Socket, World
from meshsolve.nftables.loadcheck import load_rulesets
from meshsolve.oracle.compare import differences, explain, replay_command
from meshsolve.oracle.run import KernelWorld
from meshsolve.semantics.interpret import interpret
from meshsolve.semantics.trace import Delivered, Dropped, Rejected

_reason = nft_unavailable_reason()
pytestmark = [pytest.mark.kernel, pytest.mark.skipif(_reason is not None, reason=f"kernel test skipped: {_reason}")]

APPS = (App("app", uid=1000, gid=1000, sockets=(Socket("0.0.0.0", 9001), Socket("0.0.0.0", 9002))),)
FLOW = Flow("app", "127.0.0.1", 9999)


def _world(nft: str, iptables: str = "") -> World:
    low = load_rulesets(nft, "case.nft")
    ipt = iptables_text(iptables, "case.rules").ipv4.tables if iptables else ()
    rules = Rulesets(Ruleset("ipv4", ipt, low.ipv4.nft), low.ipv6)
    return attrs.evolve(world_from_rules(rules, ProxyBehavior(), apps=APPS,
                                         pod_ips=(ipaddress.ip_address("192.0.2.10"),)), rules=rules)


def _kernel(world: World) -> object:
    with KernelWorld(world) as kw:
        return kw.run(FLOW)


def _agree(world: World) -> None:
    expected = interpret(world, FLOW)
    with KernelWorld(world) as kw:
        actual = kw.run(FLOW)
    assert not differences(expected, actual), explain(world, FLOW, expected, actual, replay_command(FLOW))


# 1. All nat chains of a hook (iptables' nat table is one too) run inside one nat hook, in priority order,
#    and the first that sets up NAT ends the others (nf_nat_inet_fn); the interpreter runs each nat stage.
ONE_NAT_HOOK = ("add table ip t\nadd chain ip t out { type nat hook output priority -110 ; }\n"
                "add rule ip t out tcp dport 9999 counter redirect to :9001\n")
ONE_NAT_HOOK_IPT = "*nat\n-A OUTPUT -p tcp -m tcp --dport 9001 -j REDIRECT --to-ports 9002\nCOMMIT\n"


def test_kernel_one_nat_hook_stops_at_the_first_binding() -> None:
    res = _kernel(_world(ONE_NAT_HOOK, ONE_NAT_HOOK_IPT))
    assert isinstance(res.outcome, Delivered) and res.outcome.socket.port == 9001  # type: ignore[attr-defined]


@pytest.mark.xfail(strict=True, reason="semantics: nat chains of one hook run one after the other, each may NAT "
                                       "(the kernel stops at the first binding)")
def test_interpreter_one_nat_hook_stops_at_the_first_binding() -> None:
    _agree(_world(ONE_NAT_HOOK, ONE_NAT_HOOK_IPT))


# 2. The nat hook itself sits at the nat priority (-100 for prerouting/output): an nft nat chain at -110
#    runs after a filter chain at -105, whatever its own priority says.
NAT_PRIORITY = ("add table ip t\nadd chain ip t out { type nat hook output priority -110 ; }\n"
                "add chain ip t f { type filter hook output priority -105 ; }\n"
                "add rule ip t out tcp dport 9999 counter redirect to :9001\n"
                "add rule ip t f tcp dport 9001 counter drop\n")


def test_kernel_nat_runs_at_the_nat_hook_priority() -> None:
    res = _kernel(_world(NAT_PRIORITY))
    assert isinstance(res.outcome, Delivered) and res.outcome.socket.port == 9001  # type: ignore[attr-defined]


@pytest.mark.xfail(strict=True, reason="semantics: an nft nat chain's stage is placed at its own priority, not "
                                       "at the nat hook's")
def test_interpreter_nat_runs_at_the_nat_hook_priority() -> None:
    assert isinstance(interpret(_world(NAT_PRIORITY), FLOW).outcome, Dropped)  # what the model says today
    _agree(_world(NAT_PRIORITY))


# 3. On equal priority the base chain registered last runs first (nf_hook_entries_grow inserts a new hook
#    before existing ones of its priority): the oracle loads iptables first, so nft's filter chain wins.
TIE = ("add table ip t\nadd chain ip t f { type filter hook output priority 0 ; }\n"
       "add rule ip t f tcp dport 9999 counter drop\n")
TIE_IPT = "*filter\n-A OUTPUT -p tcp -m tcp --dport 9999 -j REJECT\nCOMMIT\n"


def test_kernel_a_later_base_chain_runs_first_on_a_tie() -> None:
    assert _kernel(_world(TIE, TIE_IPT)).outcome == Dropped(RuleRef("ip t", "f", 1))  # type: ignore[attr-defined]


@pytest.mark.xfail(strict=True, reason="semantics: Ruleset.stages puts iptables first on a tie; the kernel runs "
                                       "the base chain registered last first")
def test_interpreter_a_later_base_chain_runs_first_on_a_tie() -> None:
    assert isinstance(interpret(_world(TIE, TIE_IPT), FLOW).outcome, Rejected)  # what the model says today
    _agree(_world(TIE, TIE_IPT))
