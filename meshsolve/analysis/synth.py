"""Synthesis: declarative goals in, the minimal capture set-up (or a minimal conflict) out.

``synthesize(spec)`` runs counterexample-guided synthesis (``meshsolve.smt.synth`` explains the
design): propose the smallest rule list and knob values that meet every goal on the example flows,
prove every goal of that candidate with the verifier, add the verifier's counterexamples, repeat.
The search first tries 1, 2, 4, … rule slots (``slot_counts`` says why the minimum is the same).
The answer is a ``Synthesized`` set-up whose goals are all ``Proved`` (the proofs are returned), or
a ``Conflict`` naming a minimal set of goals that no rule list of the vocabulary can meet together
— every proper subset of it has been synthesized and proved, so each named goal is needed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import attrs

from meshsolve.analysis.check import Proved, Refuted, Unknown, Verdict, check
from meshsolve.analysis.spec import Goal, Spec
from meshsolve.errors import InternalError, UnsupportedError
from meshsolve.model.net import Family
from meshsolve.model.rules import Rule
from meshsolve.model.world import Flow, World
from meshsolve.smt.query import Pred
from meshsolve.smt.synth import Candidate, Example, SlotSearch, SolverLimit

__all__ = ["Conflict", "SynthUnknown", "Synthesized", "one_minimal_violations", "synthesize"]

MAX_ITERATIONS = 200


@attrs.frozen
class Synthesized:
    """The minimal set-up: the searched chain's rules, knob values, the world and the proofs."""

    spec: Spec
    rules: tuple[Rule, ...]
    knobs: tuple[tuple[str, str], ...]
    conditions: tuple[tuple[int, ...], ...]  # per rule, the indices of the vocabulary conditions used
    world: World = attrs.field(repr=False)
    proofs: tuple[Verdict, ...]
    iterations: int
    solver_calls: int
    examples: int
    seconds: float
    choices: tuple[tuple[int, ...], ...] = ()  # per rule, the alternative filling each condition used

    @property
    def kind(self) -> str:
        return "synthesized"

    def __str__(self) -> str:
        from meshsolve.iptables import rule_text

        s = self.spec.search
        lines = [f"SYNTHESIZED  {self.spec.name}: {len(self.rules)} rule(s) in {s.table}::{s.chain}"]
        for i, r in enumerate(self.rules, 1):
            lines.append(f"  {i}. -A {s.chain} {rule_text(r)}")
        for k, v in self.knobs:
            lines.append(f"  proxy: {k} = {v}")
        lines.append("  proved: " + "; ".join(g.name for g in self.spec.goals))
        return "\n".join(lines)


@attrs.frozen
class Conflict:
    """No set-up in the search space meets ``goals`` together (a minimal conflicting set)."""

    spec: Spec
    goals: tuple[Goal, ...]
    flows: tuple[tuple[str, Flow], ...]  # the example flows that pin the conflict, by goal name
    subsets: tuple[tuple[tuple[str, ...], Synthesized], ...]  # each proper subset, met and proved
    iterations: int
    solver_calls: int
    seconds: float

    @property
    def kind(self) -> str:
        return "conflict"

    def __str__(self) -> str:
        lines = [f"CONFLICT  {self.spec.name}: no set-up in the search space meets these goals together:"]
        lines += [f"  - {g.name}" for g in self.goals]
        if self.flows:
            lines.append("  on the flows:")
            lines += [f"    {f}  ({name})" for name, f in self.flows]
        for names, res in self.subsets:
            dropped = [g.name for g in self.goals if g.name not in names]
            lines.append(f"  without '{', '.join(dropped)}': met with {len(res.rules)} rule(s)")
        return "\n".join(lines)


@attrs.frozen
class SynthUnknown:
    """The solver gave up (timeout or resource limit): no answer, and no claim either way."""

    spec: Spec
    reason: str

    @property
    def kind(self) -> str:
        return "unknown"

    def __str__(self) -> str:
        return f"UNKNOWN  {self.spec.name}: the solver gave up ({self.reason})"


