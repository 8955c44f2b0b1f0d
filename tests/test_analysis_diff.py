"""Semantic diff of two worlds: proofs of equivalence and replayed differences."""

from __future__ import annotations

from meshsolve.analysis.diff import Different, Equivalent, diff, signature
from meshsolve.semantics.setups import setup_world


def test_a_world_is_equivalent_to_itself() -> None:
    (res,) = diff(setup_world("E"), setup_world("E"))
    assert isinstance(res, Equivalent)
    assert {s.client for s in res.scopes} == {"peer", "any-app"}


def test_plan_two_versus_modern_differs_for_the_peer() -> None:
    res = diff(setup_world("C"), setup_world("E"))
    assert res and all(isinstance(r, Different) for r in res)
    for r in res:
        assert isinstance(r, Different)
        assert signature(r.a) != signature(r.b)  # the witness replays differently on each side
    peer = next(r for r in res if isinstance(r, Different) and r.flow.client == "peer")
    assert peer.a.summary != peer.b.summary and peer.b.observed == ("in",)


def test_removing_the_loopback_rule_changes_self_calls() -> None:
    res = diff(setup_world("A"), setup_world("D"))
    assert any(isinstance(r, Different) for r in res)
