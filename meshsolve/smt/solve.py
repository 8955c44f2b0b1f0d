"""Asking Z3: is there a first connection in a scope whose flow violates a predicate?

``search`` returns ``NoWitness`` (a proof over every connection in the scope, up to the hop bound),
``Candidate`` (a concrete flow the caller must replay in the interpreter) or ``SolverGaveUp``
(timeout / resource limit / incomplete theory), never a guess.
"""

from __future__ import annotations

import contextlib
import ipaddress
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import attrs
import z3

import meshsolve.defaults as defaults
from meshsolve.errors import UnsupportedError
from meshsolve.model.net import Family, to_address
from meshsolve.model.world import App, Flow, World
from meshsolve.semantics import kernel as K
from meshsolve.smt import encode as E
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
)

__all__ = [
    "WITNESS_APP", "Candidate", "Difference", "NoWitness", "SolverGaveUp", "search", "search_difference",
]

WITNESS_APP = "witness-app"


@attrs.frozen
class NoWitness:
    """Unsatisfiable: no connection in the scope violates the predicate (within ``hops`` hops)."""

    hops: int
    opaque: tuple[str, ...] = ()  # opaque rules the proof holds regardless of


@attrs.frozen
class Candidate:
    """A violating first connection, to be replayed: ``world`` may add a witness app."""

    flow: Flow
    world: World
    opaque: tuple[str, ...] = ()


@attrs.frozen
class SolverGaveUp:
    reason: str


Answer = NoWitness | Candidate | SolverGaveUp


def _pred(p: Pred, enc: E.FlowEncoding) -> Any:
    match p:
        case EndsAs(kinds):
            bad = [k for k in kinds if k not in E.OUTCOME]
            if bad:
                raise UnsupportedError(f"unknown outcome kind(s): {bad}")
            return z3.Or(*[enc.outcome == E.OUTCOME[k] for k in sorted(kinds)]) if kinds else z3.BoolVal(False)
        case DeliveredTo(app, bind, port):
            idx = [i for i, (a, s) in enumerate(enc.sockets)
                   if (app is None or a == app) and (bind is None or s.bind == bind)
                   and (port is None or s.port == port)]
            return z3.And(enc.outcome == E.DELIV,
                          z3.Or(*[enc.final_sock == i for i in idx]) if idx else z3.BoolVal(False))
        case SourceIs(address):
            if address.version != (4 if enc.ctx.family == "ipv4" else 6):
                return z3.BoolVal(False)
            return z3.And(enc.outcome == E.DELIV, enc.final_src == E.addr_val(address, enc.ctx.family))
        case Observed(side):
            code = E.OUT if side == "out" else E.IN
            return z3.Or(*[z3.And(a, h.cls == code) for a, h in zip(enc.active, enc.hops, strict=True)])
        case ObservedExactly(sides):
            counted = [z3.And(a, z3.Or(h.cls == E.OUT, h.cls == E.IN), z3.Not(r))
                       for a, h, r in zip(enc.active, enc.hops, enc.repeat, strict=True)]
            if len(sides) > len(counted):
                return z3.BoolVal(False)
            parts = [z3.And(counted[i], enc.hops[i].cls == (E.OUT if sd == "out" else E.IN))
                     for i, sd in enumerate(sides)]
            if len(sides) < len(counted):
                parts.append(z3.Not(counted[len(sides)]))
            return z3.And(*parts) if parts else z3.BoolVal(True)
        case Captured(side):
            h0 = enc.hops[0]
            if side is None:
                return z3.Or(h0.cls == E.OUT, h0.cls == E.IN)
            return h0.cls == (E.OUT if side == "out" else E.IN)
        case Not(arg):
            return z3.Not(_pred(arg, enc))
        case AllOf(args):
            return z3.And(*[_pred(a, enc) for a in args])
        case AnyOf(args):
            return z3.Or(*[_pred(a, enc) for a in args])
    raise TypeError(p)  # pragma: no cover


