"""The solver against exhaustive concrete enumeration on generated worlds.

For a finite scope (a few destinations, a few ports, a few process ids; in one scope any socket mark
but none, enumerated as the palette's marks) the solver's verdict —
no counterexample, or a counterexample that replays — must equal what interpreting every flow of
the scope says. ``check`` already raises ``InternalError`` when a witness does not replay; here we
also catch the other direction: a proof where enumeration finds a violation.

The worlds are ``meshsolve.strategies.small_worlds``: rules of every registered kind in every table
at every hook a connection meets, policy routing, transparent proxies, SO_REUSEPORT pairs (the
coverage test in ``test_api_strategies_coverage.py`` fails if a kind, a table or a hook is never drawn).
Destinations include what ``connect()`` treats specially (0.0.0.0, broadcast, multicast, link-local).

Where a rule the model leaves open decides (an unmodelled module or target: the solver chooses
freely, the interpreter says ``undetermined``), the comparison is the one ``check`` makes: a
solver witness whose replay is undetermined, or whose search named opaque choices, is an
``Unknown``, not a disagreement; an enumerated violation that is itself undetermined does not
contradict a proof that holds for every choice.

Profiles: ``MESHSOLVE_DIFF_EXAMPLES`` examples per test in CI (fast); the slow campaign
(``--run-slow``) runs ``MESHSOLVE_DIFF_CAMPAIGN`` examples (default 20,000) of the enumeration test;
its runs are recorded in ``docs/validation.md``.
"""

from __future__ import annotations

import os
import time
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshsolve.analysis.check import enumerate_scope, holds, outcome_kind
from meshsolve.model import Flow, World, to_address
from meshsolve.model.net import IPAddress
from meshsolve.model.path import EPHEMERAL_PORTS
from meshsolve.semantics.interpret import interpret
from meshsolve.semantics.trace import Delivered, Result, Undetermined
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
from meshsolve.smt.solve import Candidate, NoWitness, SolverGaveUp, search
from meshsolve.strategies import SMALL_WORLD_ADDRS as FAM
from meshsolve.strategies import SMALL_WORLD_OWN_PORT as OWN_PORT
from meshsolve.strategies import SMALL_WORLD_PORTS as PORTS
from meshsolve.strategies import SPECIAL_DESTINATIONS, small_world_palette
from meshsolve.strategies import small_worlds as worlds

EXAMPLES = int(os.environ.get("MESHSOLVE_DIFF_EXAMPLES", "40"))
CAMPAIGN = int(os.environ.get("MESHSOLVE_DIFF_CAMPAIGN", "20000"))
# Both sides follow a flow for this many connections (a longer one is a loop for both): the small
# worlds' proxy hops repeat well within it, and the encoding's size grows with it.
HOPS = 4

PREDS = [Not(EndsAs({"loop"})), EndsAs({"delivered"}), Observed("out"), Observed("in"), Captured(),
         Captured("out"), DeliveredTo(port=9001), Not(EndsAs({"refused", "dropped"})),
         EndsAs({"egress", "delivered"}), Not(EndsAs({"rejected", "failed"})), EndsAs({"dropped", "rejected"}),
         Not(DeliveredTo(app="proxy"))]
DST_KEYS = ("pod", "lo", "vip", "remote", "src6")
DPORTS = (*PORTS, 15001, 15006, OWN_PORT, 80)


def destinations(fam: str) -> list[IPAddress]:
    """The world's addresses and the special destinations of the family."""
    return [to_address(FAM[fam][k]) for k in DST_KEYS] + [to_address(x) for x in SPECIAL_DESTINATIONS[fam]]


def scopes(w: World, dsts: list[IPAddress], ports: tuple[int, ...] = DPORTS) -> list[Scope]:
    fam = w.families[0]
    nets = tuple(str(d) for d in dsts)
    pr = tuple(str(p) for p in ports)
    return [
        Scope(family=fam, client="peer", dports=pr),
        Scope(family=fam, client="app", app="app", dst=nets, dports=pr),
        Scope(family=fam, client="proxy", dst=nets, dports=pr),
        Scope(family=fam, client="any-app", ids=((1000, 1000), (1337, 1000), (1000, 1337)), dst=nets, dports=pr),
        # any socket mark but none (scope 3 has the unmarked processes)
        Scope(family=fam, client="any-app", ids=((1000, 1000), (1337, 1337)), dst=nets, dports=pr, any_mark=True,
              mark_not=(0,)),
        # a peer's connections naming an app port as a tunnel's inner target (a proxy with a tunnel listener)
        *([Scope(family=fam, client="peer", dports=pr, inner=PORTS[0])] if _tunnelled(w) else []),
    ]


