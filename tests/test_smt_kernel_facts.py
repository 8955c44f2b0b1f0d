"""The solver reaches the ends the kernel facts of ``tests/test_oracle_facts.py`` give, without the
kernel: for each fact a small world and a scope whose flows all end one way on the kernel (and in
the interpreter), and a question whose only violation would be the old, wrong ending; then a change
of the world that makes a witness exist, which the interpreter replays to the end the solver said."""

from __future__ import annotations

import pytest

from meshsolve.iptables import parse_text
from meshsolve.model.world import App, Socket, World
from meshsolve.semantics.interpret import interpret
from meshsolve.semantics.trace import Delivered, Failed, Rejected
from meshsolve.smt.query import AllOf, EndsAs, Not, Observed, Pred, Scope
from meshsolve.smt.solve import Candidate, NoWitness, search

POD4, PEER4 = "192.0.2.10", "192.0.2.20"
ANY = App("any", sockets=(Socket("0.0.0.0", 9001),))


def _world(v4: str, *apps: App) -> World:
    return World(pod_ips=(POD4,), peer_ips=(PEER4,), apps=apps or (ANY,), rules=parse_text(v4, source="test"))


def _no_witness(world: World, scope: Scope, pred: Pred) -> None:
    answer = search(world, scope, pred)
    if isinstance(answer, Candidate):
        pytest.fail(f"witness {answer.flow} (sport {answer.flow.sport}): {interpret(answer.world, answer.flow)}")
    assert isinstance(answer, NoWitness), answer


def _witness(world: World, scope: Scope, pred: Pred) -> Candidate:
    answer = search(world, scope, pred)
    assert isinstance(answer, Candidate), answer
    return answer


def test_a_loopback_syn_dnatted_out_of_the_pod_is_stuck_before_filter_output() -> None:
    """IPv4: nat OUTPUT DNATs 127.0.0.1:9101 to the peer; filter OUTPUT would reject it, but the
    re-route right after nat drops it first: every such connection fails, none is rejected. From
    the pod IP's source the same rules reject it."""
    rules = ("*filter\n-A OUTPUT -p tcp --dport 9101 -j REJECT\nCOMMIT\n*nat\n"
             "-A OUTPUT -d {} -p tcp --dport 9101 -j DNAT --to-destination 192.0.2.20\nCOMMIT\n")
    scope = Scope("ipv4", "app", app="any", dst=("127.0.0.1/32",), dports=(9101,))
    _no_witness(_world(rules.format("127.0.0.1/32")), scope, EndsAs({"failed"}))
    pod = Scope("ipv4", "app", app="any", dst=(f"{POD4}/32",), dports=(9101,))
    _no_witness(_world(rules.format(f"{POD4}/32")), pod, EndsAs({"rejected"}))
    seen = _witness(_world(rules.format(f"{POD4}/32")), pod, EndsAs({"failed"}))
    assert isinstance(interpret(seen.world, seen.flow).outcome, Rejected)


def test_the_zero_network_is_sent_and_not_answered() -> None:
    """0.0.0.0/8 but 0.0.0.0 is no connect() error: the capture rule hands port 80 to the proxy,
    and nobody answers; no flow there ends otherwise, every port-80 one is observed."""
    w = _world("*nat\n-A OUTPUT -p tcp --dport 80 -m owner ! --uid-owner 1337 -j REDIRECT --to-ports 15001\nCOMMIT\n")
    scope = Scope("ipv4", "app", app="any", dst=("0.0.0.0/8",), dst_not=("0.0.0.0/32",))
    _no_witness(w, scope, EndsAs({"failed"}))
    _no_witness(w, Scope("ipv4", "app", app="any", dst=("0.0.0.0/8",), dst_not=("0.0.0.0/32",), dports=(80,)),
                Observed("out"))
    seen = _witness(w, scope, Observed("out"))
    res = interpret(seen.world, seen.flow)
    assert res.observed == () and isinstance(res.outcome, Failed) and seen.flow.dport != 80, res


def test_the_proxy_accepts_and_closes_what_it_cannot_read() -> None:
    """Both directions in conntrack zone 5, a REDIRECT to the inbound listener: the peer's
    connection is observed on the inbound side and refused; in the default zone it is forwarded."""
    rules = ("*raw\n-A PREROUTING -p tcp -j CT --zone 5\n-A OUTPUT -p tcp -j CT --zone 5\nCOMMIT\n"
             "*nat\n-A PREROUTING -p tcp --dport 9003 -j REDIRECT --to-ports 15006\nCOMMIT\n")
    scope = Scope("ipv4", "peer", dst=(f"{POD4}/32",), dports=(9003,))
    app = App("app", sockets=(Socket("0.0.0.0", 9003),))
    _no_witness(_world(rules, app), scope, AllOf((Observed("in"), EndsAs({"refused"}))))
    seen = _witness(_world(rules.replace("--zone 5", "--zone 0"), app), scope, EndsAs({"refused"}))
    res = interpret(seen.world, seen.flow)
    assert res.observed == ("in",) and isinstance(res.outcome, Delivered), res


def test_no_witness_binds_a_source_port_a_listener_holds() -> None:
    """Only a client on source port 9001 is rejected (to ports other than 9001, whose SYN-ACK the
    rule rejects too); a wildcard listener holds 9001, so no such flow of the pod is rejected.
    Without that listener (9002 instead) the solver's witness binds 9001."""
    rules = "*filter\n-A OUTPUT -p tcp --sport 9001 -j REJECT\nCOMMIT\n"
    scope = Scope("ipv4", "app", app="any", dst=("127.0.0.1/32", f"{POD4}/32", f"{PEER4}/32"), dports_not=(9001,))
    _no_witness(_world(rules), scope, Not(EndsAs({"rejected"})))
    free = _world(rules, App("any", sockets=(Socket("0.0.0.0", 9002),)))
    seen = _witness(free, scope, Not(EndsAs({"rejected"})))
    assert seen.flow.sport == 9001 and isinstance(interpret(seen.world, seen.flow).outcome, Rejected)