def _marked(world: World, scope: Scope) -> bool:
    """Whether the first connection's socket mark is a variable: the scope ranges over marks, or its
    app (or the proxy) has one (else it is 0, and the encoding is the one without marks)."""
    if scope.any_mark:
        return True
    if scope.client == "app":
        return K.first_mark(world, scope.app or "") != 0
    return scope.client == "proxy" and K.first_mark(world, "proxy") != 0


def _first_hop_only(p: Pred) -> bool:
    match p:
        case Captured():
            return True
        case Not(arg):
            return _first_hop_only(arg)
        case AllOf(args) | AnyOf(args):
            return all(_first_hop_only(a) for a in args)
    return False


def _scope(s: Scope, world: World, enc: E.FlowEncoding, h0: E.HopVars, client: Any) -> list[Any]:
    fam = s.family
    out: list[Any] = []

    def u(v: int) -> Any:
        return z3.BitVecVal(v, 32)

    if h0.inner is not None:  # the proxy has a tunnel listener: the connection names a target, or none
        out.append(h0.inner == z3.BitVecVal(s.inner or 0, 16))
    elif s.inner is not None:
        raise UnsupportedError(f"scope {s}: the proxy has no tunnel listener (tunnel_port among own_listeners)")
    if s.client == "peer":
        out.append(client == 0)
        src = s.peer_src if s.peer_src is not None else world.peer_ip(fam)
        if src is not None:
            out.append(h0.src == E.addr_val(src, fam))
    else:
        out.append(client == 1)
        # a destination connect() refuses outright is not a connection (v4-mapped IPv6 is IPv4)
        out.append(z3.Not(K.connect_refused(enc.ctx.d, enc.ctx.env, h0.dst)))
        # nor is one from a source port a listener of the pod holds (bind() fails: EADDRINUSE)
        out.append(z3.Not(K.sport_held(enc.ctx.d, enc.ctx.env, h0.dst, h0.sport)))
        if fam == "ipv6":
            out.append(z3.Not(E.in_net(h0.dst, ipaddress.ip_network("::ffff:0:0/96"))))
        if s.client == "app":
            app = world.app(s.app or "")
            out += [h0.uid == u(app.uid), h0.gid == u(app.gid)]
            if h0.mark is not None:
                out.append(h0.mark == u(K.first_mark(world, app.name)))
        elif s.client == "proxy":
            out += [h0.uid == u(world.proxy.uid), h0.gid == u(world.proxy.gid)]
            if h0.mark is not None:
                out.append(h0.mark == u(K.first_mark(world, "proxy")))
        else:
            if h0.mark is not None:  # any socket mark but the excluded ones, or none
                out += [h0.mark != u(m) for m in s.mark_not] if s.any_mark else [h0.mark == u(0)]
            out += [h0.uid != u(x) for x in s.uid_not] + [h0.gid != u(x) for x in s.gid_not]
            if s.uid_is is not None:
                out.append(h0.uid == u(s.uid_is))
            if s.gid_is is not None:
                out.append(h0.gid == u(s.gid_is))
            if s.ids is not None:
                out.append(z3.Or(*[z3.And(h0.uid == u(a), h0.gid == u(b)) for a, b in s.ids]))
    if s.dst is not None:
        out.append(z3.Or(*[E.in_net(h0.dst, n) for n in s.dst if n.version == (4 if fam == "ipv4" else 6)]))
    out += [z3.Not(E.in_net(h0.dst, n)) for n in s.dst_not if n.version == (4 if fam == "ipv4" else 6)]
    # local or remote as the kernel sees it: connect() sends a connection to 0.0.0.0 / :: to loopback
    local = enc.ctx.is_local(K.connect_dst(enc.ctx.d, enc.ctx.env, h0.dst))
    if s.local is True:
        out.append(local)
    elif s.local is False:
        out.append(z3.Not(local))
    if s.dports is not None:
        out.append(z3.Or(*[E._port_in(h0.dport, r.lo, r.hi) for r in s.dports]))
    out += [z3.Not(E._port_in(h0.dport, r.lo, r.hi)) for r in s.dports_not]
    if s.vip_only:
        vips = [z3.And(h0.dst == E.addr_val(v.vip, fam), h0.dport == z3.BitVecVal(v.port, 16))
                for v in world.services if v.vip.version == (4 if fam == "ipv4" else 6) and v.endpoints]
        out.append(z3.Or(*vips) if vips else z3.BoolVal(False))
    # ports a client can connect to: 1..65535 (0 is not a valid destination port)
    out.append(h0.dport != z3.BitVecVal(0, 16))
    return out


