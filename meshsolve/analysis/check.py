"""Proving properties: solver search, witness replay in the interpreter, verdict values.

``check(world, prop)`` asks the solver, for each (scope, predicate) of the property, for a first
connection whose flow violates the predicate. No such connection is a proof (``Proved``). A
candidate is replayed by the concrete interpreter: if the interpreter's result violates the same
predicate the answer is ``Refuted`` with that flow and its trace; if the replay is undetermined
(an opaque rule decides) the answer is ``Unknown`` naming the rule; if the interpreter disagrees
with the solver otherwise, that is a bug in meshsolve and raises ``InternalError`` — never a silent
answer. ``enumerate_scope`` is the naive alternative: interpret every concrete flow of a finite
scope (used to test the solver and as the benchmark baseline).
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, cast

import attrs

import meshsolve.defaults as defaults
from meshsolve.analysis.ambient_properties import property_world
from meshsolve.analysis.properties import Property
from meshsolve.errors import InternalError
from meshsolve.model.net import IPAddress, to_address
from meshsolve.model.world import Flow, World
from meshsolve.semantics import kernel as K
from meshsolve.semantics.domain import Concrete
from meshsolve.semantics.interpret import interpret
from meshsolve.semantics.trace import Delivered, Result, Undetermined
from meshsolve.smt.encode import expect_several
from meshsolve.smt.query import (
    AllOf,
    AnyOf,
    Captured,
    DeliveredTo,
    EndsAs,
    Not,
    Observed,
    ObservedExactly,
    Pred,
    Scope,
    SourceIs,
    describe,
)
from meshsolve.smt.solve import Candidate, NoWitness, SolverGaveUp, search

__all__ = [
    "Proved",
    "Refuted",
    "Unknown",
    "Verdict",
    "check",
    "check_all",
    "check_each",
    "enumerate_scope",
    "flow_in_scope",
    "holds",
    "outcome_kind",
]

_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


@attrs.frozen
class Proved:
    """The property holds for every connection in its scopes (up to ``hops`` proxy hops)."""

    prop: Any
    hops: int = defaults.HOPS
    assumes: tuple[str, ...] = ()  # opaque rules the proof holds regardless of

    @property
    def kind(self) -> str:
        return "proved"

    def __str__(self) -> str:
        return f"PROVED   {self.prop.title()}"


@attrs.frozen
class Refuted:
    """A concrete counterexample: ``flow`` in ``world`` ends as ``result`` (the interpreter's)."""

    prop: Any
    scope: Scope
    expected: Pred
    flow: Flow
    result: Result
    world: World = attrs.field(eq=False, repr=False)

    @property
    def kind(self) -> str:
        return "refuted"

    def __str__(self) -> str:
        return (f"REFUTED  {self.prop.title()}\n  expected: {describe(self.expected)}\n"
                f"  witness:  {self.flow}  ->  {self.result.summary}")


@attrs.frozen
class Unknown:
    """No answer: the solver gave up, or the answer depends on a rule meshsolve does not model."""

    prop: Any
    reason: str

    @property
    def kind(self) -> str:
        return "unknown"

    def __str__(self) -> str:
        return f"UNKNOWN  {self.prop.title()}: {self.reason}"


Verdict = Proved | Refuted | Unknown


def outcome_kind(result: Result) -> str:
    """The outcome class name used by predicates: delivered/refused/dropped/loop/egress/undetermined."""
    return type(result.outcome).__name__.lower()


def holds(pred: Pred, result: Result) -> bool:
    """Evaluate a predicate on a concrete interpreter result (the solver's reference semantics)."""
    match pred:
        case EndsAs(kinds):
            return outcome_kind(result) in kinds
        case DeliveredTo(app, bind, port):
            o = result.outcome
            return (isinstance(o, Delivered) and (app is None or o.app == app)
                    and (bind is None or o.socket.bind == bind) and (port is None or o.socket.port == port))
        case SourceIs(address):
            return isinstance(result.outcome, Delivered) and result.outcome.source == address
        case Observed(side):
            return side in result.observed
        case ObservedExactly(sides):
            return tuple(result.observed) == tuple(sides)
        case Captured(side):
            return bool(result.observed) and (side is None or result.observed[0] == side) and \
                _first_leg_captured(result)
        case Not(arg):
            return not holds(arg, result)
        case AllOf(args):
            return all(holds(a, result) for a in args)
        case AnyOf(args):
            return any(holds(a, result) for a in args)
    raise TypeError(pred)  # pragma: no cover


def _first_leg_captured(result: Result) -> bool:
    """The first proxy acceptance happened on the client's own connection (leg 1)."""
    for hop in result.trace:
        if hop.kind == "proxy":
            return hop.leg == 1
    return bool(result.observed)


def check_each(world: World, props: Sequence[Property], **kw: Any) -> Iterator[Verdict]:
    """``check`` of each property in turn (``kw`` as ``check`` takes them); their encodings share
    the traversals of the world's chains from the first one on (``smt.encode.expect_several``)."""
    if len(props) > 1:
        expect_several(world)
    for p in props:
        yield check(world, p, **kw)


def check(world: World, prop: Property, *, hops: int = defaults.HOPS,
          timeout_ms: int = defaults.TIMEOUT_MS, rlimit: int = defaults.RLIMIT,
          names: dict[str, int] | None = None) -> Verdict:
    """Prove or refute ``prop`` in ``world`` (every address family the property ranges over).

    Every solver call is bounded by ``timeout_ms`` and the resource limit ``rlimit``; hitting
    either gives ``Unknown``. (Building the encoding is not bounded by them: it is linear in the
    number of rules.)"""
    assumes: list[str] = []
    world = property_world(prop, world)  # a property may be about a variant of the pod (ambient's)
    # a property its first connections decide (ambient's) is searched with that many connections
    bound = min(hops, getattr(prop, "decided_within", hops))
    for scope, pred in prop.checks(world):
        ans = search(world, scope, pred, hops=bound, timeout_ms=timeout_ms, rlimit=rlimit, names=names)
        if isinstance(ans, NoWitness):
            assumes.extend(ans.opaque)
            continue
        if isinstance(ans, SolverGaveUp):
            return Unknown(prop, f"solver gave up on '{scope}': {ans.reason}")
        assert isinstance(ans, Candidate)
        result = interpret(ans.world, ans.flow, max_hops=bound)
        if isinstance(result.outcome, Undetermined):
            return Unknown(prop, f"depends on an unmodelled rule: {result.outcome}")
        if not holds(pred, result):
            whole = _whole(prop, pred, ans, result, hops) if bound < hops else result
            return Refuted(prop, scope, pred, ans.flow, whole, ans.world)
        if ans.opaque:
            return Unknown(prop, "may be violated depending on unmodelled rule(s): " + "; ".join(ans.opaque))
        raise InternalError(
            f"solver and interpreter disagree on {ans.flow} for '{prop.title()}': the solver says it "
            f"violates '{describe(pred)}', the interpreter says {result.summary}\n{result}")
    return Proved(prop, hops, tuple(dict.fromkeys(assumes)))


def _whole(prop: Property, pred: Pred, ans: Candidate, result: Result, hops: int) -> Result:
    """The witness followed to the full bound when the search stopped earlier (what a user reads),
    which must violate the predicate as well: else the property's ``decided_within`` is wrong."""
    whole = interpret(ans.world, ans.flow, max_hops=hops)
    if isinstance(whole.outcome, Undetermined):
        return result
    if holds(pred, whole):
        raise InternalError(f"'{prop.title()}' is not decided by its first connections: {ans.flow} "
                            f"violates '{describe(pred)}' within them, not when followed further")
    return whole


def check_all(world: World, props: Iterable[Property], **kw: Any) -> list[Verdict]:
    return list(check_each(world, tuple(props), **kw))


# ------------------------------------------------------------------------------------------------
# Exhaustive concrete enumeration over a finite scope


def interesting_addresses(world: World, scope: Scope) -> list[IPAddress]:
    """Destinations worth trying: pod IPs, loopback, VIPs, endpoints, peers, rule CIDR bounds."""
    fam = scope.family
    seen: dict[IPAddress, None] = {}
    v4 = fam == "ipv4"
    base = ["127.0.0.1", "127.0.0.6", "198.51.100.77"] if v4 else ["::1", "::6", "2001:db8:ffff::77"]
    for text in base:
        seen[to_address(text)] = None
    for a in (*world.pod_ips, *world.peer_ips):
        seen[a] = None
    for s in world.services:
        seen[s.vip] = None
        for e in s.endpoints:
            seen[e.address] = None
    return [a for a in seen if (a.version == 4) == v4]


def enumerate_scope(world: World, scope: Scope, *, dsts: Iterable[IPAddress] | None = None,
                    dports: Iterable[int] | None = None, ids: Iterable[tuple[int, int]] | None = None,
                    marks: Iterable[int] | None = None,
                    hops: int = defaults.HOPS) -> Iterator[tuple[Flow, World, Result]]:
    """Interpret every concrete first connection of a finite version of ``scope``. For ``any-app``
    with ``any_mark``, ``marks`` are the socket marks tried (default: none and the apps' own), less
    ``mark_not``; without it a process has no mark."""
    if scope.client == "peer":
        pod = world.pod_ip(scope.family)
        dst_list: list[IPAddress] = [pod] if pod is not None else []
    else:
        dst_list = list(dsts) if dsts is not None else interesting_addresses(world, scope)
    dst_list = [d for d in dst_list if _in_scope_dst(d, scope, world)]
    port_list = [p for p in (dports if dports is not None else _ports_of(world)) if _in_scope_port(p, scope)]
    clients: list[tuple[str, World]] = []
    if scope.client in ("peer", "proxy"):
        clients.append((scope.client, world))
    elif scope.client == "app":
        clients.append((scope.app or "", world))
    else:
        pairs = list(ids) if ids is not None else list(scope.ids) if scope.ids is not None else \
            [(a.uid, a.gid) for a in world.apps] or [(defaults.APP_UID, defaults.APP_GID)]
        if scope.uid_is is not None or scope.gid_is is not None:
            pairs = [(scope.uid_is if scope.uid_is is not None else u, scope.gid_is if scope.gid_is is not None else g)
                     for u, g in pairs] or pairs
        tried = [0]
        if scope.any_mark:
            tried = list(marks) if marks is not None else [0, *(a.mark for a in world.apps if a.mark)]
            tried = [m for m in dict.fromkeys(tried) if m not in scope.mark_not]
        for (uid, gid), mark in itertools.product(dict.fromkeys(pairs), tried):
            if uid in scope.uid_not or gid in scope.gid_not:
                continue
            app = next((a for a in world.apps if a.uid == uid and a.gid == gid and (a.mark or 0) == mark), None)
            if app is not None:
                clients.append((app.name, world))
            else:
                from meshsolve.model.world import App

                extra: tuple[App, ...] = (App("witness-app", uid=uid, gid=gid, mark=mark or None),)
                clients.append(("witness-app", attrs.evolve(world, apps=cast(Any, world.apps + extra))))
    for (client, w), dst, port in itertools.product(clients, dst_list, port_list):
        service = w.service_at(dst, port)
        if scope.vip_only and service is None:
            continue
        n_ep = len(service.endpoints) if service is not None else 1
        for e in range(max(n_ep, 1)):
            flow = Flow(client=client, dst=dst, dport=port, endpoint=e,
                        src=scope.peer_src if client == "peer" else None, inner=scope.inner)
            yield flow, w, interpret(w, flow, max_hops=hops)


def flow_in_scope(world: World, scope: Scope, flow: Flow) -> bool:
    """Whether ``flow`` is one of the first connections ``scope`` ranges over (client, ids, socket
    mark, destination, port, service VIP, tunnel target)."""
    if flow.family != scope.family or flow.inner != scope.inner:
        return False
    if scope.client in ("peer", "proxy"):
        if flow.client != scope.client:
            return False
    elif scope.client == "app":
        if flow.client != scope.app:
            return False
    else:
        if flow.client in ("peer", "proxy"):
            return False
        app = world.app(flow.client)
        if app.uid in scope.uid_not or app.gid in scope.gid_not:
            return False
        if scope.ids is not None and (app.uid, app.gid) not in scope.ids:
            return False
        if (scope.uid_is is not None and app.uid != scope.uid_is) or \
                (scope.gid_is is not None and app.gid != scope.gid_is):
            return False
        if (app.mark or 0) in scope.mark_not or (app.mark is not None and not scope.any_mark):
            return False
    if scope.vip_only and world.service_at(flow.dst, flow.dport) is None:
        return False
    if flow.client != "peer" and flow.sport is not None and world.pod_ip(scope.family) is not None \
            and K.sport_held(Concrete(), K.Env.of(world, scope.family), flow.dst, flow.sport, flow.protocol) is True:
        return False  # bind() to that source port fails (EADDRINUSE): not a connection
    return _in_scope_dst(flow.dst, scope, world) and _in_scope_port(flow.dport, scope)


def _in_scope_dst(d: IPAddress, scope: Scope, world: World) -> bool:
    if (d.version == 4) != (scope.family == "ipv4"):
        return False
    if scope.dst is not None and not any(d in n for n in scope.dst):
        return False
    if any(d in n for n in scope.dst_not):
        return False
    if d.version == 6 and d in _MAPPED:  # an IPv4 connection
        return False
    dom, env = Concrete(), K.Env.of(world, scope.family)
    if scope.client != "peer" and K.connect_refused(dom, env, d) is True:
        return False  # connect() refuses it: not a connection
    local = K.is_local(dom, env, K.connect_dst(dom, env, d))
    return not (scope.local is not None and local != scope.local)


def _in_scope_port(p: int, scope: Scope) -> bool:
    if p == 0:
        return False
    if scope.dports is not None and not any(p in r for r in scope.dports):
        return False
    return not any(p in r for r in scope.dports_not)


def _ports_of(world: World) -> list[int]:
    ports = {1, 80, defaults.PROXY_OUTBOUND_PORT, defaults.PROXY_INBOUND_PORT, 15008, 15020, 15021, 15090, 65535}
    ports.add(world.proxy.outbound_port)
    if world.proxy.inbound_port is not None:
        ports.add(world.proxy.inbound_port)
    ports.update(sock.port for a in world.apps for sock in a.sockets)
    for svc in world.services:
        ports.add(svc.port)
        ports.update(e.port for e in svc.endpoints)
    return sorted(ports)