def marks(w: World) -> tuple[int, ...]:
    """The socket marks enumeration tries for a scope over every mark: none, and the palette's (the
    values the worlds' mark rules, routes and apps are drawn from)."""
    return (0, *small_world_palette(w.families[0]).marks)


def _show(world: World, flow: Flow, r: Result) -> str:
    from meshsolve.iptables import render_save

    return (f"world: {world!r}\nrules:\n{render_save(world.rules)}\nrouting: {world.routing}\n"
            f"flow {flow}: the interpreter says {r.summary}\n{r}")


def compare(world: World, pred: Pred, scope: Scope, dsts: list[IPAddress], ports: tuple[int, ...]) -> str:
    """The solver's answer for (scope, pred) against interpreting every flow of the finite scope:
    raises on a disagreement, else says how they agreed (``proved``, ``refuted``, ``unknown``: an
    opaque rule decides, ``gave-up``: the solver hit its resource limit, which ``check`` answers
    ``Unknown``)."""
    tried = marks(world)
    violations = [(f, w, r) for f, w, r in enumerate_scope(world, scope, dsts=dsts, dports=ports, marks=tried,
                                                          hops=HOPS) if not holds(pred, r)]
    ans = search(world, scope, pred, hops=HOPS)
    if isinstance(ans, NoWitness):
        # a proof holds for every choice of an opaque rule: an undetermined violation does not refute it
        real = [(f, w, r) for f, w, r in violations if not (ans.opaque and isinstance(r.outcome, Undetermined))]
        if real:
            f, w, r = real[0]
            raise AssertionError(f"the solver proved '{pred}' over {scope}, but\n{_show(w, f, r)}")
        return "proved"
    if isinstance(ans, SolverGaveUp):
        return "gave-up"
    assert isinstance(ans, Candidate), ans
    r = interpret(ans.world, ans.flow, max_hops=HOPS)
    if isinstance(r.outcome, Undetermined) or (ans.opaque and holds(pred, r)):
        return "unknown"  # check() answers Unknown here
    assert not holds(pred, r), (f"the solver claims {ans.flow} violates '{pred}' over {scope}, but\n"
                                f"{_show(ans.world, ans.flow, r)}")
    if violations:
        return "refuted"
    # enumeration tries the palette's marks; the solver any 32-bit one: a witness with another mark is
    # a flow enumeration never tried
    if scope.any_mark and (ans.world.app(ans.flow.client).mark or 0) not in tried:
        return "refuted"
    # enumeration tries the kernel's choice of source port (the ephemeral range); the solver may
    # pick any port a client can bind: a witness outside that range is a flow enumeration never tried
    lo, hi = EPHEMERAL_PORTS
    assert ans.flow.sport is not None and not lo <= ans.flow.sport <= hi, (
        f"the solver found {ans.flow!r} violating '{pred}' over {scope}, but enumeration found no "
        f"violation (ports {ports}, destinations {[str(d) for d in dsts]})\n{_show(ans.world, ans.flow, r)}")
    return "refuted"


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(worlds(), st.sampled_from(PREDS), st.integers(0, 5))
def test_solver_agrees_with_enumeration(world: World, pred: Pred, which: int) -> None:
    fam = world.families[0]
    dsts = destinations(fam)
    here = scopes(world, dsts)
    compare(world, pred, here[which % len(here)], dsts, DPORTS)


def _tunnelled(w: World) -> bool:
    return w.proxy.tunnel_port is not None and w.proxy.tunnel_port in w.proxy.own_listeners