#: Z3's random seeds, fixed (0 is also Z3's default: setting them keeps a global setting from
#: changing them). With the encoding built in a fixed order (no set or hash order decides it), the
#: same question is the same query, searched the same way, run after run.
SEEDS: tuple[tuple[str, int], ...] = (("random_seed", 0),)

#: When a list, the SMT-LIB text of every query is appended to it before it is solved (the
#: determinism tests compare two runs' queries); None (the default) records nothing.
QUERY_LOG: list[str] | None = None


def configure(s: Any, timeout_ms: int, rlimit: int) -> Any:
    """Set a Z3 solver's limits and :data:`SEEDS`; returns it."""
    s.set("timeout", timeout_ms)
    s.set("rlimit", rlimit)
    for name, value in SEEDS:
        s.set(name, value)
    return s


def _gave_up(s: Any, timeout_ms: int, elapsed: float) -> SolverGaveUp:
    """Why Z3 answered unknown, in QF_BV's words: Z3's SMT core says "canceled" both when its
    timer stopped it and when it ran out of resources (its resource count is the context's, not
    the call's): a call that lasted its time limit was stopped by the timer."""
    why = s.reason_unknown() or "unknown"
    if why == "canceled":
        why = "timeout" if elapsed * 1000 >= timeout_ms else "max. resource limit exceeded"
    return SolverGaveUp(why)


def solver_kind(client: str) -> str:
    """The kind of Z3 solver for a question whose first connection is from ``client`` (a
    ``Scope``'s), however many connections are encoded:

    - ``"qf_bv"``: Z3's QF_BV solver, whose preprocessing (propagating values, solving equations,
      eliminating unconstrained terms, bit-blasting) folds most rules away where the destination
      (a peer's connects to the pod) or the user (the proxy's, an app's) is fixed;
    - ``"smt-core"``: where nothing is fixed (any process, to anywhere) that preprocessing costs
      more than it saves, several times more on large rule sets; Z3's SMT core decides the
      traversal's conditions by case splits along it instead, with the settings of
      :func:`_smt_core` and Z3's rewriter as :data:`REWRITER` says (``rewriting``). That holds
      for several connections too: no-loops' any-process question on 10,020 rules takes it 1.89 s
      against 2.51 s for simplifying, propagating values and solving equations first (the kind
      this question had before), and on 50,020 rules it is proved, where that kind gave up.

    ``python -m benchmarks.solvers``; benchmarks/README.md, "Which solver" and "One property on
    50,020 rules"."""
    return "qf_bv" if client != "any-app" else "smt-core"


def _smt_core() -> Any:
    """Z3's SMT core, set for questions from any process (one connection or several):

    - no value propagation before the search: it substituted the few fixed values through the
      whole traversal again (50,020 rules: 4.8 s of a 5 s check; without it 0.5 s), while the lazy
      case splits need none of it;
    - case splits along the formula's structure, by relevancy (``case_split`` 3; it needs Z3's
      automatic configuration off, which would otherwise pick splits by the activity of the Boolean
      variables). A traversal is a cascade of first-match choices: splitting along it settles the
      question in a few hundred decisions. capture-out on 50,020 kube-proxy rules, with the step
      above: 7 conflicts, 253 decisions and about 0.45 s of search, against 15 conflicts, 43,029
      decisions and about 1.0 s (the same answer).

    ``python -m benchmarks.solvers`` times this kind beside Z3's SMT core as it comes;
    benchmarks/README.md, "Which solver"."""
    s = z3.SimpleSolver()
    s.set("auto_config", False)
    s.set("case_split", 3)
    s.set("propagate_values", False)
    return s


