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
    ``connect()`` first: a destination of 0.0.0.0 / ``::`` means loopback; multicast and broadcast
    destinations fail with ENETUNREACH, an IPv6 link-local one without a scope with EINVAL (the
    table ``CONNECT_RULES``). The source is the bound one (the proxy's passthrough source) or the
    kernel's choice: 127.0.0.1 for a 127/8 destination, ::1 for ::1, the destination itself for
    another local IPv6 address, otherwise the pod IP. A source bound to a loopback address cannot
    reach a remote destination (EINVAL). OUTPUT runs with the output interface routed for the
    original destination (fixed for the whole hook, even after nat rewrote the destination); a
    rewritten destination is routed again (a loopback source that now leads out of the pod is
    dropped there); POSTROUTING sees the new route. A local destination re-enters through ``lo``:
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
    closed (``blackhole``). Inbound: to 127.0.0.1/::1 at the original port (``localhost``) or to the
    original destination, from ``inbound_source_*`` when set. The proxy's connections carry its
    uid/gid. The same (side, original destination) seen twice in one flow is a loop; so is a flow
    longer than the hop bound.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any, TypeAlias

import attrs

from meshsolve.errors import WorldError
from meshsolve.model.net import Family, IPNetwork, family_of, to_address
from meshsolve.model.path import Hook, Stage, stages
from meshsolve.model.world import Socket
from meshsolve.semantics.domain import Domain, merge_records
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
    Env,
    Pkt,
    effect,
    is_local,
    is_loopback,
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
    "is_local",
    "lookup",
    "match",
    "merge_decision",
    "run_flow",
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


# ------------------------------------------------------------------------------------------------
# Hooks: the stages of a path, in order


Traverse: TypeAlias = Callable[[Stage, Pkt], Decision]


@attrs.define
class Run:
    """A packet on its way through a hook's stages: ``ended`` (a stage dropped, rejected or left it
    undetermined: ``end`` says how), ``tproxied`` (a TPROXY verdict assigned it to ``tp_addr:tp_port``)."""

    pkt: Pkt
    ended: Any
    end: Any  # DROPPED / REJECTED / UNDET
    tproxied: Any
    tp_addr: Any
    tp_port: Any
    rule: Any = attrs.field(default=None, metadata=_META)
    why: Any = attrs.field(default=None, metadata=_META)
    tp_rule: Any = attrs.field(default=None, metadata=_META)


def run_hook(d: Domain, env: Env, tr: Traverse, hook: Hook, run: Run, *, nat: bool,
             on_nat: Callable[[Pkt, Decision], None] | None = None) -> Run:
    """Run every stage of ``hook`` (nat only when ``nat``), stopping at the first that ends the packet."""
    for stage in stages(hook, nat=nat):
        if d.is_true(run.ended):
            break
        run = _stage(d, env, tr, stage, run, on_nat)
    return run


def _stage(d: Domain, env: Env, tr: Traverse, stage: Stage, run: Run,
           on_nat: Callable[[Pkt, Decision], None] | None) -> Run:
    p = run.pkt
    view = attrs.evolve(p, before_ct=stage.before_conntrack)
    dec = tr(stage, view)
    k = dec.kind
    nat_here = d.eq(k, NAT) if stage.nat else d.const(False)
    if on_nat is not None and d.is_true(nat_here):
        on_nat(p, dec)
    tp_here = d.eq(k, TPROXY)
    new_pkt = attrs.evolve(p, dst=d.ite(nat_here, dec.addr, p.dst), dport=d.ite(nat_here, dec.port, p.dport),
                           natted=d.or_(p.natted, nat_here), mark=dec.mark, ctmark=dec.ctmark)
    ends = d.or_(d.eq(k, DROP), d.eq(k, REJECT), d.eq(k, UNK))
    end = d.ite(d.eq(k, DROP), d.kind(DROPPED), d.ite(d.eq(k, REJECT), d.kind(REJECTED), d.kind(UNDET)))
    after = Run(new_pkt, ends, end, d.or_(run.tproxied, tp_here), d.ite(tp_here, dec.addr, run.tp_addr),
                d.ite(tp_here, dec.port, run.tp_port), rule=dec.rule, why=dec.reason,
                tp_rule=dec.rule if d.is_true(tp_here) else run.tp_rule)
    if not d.symbolic:
        return after
    return merge_records(d, run.ended, run, after)


# ------------------------------------------------------------------------------------------------
# One connection


@attrs.define
class Leg:
    """How one connection (leg) ends: ``cls`` (DELIV/REFUSED/.../OUT/IN), the app socket index for
    DELIV, the original destination the proxy reads back for OUT/IN, the source the accepting socket
    sees, and the destination after NAT (where an egress goes). ``rule``/``why`` are the concrete
    account of an ending (the deciding rule; why undetermined or failed)."""

    cls: Any
    sock: Any
    odst: Any
    odport: Any
    seen_src: Any
    dst: Any
    dport: Any
    rule: Any = attrs.field(default=None, metadata=_META)
    why: Any = attrs.field(default=None, metadata=_META)


@attrs.define
class Hop:
    """One connection to open: to ``dst:dport`` from ``sport`` (None: the kernel's choice), by a
    process with ``uid``/``gid``; ``bound`` (a domain Boolean) says whether the process binds the
    source ``src`` first (else the kernel picks it); ``closed``: the proxy closes the client's
    connection instead of opening this one (blackhole)."""

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
    return [(d.in_net(dst, net), action) for net, action in CONNECT_RULES[env.family]
            if action.startswith("E")]


def connect_refused(d: Domain, env: Env, dst: Any) -> Any:
    """Whether ``connect()`` refuses ``dst`` outright (a domain Boolean)."""
    return d.or_(*[holds for holds, _ in connect_error(d, env, dst)])


def connect_dst(d: Domain, env: Env, dst: Any) -> Any:
    """The destination ``connect()`` really sends to (0.0.0.0 / ``::`` → loopback)."""
    for net, action in CONNECT_RULES[env.family]:
        if action == "loopback":
            dst = d.ite(d.in_net(dst, net), d.addr(env.loopback), dst)
    return dst


def local_leg(d: Domain, env: Env, tr: Traverse, h: Hop, *, checked: bool = False) -> Leg:
    """A connection opened in the pod (see the module docstring)."""
    if h.closed is not None and d.is_true(h.closed):
        return _end(d, env, REFUSED, h)
    if h.closed is not None and not d.is_false(h.closed):
        return merge_records(d, h.closed, _end(d, env, REFUSED, h), local_leg(d, env, tr, attrs.evolve(h, closed=None)))
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
    out_lo = is_local(d, env, dst)
    if not d.symbolic:
        why = f" ({h.why})" if h.why else ""
        d.note("open", lambda: f"{h.who} (uid {h.uid}, gid {h.gid}) connects {src} -> "
                               f"{hostport(dst, h.dport)}/{h.protocol} via {'lo' if out_lo else env.iface}{why}")
    # connect() from a loopback address (127.0.0.6) to a remote destination fails with EINVAL
    # (::6 is an ordinary address on lo and connects anywhere)
    einval = d.and_(h.bound, is_loopback(d, env, src), d.not_(out_lo))

    def fails() -> Leg:
        d.note("route", lambda: f"cannot connect from {src} (an address of lo) to the remote "
                                f"{hostport(dst, h.dport)}: connect() fails (EINVAL)")
        return _end(d, env, FAILED, h, why="connect() fails (EINVAL): the source is a loopback address")

    return d.branch(einval, fails, lambda: _local_sent(d, env, tr, h, src, dst, out_lo))


def _local_sent(d: Domain, env: Env, tr: Traverse, h: Hop, src: Any, dst: Any, out_lo: Any) -> Leg:
    zero = d.u32(0)
    pkt = Pkt(h.protocol, src, dst, h.sport, h.dport, None, out_lo, h.uid, h.gid, zero, zero, d.const(False))
    run = Run(pkt, d.const(False), d.kind(UNDET), d.const(False), d.addr(env.loopback), d.port(0))

    def rewritten(p: Pkt, dec: Decision) -> None:
        d.note("rewrite", lambda: f"dst {hostport(p.dst, p.dport)} -> {hostport(dec.addr, dec.port)}", dec.rule)

    # OUTPUT: every stage sees the interface routed for the original destination
    run = run_hook(d, env, tr, "OUTPUT", run, nat=True, on_nat=rewritten)
    # re-route for the (possibly rewritten) destination; POSTROUTING sees the new interface
    local = is_local(d, env, run.pkt.dst)
    run = attrs.evolve(run, pkt=attrs.evolve(run.pkt, oif_lo=local))
    run = run_hook(d, env, tr, "POSTROUTING", run, nat=True, on_nat=rewritten)
    p = run.pkt
    ended = _ended_leg(d, env, h, run)
    # a loopback source whose connection now leads out of the pod cannot be routed: dropped
    stranded_lo = d.and_(p.natted, is_loopback(d, env, p.src), d.not_(local))

    def egress() -> Leg:
        def strand() -> Leg:
            d.note("route", lambda: f"re-routed after NAT to {hostport(p.dst, p.dport)} from the loopback "
                                    f"source {p.src}: the kernel drops it")
            return Leg(d.kind(FAILED), d.port(NO_SOCKET), p.dst, p.dport, p.src, p.dst, p.dport,
                       why=_text(d, lambda: f"re-routed after NAT from the loopback source {p.src}: "
                                            "dropped by the kernel"))

        def leaves() -> Leg:
            # only the pod's interface address can be answered by a remote host
            answered = d.eq(p.src, d.addr(env.pod_ip)) if env.pod_ip is not None else d.const(False)

            def out() -> Leg:
                d.note("route", lambda: f"leaves through {env.iface} to {hostport(p.dst, p.dport)}")
                return Leg(d.kind(EGRESS), d.port(NO_SOCKET), p.dst, p.dport, p.src, p.dst, p.dport)

            def unanswerable() -> Leg:
                d.note("route", lambda: f"leaves through {env.iface} to {hostport(p.dst, p.dport)} from {p.src}, "
                                        f"an address only the pod's lo has: no answer can come back")
                return Leg(d.kind(FAILED), d.port(NO_SOCKET), p.dst, p.dport, p.src, p.dst, p.dport,
                           why=_text(d, lambda: f"the source {p.src} exists only on lo: the remote host's "
                                                "answer cannot come back"))

            return d.branch(answered, out, unanswerable)

        return d.branch(stranded_lo, strand, leaves)

    def loopback() -> Leg:
        d.note("route", lambda: "loops back through lo")
        back = Run(attrs.evolve(p, iif="lo", oif_lo=None, uid=None, gid=None, entry=True), run.ended, run.end,
                   run.tproxied, run.tp_addr, run.tp_port)
        back = run_hook(d, env, tr, "PREROUTING", back, nat=False)
        return _input(d, env, tr, h, back, (h.dst, h.dport), entry=True)

    return d.branch(run.ended, lambda: ended, lambda: d.branch(local, loopback, egress))


def _ended_leg(d: Domain, env: Env, h: Hop, run: Run) -> Leg:
    p = run.pkt
    return Leg(run.end, d.port(NO_SOCKET), p.dst, p.dport, p.src, p.dst, p.dport, rule=run.rule, why=run.why)


def remote_leg(d: Domain, env: Env, tr: Traverse, h: Hop, peer: Any) -> Leg:
    """A connection from the peer, arriving on the pod interface."""
    d.note("open", lambda: f"peer {peer} connects to {hostport(h.dst, h.dport)}/{h.protocol}, "
                           f"arriving on {env.iface}")
    zero = d.u32(0)
    pkt = Pkt(h.protocol, peer, h.dst, h.sport, h.dport, env.iface, None, None, None, zero, zero, d.const(False))
    run = Run(pkt, d.const(False), d.kind(UNDET), d.const(False), d.addr(env.loopback), d.port(0))

    def rewritten(p: Pkt, dec: Decision) -> None:
        d.note("rewrite", lambda: f"dst {hostport(p.dst, p.dport)} -> {hostport(dec.addr, dec.port)}", dec.rule)

    run = run_hook(d, env, tr, "PREROUTING", run, nat=True, on_nat=rewritten)
    p = run.pkt
    martian = d.and_(d.not_(run.tproxied), is_loopback(d, env, p.dst))
    forward = d.and_(d.not_(run.tproxied), d.not_(is_local(d, env, p.dst)))

    def dropped_martian() -> Leg:
        d.note("route", lambda: f"{hostport(p.dst, p.dport)} arriving on {env.iface} is a martian destination: "
                                "dropped by the kernel")
        return Leg(d.kind(FAILED), d.port(NO_SOCKET), p.dst, p.dport, p.src, p.dst, p.dport,
                   why=_text(d, lambda: f"a loopback destination ({p.dst}) arriving on {env.iface} is dropped "
                                        "as a martian"))

    def forwarded() -> Leg:
        return Leg(d.kind(UNDET), d.port(NO_SOCKET), p.dst, p.dport, p.src, p.dst, p.dport,
                   why=_text(d, lambda: f"{hostport(p.dst, p.dport)} is not an address of the pod: "
                                        "forwarding is not modelled"))

    def routed() -> Leg:
        return d.branch(martian, dropped_martian,
                        lambda: d.branch(forward, forwarded, lambda: _input(d, env, tr, h, run, (h.dst, h.dport),
                                                                            entry=False)))

    return d.branch(run.ended, lambda: _ended_leg(d, env, h, run), routed)


def _input(d: Domain, env: Env, tr: Traverse, h: Hop, run: Run, orig: tuple[Any, Any], *, entry: bool) -> Leg:
    """Local delivery after the INPUT hook: the socket TPROXY assigned, or the socket lookup."""
    p = run.pkt

    def with_tproxy() -> Leg:
        d.note("rewrite", lambda: f"TPROXY to {hostport(run.tp_addr, run.tp_port)}, destination kept "
                                  f"{hostport(p.dst, p.dport)}, mark {p.mark:#x}", run.tp_rule)
        side: Any = d.kind(DROPPED)  # xt_TPROXY drops when no transparent listener is there
        for port, s in reversed(env.listeners()):
            side = d.ite(d.eq(run.tp_port, port), d.kind(s), side)
        side = _side_for(d, env, side, p.dst, p.dport)

        def no_listener() -> Leg:
            d.note("socket", lambda: f"no transparent listener on {hostport(run.tp_addr, run.tp_port)}: dropped")
            return Leg(d.kind(DROPPED), d.port(NO_SOCKET), p.dst, p.dport, p.src, p.dst, p.dport, rule=run.tp_rule)

        return d.branch(d.eq(side, DROPPED), no_listener,
                        lambda: after_input(lambda q: _proxy_leg(d, env, side, run.tp_port, q, (p.dst, p.dport))))

    def lookup_socket(q: Pkt) -> Leg:
        cls, idx, owner = lookup(d, env, q.dst, q.dport, q.protocol)
        side = _side_for(d, env, cls, orig[0], orig[1])
        return d.branch(d.or_(d.eq(side, OUT), d.eq(side, IN)),
                        lambda: _proxy_leg(d, env, side, q.dport, q, orig),
                        lambda: _socket_leg(d, env, cls, idx, owner, q))

    def after_input(accept: Callable[[Pkt], Leg]) -> Leg:
        r = run_hook(d, env, tr, "INPUT", attrs.evolve(run, pkt=attrs.evolve(p, oif_lo=None)), nat=not entry)
        return d.branch(r.ended, lambda: _ended_leg(d, env, h, r), lambda: accept(r.pkt))

    return d.branch(run.tproxied, with_tproxy, lambda: after_input(lookup_socket))


def _socket_leg(d: Domain, env: Env, cls: Any, idx: Any, owner: Any, q: Pkt) -> Leg:
    def delivered() -> Leg:
        d.note("socket", lambda: f"{owner[0]} socket {owner[1]} accepts, source {q.src}")
        return Leg(d.kind(DELIV), idx, q.dst, q.dport, q.src, q.dst, q.dport)

    def refused() -> Leg:
        d.note("socket", lambda: f"nothing listens on {hostport(q.dst, q.dport)}/{q.protocol}: refused")
        return Leg(d.kind(REFUSED), d.port(NO_SOCKET), q.dst, q.dport, q.src, q.dst, q.dport)

    return d.branch(d.eq(cls, DELIV), delivered, refused)


def _proxy_leg(d: Domain, env: Env, side: Any, port: Any, q: Pkt, orig: tuple[Any, Any]) -> Leg:
    d.note("socket", lambda: f"proxy listener {Socket('0.0.0.0' if env.family == 'ipv4' else '::', port)} "
                             f"accepts, original destination {hostport(*orig)}")
    return Leg(side, d.port(NO_SOCKET), orig[0], orig[1], q.src, q.dst, q.dport)


def lookup(d: Domain, env: Env, dst: Any, dport: Any, protocol: str = "tcp") -> tuple[Any, Any, Any]:
    """Which socket accepts a connection to ``dst:dport``: (class DELIV/OUT/IN/REFUSED, app socket
    index, and for the concrete trace (owner, socket)). An exact bind beats a wildcard; among
    wildcards 0.0.0.0 beats a dual-stack ``::`` for an IPv4 destination. Only TCP sockets listen."""
    fam = env.family
    cands: list[tuple[int, Any, int, int, tuple[str, Socket]]] = []  # (score, holds, class, index, owner)
    if protocol == "tcp":
        for i, (app, s) in enumerate(env.sockets):
            b = s.bind
            if b.is_unspecified:
                if b.version == 4:
                    if fam != "ipv4":
                        continue
                    score = 2
                elif fam == "ipv6":
                    score = 2
                elif not s.v6only:
                    score = 1
                else:
                    continue
                holds = d.eq(dport, d.port(s.port))
            else:
                if (b.version == 4) != (fam == "ipv4"):
                    continue
                score = 3
                holds = d.and_(d.eq(dport, d.port(s.port)), d.eq(dst, d.addr(b)))
            cands.append((score, holds, DELIV, i, (app, s)))
        wildcard = "0.0.0.0" if fam == "ipv4" else "::"
        for port, side in env.listeners():
            cands.append((2, d.eq(dport, d.port(port)), side, NO_SOCKET, ("proxy", Socket(wildcard, port))))
    cls: Any = d.kind(REFUSED)
    idx: Any = d.port(NO_SOCKET)
    # the best candidate is the outermost if-then-else: highest score, then the earliest listed
    order = sorted(range(len(cands)), key=lambda j: (cands[j][0], -j))
    for j in order:
        _score, holds, c, i, _who = cands[j]
        cls = d.ite(holds, d.kind(c), cls)
        idx = d.ite(holds, d.port(i), idx)
    owner = None
    if not d.symbolic:
        for j in reversed(order):
            if cands[j][1] is True:
                owner = cands[j][4]
                break
    return cls, idx, owner


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
    closed = d.and_(d.not_(is_in), d.not_(service), d.const(p.outbound == "blackhole"))
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
    if knobs.inbound_source is not None:
        src = d.addr(to_address("127.0.0.6" if fam == "ipv4" else "::6"))
        bound = d.and_(is_in, knobs.inbound_source)
    elif given is not None:
        src = d.addr(given)
        bound = is_in
    why = ""
    if not d.symbolic:
        if is_in:
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
    return Hop(dst, dport, sport, d.u32(p.uid), d.u32(p.gid), protocol, bound, src, closed, "proxy", why)


# ------------------------------------------------------------------------------------------------
# A flow: the first connection and the proxy's hops


@attrs.frozen
class First:
    """The flow's first connection: ``peer`` (a domain Boolean: from the remote peer, else opened in
    the pod by a process with ``uid``/``gid``), destination, ports and the endpoint choice."""

    peer: Any
    dst: Any
    dport: Any
    sport: Any
    uid: Any
    gid: Any
    endpoint: Any
    protocol: str = "tcp"
    who: str = ""


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
    hop = Hop(first.dst, first.dport, first.sport, first.uid, first.gid, first.protocol, who=first.who)
    for n in range(hops):
        if on_leg is not None:
            on_leg(n + 1)
        if n == 0:
            def remote(h: Hop = hop) -> Leg:
                if peer_ip is None:
                    raise WorldError(f"the world has no {env.family} peer IP")
                return remote_leg(d, env, tr, h, d.addr(peer_ip))

            def local(h: Hop = hop) -> Leg:
                return local_leg(d, env, tr, h)

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