@settings(max_examples=max(EXAMPLES // 5, 1), deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(worlds().filter(_tunnelled))
def test_solver_agrees_with_enumeration_through_the_tunnel(world: World) -> None:
    """Worlds whose proxy has a tunnel listener, asked every question about a peer's connections
    that name an app port as the tunnel's inner target (the last scope: a peer's few flows)."""
    fam = world.families[0]
    dsts = destinations(fam)
    scope = scopes(world, dsts)[-1]
    assert scope.inner == PORTS[0]
    for pred in PREDS:
        compare(world, pred, scope, dsts, DPORTS)


def signature(r: Result) -> Pred:
    """Everything the solver models about a concrete result, as one predicate."""
    parts: list[Pred] = [EndsAs({outcome_kind(r)}), ObservedExactly(r.observed)]
    if isinstance(r.outcome, Delivered):
        o = r.outcome
        parts += [DeliveredTo(app=o.app, bind=o.socket.bind, port=o.socket.port), SourceIs(o.source)]
    return AllOf(parts)


def reproduce(world: World, flow: Flow) -> None:
    """The solver proves the interpreter's exact end for one flow."""
    fam = world.families[0]
    r = interpret(world, flow, max_hops=HOPS)
    scope = Scope(family=fam, client=flow.client if flow.client in ("peer", "proxy") else "app",  # type: ignore[arg-type]
                  app=flow.client if flow.client not in ("peer", "proxy") else None, dst=(flow.dst,),
                  dports=(str(flow.dport),), inner=flow.inner)
    ans = search(world, scope, signature(r), hops=HOPS)
    if isinstance(ans, Candidate):
        other = interpret(ans.world, ans.flow, max_hops=HOPS)
        if ans.opaque and (isinstance(r.outcome, Undetermined) or isinstance(other.outcome, Undetermined)):
            return  # an opaque rule decides: the solver may choose either way
        # another endpoint choice, or a source port outside the kernel's ephemeral range, may end
        # differently: that is not a disagreement
        lo, hi = EPHEMERAL_PORTS
        other_port = ans.flow.sport is not None and not lo <= ans.flow.sport <= hi
        assert (ans.flow.endpoint != 0 or other_port) and other.summary != r.summary, (
            f"the solver says {ans.flow!r} does not end as the interpreter says (replayed: {other.summary})\n"
            f"{_show(world, flow, r)}")
    else:
        assert isinstance(ans, NoWitness | SolverGaveUp), ans


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(worlds(), st.data())
def test_solver_reproduces_each_flow_exactly(world: World, data: st.DataObject) -> None:
    """Point checks: for single flows, the solver proves the interpreter's exact end."""
    a = FAM[world.families[0]]
    for _ in range(3):
        client = data.draw(st.sampled_from(["peer", "app", "proxy"]))
        dst = a["pod"] if client == "peer" else data.draw(st.sampled_from(destinations(world.families[0])))
        tunnel = client == "peer" and _tunnelled(world)
        inner = data.draw(st.sampled_from((None, PORTS[0]))) if tunnel else None
        reproduce(world, Flow(client, dst, data.draw(st.sampled_from(DPORTS)), inner=inner))


@pytest.mark.slow
def test_solver_agrees_with_enumeration_campaign() -> None:
    """The campaign: ``CAMPAIGN`` examples, each a world, a predicate and a client kind over a drawn
    finite scope (up to three destinations and three ports), so that many worlds are tried in the
    time. It does not stop at the first disagreement: every one is collected (and appended to the
    file ``MESHSOLVE_DIFF_LOG`` names, if any), and the test fails at the end when there was one."""
    found: list[str] = []
    count = [0]
    how: Counter[str] = Counter()
    log = os.environ.get("MESHSOLVE_DIFF_LOG")
    t0 = time.monotonic()

    @settings(max_examples=CAMPAIGN, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(worlds(), st.sampled_from(PREDS), st.integers(0, 5), st.data())
    def one(world: World, pred: Pred, which: int, data: st.DataObject) -> None:
        count[0] += 1
        fam = world.families[0]
        dsts = data.draw(st.lists(st.sampled_from(destinations(fam)), min_size=1, max_size=3, unique=True))
        ports = tuple(data.draw(st.lists(st.sampled_from(DPORTS), min_size=1, max_size=3, unique=True)))
        if log and count[0] % 100 == 0:  # a campaign may be stopped: its log says how far it got
            with open(log, "a") as f:
                f.write(f"PROGRESS: {count[0] - 1} examples in {time.monotonic() - t0:.0f} s, {len(found)} "
                        f"disagreements; agreed: {', '.join(f'{k} {v}' for k, v in sorted(how.items()))}\n")
        try:
            here = scopes(world, dsts, ports)
            how[compare(world, pred, here[which % len(here)], dsts, ports)] += 1
        except Exception as exc:  # every kind of disagreement is collected
            found.append(f"{type(exc).__name__}: {exc}")
            if log:
                with open(log, "a") as f:
                    f.write(f"=== example {count[0]}: {type(exc).__name__}\n{exc}\n\n")

    one()
    summary = (f"{count[0]} examples in {time.monotonic() - t0:.0f} s, {len(found)} disagreements; agreed: "
               + ", ".join(f"{k} {v}" for k, v in sorted(how.items())))
    print(summary)
    if log:
        with open(log, "a") as f:
            f.write(f"SUMMARY: {summary}\n")
    assert not found, f"{summary}; the first:\n{found[0]}"