#: The Z3 solver each of ``solver_kind``'s kinds names, new at each call.
SOLVERS: dict[str, Callable[[], Any]] = {
    "smt-core": _smt_core,
    "qf_bv": lambda: z3.SolverFor("QF_BV"),
}


#: Z3's rewriter settings while a kind's solver takes the query in and searches (Z3 reads them from
#: its global parameters, at ``add`` and at ``check``; ``rewriting`` sets them and puts the old values
#: back). ``flat_and_or`` off for the SMT core: comparing a table's decision with a code turns its
#: cascade into nested disjunctions and conjunctions (a run of rules with the same verdict: one
#: nesting level a rule), which the rewriter would flatten level by level, quadratic in the run's
#: length (50,020 rules: 3.2 s at ``add``, 0.1 s without). Only the shape of the formulas changes.
REWRITER: dict[str, dict[str, bool]] = {"smt-core": {"flat_and_or": False}}


@contextlib.contextmanager
def rewriting(kind: str) -> Iterator[None]:
    """Z3's rewriter set as :data:`REWRITER` says for ``kind`` inside the block (as before, after)."""
    params = REWRITER.get(kind, {})
    old = {name: z3.get_param(f"rewriter.{name}") for name in params}
    try:
        for name, value in params.items():
            z3.set_param(f"rewriter.{name}", value)
        yield
    finally:
        for name, value in old.items():
            z3.set_param(f"rewriter.{name}", value)


def _solver(client: str) -> Any:
    return SOLVERS[solver_kind(client)]()


def run_check(s: Any, *assumptions: Any) -> Any:
    """``s.check(*assumptions)``, recording the query in :data:`QUERY_LOG` when it is a list."""
    if QUERY_LOG is not None:
        QUERY_LOG.append(s.sexpr() + "".join(f"\n; assume {a.sexpr()}" for a in assumptions))
    return s.check(*assumptions)


#: Whether ``search`` first asks Z3's plain incremental solver, which shows most queries
#: unsatisfiable (no violating connection: the common answer) several times faster than the
#: ``QF_BV`` tactic solver. Only its ``unsat`` is taken, and that answer is the same whichever solver
#: gives it; any other answer asks the solver ``solver_kind`` names, whose model the witness comes
#: from (and witnesses are canonical: ``_canonical``). Not tried where that kind is the SMT core itself.
QUICK_UNSAT = True
#: Z3's resource units the quick try may use (a deterministic budget; a fleet group's queries take
#: 100–40,000 each): a hard query costs a short failed try, then the ``QF_BV`` solver as before.
QUICK_RLIMIT = 500_000
#: The quick try is for small rulesets only (a pod's capture rules: tens): on thousands of rules the
#: plain solver loses to ``QF_BV`` (measured: 10,000 kube-proxy rules, no-loops 17.1 s instead of
#: 11.4 s CPU), most of it in taking the query in, which its resource budget does not bound.
QUICK_RULES = 1_000


def _refuted_quickly(query: list[Any], timeout_ms: int, rlimit: int) -> bool:
    """Whether Z3's plain solver shows ``query`` unsatisfiable within its budget."""
    quick = configure(z3.SimpleSolver(), timeout_ms, min(rlimit, QUICK_RLIMIT) if rlimit > 0 else QUICK_RLIMIT)
    quick.add(*query)
    return bool(run_check(quick) == z3.unsat)


