"""The seed's findings as proofs and counterexamples (issue: the solver)."""

from __future__ import annotations

import pytest

from meshsolve.analysis.check import Proved, Refuted, check
from meshsolve.analysis.properties import (
    Bypass,
    CaptureOutbound,
    NoExposure,
    NoLoops,
    Observation,
    Reachable,
)
from meshsolve.model.net import to_address
from meshsolve.semantics.setups import setup_world

ADDR = {
    "ipv4": {"pod": "192.0.2.10", "vip": "198.51.100.1"},
    "ipv6": {"pod": "2001:db8::10", "vip": "2001:db8:100::1"},
}
FAMILIES = ["ipv4", "ipv6"]


@pytest.mark.parametrize("family", FAMILIES)
def test_istio_1_2_refutes_pod_ip_listener_with_the_peer_flow(family: str) -> None:
    w = setup_world("A", family)  # type: ignore[arg-type]
    v = check(w, Reachable("peer", 9003))
    assert isinstance(v, Refuted)
    assert v.flow.client == "peer"
    assert v.flow.dst == to_address(ADDR[family]["pod"]) and v.flow.dport == 9003
    # the witness replays: the inbound side forwards to localhost where nothing listens
    assert v.result.summary == "in, refused"


@pytest.mark.parametrize("family", FAMILIES)
def test_pod_ip_endpoint_with_loopback_rule_loops(family: str) -> None:
    v = check(setup_world("B", family), NoLoops())  # type: ignore[arg-type]
    assert isinstance(v, Refuted)
    assert v.result.summary.endswith("loop")
    assert "in" in v.result.observed


@pytest.mark.parametrize("family", FAMILIES)
def test_modern_rules_prove_everything_the_seed_wanted(family: str) -> None:
    w = setup_world("E", family)  # type: ignore[arg-type]
    a = ADDR[family]
    for prop in (Reachable("peer", 9003), Reachable("peer", 9001), NoExposure(), NoLoops(),
                 Observation("app", a["vip"], 9001, sides=("out", "in")),
                 Observation("app", a["vip"], 9003, sides=("out", "in")), CaptureOutbound(), Bypass()):
        v = check(w, prop)
        assert isinstance(v, Proved), str(v)


@pytest.mark.parametrize("family", FAMILIES)
def test_plan_two_loses_the_server_side_of_the_self_call(family: str) -> None:
    w = setup_world("C", family)  # type: ignore[arg-type]
    vip = ADDR[family]["vip"]
    assert isinstance(check(w, Reachable("peer", 9003)), Proved)
    assert isinstance(check(w, NoLoops()), Proved)
    v = check(w, Observation("app", vip, 9001, sides=("out", "in")))
    assert isinstance(v, Refuted)
    assert v.result.observed == ("out",)
    assert isinstance(check(w, Observation("app", vip, 9001, sides=("out",))), Proved)


@pytest.mark.parametrize("setup", ["A", "D"])
def test_localhost_only_app_is_exposed_when_inbound_goes_to_localhost(setup: str) -> None:
    v = check(setup_world(setup, "ipv4"), NoExposure())
    assert isinstance(v, Refuted)
    assert v.flow.dport == 9002 and v.result.summary == "in, app<-127.0.0.1"


def test_proxy_ports_are_part_of_no_loops_only_on_request() -> None:
    w = setup_world("E", "ipv4")
    assert isinstance(check(w, NoLoops()), Proved)
    v = check(w, NoLoops(include_proxy_ports=True))
    assert isinstance(v, Refuted) and v.flow.dport in (15001, 15006)
