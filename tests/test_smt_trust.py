"""A Proved that cannot be false: the four ways the solver once said more than the kernel, each
pinned. (1) a table the solver did not walk; (2) "leaves the pod" taken for "completes"; (3) TPROXY
half modelled; (4) worlds the public strategies draw that the solver refused. With one semantics run
over two domains, each of these is settled for interpreter and solver at once; the kernel side of
each is in the oracle suite (tests/test_oracle_*.py, tests/test_oracle_kernel_facts.py)."""

from __future__ import annotations

import attrs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshsolve import (
    Failed,
    Flow,
    LeavesPod,
    NoLoops,
    Proved,
    Reachable,
    Refuted,
    Unknown,
    check,
    interpret,
    parse_text,
    setup_world,
    world_from_flags,
)
from meshsolve.iptables import render_save
from meshsolve.semantics import Dropped
from meshsolve.strategies import worlds


def test_1_a_security_table_drop_refutes_reachability() -> None:
    e = setup_world("E")
    text = render_save(e.rules) + "*security\n-A INPUT -p tcp -m tcp --dport 9001 -j DROP\nCOMMIT\n"
    w = attrs.evolve(e, rules=parse_text(text))
    res = interpret(w, Flow("peer", "192.0.2.10", 9001))
    assert isinstance(res.outcome, Dropped) and str(res.outcome.rule) == "security::INPUT#1"
    v = check(w, Reachable("peer", 9001))
    assert isinstance(v, Refuted), str(v)
    assert isinstance(v.result.outcome, Dropped) and str(v.result.outcome.rule) == "security::INPUT#1"


_REDIRECT_OUT_TO_INBOUND = """# ipv6
*nat
:ISTIO_IN_REDIRECT - [0:0]
:ISTIO_OUTPUT - [0:0]
-A OUTPUT -p tcp -j ISTIO_OUTPUT
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A ISTIO_OUTPUT -s ::6/128 -j RETURN
-A ISTIO_OUTPUT -m owner ! --uid-owner 1337 -j ISTIO_IN_REDIRECT
COMMIT
"""


def test_2_an_egress_from_an_address_only_lo_has_does_not_complete() -> None:
    """The inbound side forwards to the original destination from ::6: for a remote destination the
    SYN leaves with source ::6 and no answer can come back (seen on the kernel)."""
    e6 = setup_world("E", "ipv6")
    w = attrs.evolve(e6, rules=parse_text(_REDIRECT_OUT_TO_INBOUND))
    assert w.proxy.inbound_source_v6 is not None
    res = interpret(w, Flow("app", "2001:db8:203::5", 443))
    assert res.observed == ("in",)
    assert isinstance(res.outcome, Failed) and "::6" in res.outcome.reason
    v = check(w, LeavesPod("app", "2001:db8:203::5", 443))
    assert isinstance(v, Refuted), str(v)
    assert v.result.outcome.token == "failed"


def test_3_tproxy_eras_answer_without_unknown() -> None:
    """Every TPROXY era gets a verdict (``-m socket``, TPROXY, marks, policy routing and the return
    path are modelled); 1.10 and later deliver inbound connections (no loop), as its users saw."""
    for version in ("1.4", "1.8", "1.10", "1.20"):
        w = world_from_flags(["-p", "15001", "-z", "15006", "-u", "1337", "-m", "TPROXY", "-i", "*", "-b", "*"],
                             version=version)
        # the resource limit bounds each call; the wall limit is only a backstop (not the machine's load)
        v = check(w, NoLoops(), timeout_ms=300_000)
        assert not isinstance(v, Unknown), (version, str(v))
        port = w.apps[0].sockets[0].port  # the app the flags make possible (no port is invented)
        reach = check(w, Reachable("peer", port), timeout_ms=300_000)
        assert not isinstance(reach, Unknown), (version, str(reach))
        if version in ("1.10", "1.20"):
            assert isinstance(v, Proved) and isinstance(reach, Proved), (version, str(v), str(reach))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds(), st.sampled_from((9001, 9002, 9003)))
def test_4_the_solver_answers_every_world_the_strategies_draw(w: object, port: int) -> None:
    """Blackhole proxies, TPROXY-style ids, inbound knobs: a verdict, never an exception."""
    v = check(w, Reachable("peer", port))  # type: ignore[arg-type]
    assert isinstance(v, Proved | Refuted | Unknown)


def test_4_a_blackhole_proxy_is_answered() -> None:
    e = setup_world("E")
    w = attrs.evolve(e, proxy=attrs.evolve(e.proxy, outbound="blackhole"))
    v = check(w, LeavesPod("app", "203.0.113.5", 443))
    assert isinstance(v, Refuted) and v.result.summary == "out, refused"