def search(world: World, scope: Scope, pred: Pred, *, hops: int = defaults.HOPS,
           timeout_ms: int = defaults.TIMEOUT_MS, rlimit: int = defaults.RLIMIT,
           names: dict[str, int] | None = None) -> Answer:
    """Find a first connection in ``scope`` whose flow does **not** satisfy ``pred``."""
    if _first_hop_only(pred):
        hops = 1  # the predicate looks at the first connection only: later hops are not encoded
    first = "peer" if scope.client == "peer" else "local"
    enc, h0, client = E.encode_flow(world, scope.family, hops=hops, names=names, first=first,
                                    marks=_marked(world, scope))
    query = [*enc.constraints, *_scope(scope, world, enc, h0, client), z3.Not(_pred(pred, enc))]
    opaque = tuple(why for why, _ in enc.ctx.opaque)
    kind = solver_kind(scope.client)
    if QUICK_UNSAT and kind != "smt-core" and world.rules.for_family(scope.family).rule_count() <= QUICK_RULES and \
            _refuted_quickly(query, timeout_ms, rlimit):
        return NoWitness(hops, opaque)
    with rewriting(kind):
        s = configure(_solver(scope.client), timeout_ms, rlimit)
        s.add(*query)
        t = time.monotonic()
        r = run_check(s)
        if r == z3.unsat:
            return NoWitness(hops, opaque)
        if r == z3.unknown:
            return _gave_up(s, timeout_ms, time.monotonic() - t)
        m = _canonical(s, world, scope, h0, enc)
    flow, w = _flow_from_model(m, world, scope, h0, enc)
    return Candidate(flow, w, opaque)


def _flow_from_model(m: Any, world: World, scope: Scope, h0: E.HopVars,
                     enc: E.FlowEncoding) -> tuple[Flow, World]:
    """The concrete first connection a model describes (adding a witness app when needed)."""
    def val(x: Any) -> int:
        return int(m.eval(x, model_completion=True).as_long())

    fam = scope.family
    dst = to_address(_int_to_addr(val(h0.dst), fam))
    dport = val(h0.dport)
    sport = val(h0.sport)
    endpoint = val(enc.endpoint)
    w = world
    if scope.client == "peer":
        name = "peer"
    elif scope.client == "proxy":
        name = "proxy"
    elif scope.client == "app":
        name = scope.app or ""
    else:
        uid, gid = val(h0.uid), val(h0.gid)
        mark = val(h0.mark) if h0.mark is not None else 0
        existing = next((a for a in world.apps if a.uid == uid and a.gid == gid and (a.mark or 0) == mark), None)
        if existing is not None:
            name = existing.name
        else:
            name = WITNESS_APP
            extra: tuple[App, ...] = (App(WITNESS_APP, uid=uid, gid=gid, mark=mark or None),)
            w = attrs.evolve(world, apps=cast(Any, world.apps + extra))
    # endpoint index only matters for VIPs; keep it in range of the largest service
    n_ep = max((len(s_.endpoints) for s_ in world.services), default=1)
    endpoint = endpoint if endpoint < max(n_ep, 1) else 0
    flow = Flow(client=name, dst=dst, dport=dport, sport=sport or None, endpoint=endpoint,
                src=scope.peer_src if scope.client == "peer" else None, inner=scope.inner)
    return flow, w


def _canonical(s: Any, world: World, scope: Scope, h0: E.HopVars, enc: E.FlowEncoding) -> Any:
    """A model of the solver's assertions chosen canonically, so that the same question gives the
    same, readable witness whatever the encoding's shape: the destination pinned to recognisable
    addresses (documentation ranges and the world's own), then to the first of the world's own
    addresses that works, the first of the apps' and services' ports that works (else the smallest
    port), the first app whose ids work, the smallest endpoint. Plain satisfiability checks only,
    so the choice does not depend on timing. A time or resource limit reached on the way stops
    the choosing: the last model found is the witness then (it satisfies every assertion, only
    not every choice)."""
    fam = scope.family
    v = 4 if fam == "ipv4" else 6
    depth = 0
    found = s.model()  # the search's model: it stands when a limit stops the choosing

    def sat() -> bool:
        nonlocal found
        r = run_check(s)
        if r == z3.unknown:
            raise _Stopped
        if r == z3.sat:
            found = s.model()
        return bool(r == z3.sat)

    def pin(c: Any) -> bool:
        nonlocal depth
        s.push()
        s.add(c)
        try:
            if sat():
                depth += 1
                return True
        except _Stopped:
            s.pop()
            raise
        s.pop()
        return False

    def first(cands: list[Any]) -> bool:
        return any(pin(c) for c in cands)

    def smallest(term: Any) -> None:
        hi = found.eval(term, model_completion=True).as_long()
        lo = 0
        while lo < hi:
            mid = (lo + hi) // 2
            s.push()
            s.add(z3.ULE(term, mid))
            try:
                ok = sat()
            finally:
                s.pop()
            if ok:
                hi = found.eval(term, model_completion=True).as_long()
            else:
                lo = mid + 1
        pin(term == hi)

    try:
        _choose(world, scope, h0, enc, fam, v, pin, first, smallest)
        sat()  # the model of every choice together
    except _Stopped:
        pass  # a time or resource limit: the last model found satisfies every assertion
    for _ in range(depth):
        s.pop()
    return found


