"""Synthesis of minimal rule sets (and proxy knobs) by counterexample-guided inductive synthesis.

The design
----------
The search rewrites one chain (say ``nat::ISTIO_OUTPUT``) as ``K`` *rule slots*. Slot ``i`` has
an ``enabled`` flag, one ``use`` flag per condition of the vocabulary (each condition is one or
more matches, e.g. ``! -d 127.0.0.1/32``), and a ``target`` index into the allowed targets. In the
chain the slot is a placeholder rule (``-m meshsolve-slot i -j MESHSOLVE-SLOT i``) that the
encoder (``meshsolve.smt.encode``) turns into ``enabled ∧ ⋀(use_k → condition_k)`` and an
if-then-else over the targets, so every flow encoding ranges over all rule lists at once. Proxy
knobs (inbound endpoint localhost / original destination; passthrough source address or not)
are Booleans the encoder consults where the proxy opens its upstream connection.

A goal quantifies over all connections of a scope, which a single SMT query over rule choices
cannot express directly (∃ rules ∀ flows). CEGIS splits it: the *synthesis* query asks Z3's
``Optimize`` for slot values that satisfy every goal on a finite set of example flows, minimising
the number of enabled rules and then the number of used conditions (lexicographically); the
*verification* step proves each goal of the concrete candidate with the ordinary verifier
(``meshsolve.analysis.check``), whose counterexample — a real flow, replayed in the interpreter —
joins the examples. When verification proves every goal, the candidate is the answer, and it is
minimal: every smaller rule list already fails on some example, hence on the goals.

When the synthesis query itself is unsatisfiable, no rule list meets the goals on the examples,
hence none meets them at all. Each goal's example constraints are guarded by a goal literal, so
the unsatisfiable core names goals; the core is shrunk by deletion and every proper subset is
confirmed *satisfiable by a verified synthesis run*, so the reported conflict is minimal.

Nothing about Istio is built into the search: the vocabulary, targets, knobs and goals come from
the spec.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import attrs
import z3

import meshsolve.defaults as defaults
from meshsolve.model.net import Family
from meshsolve.model.rules import (
    Chain,
    Destination,
    InInterface,
    Match,
    OpaqueMatch,
    OpaqueTarget,
    OutInterface,
    Protocol,
    Rule,
    Ruleset,
    Rulesets,
    Source,
    Table,
    Target,
)
from meshsolve.model.world import Flow, ProxyBehavior, World
from meshsolve.smt import encode as E
from meshsolve.smt.query import Condition, Pred
from meshsolve.smt.solve import _pred, configure, run_check

__all__ = ["Candidate", "Example", "SlotSearch", "SolverLimit"]


class SolverLimit(Exception):
    """Z3 gave up (timeout or resource limit): the synthesis has no answer, not a wrong one."""

_BASIC = (Source, Destination, InInterface, OutInterface, Protocol)


@attrs.frozen
class Example:
    """A concrete first connection a goal must handle: hop-0 values (client kind, ids and the
    socket mark, 0 for none)."""

    goal: int
    pred: Pred
    family: Family
    flow: Flow
    peer: bool
    uid: int
    gid: int
    mark: int = 0


@attrs.frozen
class Candidate:
    """A concrete rule list for the searched chain and knob values."""

    rules: tuple[Rule, ...]
    knobs: tuple[tuple[str, str], ...]
    conditions_used: int
    conditions: tuple[tuple[int, ...], ...] = ()  # per rule: the vocabulary conditions it uses
    choices: tuple[tuple[int, ...], ...] = ()  # per rule, per condition used: the alternative filling it


@attrs.define
class _Slot:
    enabled: Any
    use: list[Any]
    atoms: list[Match]
    owners: list[int]  # which condition each atom belongs to
    target: Any
    targets: list[Target]


class SlotSearch:
    """The synthesis side of CEGIS over one chain (see the module docstring)."""

    def __init__(self, world: World, family: Family, table: str, chain: str, max_rules: int,
                 conditions: Sequence[Condition], targets: Sequence[Target],
                 knobs: Sequence[tuple[str, tuple[str, ...]]], n_goals: int,
                 minimize: Sequence[str] = ("rules", "conditions"), hops: int = defaults.HOPS,
                 timeout_ms: int = defaults.SYNTH_TIMEOUT_MS, rlimit: int = defaults.SYNTH_RLIMIT) -> None:
        self.rlimit = rlimit
        self.world = world
        self.family = family
        self.table = table
        self.chain = chain
        self.conditions = list(conditions)
        self.targets = list(targets)
        self.knobs = dict(knobs)
        self.hops = hops
        self.timeout_ms = timeout_ms
        self.minimize = tuple(minimize)
        self.goal_lits = [z3.Bool(f"goal!{j}") for j in range(n_goals)]
        self.hard: list[Any] = []
        self.examples: list[Example] = []
        self.solver_calls = 0
        self.slots: list[_Slot] = []
        self._choice: list[list[Any]] = []  # per slot, per condition: the alternative chosen (holes)
        basic = [{type(m) for _t, ms in c.alternatives for m in ms if isinstance(m, _BASIC)} for c in self.conditions]
        for i in range(max_rules):
            atoms: list[Match] = []
            owners: list[int] = []
            guards: list[Any] = []
            use = []
            choices: list[Any] = []
            for c, cond in enumerate(self.conditions):
                u = z3.Bool(f"slot{i}.use{c}")
                use.append(u)
                k = z3.BitVec(f"slot{i}.choice{c}", 8) if cond.hole else None
                choices.append(k)
                if k is not None:
                    self.hard.append(z3.ULT(k, len(cond.alternatives)))
                    self.hard.append(z3.Implies(z3.Not(u), k == 0))
                for a, (_text, matches) in enumerate(cond.alternatives):
                    guard = u if k is None else z3.And(u, k == a)
                    for m in matches:
                        atoms.append(m)
                        owners.append(c)
                        guards.append(guard)
            self._choice.append(choices)
            t = z3.BitVec(f"slot{i}.target", 8)
            self.hard.append(z3.ULT(t, len(self.targets)))
            self.slots.append(_Slot(z3.Bool(f"slot{i}.enabled"), guards, atoms, owners, t, self.targets))
            # a rule may carry each basic match (-s -d -i -o -p) once
            for a in range(len(self.conditions)):
                for b in range(a + 1, len(self.conditions)):
                    if basic[a] & basic[b]:
                        self.hard.append(z3.Not(z3.And(use[a], use[b])))
            # an unused slot uses nothing and has target 0 (no equivalent duplicates)
            self.hard.append(z3.Implies(z3.Not(self.slots[i].enabled), z3.And(*[z3.Not(u) for u in use], t == 0)))
        self._cond_use = [[z3.Bool(f"slot{i}.use{c}") for c in range(len(self.conditions))]
                          for i in range(max_rules)]
        for i in range(max_rules - 1):  # enabled slots come first
            self.hard.append(z3.Implies(self.slots[i + 1].enabled, self.slots[i].enabled))
        self.knob_local = z3.Bool("knob.inbound_localhost")
        self.knob_source = z3.Bool("knob.inbound_source")
        self._fix_knob("inbound_endpoint", self.knob_local, "localhost",
                       world.proxy.inbound_endpoint == "localhost")
        self._fix_knob("inbound_source", self.knob_source, "passthrough",
                       world.proxy.inbound_source(family) is not None)
        self.sym_world = self._symbolic_world()

    def _fix_knob(self, name: str, var: Any, true_value: str, default: bool) -> None:
        values = self.knobs.get(name)
        if values is None:
            self.hard.append(var == z3.BoolVal(default))
        elif len(values) == 1:
            self.hard.append(var == z3.BoolVal(values[0] == true_value))

    def _symbolic_world(self) -> World:
        placeholders = tuple(Rule((OpaqueMatch(E.SLOT_MODULE, (str(i),)),), OpaqueTarget(E.SLOT_TARGET, (str(i),)))
                             for i in range(len(self.slots)))
        return self._with_chain(placeholders)

    def _with_chain(self, rules: tuple[Rule, ...], proxy: ProxyBehavior | None = None) -> World:
        rs = self.world.rules.for_family(self.family)
        tables = []
        for t in rs.tables:
            if t.name != self.table:
                tables.append(t)
                continue
            chains = tuple(Chain(c.name, rules, c.policy) if c.name == self.chain else c for c in t.chains)
            tables.append(Table(t.name, chains))
        new = Ruleset(self.family, tuple(tables))
        both = Rulesets(ipv4=new, ipv6=self.world.rules.ipv6) if self.family == "ipv4" else \
            Rulesets(ipv4=self.world.rules.ipv4, ipv6=new)
        return attrs.evolve(self.world, rules=both, proxy=proxy or self.world.proxy)

    def _setup(self, ctx: E.Ctx) -> None:
        ctx.slots = dict(enumerate(self.slots))
        ctx.knob_localhost = self.knob_local
        ctx.knob_source = self.knob_source

    def add_example(self, ex: Example) -> None:
        """Constrain the search: goal ``ex.goal`` must hold on this concrete first connection."""
        n = len(self.examples)
        self.examples.append(ex)
        enc, h0, client = E.encode_flow(self.sym_world, ex.family, hops=self.hops, tag=f"x{n}.",
                                        share_hop0=False, setup=self._setup, marks=bool(ex.mark))
        w = enc.ctx.w
        peer = ex.flow.src or self.world.peer_ip(ex.family)
        # the example's own source port (0: the kernel's choice), not one the search may pick (a port a
        # listener holds would end the example in connect() and satisfy the goal for nothing)
        fixed = [client == (0 if ex.peer else 1), h0.dst == z3.BitVecVal(int(ex.flow.dst), w),
                 h0.dport == z3.BitVecVal(ex.flow.dport, 16), enc.endpoint == ex.flow.endpoint,
                 h0.sport == z3.BitVecVal(ex.flow.sport or 0, 16)]
        if not ex.peer:
            fixed += [h0.uid == z3.BitVecVal(ex.uid, 32), h0.gid == z3.BitVecVal(ex.gid, 32)]
            if h0.mark is not None:
                fixed.append(h0.mark == z3.BitVecVal(ex.mark, 32))
        elif peer is not None:
            fixed.append(h0.src == z3.BitVecVal(int(peer), w))
        self.hard.extend(enc.constraints)
        self.hard.extend(fixed)
        self.hard.append(z3.Implies(self.goal_lits[ex.goal], _pred(ex.pred, enc)))

    def _objectives(self) -> list[Any]:
        rules = z3.Sum(*[z3.If(s.enabled, 1, 0) for s in self.slots])
        conds = z3.Sum(*[z3.If(u, 1, 0) for row in self._cond_use for u in row])
        # prefer the knobs' first listed values when nothing forces otherwise
        knob_dev = []
        for name, var, true_value in (("inbound_endpoint", self.knob_local, "localhost"),
                                      ("inbound_source", self.knob_source, "passthrough")):
            vals = self.knobs.get(name)
            if vals and len(vals) > 1:
                knob_dev.append(z3.If(var == z3.BoolVal(vals[0] == true_value), 0, 1))
        out = []
        for m in self.minimize:
            out.append(rules if m == "rules" else conds)
        out.append(z3.Sum(*knob_dev) if knob_dev else z3.IntVal(0))
        # among equally small answers, prefer conditions and targets listed earlier (deterministic)
        order = [z3.If(u, c + 1, 0) for row in self._cond_use for c, u in enumerate(row)]
        order += [z3.If(s.enabled, z3.BV2Int(s.target), 0) for s in self.slots]
        out.append(z3.Sum(*order))
        return out

    def propose(self, goals: Iterable[int]) -> Candidate | None:
        """The minimal candidate meeting ``goals`` on the examples, or None when there is none."""
        opt = configure(z3.Optimize(), self.timeout_ms, self.rlimit)
        opt.add(*self.hard)
        opt.add(*[self.goal_lits[j] for j in goals])
        for obj in self._objectives():
            opt.minimize(obj)
        self.solver_calls += 1
        r = run_check(opt)
        if r == z3.unsat:
            return None
        if r == z3.unknown:
            raise SolverLimit(opt.reason_unknown() or "unknown")
        return self._candidate(opt.model())

    def core(self, goals: Sequence[int]) -> list[int]:
        """A subset of ``goals`` that is unsatisfiable on the examples, shrunk by deletion."""
        s = configure(z3.Solver(), self.timeout_ms, self.rlimit)
        s.add(*self.hard)
        current = list(goals)
        self.solver_calls += 1
        r = run_check(s, *[self.goal_lits[j] for j in current])
        if r == z3.unknown:
            raise SolverLimit(s.reason_unknown() or "unknown")
        if r != z3.unsat:
            return []
        lits = {str(self.goal_lits[j]): j for j in current}
        current = sorted(lits[str(c)] for c in s.unsat_core())
        for j in list(current):
            trial = [g for g in current if g != j]
            self.solver_calls += 1
            if trial and run_check(s, *[self.goal_lits[g] for g in trial]) == z3.unsat:
                current = trial
        return current

    def _candidate(self, m: Any) -> Candidate:
        rules = []
        groups: list[tuple[int, ...]] = []
        alts: list[tuple[int, ...]] = []
        used = 0
        for slot, cond_use, choice in zip(self.slots, self._cond_use, self._choice, strict=True):
            if not z3.is_true(m.eval(slot.enabled, model_completion=True)):
                continue
            picked = tuple(c for c, u in enumerate(cond_use) if z3.is_true(m.eval(u, model_completion=True)))
            chosen = tuple(0 if choice[c] is None else m.eval(choice[c], model_completion=True).as_long()
                           for c in picked)
            used += len(picked)
            t = m.eval(slot.target, model_completion=True).as_long()
            rules.append(self.rule(picked, self.targets[t], chosen))
            groups.append(picked)
            alts.append(chosen)
        knobs = []
        if "inbound_endpoint" in self.knobs:
            local = z3.is_true(m.eval(self.knob_local, model_completion=True))
            knobs.append(("inbound_endpoint", "localhost" if local else "original_dst"))
        if "inbound_source" in self.knobs:
            src = z3.is_true(m.eval(self.knob_source, model_completion=True))
            knobs.append(("inbound_source", "passthrough" if src else "none"))
        return Candidate(tuple(rules), tuple(knobs), used, tuple(groups), tuple(alts))

    def rule(self, conditions: Sequence[int], target: Target, choices: Sequence[int] | None = None) -> Rule:
        """The concrete rule made of these vocabulary conditions (each filled with the alternative
        ``choices`` names, the first by default) and target."""
        matches: list[Match] = []
        for j, c in enumerate(conditions):
            a = 0 if choices is None else choices[j]
            matches.extend(self.conditions[c].alternatives[a][1])
        return Rule(tuple(matches), target)

    def concrete_world(self, cand: Candidate) -> World:
        """The world with the candidate's rules in the searched chain and its knob values."""
        proxy = self.world.proxy
        for name, value in cand.knobs:
            if name == "inbound_endpoint":
                proxy = attrs.evolve(proxy, inbound_endpoint="localhost" if value == "localhost" else "original_dst")
            elif name == "inbound_source":
                on = value == "passthrough"
                proxy = attrs.evolve(proxy, inbound_source_v4="127.0.0.6" if on else None,
                                     inbound_source_v6="::6" if on else None)
        return self._with_chain(cand.rules, proxy)