def _example(goal_index: int, pred: Pred, family: Family, flow: Flow, world: World) -> Example:
    """The example for ``flow`` (its client's ids read from ``world``, which may add a witness app)."""
    if flow.client == "peer":
        return Example(goal_index, pred, family, flow, True, 0, 0)
    if flow.client == "proxy":
        return Example(goal_index, pred, family, flow, False, world.proxy.uid, world.proxy.gid)
    app = world.app(flow.client)
    return Example(goal_index, pred, family, flow, False, app.uid, app.gid, app.mark or 0)


def _seed_examples(spec: Spec, goals: Sequence[int]) -> list[Example]:
    """Flows the goals name explicitly (reachable/observed ones), to start from something real."""
    out = []
    w = spec.world
    for j in goals:
        g = spec.goals[j]
        for scope, pred in g.prop.checks(w):
            if scope.dst is None or scope.dports is None or len(scope.dst) != 1 or len(scope.dports) != 1:
                continue
            if scope.dports[0].lo != scope.dports[0].hi or scope.dst[0].num_addresses != 1:
                continue
            client = scope.client if scope.client in ("peer", "proxy") else scope.app or ""
            flow = Flow(client, scope.dst[0].network_address, scope.dports[0].lo)
            out.append(_example(j, pred, scope.family, flow, w))
    return out


def _run(spec: Spec, goals: Sequence[int], search: SlotSearch, progress: Callable[[str], None] | None,
         t0: float) -> Synthesized | None:
    """CEGIS on ``goals``; None when the examples make them unsatisfiable."""
    for ex in _seed_examples(spec, goals):
        if ex not in search.examples:
            search.add_example(ex)
    for it in range(1, MAX_ITERATIONS + 1):
        cand = search.propose(goals)
        if cand is None:
            return None
        world = search.concrete_world(cand)
        proofs: list[Verdict] = []
        new: list[Example] = []
        for j in goals:
            v = check(world, spec.goals[j].prop)
            if isinstance(v, Unknown):
                raise UnsupportedError(f"cannot verify goal '{spec.goals[j].name}' of a candidate: {v.reason}")
            if isinstance(v, Refuted):
                new.append(_example(j, v.expected, v.scope.family, v.flow, v.world))
            proofs.append(v)
        if progress is not None:
            progress(f"iteration {it}: {len(cand.rules)} rule(s), {cand.conditions_used} condition(s), "
                     f"{len(new)} counterexample(s), {len(search.examples)} example(s)")
        if not new:
            return Synthesized(spec, cand.rules, cand.knobs, cand.conditions, world, tuple(proofs), it,
                               search.solver_calls, len(search.examples), time.perf_counter() - t0, cand.choices)
        for ex in new:
            if ex in search.examples:
                raise InternalError(f"counterexample {ex.flow} for goal {ex.goal} is already an example: "
                                    "the synthesis and verification encodings disagree")
            search.add_example(ex)
    raise UnsupportedError(f"synthesis did not converge in {MAX_ITERATIONS} iterations")


def _search(spec: Spec, slots: int | None = None) -> SlotSearch:
    s = spec.search
    return SlotSearch(spec.world, spec.family, s.table, s.chain, s.max_rules if slots is None else slots,
                      s.conditions, [t for _text, t in s.targets], s.knobs, len(spec.goals), spec.minimize)


def slot_counts(spec: Spec) -> tuple[int, ...]:
    """How many rule slots the search tries in turn: 1, 2, 4, … up to ``max_rules`` when the
    fewest rules come first in ``minimize``, else ``max_rules`` alone.

    A search over ``k`` slots ranges over every rule list of at most ``k`` rules. When rules are
    minimised first, the minimal answer over ``max_rules`` slots has some ``m`` rules, and every
    search with ``k >= m`` slots holds it and nothing smaller, so the first ``k`` whose search is
    satisfiable gives the same minimum (rules, then conditions) as the full search. A smaller search
    that is unsatisfiable on its examples says nothing about the full one; its examples (real
    flows, each a goal's counterexample) carry over to the next. Only the full search may report a
    conflict. Smaller searches are much cheaper to solve, and most answers have one or two rules.
    """
    top = spec.search.max_rules
    if not spec.minimize or spec.minimize[0] != "rules":
        return (top,)
    out: list[int] = []
    k = 1
    while k < top:
        out.append(k)
        k *= 2
    return (*out, top)


