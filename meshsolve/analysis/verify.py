"""A set-up on the real kernel: every class of first connection, the interpreter against Linux, and
every goal against what Linux did.

``verify_on_kernel(world, goals)`` materialises ``world`` with the kernel oracle
(``meshsolve.oracle``, needs root) and runs its class-complete flow space
(``meshsolve.oracle.flowspace.flow_space``: every client kind × every destination and port class
the rules or the world name, plus one that none names, with a real remote server). For each flow it
records

* a *disagreement* when the interpreter's result and the kernel's differ
  (``meshsolve.oracle.compare.differences``, rules that dropped or rejected included);
* a *goal failure* when a goal's scope contains the flow and the kernel's result violates the
  goal's predicate: a goal that holds in the model (``Proved``) but fails on the kernel.

Flows the interpreter leaves undetermined are run but not compared (counted apart).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

import attrs

from meshsolve.analysis.check import flow_in_scope, holds
from meshsolve.analysis.properties import Property
from meshsolve.model.world import Flow, World
from meshsolve.oracle.compare import differences
from meshsolve.oracle.flowspace import flow_space
from meshsolve.oracle.run import KernelWorld, OracleConfig
from meshsolve.semantics.interpret import interpret
from meshsolve.semantics.trace import Result, Undetermined
from meshsolve.smt.query import describe

__all__ = ["Disagreement", "GoalFailure", "KernelVerification", "verify_on_kernel"]


@attrs.frozen
class Disagreement:
    """The interpreter (``expected``) and the kernel (``actual``) end ``flow`` differently."""

    flow: Flow
    expected: Result
    actual: Result
    differences: tuple[str, ...]

    def __str__(self) -> str:
        return (f"{self.flow}: interpreter {self.expected.summary}, kernel {self.actual.summary} ("
                + "; ".join(self.differences) + ")")


@attrs.frozen
class GoalFailure:
    """Goal ``goal`` requires ``expected`` of ``flow``; on the kernel the flow ended as ``actual``."""

    goal: str
    flow: Flow
    expected: str
    actual: Result

    def __str__(self) -> str:
        return f"goal '{self.goal}': {self.flow} should be {self.expected}; on the kernel: {self.actual.summary}"


@attrs.frozen
class KernelVerification:
    """What running a world's flow space on the kernel showed."""

    flows: int
    compared: int
    undetermined: int
    disagreements: tuple[Disagreement, ...]
    goal_failures: tuple[GoalFailure, ...]
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.disagreements and not self.goal_failures

    def __str__(self) -> str:
        head = (f"KERNEL  {self.flows} flow(s) on the kernel in {self.seconds:.1f} s: {len(self.disagreements)} "
                f"disagreement(s) with the model, {len(self.goal_failures)} goal failure(s)"
                + (f", {self.undetermined} undetermined in the model (not compared)" if self.undetermined else ""))
        lines = [head]
        lines += [f"  DISAGREE  {d}" for d in self.disagreements]
        lines += [f"  GOAL      {g}" for g in self.goal_failures]
        return "\n".join(lines)


def verify_on_kernel(world: World, goals: Iterable[tuple[str, Property]] = (), *,
                     flows: Sequence[Flow] | None = None, config: OracleConfig | None = None,
                     progress: Callable[[int], None] | None = None) -> KernelVerification:
    """Run ``flows`` (default: the class-complete flow space of ``world``) on the kernel and compare
    each with the interpreter and with every goal (``(name, property)``); ``progress(1)`` after each
    flow. Raises ``OracleError`` when the kernel oracle cannot run (not root, no namespaces)."""
    t0 = time.monotonic()
    todo = tuple(flows) if flows is not None else flow_space(world)
    checks = [(name, scope, pred) for name, prop in goals for scope, pred in prop.checks(world)]
    disagreements: list[Disagreement] = []
    failures: list[GoalFailure] = []
    compared = undetermined = 0
    with KernelWorld(world, config) as kw:
        for flow in todo:
            expected = interpret(world, flow)
            actual = kw.run(flow)
            if progress is not None:
                progress(1)
            if isinstance(expected.outcome, Undetermined):
                undetermined += 1
            else:
                compared += 1
                diff = differences(expected, actual, hits=True)
                if diff:
                    disagreements.append(Disagreement(flow, expected, actual, diff))
            for name, scope, pred in checks:
                if flow_in_scope(world, scope, flow) and not holds(pred, actual):
                    failures.append(GoalFailure(name, flow, describe(pred), actual))
    return KernelVerification(len(todo), compared, undetermined, tuple(disagreements), tuple(failures),
                              time.monotonic() - t0)