class _Stopped(Exception):
    """Internal: a solver limit was reached while ``_canonical`` chose among the models."""


def _choose(world: World, scope: Scope, h0: E.HopVars, enc: E.FlowEncoding, fam: Family, v: int,
            pin: Callable[[Any], bool], first: Callable[[list[Any]], bool],
            smallest: Callable[[Any], None]) -> None:
    """``_canonical``'s choices, in order (each keeps what the ones before it pinned)."""
    pin(_preferred(world, scope, h0))
    known = {a for a in (*world.pod_ips, *world.peer_ips) if a.version == v}
    known |= {sv.vip for sv in world.services if sv.vip.version == v}
    known.add(to_address("127.0.0.1" if fam == "ipv4" else "::1"))
    addrs = [E.addr_val(a, fam) for a in sorted(known, key=int)]
    ports = [z3.BitVecVal(p, 16) for p in
             sorted({sock.port for a in world.apps for sock in a.sockets} | {sv.port for sv in world.services})]
    # the world's own address and port together first (the flows people ask about), then apart
    if not first([z3.And(h0.dst == a, h0.dport == p) for a in addrs for p in ports]):
        first([h0.dst == a for a in addrs])
        if not first([h0.dport == p for p in ports]):
            smallest(h0.dport)
    if not pin(h0.sport == 0):  # no source port named, else the smallest that works
        smallest(h0.sport)
    # an app's ids together, else each id apart: an app's, root's, else the smallest (the
    # witness does not depend on which model the solver found first)
    if scope.client == "any-app" and h0.uid is not None and \
            not first([z3.And(h0.uid == a.uid, h0.gid == a.gid) for a in world.apps]):
        for var, ids in ((h0.uid, [a.uid for a in world.apps]), (h0.gid, [a.gid for a in world.apps])):
            if not first([var == x for x in dict.fromkeys([*ids, 0])]):
                smallest(var)
    # a mark: none, else one of the apps', else the smallest
    marks = [h0.mark == m for m in dict.fromkeys([0, *(a.mark for a in world.apps if a.mark)])]
    if scope.any_mark and h0.mark is not None and not first(marks):
        smallest(h0.mark)
    smallest(enc.endpoint)


_DOC_NETS = {"ipv4": ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "127.0.0.0/8"),
             "ipv6": ("2001:db8::/32", "::1/128", "::6/128")}


def _preferred(world: World, scope: Scope, h0: E.HopVars) -> Any:
    import ipaddress

    fam = scope.family
    nets = [ipaddress.ip_network(n) for n in _DOC_NETS[fam]]
    nets += [ipaddress.ip_network(a) for a in (*world.pod_ips, *world.peer_ips)
             if a.version == (4 if fam == "ipv4" else 6)]
    v = 4 if fam == "ipv4" else 6
    nets += [ipaddress.ip_network(s.vip) for s in world.services if s.vip.version == v]
    parts = [z3.Or(*[E.in_net(h0.dst, n) for n in nets])]
    if h0.uid is not None and scope.client == "any-app":
        parts.append(z3.And(z3.ULE(h0.uid, z3.BitVecVal(65534, 32)), z3.ULE(h0.gid, z3.BitVecVal(65534, 32))))
    return z3.And(*parts)


