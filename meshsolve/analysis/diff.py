"""Semantic difference of two pod worlds (e.g. two Istio versions' rules for the same pod).

``diff(a, b)`` asks the solver, per address family and per client kind (a remote peer; any
process in the pod, the proxy included), for a first connection whose end differs: its outcome,
the app socket it reaches, the source that app sees, or the proxy sides that observe it. Each
difference is replayed in the interpreter on both sides; ``Equivalent`` is a proof over every
connection of those scopes (up to the hop bound).
"""

from __future__ import annotations

import attrs

import meshsolve.defaults as defaults
from meshsolve.errors import InternalError
from meshsolve.model.net import Family
from meshsolve.model.world import Flow, World
from meshsolve.semantics.interpret import interpret
from meshsolve.semantics.trace import Result, Undetermined
from meshsolve.smt.query import Scope
from meshsolve.smt.solve import Difference, NoWitness, SolverGaveUp, search_difference

__all__ = ["Different", "DiffUnknown", "Equivalent", "diff", "signature"]


@attrs.frozen
class Equivalent:
    """No first connection in ``scopes`` ends differently (within ``hops`` proxy hops)."""

    scopes: tuple[Scope, ...]
    hops: int

    @property
    def kind(self) -> str:
        return "equivalent"

    def __str__(self) -> str:
        return "EQUIVALENT  for " + "; ".join(str(s) for s in self.scopes)


@attrs.frozen
class Different:
    """One witness per scope that differs: the flow and how each world ends it."""

    scope: Scope
    flow: Flow
    a: Result
    b: Result

    @property
    def kind(self) -> str:
        return "different"

    def __str__(self) -> str:
        a, b = self.a.summary, self.b.summary
        if a == b:  # the same ending, from another source (SNAT): say it in full
            a, b = str(self.a.outcome), str(self.b.outcome)
        return f"DIFFERENT   {self.flow}: {a}  vs  {b}"


@attrs.frozen
class DiffUnknown:
    """No answer for ``scope``: the solver gave up, or the difference found rests on an opaque rule."""

    scope: Scope
    reason: str

    @property
    def kind(self) -> str:
        return "unknown"

    def __str__(self) -> str:
        return f"UNKNOWN     {self.scope}: {self.reason}"


def signature(r: Result) -> tuple[object, ...]:
    """What the comparison looks at: outcome class, socket, source seen, observed sides."""
    o = r.outcome
    sock = getattr(o, "socket", None)
    return (type(o).__name__, getattr(o, "app", None), None if sock is None else (sock.bind, sock.port),
            getattr(o, "source", None), tuple(r.observed))


def _scopes(a: World, b: World) -> list[Scope]:
    fams: list[Family] = [f for f in ("ipv4", "ipv6") if f in a.families and f in b.families]
    out = []
    for f in fams:
        if a.peer_ip(f) is not None and a.peer_ip(f) == b.peer_ip(f):
            out.append(Scope(family=f, client="peer"))
        out.append(Scope(family=f, client="any-app"))
    return out


DiffResult = Equivalent | Different | DiffUnknown


def diff(a: World, b: World, *, hops: int = defaults.HOPS,
         timeout_ms: int = defaults.TIMEOUT_MS) -> list[DiffResult]:
    """Compare two worlds over every first connection (see the module docstring)."""
    results: list[DiffResult] = []
    proved: list[Scope] = []
    for scope in _scopes(a, b):
        ans = search_difference(a, b, scope, hops=hops, timeout_ms=timeout_ms)
        if isinstance(ans, NoWitness):
            proved.append(scope)
            continue
        if isinstance(ans, SolverGaveUp):
            results.append(DiffUnknown(scope, f"solver gave up: {ans.reason}"))
            continue
        assert isinstance(ans, Difference)
        if ans.flow.client not in ("peer", "proxy") and ans.flow.client not in {x.name for x in ans.world_b.apps}:
            results.append(DiffUnknown(scope, f"{ans.flow} is opened by {ans.flow.client}, an app only A's pod "
                                              "has: the two pods differ"))
            continue
        ra = interpret(ans.world_a, ans.flow, max_hops=hops)
        rb = interpret(ans.world_b, ans.flow, max_hops=hops)
        if isinstance(ra.outcome, Undetermined) or isinstance(rb.outcome, Undetermined):
            results.append(DiffUnknown(scope, f"{ans.flow} depends on an unmodelled rule"))
        elif signature(ra) != signature(rb):
            results.append(Different(scope, ans.flow, ra, rb))
        else:
            raise InternalError(f"the solver says {ans.flow} ends differently, the interpreter says "
                                f"{ra.summary} in both")
    if proved and not results:
        return [Equivalent(tuple(proved), hops)]
    return results
