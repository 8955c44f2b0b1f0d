"""A witness is chosen canonically (``smt.solve._canonical``): the same question gives the same
first connection whichever model the solver found first, so the two kinds of solver ``search``
uses (``smt.solve.solver_kind``) give the same witnesses. Only the one door
both kinds pass through is changed here: which solver ``search`` makes."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from meshsolve.analysis.check import Refuted, check
from meshsolve.analysis.properties import Bypass, CaptureOutbound, NoExposure, NoLoops
from meshsolve.model.rules import OwnerMatch, Return, Rule, Table
from meshsolve.model.world import World
from meshsolve.semantics.setups import setup_world
from meshsolve.smt import solve as solve_mod

#: ``search``'s solver forced to one kind, whatever the question
KINDS = {kind: (lambda client, make=make: make()) for kind, make in solve_mod.SOLVERS.items()}


def _root_returns(uid: str) -> World:
    """Set-up E with ``-m owner --uid-owner UID -j RETURN`` on top of ISTIO_OUTPUT: that user's
    connections leave uncaptured, whatever its group (which the witness must still name)."""
    w = setup_world("E")
    rs = w.rules.ipv4
    nat = rs.table("nat")
    assert nat is not None
    chain = nat.chain("ISTIO_OUTPUT")
    assert chain is not None
    new = attrs.evolve(chain, rules=(Rule((OwnerMatch(uid=uid),), Return()), *chain.rules))
    table = Table("nat", tuple(new if c.name == "ISTIO_OUTPUT" else c for c in nat.chains))
    rs = attrs.evolve(rs, tables=(*tuple(t for t in rs.tables if t.name != "nat"), table))
    return attrs.evolve(w, rules=attrs.evolve(w.rules, ipv4=rs))


CASES = [
    ("root returns", lambda: _root_returns("0"), CaptureOutbound()),
    ("uid 4242 returns", lambda: _root_returns("4242"), CaptureOutbound()),
    ("A loops", lambda: setup_world("A"), NoLoops()),
    ("B loops", lambda: setup_world("B"), NoLoops()),
    ("A exposes", lambda: setup_world("A"), NoExposure()),
    ("root bypasses", lambda: _root_returns("0"), Bypass()),
]


@pytest.mark.parametrize(("name", "world", "prop"), CASES, ids=[c[0] for c in CASES])
def test_witness_does_not_depend_on_the_solver(name: str, world: Any, prop: Any,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    got = []
    for kind in KINDS.values():
        monkeypatch.setattr(solve_mod, "_solver", kind)
        got.append(check(world(), prop))
    a = got[0]
    for b in got[1:]:
        assert type(a) is type(b), (a, b)
        if isinstance(a, Refuted):
            assert isinstance(b, Refuted)
            assert a.flow == b.flow
            assert _ids(a) == _ids(b)


def _ids(v: Refuted) -> tuple[int, int, int | None]:
    app = v.world.app(v.flow.client) if v.flow.client not in ("peer", "proxy") else None
    return (-1, -1, None) if app is None else (app.uid, app.gid, app.mark)


@pytest.mark.parametrize("kind", list(KINDS))
def test_an_unnamed_user_is_named_canonically(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A user no app runs as returns: the witness is a process of that uid (the rule's) in the
    first app's group (the first group that works), whichever solver found it."""
    monkeypatch.setattr(solve_mod, "_solver", KINDS[kind])
    w = _root_returns("4242")
    v = check(w, CaptureOutbound())
    assert isinstance(v, Refuted), v
    assert _ids(v) == (4242, w.apps[0].gid, None)