def _int_to_addr(v: int, family: str) -> str:
    import ipaddress

    return str(ipaddress.IPv4Address(v) if family == "ipv4" else ipaddress.IPv6Address(v))


@attrs.frozen
class Difference:
    """A first connection that two worlds treat differently (to be replayed in both)."""

    flow: Flow
    world_a: World
    world_b: World


def _signature_terms(enc: E.FlowEncoding, keys: list[tuple[str, Any, int]]) -> tuple[Any, Any, list[Any],
                                                                                     list[Any]]:
    """(outcome, delivered-socket key, counted-proxy-hop flags, hop classes) of an encoding."""
    key: Any = z3.BitVecVal(0xFFFF, 16)
    for i, (app, s) in enumerate(enc.sockets):
        k = keys.index((app, s.bind, s.port))
        key = z3.If(enc.final_sock == i, z3.BitVecVal(k, 16), key)
    counted = [z3.And(a, z3.Or(h.cls == E.OUT, h.cls == E.IN), z3.Not(r))
               for a, h, r in zip(enc.active, enc.hops, enc.repeat, strict=True)]
    return enc.outcome, key, counted, [h.cls for h in enc.hops]


def search_difference(world_a: World, world_b: World, scope: Scope, *, hops: int = defaults.HOPS,
                      timeout_ms: int = defaults.TIMEOUT_MS, rlimit: int = defaults.RLIMIT,
                      names: dict[str, int] | None = None) -> Answer | Difference:
    """Find a first connection in ``scope`` whose end differs between the two worlds: outcome, the
    app socket it reaches, the source the app (or, leaving the pod, the remote host) sees, or the
    proxy sides that observe it."""
    marks = _marked(world_a, scope) or _marked(world_b, scope)
    ea, h0, client = E.encode_flow(world_a, scope.family, hops=hops, names=names, tag="a.", marks=marks)
    eb, _h0b, _client_b = E.encode_flow(world_b, scope.family, hops=hops, names=names, tag="b.", marks=marks)
    keys: list[tuple[str, Any, int]] = []
    for app, s in [*ea.sockets, *eb.sockets]:
        if (app, s.bind, s.port) not in keys:
            keys.append((app, s.bind, s.port))
    oa, ka, ca, cla = _signature_terms(ea, keys)
    ob, kb, cb, clb = _signature_terms(eb, keys)
    deliv = z3.And(oa == E.DELIV, ob == E.DELIV)
    egress = z3.And(oa == E.EGRESS, ob == E.EGRESS)  # leaving the pod, from another source (SNAT)
    seq = [z3.Or(x != y, z3.And(x, p != q)) for x, y, p, q in zip(ca, cb, cla, clb, strict=True)]
    differ = z3.Or(oa != ob, z3.And(deliv, z3.Or(ka != kb, ea.final_src != eb.final_src)),
                   z3.And(egress, ea.final_src != eb.final_src), *seq)
    s = configure(z3.SolverFor("QF_BV"), timeout_ms, rlimit)
    s.add(*ea.constraints, *eb.constraints)
    s.add(*_scope(scope, world_a, ea, h0, client))
    if scope.client != "peer":  # a connection in both worlds: no source port either one's listeners hold
        s.add(z3.Not(K.sport_held(eb.ctx.d, eb.ctx.env, h0.dst, h0.sport)))
    s.add(differ)
    t = time.monotonic()
    r = run_check(s)
    opaque = tuple(why for why, _ in (*ea.ctx.opaque, *eb.ctx.opaque))
    if r == z3.unsat:
        return NoWitness(hops, opaque)
    if r == z3.unknown:
        return _gave_up(s, timeout_ms, time.monotonic() - t)
    m = _canonical(s, world_a, scope, h0, ea)
    flow, wa = _flow_from_model(m, world_a, scope, h0, ea)
    _flow_b, wb = _flow_from_model(m, world_b, scope, h0, eb)
    return Difference(flow, wa, wb)
