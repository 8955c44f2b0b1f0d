"""What the kernel, the sockets and the sidecar do with a connection — written once.

This module is the single definition of meshsolve's semantics. It is Python code over a *domain*
(``meshsolve.semantics.domain``): run over concrete values it is the interpreter, run over Z3
terms (``meshsolve.smt``) it is the solver's encoding. Each backend supplies only its domain and
its way of walking one chain (forward for one packet, a back-to-front if-then-else cascade for all
packets); the meaning of every match, every target, every hook and every proxy hop is here.

Connections ("legs")
    A flow opens one connection; each time the proxy accepts one it may open another (its
    upstream). A connection is followed by its first packet (the SYN): nat is consulted once per
    connection, so one connection = one nat decision. The hooks each kind of packet meets, and the
    tables in each hook, come from ``meshsolve.model.path``.

A connection opened in the pod (an app, or the proxy)
    A client that binds its own source port fails with EADDRINUSE where a listener of the pod holds
    that port. ``connect()`` first: a destination of 0.0.0.0 / ``::`` means loopback; multicast and broadcast
    destinations fail with ENETUNREACH, an IPv6 link-local one without a scope with EINVAL (the
    table ``CONNECT_RULES``); a 0.0.0.0/8 destination is sent (the default route covers it) but no
    host answers it (``UNANSWERED``). The source is the bound one (the proxy's passthrough source)
    or the kernel's choice: 127.0.0.1 for a 127/8 destination, ::1 for ::1, the destination itself for
    another local IPv6 address, otherwise the pod IP. A source bound to a loopback address cannot
    reach a remote destination (EINVAL). OUTPUT runs with the output interface routed for the
    original destination (fixed for the whole hook, even after nat rewrote the destination); a
    rewritten destination is routed again (IPv4 does it right after the nat / mangle OUTPUT stage
    that changed it: a loopback source that now leads out of the pod is dropped there, before
    filter OUTPUT); POSTROUTING sees the new route. A local destination re-enters through ``lo``:
    PREROUTING and INPUT without nat (the connection's NAT binding exists). A remote one leaves the
    pod; it *completes* only when its source is an address the network can answer, i.e. the pod's
    address on its interface — a source that exists only on ``lo`` (``::6``) is never answered.

A connection from the peer (another host)
    Arrives on the pod interface from the peer's address: PREROUTING (with nat), input routing —
    a loopback destination arriving on a non-loopback interface is a martian and is dropped; a
    destination that is not the pod's would be forwarded (not modelled: undetermined) — and INPUT.

Tables and chains
    First match; ``-j`` pushes a return point, ``-g`` does not, ``RETURN`` pops, a built-in chain
    ends in its policy. ``ACCEPT`` ends the table; ``DROP`` drops (the client hangs); ``REJECT``
    rejects (the client is refused at once); ``REDIRECT``/``DNAT`` rewrite the destination and end
    the table; ``TPROXY`` assigns the connection to a transparent listener and ends the table;
    ``MARK``/``CONNMARK`` change marks and continue. Conntrack state: a first packet has no entry
    before conntrack (``raw``: ``INVALID``) unless it re-enters through ``lo`` (``NEW``); ``NEW``
    after, plus ``DNAT`` once nat rewrote the destination. A match the model does not decide makes
    its rule undetermined only when every decided match of the rule holds and the target has an
    effect.

Sockets
    An exact bind beats a wildcard on the same port; ``0.0.0.0`` accepts any local IPv4
    destination, ``::`` any local IPv6 one and, without V6ONLY, IPv4 too; ``127.0.0.1`` only
    127.0.0.1; a pod-IP bind only the pod IP. The proxy listens on 0.0.0.0 and ``::`` (V6ONLY).

The proxy
    A connection accepted on ``inbound_port`` is its inbound side (``in``); on ``outbound_port`` its
    outbound side (``out``), unless ``virtual_inbound_dispatch`` hands one whose original
    destination is a pod IP and an inbound port to the inbound side. Outbound: a service VIP:port
    goes to the chosen endpoint; anything else passes through to the original destination, or is
    closed (``blackhole``). A connection whose original destination the proxy cannot read
    (``SO_ORIGINAL_DST`` looks only in conntrack zone 0) is accepted, then closed. Inbound: to
    127.0.0.1/::1 at the original port (``localhost``) or to the original destination, from
    ``inbound_source_*`` when set. The proxy's connections carry its uid/gid and, when it marks
    every socket (``socket_mark``: ztunnel), that mark: its upstreams, its listeners' SYN-ACKs and
    the connections it opens on its own. Its own listeners (``own_listeners``) end a connection
    there (delivered to ``proxy``), whether the socket lookup or a TPROXY rule (to a transparent
    proxy) hands it over; on its tunnel listener (``tunnel_port`` among them) a connection that
    names an inner port (HBONE) is its inbound side for the address it was sent to at that port,
    from the connection's source. The same (side, original destination) seen twice in one flow is
    a loop; so is a flow longer than the hop bound.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any, TypeAlias

import attrs

from meshsolve.errors import WorldError
from meshsolve.model.net import Family, IPNetwork, family_of, to_address
from meshsolve.model.path import Hook, Stage
from meshsolve.model.routing import LOCAL_TABLE, MAIN_TABLE
from meshsolve.model.world import Socket, World
from meshsolve.semantics.domain import Domain, merge_records
from meshsolve.semantics.env import Env, Pkt, SockView, is_local, is_loopback, lookup, port_held
from meshsolve.semantics.tables import (
    CONT,
    DROP,
    IN,
    NAT,
    OUT,
    REJECT,
    TPROXY,
    UNK,
    Decision,
    Effect,
    effect,
    found_in_zone,
    match,
    merge_decision,
)

__all__ = [
    "CONNECT_RULES",
    "CONT",
    "DROP",
    "IN",
    "NAT",
    "OUT",
    "OUTCOME_CODES",
    "REJECT",
    "TPROXY",
    "UNANSWERED",
    "UNK",
    "Decision",
    "Effect",
    "Env",
    "First",
    "Knobs",
    "Leg",
    "LegRecord",
    "Pkt",
    "effect",
    "first_mark",
    "is_local",
    "lookup",
    "match",
    "merge_decision",
    "run_flow",
    "sport_held",
]

_LO4 = ipaddress.IPv4Address("127.0.0.1")
_LO6 = ipaddress.IPv6Address("::1")
_META = {"meta": True}  # attrs metadata: concrete-only bookkeeping, not merged symbolically

# How one connection (leg) ends; OUT / IN mean the proxy accepted it on that side.
DELIV, REFUSED, DROPPED, EGRESS, _OUT, _IN, UNDET, LOOP, REJECTED, FAILED = range(10)
assert (_OUT, _IN) == (OUT, IN)
OUTCOME_CODES = {"delivered": DELIV, "refused": REFUSED, "dropped": DROPPED, "egress": EGRESS,
                 "undetermined": UNDET, "loop": LOOP, "rejected": REJECTED, "failed": FAILED}
NO_SOCKET = 0xFFFF

# connect(): destinations the kernel rewrites or refuses before any packet is sent, per family.
# (network, action): "loopback" = sent to 127.0.0.1 / ::1 instead; otherwise the errno connect() returns.
CONNECT_RULES: dict[Family, tuple[tuple[IPNetwork, str], ...]] = {
    "ipv4": (
        (ipaddress.IPv4Network("0.0.0.0/32"), "loopback"),
        (ipaddress.IPv4Network("224.0.0.0/4"), "ENETUNREACH"),
        (ipaddress.IPv4Network("255.255.255.255/32"), "ENETUNREACH"),
        (ipaddress.IPv4Network("127.255.255.255/32"), "ENETUNREACH"),
    ),
    "ipv6": (
        (ipaddress.IPv6Network("::/128"), "loopback"),
        (ipaddress.IPv6Network("ff00::/8"), "ENETUNREACH"),
        (ipaddress.IPv6Network("fe80::/10"), "EINVAL"),
        (ipaddress.IPv6Network("::ffff:0:0/96"), "an IPv4 connection"),
    ),
}
# Destinations a SYN is sent to but that no host answers: 0.0.0.0/8 ("this network") is no connect()
# error when a route covers it (the pod's default route does), yet every host and router drops a
# packet to it as a martian, so the client waits in vain.
UNANSWERED: dict[Family, tuple[IPNetwork, ...]] = {
    "ipv4": (ipaddress.IPv4Network("0.0.0.0/8"),),
    "ipv6": (),
}


# ------------------------------------------------------------------------------------------------
# Routing


@attrs.define
class RouteResult:
    """Where the routing decision sends a packet: ``local`` (to a socket of the pod) or out of the pod
    interface; ``fail``: no usable route (unreachable, blackhole, prohibit, or none at all)."""

    local: Any
    fail: Any


def route(d: Domain, env: Env, dst: Any, mark: Any) -> RouteResult:
    """The kernel's route for ``dst`` with packet mark ``mark``: rule 0 ``lookup local`` (the pod's
    own addresses), the world's ``ip rule`` entries by priority, then ``lookup main`` (the default
    route out of the pod interface). A table without a matching route passes the lookup on."""
    fam = env.family
    routing = env.world.routing
    rules: list[tuple[int, Any, int]] = [(0, True, LOCAL_TABLE)]
    for r in routing.rules_for(fam):
        applies: Any = True
        if r.fwmark is not None:
            applies = d.eq(mark & r.mask, d.u32(r.fwmark & r.mask))
            if r.invert:
                applies = d.not_(applies)
        rules.append((r.priority, applies, r.table))
    rules.append((32766, True, MAIN_TABLE))
    result = RouteResult(d.const(False), d.const(True))
    for _prio, applies, table in sorted(rules, key=lambda x: x[0], reverse=True):
        found, here = _table_route(d, env, table, dst)
        result = merge_records(d, d.and_(applies, found), here, result)
    return result


def _table_route(d: Domain, env: Env, table: int, dst: Any) -> tuple[Any, RouteResult]:
    """(whether ``table`` has a route for ``dst``, what it says): longest prefix first."""
    fam = env.family
    if table == LOCAL_TABLE:
        return is_local(d, env, dst), RouteResult(d.const(True), d.const(False))
    routes = sorted(env.world.routing.routes_in(fam, table), key=lambda r: r.dst.prefixlen)
    found: Any = d.const(False)
    here = RouteResult(d.const(False), d.const(False))
    if table == MAIN_TABLE:  # the pod's default route out of its interface
        found = d.const(True)
    for r in routes:  # shortest prefix first, so the longest is the outermost if-then-else
        hit = d.in_net(dst, r.dst)
        if r.kind == "throw":
            found = d.and_(d.not_(hit), found)
            continue
        local = r.kind == "local" or (r.kind == "unicast" and r.dev == "lo")
        fail = r.kind in ("blackhole", "unreachable", "prohibit")
        here = merge_records(d, hit, RouteResult(d.const(local), d.const(fail)), here)
        found = d.or_(hit, found)
    return found, here


# ------------------------------------------------------------------------------------------------
# Hooks: the stages of a path, in order


Traverse: TypeAlias = Callable[[Stage, Pkt], Decision]


@attrs.frozen
class Binding:
    """The NAT conntrack gives a connection's later packets: the original direction's destination
    becomes ``addr:port`` at the destination-NAT stage (``kind="dst"``), the reply direction's
    source becomes ``addr:port`` at the source-NAT stage (``kind="src"``), when ``on``."""

    kind: str
    on: Any
    addr: Any
    port: Any


# the bindings a later packet gets at the nat hooks (one, several, or none)
Bindings: TypeAlias = Binding | tuple[Binding, ...] | None
# the hooks whose nat rewrites the source (SNAT); REDIRECT / DNAT rewrite the destination at the others
SOURCE_NAT_HOOKS = ("INPUT", "POSTROUTING")


@attrs.define
class Run:
    """A packet on its way through a hook's stages: ``ended`` (a stage dropped, rejected or left it
    undetermined: ``end`` says how), ``tproxied`` (a TPROXY verdict assigned it to ``tp_addr:tp_port``);
    ``stuck``: the re-route right after nat OUTPUT dropped it, where that is not decided while the
    stages run (see ``_rerouted``)."""

    pkt: Pkt
    ended: Any
    end: Any  # DROPPED / REJECTED / UNDET / FAILED
    tproxied: Any
    tp_addr: Any
    tp_port: Any
    stuck: Any = False
    rule: Any = attrs.field(default=None, metadata=_META)
    why: Any = attrs.field(default=None, metadata=_META)
    tp_rule: Any = attrs.field(default=None, metadata=_META)


def run_hook(d: Domain, env: Env, tr: Traverse, hook: Hook, run: Run, *, nat: bool,
             bind: Bindings = None, on_nat: Callable[[Pkt, Decision, bool], None] | None = None) -> Run:
    """Run every stage of ``hook`` in kernel order, stopping at the first that ends the packet. The
    nat stages (together, at the nat hook's place) are one nat hook: ``nat``: they are consulted
    (the first packet of a new connection), each only while none before it bound the connection
    (a NAT verdict); otherwise the nat hook applies the connection's ``bind``ing, if any. Without
    connection tracking nat does nothing at all."""
    bound: Any = None  # whether a nat stage of this hook bound the connection (None: no nat stage yet)
    for stage in env.stages(hook):
        if d.is_true(run.ended):
            break
        if stage.nat:
            if not env.conntrack:
                continue
            if not nat:
                if bind is not None and bound is None:
                    run = _apply_binding(d, run, stage, bind)
                bound = True
                continue
            if bound is not None and d.is_true(bound):
                continue
            run, here = _stage(d, env, tr, stage, run, on_nat, skip=bound)
            bound = here if bound is None else d.or_(bound, here)
            continue
        run, _ = _stage(d, env, tr, stage, run, on_nat)
    return run


def _apply_binding(d: Domain, run: Run, stage: Stage, binds: Bindings) -> Run:
    p = run.pkt
    for bind in (binds,) if isinstance(binds, Binding) else binds or ():
        if d.is_false(bind.on):
            continue
        on = d.and_(bind.on, found_in_zone(d, p))  # a packet conntrack does not find gets no NAT
        if bind.kind == "dst" and stage.hook in ("PREROUTING", "OUTPUT"):
            p = attrs.evolve(p, dst=d.ite(on, bind.addr, p.dst), dport=d.ite(on, bind.port, p.dport))
        elif bind.kind == "src" and stage.hook in SOURCE_NAT_HOOKS:
            p = attrs.evolve(p, src=d.ite(on, bind.addr, p.src), sport=d.ite(on, bind.port, p.sport))
    return attrs.evolve(run, pkt=p)


def _stage(d: Domain, env: Env, tr: Traverse, stage: Stage, run: Run,
           on_nat: Callable[[Pkt, Decision, bool], None] | None, *, skip: Any = None) -> tuple[Run, Any]:
    """One stage's traversal (left out where the run has ended or ``skip`` holds), and whether it
    bound the connection (a NAT verdict at a nat stage)."""
    p = run.pkt
    view = attrs.evolve(p, before_ct=stage.before_conntrack)
    dec = tr(stage, view)
    k = dec.kind
    nat_here = d.eq(k, NAT) if stage.nat else d.const(False)
    source_nat = stage.hook in SOURCE_NAT_HOOKS  # SNAT; at the other hooks REDIRECT / DNAT
    if on_nat is not None and d.is_true(nat_here):
        on_nat(p, dec, source_nat)
    # a TPROXY verdict on a later packet hands it to its own connection's socket: only its mark counts
    tp_here = d.eq(k, TPROXY) if p.state == "NEW" else d.const(False)
    if source_nat:
        new_pkt = attrs.evolve(p, src=d.ite(nat_here, dec.addr, p.src), sport=d.ite(nat_here, dec.port, p.sport),
                               snatted=d.or_(p.snatted, nat_here), mark=dec.mark, ctmark=dec.ctmark, zone=dec.zone)
    else:
        new_pkt = attrs.evolve(p, dst=d.ite(nat_here, dec.addr, p.dst), dport=d.ite(nat_here, dec.port, p.dport),
                               natted=d.or_(p.natted, nat_here), mark=dec.mark, ctmark=dec.ctmark, zone=dec.zone)
    ends = d.or_(d.eq(k, DROP), d.eq(k, REJECT), d.eq(k, UNK))
    end = d.ite(d.eq(k, DROP), d.kind(DROPPED), d.ite(d.eq(k, REJECT), d.kind(REJECTED), d.kind(UNDET)))
    after = Run(new_pkt, ends, end, d.or_(run.tproxied, tp_here), d.ite(tp_here, dec.addr, run.tp_addr),
                d.ite(tp_here, dec.port, run.tp_port), run.stuck, rule=dec.rule, why=dec.reason,
                tp_rule=dec.rule if d.is_true(tp_here) else run.tp_rule)
    if stage.hook == "OUTPUT" and stage.nat and env.family == "ipv4":
        after = _rerouted(d, env, p, after)
    if not d.symbolic:
        return after, nat_here
    return merge_records(d, run.ended if skip is None else d.or_(run.ended, skip), run, after), nat_here


def _rerouted(d: Domain, env: Env, before: Pkt, after: Run) -> Run:
    """IPv4 routes a locally generated packet again right after the nat OUTPUT stage when the stage
    changed its destination address. A loopback source whose new route leads out of the pod cannot
    be routed: the packet is dropped right there, and the stages after it (filter OUTPUT) never see
    it. Where that is decided (the interpreter) the run ends here; where it is not (the solver), the
    run goes on with ``stuck`` set, and ``_send_local_routed`` ends it as stuck after the hook,
    whatever the later stages said: the same ending, without making every later stage's merge
    depend on it (that made the TPROXY set-ups' proofs time out). (The mangle stage's re-route
    after a mark change is taken after the hook, with the rest of the re-route.)"""
    q = after.pkt
    could = d.and_(d.not_(d.eq(q.dst, before.dst)), is_loopback(d, env, q.src))
    if d.is_false(could):
        return after
    r = route(d, env, q.dst, q.mark)
    stuck = d.and_(d.not_(after.ended), could, d.not_(r.local), d.not_(r.fail))
    if d.is_false(stuck):
        return after
    if d.is_true(stuck):
        d.note("route", lambda: f"re-routed to {hostport(q.dst, q.dport)} from the loopback source {q.src}: "
                                "the kernel drops it")
        return attrs.evolve(after, ended=d.const(True), end=d.kind(FAILED), rule=None,
                            why=_text(d, lambda: f"re-routed to {hostport(q.dst, q.dport)} from the loopback "
                                                 f"source {q.src}: dropped by the kernel"))
    return attrs.evolve(after, stuck=d.or_(after.stuck, stuck))


# ------------------------------------------------------------------------------------------------
# One packet's journey through the pod


@attrs.define
class Journey:
    """Where one packet got: ``ended`` on the way (``end``: DROPPED / REJECTED / UNDET / FAILED, with
    the concrete ``rule``/``why``), else delivered to the pod's own stack (``local``) or out of its
    interface; ``tproxied`` when a TPROXY verdict assigned it to ``tp_addr:tp_port``; ``pkt`` as it
    is at the end."""

    pkt: Pkt
    ended: Any
    end: Any
    local: Any
    tproxied: Any
    tp_addr: Any
    tp_port: Any
    rule: Any = attrs.field(default=None, metadata=_META)
    why: Any = attrs.field(default=None, metadata=_META)
    tp_rule: Any = attrs.field(default=None, metadata=_META)


class _Quiet:
    """A domain whose route notes are silent (rule hits are still recorded by the traversal)."""

    def __init__(self, d: Domain) -> None:
        self._d = d

    def __getattr__(self, name: str) -> Any:
        return getattr(self._d, name)

    def note(self, kind: str, text: Callable[[], str], rule: Any = None) -> None:
        if kind != "route":
            self._d.note(kind, text, rule)


def _arrived(p: Pkt) -> Pkt:
    """A packet at the end of its journey: its headers and marks (where it was is the journey's)."""
    return attrs.evolve(p, iif=None, oif_lo=None, entry=False, before_ct=False)


def _journey(d: Domain, run: Run, local: Any) -> Journey:
    return Journey(_arrived(run.pkt), run.ended, run.end, local, run.tproxied, run.tp_addr, run.tp_port,
                   rule=run.rule, why=run.why, tp_rule=run.tp_rule)


def _failed(d: Domain, run: Run, why: Callable[[], str]) -> Journey:
    return Journey(_arrived(run.pkt), d.const(True), d.kind(FAILED), d.const(False), run.tproxied, run.tp_addr,
                   run.tp_port, why=_text(d, why))


def _start(d: Domain, env: Env, pkt: Pkt) -> Run:
    return Run(pkt, d.const(False), d.kind(UNDET), d.const(False), d.addr(env.loopback), d.port(0))


def send_local(d: Domain, env: Env, tr: Traverse, pkt: Pkt, *, first: bool, bind: Bindings = None,
               on_nat: Callable[[Pkt, Decision, bool], None] | None = None) -> Journey:
    if not first:  # the trace says where a handshake packet went in one line (see _handshake)
        d = _Quiet(d)
    """A packet a socket of the pod sends: OUTPUT (its interface routed for the original destination
    and mark, fixed for the whole hook), re-route, POSTROUTING, and for a local route the re-entry
    through ``lo``: PREROUTING and INPUT without nat (the connection already has its binding)."""
    r1 = route(d, env, pkt.dst, pkt.mark)
    run = _start(d, env, attrs.evolve(pkt, iif=None, oif_lo=r1.local))
    # the route is looked up before OUTPUT runs: an IPv4 loopback source cannot be routed out of the
    # pod at all, whatever a mark set in OUTPUT would do later (seen on the kernel: a SYN-ACK from a
    # socket REDIRECTed to 127.0.0.1 towards a transparent client's address is never sent)
    # (a connection's first packet never gets here that way: connect() from a bound loopback address
    # to a remote one fails with EINVAL, and the source the kernel picks for a remote one is not
    # loopback; so only later packets are tested, which keeps the SYN's encoding small)
    unroutable = d.const(False) if first else \
        d.and_(d.const(env.family == "ipv4"), is_loopback(d, env, pkt.src), d.not_(r1.local))
    if not d.is_false(unroutable):
        def stuck() -> Journey:
            d.note("route", lambda: f"no route from the loopback source {pkt.src} to {hostport(pkt.dst, pkt.dport)} "
                                    "out of the pod: the kernel does not send it")
            return _failed(d, run, lambda: f"no route from the loopback source {pkt.src} to "
                                           f"{hostport(pkt.dst, pkt.dport)}: the kernel does not send it")

        if d.is_true(unroutable):
            return stuck()
        # undecided (the symbolic run): the routed journey, ended as FAILED where the source is stuck.
        # Its packet is not merged with the stuck one: an ended journey's packet is never looked at,
        # and merging every field doubled the terms of everything after it
        j = _send_local_routed(d, env, tr, run, r1, first, bind, on_nat)
        live = d.not_(unroutable)
        return attrs.evolve(j, ended=d.or_(unroutable, j.ended), end=d.ite(unroutable, d.kind(FAILED), j.end),
                            local=d.and_(live, j.local), tproxied=d.and_(live, j.tproxied))
    return _send_local_routed(d, env, tr, run, r1, first, bind, on_nat)


def _send_local_routed(d: Domain, env: Env, tr: Traverse, run: Run, r1: RouteResult, first: bool,
                       bind: Bindings, on_nat: Callable[[Pkt, Decision, bool], None] | None) -> Journey:
    run = run_hook(d, env, tr, "OUTPUT", run, nat=first, bind=bind, on_nat=on_nat)
    p = run.pkt
    r2 = route(d, env, p.dst, p.mark)
    # IPv4 refuses to route a loopback source out of the pod (the re-route after nat drops it)
    strand = d.and_(d.const(env.family == "ipv4"), is_loopback(d, env, p.src), d.not_(r2.local))

    def stranded() -> Journey:
        d.note("route", lambda: f"re-routed to {hostport(p.dst, p.dport)} from the loopback source {p.src}: "
                                "the kernel drops it")
        return _failed(d, run, lambda: f"re-routed to {hostport(p.dst, p.dport)} from the loopback source "
                                       f"{p.src}: dropped by the kernel")

    def onward() -> Journey:
        out = run_hook(d, env, tr, "POSTROUTING", attrs.evolve(run, pkt=attrs.evolve(p, oif_lo=r2.local)),
                       nat=first, bind=bind, on_nat=on_nat)
        q = out.pkt

        def back_in() -> Journey:
            d.note("route", lambda: "loops back through lo")
            again = attrs.evolve(out, pkt=attrs.evolve(q, iif="lo", oif_lo=None, entry=True))
            again = run_hook(d, env, tr, "PREROUTING", again, nat=False)
            return _deliver(d, env, tr, again, nat=False, bind=None)

        def leaves() -> Journey:
            return _journey(d, out, d.const(False))

        return d.branch(out.ended, lambda: _journey(d, out, d.const(False)),
                        lambda: d.branch(r2.local, back_in, leaves))

    # a run ``stuck`` at the re-route right after nat ends so, whatever the stages after nat said
    return d.branch(d.and_(run.ended, d.not_(run.stuck)), lambda: _journey(d, run, d.const(False)),
                    lambda: d.branch(d.or_(run.stuck, d.and_(d.not_(r2.fail), strand)), stranded, onward))


def send_remote(d: Domain, env: Env, tr: Traverse, pkt: Pkt, *, first: bool, bind: Bindings = None,
                on_nat: Callable[[Pkt, Decision, bool], None] | None = None) -> Journey:
    if not first:
        d = _Quiet(d)
    """A packet arriving on the pod interface from another host: PREROUTING, input routing, INPUT."""
    run = _start(d, env, attrs.evolve(pkt, iif=env.iface, oif_lo=None))
    run = run_hook(d, env, tr, "PREROUTING", run, nat=first, bind=bind, on_nat=on_nat)
    return d.branch(run.ended, lambda: _journey(d, run, d.const(False)),
                    lambda: _deliver(d, env, tr, run, nat=first, bind=bind))


def _deliver(d: Domain, env: Env, tr: Traverse, run: Run, *, nat: bool, bind: Bindings) -> Journey:
    """Input routing after PREROUTING, then INPUT for a local route."""
    p = run.pkt
    # a loopback destination arriving on another interface is a martian (IPv4: dropped; IPv6: the
    # sender gets "no route")
    martian = d.and_(d.const(p.iif != "lo"), is_loopback(d, env, p.dst))
    r = route(d, env, p.dst, p.mark)

    def dropped_martian() -> Journey:
        d.note("route", lambda: f"{hostport(p.dst, p.dport)} arriving on {p.iif} is a martian destination: "
                                "the kernel drops it")
        return _failed(d, run, lambda: f"a loopback destination ({p.dst}) arriving on {p.iif} is dropped as a "
                                       "martian")

    def forwarded() -> Journey:
        return _journey(d, run, d.const(False))  # not for the pod: the caller decides

    def local_in() -> Journey:
        r_in = run_hook(d, env, tr, "INPUT", attrs.evolve(run, pkt=attrs.evolve(p, oif_lo=None)), nat=nat,
                        bind=bind)
        return _journey(d, r_in, d.not_(r_in.ended))

    return d.branch(martian, dropped_martian, lambda: d.branch(r.local, local_in, forwarded))


# ------------------------------------------------------------------------------------------------
# One connection


@attrs.define
class Leg:
    """How one connection (leg) ends: ``cls`` (DELIV/REFUSED/.../OUT/IN), the app socket index for
    DELIV, the original destination the proxy reads back for OUT/IN, the source the accepting socket
    sees, and the destination after NAT (where an egress goes). ``rule``/``why`` are the concrete
    account of an ending (the deciding rule; why undetermined or failed). ``blind``: the proxy
    accepted the connection but cannot read its original destination (another conntrack zone), so
    it closes it instead of opening an upstream."""

    cls: Any
    sock: Any
    odst: Any
    odport: Any
    seen_src: Any
    dst: Any
    dport: Any
    blind: Any = False
    rule: Any = attrs.field(default=None, metadata=_META)
    why: Any = attrs.field(default=None, metadata=_META)


@attrs.define
class Hop:
    """One connection to open: to ``dst:dport`` from ``sport`` (None: the kernel's choice), by a
    process with ``uid``/``gid``; ``bound`` (a domain Boolean) says whether the process binds the
    source ``src`` first (else the kernel picks it), ``transparent`` whether that socket is
    ``IP_TRANSPARENT``, ``mark`` its ``SO_MARK``; ``closed``: the proxy closes the client's
    connection instead of opening this one (blackhole); ``inner``: the port it names as a tunnel's
    inner target (0: none)."""

    dst: Any
    dport: Any
    sport: Any
    uid: Any
    gid: Any
    protocol: str = "tcp"
    bound: Any = False
    src: Any = None
    closed: Any = None
    who: str = "proxy"
    why: str = ""
    transparent: Any = False
    mark: Any = 0
    inner: Any = 0


def _end(d: Domain, env: Env, cls: int, h: Hop, rule: Any = None, why: Any = None) -> Leg:
    return Leg(d.kind(cls), d.port(NO_SOCKET), h.dst, h.dport, h.dst, h.dst, h.dport, rule=rule, why=why)


def _text(d: Domain, f: Callable[[], str]) -> str | None:
    """A concrete account's text (the symbolic run keeps none)."""
    return None if d.symbolic else f()


def hostport(a: Any, port: Any) -> str:
    host = f"[{a}]" if getattr(a, "version", 4) == 6 else str(a)
    return f"{host}:{'*' if port is None else port}"


def source_for(d: Domain, env: Env, dst: Any) -> Any:
    """The source address the kernel picks for a connection opened in the pod to ``dst``."""
    if env.pod_ip is None:
        raise WorldError(f"the pod has no {env.family} address")
    pod = d.addr(env.pod_ip)
    if env.family == "ipv4":
        return d.ite(is_loopback(d, env, dst), d.addr(_LO4), pod)
    return d.ite(d.eq(dst, d.addr(_LO6)), d.addr(_LO6), d.ite(is_local(d, env, dst), dst, pod))


def connect_error(d: Domain, env: Env, dst: Any) -> list[tuple[Any, str]]:
    """``(holds, errno)`` for each way ``connect()`` refuses ``dst`` before any packet (a v4-mapped
    IPv6 destination is an IPv4 connection: callers map it before a leg starts)."""
    out: list[tuple[Any, str]] = []
    earlier: list[Any] = []  # the table is first match: 0.0.0.0 is loopback, not 0.0.0.0/8's ENETUNREACH
    for net, action in CONNECT_RULES[env.family]:
        inside = d.in_net(dst, net)
        if action.startswith("E"):
            out.append((d.and_(inside, *[d.not_(e) for e in earlier]), action))
        earlier.append(inside)
    return out


def connect_refused(d: Domain, env: Env, dst: Any) -> Any:
    """Whether ``connect()`` refuses ``dst`` outright (a domain Boolean)."""
    return d.or_(*[holds for holds, _ in connect_error(d, env, dst)])


def connect_dst(d: Domain, env: Env, dst: Any) -> Any:
    """The destination ``connect()`` really sends to (0.0.0.0 / ``::`` → loopback)."""
    for net, action in CONNECT_RULES[env.family]:
        if action == "loopback":
            dst = d.ite(d.in_net(dst, net), d.addr(env.loopback), dst)
    return dst


def sport_held(d: Domain, env: Env, dst: Any, sport: Any, protocol: str = "tcp") -> Any:
    """Whether a client in the pod that binds source port ``sport`` (0 / None: none, the kernel
    picks) for a connection to ``dst`` fails with EADDRINUSE: a listener of the pod holds the port
    on the source the kernel picks for ``dst``, or on a wildcard. Such a flow is no connection."""
    if sport is None or protocol != "tcp":
        return d.const(False)
    return port_held(d, env, source_for(d, env, connect_dst(d, env, dst)), sport, protocol)


def _rewritten(d: Domain) -> Callable[[Pkt, Decision, bool], None]:
    def note(p: Pkt, dec: Decision, source: bool) -> None:
        if source:
            d.note("rewrite", lambda: f"src {hostport(p.src, p.sport)} -> {hostport(dec.addr, dec.port)}", dec.rule)
            return
        d.note("rewrite", lambda: f"dst {hostport(p.dst, p.dport)} -> {hostport(dec.addr, dec.port)}", dec.rule)

    return note


def local_leg(d: Domain, env: Env, tr: Traverse, h: Hop, *, checked: bool = False, binds: bool = False) -> Leg:
    """A connection opened in the pod (see the module docstring). ``binds``: the client binds its
    source port ``h.sport`` itself (a flow's first connection), which fails with EADDRINUSE where a
    listener of the pod holds that port (``port_held``)."""
    if h.closed is not None and d.is_true(h.closed):
        return _end(d, env, REFUSED, h)
    if h.closed is not None and not d.is_false(h.closed):
        return merge_records(d, h.closed, _end(d, env, REFUSED, h), local_leg(d, env, tr, attrs.evolve(h, closed=None)))
    if binds:
        held = sport_held(d, env, h.dst, h.sport, h.protocol)
        if not d.is_false(held):
            def in_use() -> Leg:
                d.note("open", lambda: f"{h.who} (uid {h.uid}, gid {h.gid}) binds source port {h.sport}: a listening "
                                       "socket holds it, bind() fails (EADDRINUSE)")
                return _end(d, env, FAILED, h, why=_text(d, lambda: f"bind() to source port {h.sport} fails "
                                                                    "(EADDRINUSE): a listening socket holds it"))

            return d.branch(held, in_use, lambda: local_leg(d, env, tr, h))
    errors = connect_error(d, env, h.dst)
    refused = d.or_(*[holds for holds, _ in errors])
    if not checked and not d.is_false(refused):
        def fail() -> Leg:
            errno = next(e for holds, e in errors if d.is_true(holds)) if not d.symbolic else ""
            d.note("open", lambda: f"{h.who} (uid {h.uid}, gid {h.gid}) connects to {hostport(h.dst, h.dport)}/"
                                   f"{h.protocol}: connect() fails ({errno})")
            return _end(d, env, FAILED, h, why=_text(d, lambda: f"connect() to {h.dst} fails ({errno})"))

        return d.branch(refused, fail, lambda: local_leg(d, env, tr, h, checked=True))
    dst = connect_dst(d, env, h.dst)
    auto = source_for(d, env, dst)
    src = auto if h.src is None else d.ite(h.bound, h.src, auto)
    r0 = route(d, env, dst, d.u32(h.mark) if isinstance(h.mark, int) else h.mark)
    if not d.symbolic:
        why = f" ({h.why})" if h.why else ""
        marked = f", mark {h.mark:#x}" if h.who != "proxy" and isinstance(h.mark, int) and h.mark else ""
        d.note("open", lambda: f"{h.who} (uid {h.uid}, gid {h.gid}{marked}) connects {src} -> "
                               f"{hostport(dst, h.dport)}/{h.protocol} via {'lo' if r0.local else env.iface}{why}")
    # connect() from a loopback address (127.0.0.6) to a remote destination fails with EINVAL
    # (::6 is an ordinary address on lo and connects anywhere)
    einval = d.and_(h.bound, is_loopback(d, env, src), d.not_(r0.local))

    def fails() -> Leg:
        d.note("route", lambda: f"cannot connect from {src} (an address of lo) to the remote "
                                f"{hostport(dst, h.dport)}: connect() fails (EINVAL)")
        return _end(d, env, FAILED, h, why="connect() fails (EINVAL): the source is a loopback address")

    def unroutable() -> Leg:
        d.note("route", lambda: f"no route to {hostport(dst, h.dport)}: connect() fails (ENETUNREACH)")
        return _end(d, env, FAILED, h, why=_text(d, lambda: f"no route to {dst}: connect() fails (ENETUNREACH)"))

    def sent() -> Leg:
        mark = d.u32(h.mark) if isinstance(h.mark, int) else h.mark
        syn = Pkt(h.protocol, src, dst, h.sport, h.dport, None, None, h.uid, h.gid, mark, d.u32(0), d.const(False),
                  zone=d.port(0))
        j = send_local(d, env, tr, syn, first=True, on_nat=_rewritten(d))
        client = _Client(True, src, h.sport, h.uid, h.gid, mark, h.transparent, h.inner)
        return _after_syn(d, env, tr, j, client, (dst, h.dport))  # what connect() sent to (:: is ::1)

    return d.branch(einval, fails, lambda: d.branch(r0.fail, unroutable, sent))


def remote_leg(d: Domain, env: Env, tr: Traverse, h: Hop, peer: Any) -> Leg:
    """A connection from the peer, arriving on the pod interface."""
    d.note("open", lambda: f"peer {peer} connects to {hostport(h.dst, h.dport)}/{h.protocol}, "
                           f"arriving on {env.iface}")
    zero = d.u32(0)
    syn = Pkt(h.protocol, peer, h.dst, h.sport, h.dport, env.iface, None, None, None, zero, zero, d.const(False),
              zone=d.port(0))
    j = send_remote(d, env, tr, syn, first=True, on_nat=_rewritten(d))
    client = _Client(False, peer, h.sport, None, None, zero, d.const(False), h.inner)
    return _after_syn(d, env, tr, j, client, (h.dst, h.dport))


@attrs.frozen
class _Client:
    """The client end of a connection: in the pod (``local``) or the peer; its address, port, ids,
    socket mark, whether its socket is transparent, and the tunnel target it names (0: none)."""

    local: bool
    src: Any
    sport: Any
    uid: Any
    gid: Any
    mark: Any
    transparent: Any
    inner: Any = 0


def _ended_leg(d: Domain, j: Journey) -> Leg:
    p = j.pkt
    return Leg(j.end, d.port(NO_SOCKET), p.dst, p.dport, p.src, p.dst, p.dport, rule=j.rule, why=j.why)


def _after_syn(d: Domain, env: Env, tr: Traverse, j: Journey, c: _Client, orig: tuple[Any, Any]) -> Leg:
    """The SYN arrived (or not): which socket takes it, or where it went, and then the handshake."""
    p = j.pkt

    def arrived() -> Leg:
        return _accept(d, env, tr, j, c, orig)

    def left() -> Leg:
        if not c.local:  # a connection from outside that is not for the pod would be forwarded
            return Leg(d.kind(UNDET), d.port(NO_SOCKET), p.dst, p.dport, p.src, p.dst, p.dport,
                       why=_text(d, lambda: f"{hostport(p.dst, p.dport)} is not an address of the pod: forwarding "
                                            "is not modelled"))
        # only the pod's interface address can be answered by a remote host, and no host answers
        # a destination in UNANSWERED
        from_pod = d.eq(p.src, d.addr(env.pod_ip)) if env.pod_ip is not None else d.const(False)
        # a source the pod's own SNAT gave is taken as answered: the network routes it back to the
        # pod (the node's probe address: the pod's default route leads to the node)
        from_pod = d.or_(from_pod, p.snatted)
        nobody = d.or_(*[d.in_net(p.dst, n) for n in UNANSWERED[env.family]])
        answered = d.and_(from_pod, d.not_(nobody))

        def out() -> Leg:
            d.note("route", lambda: f"leaves through {env.iface} to {hostport(p.dst, p.dport)}")
            server = _Server(d.const(False), p.dst, p.dport, d.const(False))
            return _handshake(d, env, tr, j, c, orig, server,
                              Leg(d.kind(EGRESS), d.port(NO_SOCKET), p.dst, p.dport, p.src, p.dst, p.dport))

        def unanswerable() -> Leg:
            if d.is_true(nobody):
                d.note("route", lambda: f"leaves through {env.iface} to {hostport(p.dst, p.dport)}, an address "
                                        "no host answers for: no answer comes back")
                why = _text(d, lambda: f"no host answers for {p.dst}: the SYN leaves the pod and is dropped on "
                                       "the way")
            else:
                d.note("route", lambda: f"leaves through {env.iface} to {hostport(p.dst, p.dport)} from {p.src}, "
                                        "an address only the pod's lo has: no answer can come back")
                why = _text(d, lambda: f"the source {p.src} exists only on lo: the remote host's answer "
                                       "cannot come back")
            return Leg(d.kind(FAILED), d.port(NO_SOCKET), p.dst, p.dport, p.src, p.dst, p.dport, why=why)

        return d.branch(answered, out, unanswerable)

    return d.branch(j.ended, lambda: _ended_leg(d, j), lambda: d.branch(j.local, arrived, left))


@attrs.frozen
class _Server:
    """The server end of a connection: a socket in the pod (``local``) at ``addr:port``, or a remote
    host; whether its socket is transparent, and its ``SO_MARK`` (a SYN-ACK carries the listener's)."""

    local: Any
    addr: Any
    port: Any
    transparent: Any
    mark: Any = 0


def _accept(d: Domain, env: Env, tr: Traverse, j: Journey, c: _Client, orig: tuple[Any, Any]) -> Leg:
    """Local delivery of a SYN: the socket TPROXY assigned, or the socket lookup; then the handshake."""
    p = j.pkt
    transparent = d.const(env.world.proxy.transparent)
    listener_mark = d.u32(env.world.proxy.socket_mark or 0)

    def with_tproxy() -> Leg:
        d.note("rewrite", lambda: f"TPROXY to {hostport(j.tp_addr, j.tp_port)}, destination kept "
                                  f"{hostport(p.dst, p.dport)}, mark {p.mark:#x}", j.tp_rule)
        # xt_TPROXY needs a transparent listener on its port (else the SYN is dropped): one of the
        # proxy's capture listeners, or one where it ends the connection itself (the TPROXY era's
        # HBONE listener); only the proxy's wildcard sockets can be transparent, and no app socket
        # shares their ports, so the port alone decides (kernel-facts.md, fact 13c)
        side: Any = d.kind(DROPPED)
        owns = [(i, sock) for i, (who, sock) in enumerate(env.sockets) if who == "proxy"]
        own_idx: Any = d.port(NO_SOCKET) if owns else None
        for i, sock in reversed(owns):
            here = d.and_(transparent, d.eq(j.tp_port, sock.port))
            side = d.ite(here, d.kind(DELIV), side)
            own_idx = d.ite(here, d.port(i), own_idx)
        for port, s in reversed(env.listeners()):
            side = d.ite(d.and_(transparent, d.eq(j.tp_port, port)), d.kind(s), side)
        side = _side_for(d, env, side, p.dst, p.dport)

        def server() -> _Server:
            return _Server(d.const(True), p.dst, p.dport, transparent, listener_mark)

        def no_listener() -> Leg:
            d.note("socket", lambda: f"no transparent listener on {hostport(j.tp_addr, j.tp_port)}: dropped")
            return Leg(d.kind(DROPPED), d.port(NO_SOCKET), p.dst, p.dport, p.src, p.dst, p.dport, rule=j.tp_rule)

        def to_own() -> Leg:
            d.note("socket", lambda: f"proxy socket {env.sockets[own_idx][1]} (transparent) accepts, "
                                     f"source {p.src}")
            return _handshake(d, env, tr, j, c, orig, server(), _tunnelled(
                d, env, c, orig, own_idx, Leg(d.kind(DELIV), own_idx, p.dst, p.dport, p.src, p.dst, p.dport)))

        def to_proxy() -> Leg:
            leg = _proxy_leg(d, env, side, j.tp_port, p, (p.dst, p.dport))
            return _handshake(d, env, tr, j, c, orig, server(), leg)

        if not owns:  # (the formula of a proxy without listeners of its own stays as it was)
            return d.branch(d.eq(side, DROPPED), no_listener, to_proxy)
        return d.branch(d.eq(side, DROPPED), no_listener,
                        lambda: d.branch(d.eq(side, DELIV), to_own, to_proxy))

    def lookup_socket() -> Leg:
        cls, idx, owner, _sk = lookup(d, env, p.dst, p.dport, p.protocol)
        # the original destination as the proxy reads it: SO_ORIGINAL_DST looks only in conntrack zone
        # 0; without it the proxy has only its own local address (which its dispatch then goes by)
        readable = d.eq(p.zone, 0)
        known = (d.ite(readable, orig[0], p.dst), d.ite(readable, orig[1], p.dport))
        side = _side_for(d, env, cls, known[0], known[1])
        proxied = d.or_(d.eq(side, OUT), d.eq(side, IN))
        # the proxy's sockets (its capture listeners and its own) carry its mark, an app's its own
        owned = d.or_(proxied, *[d.eq(idx, i) for i, (who, _s) in enumerate(env.sockets) if who == "proxy"])
        app_mark: Any = d.u32(0)
        for i, (who, _s) in enumerate(env.sockets):
            m = env.world.app(who).mark if who != "proxy" else None
            if m is not None:
                app_mark = d.ite(d.eq(idx, i), d.u32(m), app_mark)
        server = _Server(d.const(True), p.dst, p.dport, d.and_(proxied, transparent),
                         d.ite(owned, listener_mark, app_mark))

        def accepted(leg: Leg) -> Leg:
            return _handshake(d, env, tr, j, c, orig, server, leg)

        def by_proxy() -> Leg:
            leg = _proxy_leg(d, env, side, p.dport, p, known)

            def blind() -> Leg:  # the proxy accepted it (an observation) and closes it: proxy_upstream
                d.note("proxy", lambda: f"the proxy cannot read the original destination: SO_ORIGINAL_DST looks "
                                        f"only in conntrack zone 0, this connection is in zone {p.zone}")
                return attrs.evolve(leg, blind=d.const(True))

            return accepted(d.branch(readable, lambda: leg, blind))

        def by_socket() -> Leg:
            def delivered() -> Leg:
                d.note("socket", lambda: f"{owner[0]} socket {owner[1]} accepts, source {p.src}")
                return accepted(_tunnelled(d, env, c, orig, idx,
                                           Leg(d.kind(DELIV), idx, p.dst, p.dport, p.src, p.dst, p.dport)))

            def refused() -> Leg:
                return _refused(d, env, tr, j, c, orig, server,
                                Leg(d.kind(REFUSED), d.port(NO_SOCKET), p.dst, p.dport, p.src, p.dst, p.dport))

            return d.branch(d.eq(cls, DELIV), delivered, refused)

        return d.branch(proxied, by_proxy, by_socket)

    return d.branch(j.tproxied, with_tproxy, lookup_socket)


def _tunnelled(d: Domain, env: Env, c: _Client, orig: tuple[Any, Any], idx: Any, plain: Leg) -> Leg:
    """A connection the proxy's tunnel listener (``tunnel_port``, one of ``own_listeners``) accepted
    whose client names an inner target (``c.inner``): the proxy's inbound side takes it, with the
    address the client connected to at that port as its original destination and the tunnel's
    source as the client's (HBONE: ztunnel connects to the target itself). Else ``plain``: the
    proxy ends the connection, or an app's socket took it."""
    p = env.world.proxy
    tunnel = next((i for i, (who, s) in enumerate(env.sockets) if who == "proxy" and s.port == p.tunnel_port), None)
    if tunnel is None:
        return plain
    named = d.and_(d.eq(idx, d.port(tunnel)), d.not_(d.eq(c.inner, d.port(0))))
    if d.is_false(named):
        return plain

    def inner() -> Leg:
        d.note("proxy", lambda: f"tunnel listener: the client names {hostport(orig[0], c.inner)} as the inner target: "
                                "the proxy's inbound side")
        return Leg(d.kind(IN), d.port(NO_SOCKET), orig[0], c.inner, plain.seen_src, plain.dst, plain.dport)

    return d.branch(named, inner, lambda: plain)


def _proxy_leg(d: Domain, env: Env, side: Any, port: Any, q: Pkt, orig: tuple[Any, Any]) -> Leg:
    d.note("socket", lambda: f"proxy listener {Socket('0.0.0.0' if env.family == 'ipv4' else '::', port)} "
                             f"accepts, original destination {hostport(*orig)}")
    return Leg(side, d.port(NO_SOCKET), orig[0], orig[1], q.src, q.dst, q.dport)


@attrs.frozen
class _Reply:
    """A reply of the server to the client's SYN as it went: where it ended (``back``), whether it
    reached the client (``ok``), and whether the connection was NATed (its packets must be found by
    conntrack)."""

    back: Journey
    ok: Any
    tracked: Any


def _reply(d: Domain, env: Env, tr: Traverse, syn: Journey, c: _Client, orig: tuple[Any, Any], s: _Server,
           what: str, flags: frozenset[str], mark: Any) -> _Reply:
    """The server's answer to the SYN (the SYN-ACK, or the RST that refuses it), sent from the
    server's address back to the client: a reply of the SYN's conntrack entry, so nat skips it,
    conntrack undoes the connection's NAT, and it is routed (and rerouted by its mark) like any
    packet the pod sends. It has no owner: a SYN-ACK leaves before ``accept()``, a RST from the
    kernel (kernel-facts.md, facts 9 and 17)."""
    p = syn.pkt
    natted, snatted = p.natted, p.snatted
    # SNAT: the server answers the source it saw, which conntrack turns back into the client's at
    # the destination-NAT stage (and the client's later packets get that source at the SNAT stage)
    source_natted = not d.is_false(snatted)
    tracked = d.or_(natted, snatted)
    reply_to = (d.ite(snatted, p.src, c.src), d.ite(snatted, p.sport, c.sport)) if source_natted else (c.src, c.sport)
    mark = d.u32(mark) if isinstance(mark, int) else mark
    pkt = Pkt(p.protocol, s.addr, reply_to[0], s.port, reply_to[1], None, None, None, None, mark, p.ctmark,
              natted, state="ESTABLISHED", flags=flags,
              sk=SockView(d.const(True), d.const(False), c.transparent), zone=d.port(0), conn_zone=p.zone,
              snatted=snatted)
    un_nat: Bindings = Binding("src", natted, orig[0], orig[1])
    if source_natted:
        un_nat = (Binding("src", natted, orig[0], orig[1]), Binding("dst", snatted, c.src, c.sport))

    def from_pod() -> Journey:
        return send_local(d, env, tr, pkt, first=False, bind=un_nat)

    def from_outside() -> Journey:
        return send_remote(d, env, tr, pkt, first=False, bind=un_nat)

    d.note("packet", lambda: what)
    back = d.branch(s.local, from_pod, from_outside)
    d.note("reply", lambda: f"{what} {hostport(s.addr, s.port)} -> {hostport(c.src, c.sport)}{_where(back)}")
    # the reply must reach the client: in the pod, or out of its interface to the peer; and a NATed
    # connection's reply must be found by conntrack (same zone), else it keeps the address the
    # client never connected to
    ok = d.and_(d.not_(back.ended), back.local if c.local else d.not_(back.local),
                d.or_(d.not_(tracked), found_in_zone(d, back.pkt)))
    return _Reply(back, ok, tracked)


def _refused(d: Domain, env: Env, tr: Traverse, syn: Journey, c: _Client, orig: tuple[Any, Any], s: _Server,
             leg: Leg) -> Leg:
    """Nothing listens where the SYN arrived: the kernel answers with a RST (mark 0: no socket of the
    pod sends it) along the path a SYN-ACK takes. The client is refused (``leg``) when it arrives;
    else the client hears nothing and retries until it gives up (the RST stopped, or routed away)."""
    p = syn.pkt
    if env.replies_free:  # nothing can stop or divert it
        d.note("socket", lambda: f"nothing listens on {hostport(p.dst, p.dport)}/{p.protocol}: refused")
        return leg
    d.note("socket", lambda: f"nothing listens on {hostport(p.dst, p.dport)}/{p.protocol}: the kernel answers "
                             "with a RST")
    r = _reply(d, env, tr, syn, c, orig, s, "RST", frozenset({"RST", "ACK"}), 0)

    def lost() -> Leg:
        return _lost(d, r.back, "RST", leg, r.tracked)

    ended = d.branch(r.ok, lambda: leg, lost)
    d.note("packet", lambda: "SYN")
    return ended


def _handshake(d: Domain, env: Env, tr: Traverse, syn: Journey, c: _Client, orig: tuple[Any, Any], s: _Server,
               leg: Leg) -> Leg:
    """The rest of the TCP handshake: the server's SYN-ACK back to the client, then the client's ACK.
    The connection completes (``leg`` stands) only when both arrive where they must; else the
    first packet that does not decides how it ends (the client hangs, or is refused).

    When nothing can act on a connection's later packets — no rule and no DROP policy in any table
    but nat (which later packets skip), no policy routing, no socket marks, no transparent client
    sockets — every handshake completes, so it is not followed (``Env.replies_free``)."""
    if env.replies_free:
        return leg
    p = syn.pkt
    natted, snatted = p.natted, p.snatted
    source_natted = not d.is_false(snatted)
    # SYN-ACK: from the accepting socket (a request socket: no owner yet, the listener's mark)
    r = _reply(d, env, tr, syn, c, orig, s, "SYN-ACK", frozenset({"SYN", "ACK"}), s.mark)
    back, tracked = r.back, r.tracked

    def ack_leg() -> Leg:
        ack = Pkt(p.protocol, c.src, orig[0], c.sport, orig[1], None, None, c.uid, c.gid, c.mark,
                  back.pkt.ctmark, natted, state="ESTABLISHED", flags=frozenset({"ACK"}),
                  sk=SockView(d.const(True), d.const(False), s.transparent), zone=d.port(0), conn_zone=p.zone,
                  snatted=snatted)
        to_server: Bindings = Binding("dst", natted, s.addr, s.port)
        if source_natted:
            to_server = (Binding("dst", natted, s.addr, s.port), Binding("src", snatted, p.src, p.sport))
        d.note("packet", lambda: "ACK")
        fwd = send_local(d, env, tr, ack, first=False, bind=to_server) if c.local else \
            send_remote(d, env, tr, ack, first=False, bind=to_server)
        d.note("reply", lambda: f"ACK {hostport(c.src, c.sport)} -> {hostport(orig[0], orig[1])}{_where(fwd)}")
        fwd_ok = d.and_(d.not_(fwd.ended), d.ite(s.local, fwd.local, d.not_(fwd.local)),
                        d.or_(d.not_(tracked), found_in_zone(d, fwd.pkt)))
        ended = d.branch(fwd_ok, lambda: leg, lambda: _lost(d, fwd, "ACK", leg, tracked))
        d.note("packet", lambda: "SYN")
        return ended

    def lost() -> Leg:
        ended = _lost(d, back, "SYN-ACK", leg, tracked)
        d.note("packet", lambda: "SYN")
        return ended

    return d.branch(r.ok, ack_leg, lost)


def _where(j: Journey) -> str:
    """Where a concrete handshake packet went, for the trace."""
    if j.ended:
        return ": stopped"
    return ": delivered in the pod" if j.local else ": leaves the pod"


def _lost(d: Domain, j: Journey, what: str, leg: Leg, natted: Any) -> Leg:
    """A handshake packet that did not arrive: stopped by a rule or the kernel, not found by conntrack
    (another zone: its NAT is not undone), or routed away."""
    p = j.pkt

    def stopped() -> Leg:
        return Leg(j.end, d.port(NO_SOCKET), leg.odst, leg.odport, leg.seen_src, leg.dst, leg.dport,
                   rule=j.rule, why=j.why)

    def unknown_zone() -> Leg:
        d.note("route", lambda: f"the {what} is looked up in conntrack zone {p.zone}, its connection is in zone "
                                f"{p.conn_zone}: its NAT is not undone and the handshake never completes")
        return Leg(d.kind(FAILED), d.port(NO_SOCKET), leg.odst, leg.odport, leg.seen_src, leg.dst, leg.dport,
                   why=_text(d, lambda: f"the {what} is in conntrack zone {p.zone} and its connection in zone "
                                        f"{p.conn_zone}: the NAT is not undone, the handshake never completes"))

    def astray() -> Leg:
        d.note("route", lambda: f"the {what} to {hostport(p.dst, p.dport)} goes the wrong way: the handshake "
                                "never completes")
        return Leg(d.kind(FAILED), d.port(NO_SOCKET), leg.odst, leg.odport, leg.seen_src, leg.dst, leg.dport,
                   why=_text(d, lambda: f"the {what} to {hostport(p.dst, p.dport)} is routed "
                                        f"{'into the pod' if j.local else 'out of the pod'}, away from its "
                                        "connection: the handshake never completes"))

    return d.branch(j.ended, stopped,
                    lambda: d.branch(d.and_(natted, d.not_(found_in_zone(d, p))), unknown_zone, astray))


def _side_for(d: Domain, env: Env, cls: Any, odst: Any, odport: Any) -> Any:
    """Outbound listener → OUT, unless the 1.0–1.2 virtual dispatch hands it to the inbound side."""
    p = env.world.proxy
    if not p.virtual_inbound_dispatch:
        return cls
    own = d.or_(*[d.eq(odst, d.addr(a)) for a in env.world.pod_ips if family_of(a) == env.family])
    ports = d.const(True) if p.inbound_ports is None else d.or_(*[d.eq(odport, d.port(x)) for x in p.inbound_ports])
    return d.ite(d.and_(d.eq(cls, OUT), own, ports), d.kind(IN), cls)


# ------------------------------------------------------------------------------------------------
# The proxy's upstream connection


@attrs.frozen
class Knobs:
    """Proxy settings the synthesizer chooses (domain Booleans), or None to take the world's."""

    inbound_localhost: Any = None
    inbound_source: Any = None


def proxy_upstream(d: Domain, env: Env, leg: Leg, sport: Any, endpoint: Any, knobs: Knobs,
                   protocol: str = "tcp") -> Hop:
    """The connection the proxy opens for a connection it accepted (``leg.cls`` is its side)."""
    world, p = env.world, env.world.proxy
    fam = env.family
    odst, odport = leg.odst, leg.odport
    is_in = d.eq(leg.cls, IN)
    # outbound side: a service VIP:port goes to the chosen endpoint, anything else passes through
    out_dst, out_port = odst, odport
    any_svc: list[Any] = []
    chosen: tuple[str, int, Any] | None = None
    for svc in world.services:
        if family_of(svc.vip) != fam or not svc.endpoints:
            continue
        is_svc = d.and_(d.eq(odst, d.addr(svc.vip)), d.eq(odport, d.port(svc.port)))
        any_svc.append(is_svc)
        d_in_range = d.in_range(endpoint, 0, len(svc.endpoints) - 1, "endpoint")
        if not d.symbolic and is_svc is True and d_in_range is not True:
            raise WorldError(f"the flow picks endpoint #{endpoint}, but service {svc.name!r} has "
                             f"{len(svc.endpoints)}")
        d.require(d.or_(d.not_(is_svc), d_in_range))
        e_dst: Any = odst
        e_port: Any = odport
        for j in range(len(svc.endpoints) - 1, -1, -1):
            ep = svc.endpoints[j]
            if family_of(ep.address) != fam:
                continue
            e_dst = d.ite(d.eq(endpoint, d.port(j)), d.addr(ep.address), e_dst)
            e_port = d.ite(d.eq(endpoint, d.port(j)), d.port(ep.port), e_port)
        out_dst = d.ite(is_svc, e_dst, out_dst)
        out_port = d.ite(is_svc, e_port, out_port)
        if not d.symbolic and is_svc is True:
            chosen = (svc.name, endpoint, svc.endpoints[endpoint])
    service = d.or_(*any_svc)
    blackhole = d.and_(d.not_(is_in), d.not_(service), d.const(p.outbound == "blackhole"))
    closed = d.or_(leg.blind, blackhole)
    # inbound side: localhost at the original port, or the original destination
    loop = d.addr(env.loopback)
    if knobs.inbound_localhost is not None:
        in_dst = d.ite(knobs.inbound_localhost, loop, odst)
    else:
        in_dst = loop if p.inbound_endpoint == "localhost" else odst
    dst = d.ite(is_in, in_dst, out_dst)
    dport = d.ite(is_in, odport, out_port)
    given = p.inbound_source(fam)
    src: Any = None
    bound: Any = d.const(False)
    if p.inbound_original_source:  # a transparent socket bound to the client's own address
        src = leg.seen_src
        bound = is_in
    elif knobs.inbound_source is not None:
        src = d.addr(to_address("127.0.0.6" if fam == "ipv4" else "::6"))
        bound = d.and_(is_in, knobs.inbound_source)
    elif given is not None:
        src = d.addr(given)
        bound = is_in
    why = ""
    if not d.symbolic:
        if leg.blind:
            d.note("proxy", lambda: "the proxy has no original destination to forward to: it closes the connection")
        elif is_in:
            via = f" from {src}" if bound else ""
            d.note("proxy", lambda: f"proxy inbound side: forwards to {hostport(dst, dport)}{via} "
                                    f"({p.inbound_endpoint})")
            why = f"inbound, {p.inbound_endpoint}"
        elif chosen is not None:
            name, idx, ep = chosen
            d.note("proxy", lambda: f"proxy outbound side: service {name} -> endpoint #{idx} {ep}")
            why = f"outbound, service {name}"
        elif closed:
            d.note("proxy", lambda: f"proxy outbound side: no service at {hostport(odst, odport)}, blackhole: closed")
        else:
            d.note("proxy", lambda: f"proxy outbound side: passthrough to {hostport(odst, odport)}")
            why = "outbound, passthrough"
    transparent = d.and_(is_in, d.const(p.inbound_original_source))
    # Istio attaches original_src (the client's address, with its mark) to inbound listeners only;
    # a proxy that marks all its sockets (ztunnel) marks every upstream
    everywhere = p.socket_mark or 0
    mark = d.ite(is_in, d.u32(p.upstream_mark if p.upstream_mark is not None else everywhere), d.u32(everywhere))
    return Hop(dst, dport, sport, d.u32(p.uid), d.u32(p.gid), protocol, bound, src, closed, "proxy", why,
               transparent, mark)


# ------------------------------------------------------------------------------------------------
# A flow: the first connection and the proxy's hops


@attrs.frozen
class First:
    """The flow's first connection: ``peer`` (a domain Boolean: from the remote peer, else opened in
    the pod by a process with ``uid``/``gid``), destination, ports and the endpoint choice;
    ``peer_src``: the address a peer's connection comes from (None: the world's peer address);
    ``mark``: the ``SO_MARK`` of the process's socket (0: none); ``inner``: the port it names as
    a tunnel's inner target (0: none)."""

    peer: Any
    dst: Any
    dport: Any
    sport: Any
    uid: Any
    gid: Any
    endpoint: Any
    protocol: str = "tcp"
    who: str = ""
    peer_src: Any = None
    mark: Any = 0
    inner: Any = 0


def first_mark(world: World, client: str) -> int:
    """The ``SO_MARK`` a flow's first connection starts with (0: none): an app's ``mark``; the
    proxy's ``socket_mark`` (a proxy that marks every socket, as ztunnel does, marks the
    connections it opens on its own too); the peer's packets carry none."""
    if client == "peer":
        return 0
    if client == "proxy":
        return world.proxy.socket_mark or 0
    return world.app(client).mark or 0


@attrs.define
class LegRecord:
    """One leg of a run: whether it happens (``active``), how it ends, whether its proxy side had
    already seen the same original destination (``repeat``), and whether it ends the flow as a
    loop (``loop``)."""

    active: Any
    leg: Leg
    repeat: Any
    loop: Any


def _seen_again(leg: Leg) -> Callable[[], str]:
    side = "inbound" if leg.cls == IN else "outbound"
    return lambda: f"proxy {side} side sees {hostport(leg.odst, leg.odport)} again"


def run_flow(d: Domain, env: Env, tr: Traverse, first: First, *, hops: int, knobs: Knobs | None = None,
             sports: Callable[[int], Any] | None = None, on_leg: Callable[[int], None] | None = None,
             paths: str = "any") -> list[LegRecord]:
    """Follow a flow for up to ``hops`` connections; ``paths`` limits the first connection to the
    ``peer`` or ``local`` path (the other is not built)."""
    knobs = knobs or Knobs()
    peer_ip = env.world.peer_ip(env.family)
    records: list[LegRecord] = []
    active: Any = d.const(True)
    hop = Hop(first.dst, first.dport, first.sport, first.uid, first.gid, first.protocol, who=first.who,
              mark=first.mark, inner=first.inner)
    for n in range(hops):
        if on_leg is not None:
            on_leg(n + 1)
        if n == 0:
            def remote(h: Hop = hop) -> Leg:
                if first.peer_src is not None:
                    return remote_leg(d, env, tr, h, first.peer_src)
                if peer_ip is None:
                    raise WorldError(f"the world has no {env.family} peer IP")
                return remote_leg(d, env, tr, h, d.addr(peer_ip))

            def local(h: Hop = hop) -> Leg:
                return local_leg(d, env, tr, h, binds=True)

            if paths == "peer" or (paths == "any" and d.is_true(first.peer)):
                leg = remote()
            elif paths == "local" or peer_ip is None or d.is_false(first.peer):
                leg = local()
            else:
                leg = d.branch(first.peer, remote, local)
        else:
            leg = local_leg(d, env, tr, hop)
        is_proxy = d.or_(d.eq(leg.cls, OUT), d.eq(leg.cls, IN))
        reps = [d.and_(d.eq(r.leg.cls, leg.cls), d.eq(r.leg.odst, leg.odst), d.eq(r.leg.odport, leg.odport))
                for r in records]
        rep = d.and_(is_proxy, d.or_(*reps)) if reps else d.const(False)
        last = n == hops - 1
        loop = d.and_(active, is_proxy, d.const(True) if last else rep)
        records.append(LegRecord(active, leg, rep, loop))
        nxt = d.and_(active, is_proxy, d.not_(rep))
        if d.is_true(rep):
            d.note("proxy", _seen_again(leg))
        if d.is_false(nxt):
            break
        if last and d.symbolic:
            break
        sport = sports(n + 1) if sports is not None else None
        upstream = proxy_upstream(d, env, leg, sport, first.endpoint, knobs, first.protocol)
        if last:  # the concrete trace still says what the proxy would have done
            break
        hop = upstream
        active = nxt
    return records
