"""The solver against exhaustive concrete enumeration on generated worlds.

For a finite scope (a few destinations, a few ports, a few process ids) the solver's verdict —
no counterexample, or a counterexample that replays — must equal what interpreting every flow of
the scope says. ``check`` already raises ``InternalError`` when a witness does not replay; here we
also catch the other direction: a proof where enumeration finds a violation.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshsolve.analysis.check import enumerate_scope, holds
from meshsolve.model import World, to_address
from meshsolve.semantics.interpret import interpret
from meshsolve.semantics.trace import Delivered, Result
from meshsolve.smt.query import (
    AllOf,
    Captured,
    DeliveredTo,
    EndsAs,
    Not,
    Observed,
    ObservedExactly,
    Pred,
    Scope,
    SourceIs,
)
from meshsolve.smt.solve import Candidate, NoWitness, search
from meshsolve.strategies import SMALL_WORLD_ADDRS as FAM
from meshsolve.strategies import SMALL_WORLD_PORTS as PORTS
from meshsolve.strategies import small_worlds as worlds

EXAMPLES = int(os.environ.get("MESHSOLVE_DIFF_EXAMPLES", "500"))

PREDS = [Not(EndsAs({"loop"})), EndsAs({"delivered"}), Observed("out"), Observed("in"), Captured(),
         Captured("out"), DeliveredTo(port=9001), Not(EndsAs({"refused", "dropped"})),
         EndsAs({"egress", "delivered"})]


def scopes(w: World) -> list[Scope]:
    fam = w.families[0]
    a = FAM[fam]
    dsts = tuple(to_address(a[k]) for k in ("pod", "lo", "vip", "remote", "src6"))
    nets = tuple(str(d) for d in dsts)
    ports = tuple(str(p) for p in (*PORTS, 15001, 15006, 80))
    return [
        Scope(family=fam, client="peer", dports=ports),
        Scope(family=fam, client="app", app="app", dst=nets, dports=ports),
        Scope(family=fam, client="proxy", dst=nets, dports=ports),
        Scope(family=fam, client="any-app", ids=((1000, 1000), (1337, 1000), (1000, 1337)), dst=nets,
              dports=ports),
    ]


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds(), st.sampled_from(PREDS), st.integers(0, 3))
def test_solver_agrees_with_enumeration(world: World, pred: object, which: int) -> None:
    scope = scopes(world)[which]
    fam = world.families[0]
    dsts = [to_address(FAM[fam][k]) for k in ("pod", "lo", "vip", "remote", "src6")]
    ports = [*PORTS, 15001, 15006, 80]
    violations = [(f, r) for f, _w, r in enumerate_scope(world, scope, dsts=dsts, dports=ports)
                  if not holds(pred, r)]  # type: ignore[arg-type]
    ans = search(world, scope, pred)  # type: ignore[arg-type]
    if isinstance(ans, NoWitness):
        assert not violations, f"solver proved '{pred}' over {scope}, but {violations[0][0]} gives " \
                               f"{violations[0][1].summary}\n{violations[0][1]}"
    else:
        assert isinstance(ans, Candidate), ans
        r = interpret(ans.world, ans.flow)
        assert not holds(pred, r), f"solver witness {ans.flow} does not violate '{pred}': {r.summary}\n{r}"  # type: ignore[arg-type]
        assert violations, f"solver found {ans.flow} but enumeration found no violation"


def signature(r: Result) -> Pred:
    """Everything the solver models about a concrete result, as one predicate."""
    from meshsolve.analysis.check import outcome_kind

    parts: list[Pred] = [EndsAs({outcome_kind(r)}), ObservedExactly(r.observed)]
    if isinstance(r.outcome, Delivered):
        o = r.outcome
        parts += [DeliveredTo(app=o.app, bind=o.socket.bind, port=o.socket.port), SourceIs(o.source)]
    return AllOf(parts)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds(), st.data())
def test_solver_reproduces_each_flow_exactly(world: World, data: st.DataObject) -> None:
    """Point checks: for single flows, the solver proves the interpreter's exact end."""
    fam = world.families[0]
    a = FAM[fam]
    for _ in range(3):
        client = data.draw(st.sampled_from(["peer", "app", "proxy"]))
        dst = a["pod"] if client == "peer" else data.draw(st.sampled_from([a[k] for k in ("pod", "lo", "vip", "remote", "src6")]))
        port = data.draw(st.sampled_from([*PORTS, 15001, 15006, 80]))
        flow_kw = dict(client=client, dst=dst, dport=port)
        from meshsolve.model import Flow

        r = interpret(world, Flow(**flow_kw))  # type: ignore[arg-type]
        scope = Scope(family=fam, client=client if client != "app" else "app",  # type: ignore[arg-type]
                      app="app" if client == "app" else None, dst=(dst,), dports=(str(port),))
        sig = signature(r)
        ans = search(world, scope, sig)
        if isinstance(ans, Candidate):
            # another endpoint choice of the same flow may end differently: that is not a disagreement
            other = interpret(ans.world, ans.flow)
            assert ans.flow.endpoint != 0 and other.summary != r.summary, (
                f"the solver says {ans.flow} does not end as the interpreter says ({r.summary}; "
                f"replayed: {other.summary})\n{r}")
        else:
            assert isinstance(ans, NoWitness), ans


@pytest.mark.slow
@settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds(), st.sampled_from(PREDS), st.integers(0, 3))
def test_solver_agrees_with_enumeration_slow(world: World, pred: object, which: int) -> None:
    test_solver_agrees_with_enumeration.hypothesis.inner_test(world, pred, which)  # type: ignore[attr-defined]
