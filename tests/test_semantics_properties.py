"""Properties of the interpreter over many flows (Hypothesis, kept small so the suite stays fast)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from meshsolve.model import Flow
from meshsolve.semantics import Delivered, Egress, Loop, Refused, interpret, setup_addresses, setup_world

WORLDS = {(n, f): setup_world(n, f) for n in "ABCDE" for f in ("ipv4", "ipv6")}

flows = st.tuples(
    st.sampled_from(sorted(WORLDS)),
    st.sampled_from(["peer", "app", "proxy"]),
    st.sampled_from(["pod", "lo", "vip", "other"]),
    st.one_of(st.sampled_from([9001, 9002, 9003, 15001, 15006, 15008, 15020]), st.integers(1, 65535)),
)


def _flow(family: str, client: str, where: str, port: int) -> Flow:
    if where == "other":
        dst = "203.0.113.7" if family == "ipv4" else "2001:db8:ffff::7"
    else:
        dst = str(setup_addresses(family)[where])  # type: ignore[arg-type]
    return Flow(client, dst, port)


@settings(max_examples=300, deadline=None)
@given(flows)
def test_results_are_well_formed(case: tuple[tuple[str, str], str, str, int]) -> None:
    (name, family), client, where, port = case
    world = WORLDS[(name, family)]
    flow = _flow(family, client, where, port)
    if client == "peer" and where != "pod":
        return  # a peer reaching anything but the pod is not a pod question
    res = interpret(world, flow)
    ruleset = world.rules.for_family(flow.family)
    for ref in res.rule_hits:
        ruleset.rule(ref)  # every rule named in a trace exists
    assert res.trace[0].kind == "open" and res.trace[0].leg == 1
    assert res.summary.endswith(res.outcome.token)
    assert interpret(world, flow) == res  # deterministic
    if name in ("C", "D", "E") and port not in (15001, 15006):
        # (a connection straight to a proxy listener port is passed through to itself: the model's
        # proxy has no blackhole for its own ports, so that one may loop)
        assert not isinstance(res.outcome, Loop), str(res)
    if isinstance(res.outcome, Delivered):
        assert res.outcome.socket in world.app(res.outcome.app).sockets
    if where == "other" and client == "app" and name == "E":
        # the current default captures every outbound TCP connection, then lets it out
        assert isinstance(res.outcome, Egress) and res.observed == ("out",)
    if where == "lo" and client == "app" and port not in (15001, 15006):
        assert res.observed == () and isinstance(res.outcome, Delivered | Refused)  # loopback bypass
