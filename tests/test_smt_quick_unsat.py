"""``search`` first asks Z3's plain solver and takes only its ``unsat``: verdicts and witnesses are
the ones the ``QF_BV`` solver alone gives, whether the quick try decides, fails or is switched off."""

from __future__ import annotations

from typing import Any

import pytest

import meshsolve.smt.solve as S
from meshsolve.analysis.check import check
from meshsolve.analysis.properties import NoLoops, Reachable, default_properties
from meshsolve.semantics.setups import SETUPS, setup_world


def _answers(monkeypatch: pytest.MonkeyPatch, **settings: Any) -> tuple[list[str], int]:
    """Every set-up's default properties (and one reachability) checked, as text with the witnesses;
    and how many queries the quick try decided."""
    for name, value in settings.items():
        monkeypatch.setattr(S, name, value)
    decided = [0]
    quick = S._refuted_quickly

    def counted(*args: Any) -> bool:
        got = quick(*args)
        decided[0] += got
        return got

    monkeypatch.setattr(S, "_refuted_quickly", counted)
    out = []
    for name in SETUPS:
        world = setup_world(name)
        for prop in (*default_properties(world), Reachable("peer", 9003)):
            v = check(world, prop)
            out.append(f"{name} {prop.title()}: {type(v).__name__} {v} {getattr(v, 'flow', '')}")
    return out, decided[0]


def test_the_quick_try_changes_no_verdict_and_no_witness(monkeypatch: pytest.MonkeyPatch) -> None:
    alone, none = _answers(monkeypatch, QUICK_UNSAT=False)
    assert none == 0
    quick, decided = _answers(monkeypatch, QUICK_UNSAT=True)
    assert decided > 0  # the quick try did decide queries
    assert quick == alone
    assert any("Refuted" in line for line in alone)  # witnesses were compared too


def test_a_quick_try_out_of_budget_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    alone, _ = _answers(monkeypatch, QUICK_UNSAT=False)
    starved, decided = _answers(monkeypatch, QUICK_UNSAT=True, QUICK_RLIMIT=1)
    assert decided == 0
    assert starved == alone


def test_large_rulesets_are_not_tried_quickly(monkeypatch: pytest.MonkeyPatch) -> None:
    """Over ``QUICK_RULES`` rules the plain solver is slower than ``QF_BV``: no quick try at all."""
    tried = [0]
    quick = S._refuted_quickly

    def counted(*args: Any) -> bool:
        tried[0] += 1
        return quick(*args)

    monkeypatch.setattr(S, "_refuted_quickly", counted)
    world = setup_world("A")
    monkeypatch.setattr(S, "QUICK_RULES", world.rules.for_family("ipv4").rule_count() - 1)
    check(world, NoLoops())
    assert tried[0] == 0
    monkeypatch.setattr(S, "QUICK_RULES", world.rules.for_family("ipv4").rule_count())
    check(world, Reachable("peer", 9003))  # another question: no encoding of it is cached yet
    assert tried[0] > 0