def synthesize(spec: Spec, *, progress: Callable[[str], None] | None = None
               ) -> Synthesized | Conflict | SynthUnknown:
    """The minimal set-up meeting every goal of ``spec``, or a minimal conflict between goals, or
    ``SynthUnknown`` when the solver hits its time or resource limit."""
    try:
        return _synthesize(spec, progress)
    except SolverLimit as exc:
        return SynthUnknown(spec, str(exc))


def _staged(spec: Spec, goals: Sequence[int], examples: Sequence[Example],
            progress: Callable[[str], None] | None, t0: float) -> tuple[Synthesized | None, SlotSearch]:
    """CEGIS on ``goals`` over 1, 2, 4, … rule slots (``slot_counts``), starting from ``examples``:
    the minimal set-up, or None and the full search, unsatisfiable on its examples."""
    examples = list(examples)
    calls = iterations = 0
    counts = slot_counts(spec)
    for k in counts:
        search = _search(spec, k)
        for ex in examples:
            if ex not in search.examples:
                search.add_example(ex)
        res = _run(spec, goals, search, progress, t0)
        if res is not None:
            return attrs.evolve(res, iterations=res.iterations + iterations,
                                solver_calls=res.solver_calls + calls), search
        if k == counts[-1]:
            search.solver_calls += calls
            return None, search
        examples = list(search.examples)
        calls += search.solver_calls
        iterations += search.solver_calls  # one proposal per iteration: no core is computed here
        if progress is not None:
            progress(f"no set-up of at most {k} rule(s) meets the goals on {len(examples)} example(s)")
    raise InternalError("no slot count to search")  # pragma: no cover - slot_counts is never empty


def _synthesize(spec: Spec, progress: Callable[[str], None] | None) -> Synthesized | Conflict:
    t0 = time.perf_counter()
    all_goals = list(range(len(spec.goals)))
    res, search = _staged(spec, all_goals, (), progress, t0)
    if res is not None:
        return res
    core = search.core(all_goals)
    if not core:
        raise InternalError("synthesis found no candidate, yet the goals are satisfiable on the examples")
    # certify minimality: every proper subset (drop one goal) is met and proved
    while True:
        subsets: list[tuple[tuple[str, ...], Synthesized]] = []
        shrunk = False
        for j in core:
            rest = [g for g in core if g != j]
            if not rest:
                continue
            sub, child = _staged(spec, rest, search.examples, progress, t0)
            search.solver_calls += child.solver_calls if sub is None else sub.solver_calls
            if sub is None:
                core = search.core(rest) or rest
                shrunk = True
                break
            subsets.append((tuple(spec.goals[g].name for g in rest), sub))
        if not shrunk:
            break
    flows = tuple((spec.goals[ex.goal].name, ex.flow) for ex in search.examples if ex.goal in core)
    return Conflict(spec, tuple(spec.goals[j] for j in core), flows, tuple(subsets), len(search.examples),
                    search.solver_calls, time.perf_counter() - t0)


def one_minimal_violations(result: Synthesized) -> list[str]:
    """Removing any rule or any condition (a unit of the spec's vocabulary) of a synthesized rule must
    break some goal: the list of removals that do *not* break one (empty when the result is 1-minimal)."""
    spec = result.spec
    search = _search(spec)
    bad: list[str] = []

    def holds(rules: tuple[Rule, ...]) -> bool:
        w = search.concrete_world(Candidate(rules, result.knobs, 0))
        return all(isinstance(check(w, g.prop), Proved) for g in spec.goals)

    rules = result.rules
    choices = result.choices or tuple((0,) * len(c) for c in result.conditions)
    for i in range(len(rules)):
        if holds(rules[:i] + rules[i + 1:]):
            bad.append(f"rule {i + 1} can be removed")
    for i, (r, conds, alts) in enumerate(zip(rules, result.conditions, choices, strict=True)):
        for j, c in enumerate(conds):
            assert r.target is not None
            keep = [x for x in range(len(conds)) if x != j]
            smaller = search.rule([conds[x] for x in keep], r.target, [alts[x] for x in keep])
            if holds((*rules[:i], smaller, *rules[i + 1:])):
                text = spec.search.conditions[c].alternatives[alts[j]][0]
                bad.append(f"condition '{text}' of rule {i + 1} can be removed")
    return bad
