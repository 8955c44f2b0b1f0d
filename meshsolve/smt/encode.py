"""Encoding a pod world as Z3 constraints.

What is modelled
----------------
A *flow* is a first connection (hop 0) plus the connections the sidecar opens because of it
(hops 1..K-1). Each hop is a symbolic TCP SYN: source and destination address (bit-vectors of the
family's width), ports, the opening process's uid and gid (local hops), the packet mark and the
connection mark. The kernel's path for the SYN is followed hook by hook, as the interpreter does:

* a hop opened in the pod: raw, mangle, nat, filter ``OUTPUT``; mangle, nat ``POSTROUTING``; then,
  for a local destination, the loopback re-entry through raw and mangle ``PREROUTING`` with
  ``-i lo`` (nat is not consulted again: one connection, one nat decision) and mangle, filter
  ``INPUT``;
* a hop from the remote peer: raw, mangle, nat ``PREROUTING`` with ``-i <pod interface>``, then
  mangle, filter, nat ``INPUT``.

Each chain is first-match: a rule's matches are a conjunction of terms over the packet, and the
chain's result is an if-then-else cascade built back to front, so a 50,000-rule chain is one pass
and one term DAG. Jumps build the callee with the rest of the caller as its continuation; ``-g``
builds it with the caller's own continuation; ``RETURN`` and falling off a user chain continue the
caller; a built-in chain ends in its policy. ``MARK``/``CONNMARK`` do not end the traversal: the
rest of the chain is rebuilt with the new mark (memoised on the mark term), so marks set in mangle
``OUTPUT`` are seen by nat and by the loopback re-entry. ``REDIRECT`` rewrites the destination to
127.0.0.1 / ::1 (``OUTPUT``) or to the pod address (``PREROUTING``); ``TPROXY`` hands the SYN to the
proxy listener on its port with the destination unchanged.

After netfilter, a local destination is looked up in the socket table (an exact bind beats a
wildcard on the same port; ``::`` takes IPv4 unless v6only), a remote one leaves the pod
(``egress``). A proxy listener makes the hop a proxy hop: outbound side (client-side telemetry) or
inbound side (server-side), decided exactly as ``ProxyBehavior`` says, and the next hop is the
proxy's upstream connection with the proxy's ids, to the chosen endpoint / original destination /
localhost, from the configured source. A proxy side that sees the same original destination
twice, or a flow longer than K hops, is a loop.

Why it is sound
---------------
Every construct the interpreter decides concretely is encoded exactly. A match or target meshsolve
does not model (``OpaqueMatch``, unresolvable owner names, ``--syn``-style extras, ``-m socket``,
SNAT/MASQUERADE, opaque targets) becomes a fresh Boolean / an ``undetermined`` end: the solver may
pick either way, so an unsatisfiable query (a proof) holds whatever those rules do. A satisfying
model is only a *candidate*: the analysis layer replays it in the interpreter and reports
``Unknown`` naming the rule when the replay depends on an opaque rule.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

import attrs
import z3

from meshsolve.errors import UnsupportedError
from meshsolve.model.net import Family, IPAddress, IPNetwork, family_of, to_address
from meshsolve.model.rules import (
    Accept,
    AddrtypeMatch,
    Chain,
    CommentMatch,
    ConnmarkMatch,
    ConnmarkTarget,
    ConntrackMatch,
    CtTarget,
    Destination,
    Dnat,
    Drop,
    Goto,
    InInterface,
    Jump,
    Log,
    MarkMatch,
    Match,
    MultiportMatch,
    OpaqueMatch,
    OpaqueTarget,
    OutInterface,
    OwnerMatch,
    PortMatch,
    Protocol,
    Redirect,
    Reject,
    Return,
    Rule,
    Ruleset,
    SetMark,
    Source,
    StateMatch,
    Table,
    Target,
    Tproxy,
    Trace,
)
from meshsolve.model.world import World

__all__ = ["FlowEncoding", "HopVars", "KIND", "OUTCOME", "encode_flow"]

TCP = 6
# A rule slot of the synthesizer: ``-m meshsolve-slot N -j MESHSOLVE-SLOT N`` in a chain stands for
# the symbolic rule number N (its enabled flag, chosen conditions and chosen target).
SLOT_MODULE = "meshsolve-slot"
SLOT_TARGET = "MESHSOLVE-SLOT"
# Decision kinds of one table traversal.
CONT, DROP, REDIR, DNAT, TPROXY, UNK = range(6)
KIND = {"cont": CONT, "drop": DROP, "redirect": REDIR, "dnat": DNAT, "tproxy": TPROXY, "unknown": UNK}
# Hop classes / flow outcomes.
DELIV, REFUSED, DROPPED, EGRESS, OUT, IN, UNDET, LOOP = range(8)
OUTCOME = {"delivered": DELIV, "refused": REFUSED, "dropped": DROPPED, "egress": EGRESS,
           "undetermined": UNDET, "loop": LOOP}

B8 = z3.BitVecSort(8)
B16 = z3.BitVecSort(16)
B32 = z3.BitVecSort(32)


def width(family: Family) -> int:
    return 32 if family == "ipv4" else 128


def addr_val(a: IPAddress, family: Family) -> z3.BitVecRef:
    return z3.BitVecVal(int(a), width(family))


def in_net(x: z3.BitVecRef, net: IPNetwork) -> z3.BoolRef:
    w = x.size()
    if net.prefixlen == 0:
        return z3.BoolVal(True)
    mask = ((1 << net.prefixlen) - 1) << (w - net.prefixlen)
    return (x & z3.BitVecVal(mask, w)) == z3.BitVecVal(int(net.network_address), w)


@attrs.define
class Dec:
    """The result of one table traversal, field-wise symbolic."""

    kind: Any  # BV8
    port: Any  # BV16
    addr: Any  # BV(w)
    mark: Any  # BV32
    ctmark: Any  # BV32


def ite(c: Any, a: Dec, b: Dec) -> Dec:
    if z3.is_true(c):
        return a
    if z3.is_false(c):
        return b
    return Dec(z3.If(c, a.kind, b.kind), z3.If(c, a.port, b.port), z3.If(c, a.addr, b.addr),
               z3.If(c, a.mark, b.mark), z3.If(c, a.ctmark, b.ctmark))


@attrs.define
class Pkt:
    """A symbolic SYN at one hook. ``iif``/``oif_lo`` describe the interfaces."""

    family: Family
    src: Any
    dst: Any
    sport: Any
    dport: Any
    uid: Any | None  # None: not a locally opened connection (no owner)
    gid: Any | None
    iif: str | None  # concrete incoming interface name, or None (OUTPUT)
    oif_lo: Any | None  # Bool: the outgoing interface is lo (OUTPUT/POSTROUTING), None otherwise
    dnat: Any = None  # Bool: the connection's destination was rewritten (conntrack state DNAT)


class Ctx:
    """Shared encoding state: fresh variables, opaque choices and the world's constants."""

    def __init__(self, world: World, family: Family, *, names: dict[str, int] | None = None,
                 tag: str = "") -> None:
        self.tag = tag
        self.world = world
        self.family = family
        self.w = width(family)
        self.names = dict(names or {})
        self.opaque: list[tuple[str, z3.BoolRef]] = []
        self._n = 0
        pod = world.pod_ip(family)
        self.pod_ip = pod
        locals_: list[IPNetwork] = []
        if family == "ipv4":
            locals_.append(ipaddress.ip_network("127.0.0.0/8"))
        else:
            locals_.append(ipaddress.ip_network("::1/128"))
            src6 = world.proxy.inbound_source_v6
            if src6 is not None:
                locals_.append(ipaddress.ip_network(src6))
        locals_.extend(ipaddress.ip_network(a) for a in world.pod_ips if family_of(a) == family)
        self.local_nets = tuple(locals_)
        self.loopback = to_address("127.0.0.1" if family == "ipv4" else "::1")

    # Synthesis hooks: symbolic rule slots and proxy knobs (see meshsolve.smt.synth).
    slots: dict[int, Any] = {}  # noqa: RUF012 - replaced per instance by the synthesizer
    knob_localhost: Any = None  # Bool: the inbound side forwards to localhost (else original dst)
    knob_source: Any = None  # Bool: the inbound side binds the passthrough source (127.0.0.6 / ::6)

    def fresh(self, prefix: str, sort: z3.SortRef) -> Any:
        self._n += 1
        return z3.Const(f"{self.tag}{prefix}!{self._n}", sort)

    def opaque_bool(self, why: str) -> z3.BoolRef:
        b = self.fresh("opaque", z3.BoolSort())
        self.opaque.append((why, b))
        return b

    def is_local(self, x: Any) -> Any:
        return z3.Or(*[in_net(x, n) for n in self.local_nets])

    def is_loopback_range(self, x: Any) -> Any:
        net = ipaddress.ip_network("127.0.0.0/8" if self.family == "ipv4" else "::1/128")
        return in_net(x, net)


# ------------------------------------------------------------------------------------------------
# Matches


def _iface_match(name: str, actual: str) -> bool:
    if name.endswith("+"):
        return actual.startswith(name[:-1])
    return name == actual


def _owner_range(token: str, ctx: Ctx) -> tuple[int, int] | None:
    token = token.strip()
    if "-" in token:
        lo, hi = token.split("-", 1)
        if lo.isdigit() and hi.isdigit():
            return int(lo), int(hi)
        return None
    if token.isdigit():
        return int(token), int(token)
    if token in ctx.names:
        v = ctx.names[token]
        return v, v
    return None


def _id_in(var: Any, rng: tuple[int, int]) -> Any:
    lo, hi = rng
    if lo == hi:
        return var == z3.BitVecVal(lo, 32)
    return z3.And(z3.UGE(var, z3.BitVecVal(lo, 32)), z3.ULE(var, z3.BitVecVal(hi, 32)))


def _port_in(var: Any, lo: int, hi: int) -> Any:
    if lo == hi:
        return var == z3.BitVecVal(lo, 16)
    if lo == 0 and hi == 65535:
        return z3.BoolVal(True)
    return z3.And(z3.UGE(var, z3.BitVecVal(lo, 16)), z3.ULE(var, z3.BitVecVal(hi, 16)))


def _neg(c: Any, negated: bool) -> Any:
    return z3.Not(c) if negated else c


def match_term(m: Match, pkt: Pkt, mark: Any, ctmark: Any, ctx: Ctx, where: str) -> Any:
    """A Z3 Boolean for one match on the packet (Python bools are lifted)."""
    match m:
        case Source(net, negated):
            return _neg(in_net(pkt.src, net), negated)
        case Destination(net, negated):
            return _neg(in_net(pkt.dst, net), negated)
        case InInterface(name, negated):
            on = pkt.iif is not None and _iface_match(name, pkt.iif)
            return z3.BoolVal(on != negated)
        case OutInterface(name, negated):
            if pkt.oif_lo is None:
                return z3.BoolVal(negated)
            lo = _iface_match(name, "lo")
            pod = _iface_match(name, ctx.world.interface)
            c = z3.If(pkt.oif_lo, z3.BoolVal(lo), z3.BoolVal(pod))
            return _neg(c, negated)
        case Protocol(name, negated):
            if name == "all":
                return z3.BoolVal(not negated)
            return z3.BoolVal((name == "tcp") != negated)
        case PortMatch(module, sport, dport, sport_negated, dport_negated, extra):
            if module != "tcp":
                return z3.BoolVal(False)
            parts: list[Any] = []
            if sport is not None:
                parts.append(_neg(_port_in(pkt.sport, sport.lo, sport.hi), sport_negated))
            if dport is not None:
                parts.append(_neg(_port_in(pkt.dport, dport.lo, dport.hi), dport_negated))
            if extra:
                parts.append(ctx.opaque_bool(f"{where}: tcp option {' '.join(extra)}"))
            return z3.And(*parts) if parts else z3.BoolVal(True)
        case MultiportMatch(kind, ports, negated, _):
            if kind == "ports":
                hit = z3.Or(*[z3.Or(_port_in(pkt.sport, r.lo, r.hi), _port_in(pkt.dport, r.lo, r.hi))
                              for r in ports])
            else:
                var = pkt.sport if kind == "sports" else pkt.dport
                hit = z3.Or(*[_port_in(var, r.lo, r.hi) for r in ports])
            return _neg(hit, negated)
        case OwnerMatch(uid, uid_negated, gid, gid_negated, socket_exists, suppl_groups, _):
            if pkt.uid is None or pkt.gid is None:
                # Owner matches only exist in OUTPUT/POSTROUTING: no socket owner here.
                return z3.BoolVal(False)
            parts = []
            if uid is not None:
                rng = _owner_range(uid, ctx)
                c = _id_in(pkt.uid, rng) if rng else ctx.opaque_bool(f"{where}: unknown user {uid!r}")
                parts.append(_neg(c, uid_negated))
            if gid is not None:
                rng = _owner_range(gid, ctx)
                if rng is None or suppl_groups:
                    c = ctx.opaque_bool(f"{where}: group {gid!r} (name or supplementary groups)")
                else:
                    c = _id_in(pkt.gid, rng)
                parts.append(_neg(c, gid_negated))
            if socket_exists is not None:
                parts.append(z3.BoolVal(socket_exists))
            return z3.And(*parts) if parts else z3.BoolVal(True)
        case MarkMatch(value, mask, negated, _):
            return _neg((mark & z3.BitVecVal(mask, 32)) == z3.BitVecVal(value & mask, 32), negated)
        case ConnmarkMatch(value, mask, negated, _):
            return _neg((ctmark & z3.BitVecVal(mask, 32)) == z3.BitVecVal(value & mask, 32), negated)
        case ConntrackMatch(states, negated, extra, _) if not extra:
            ct: Any = z3.BoolVal("NEW" in states)
            if "DNAT" in states and pkt.dnat is not None:
                ct = z3.Or(ct, pkt.dnat)
            return _neg(ct, negated)
        case StateMatch(states, negated, _):
            return z3.BoolVal(("NEW" in states) != negated)
        case AddrtypeMatch(src_type, src_neg, dst_type, dst_neg, lin, lout, _) if not (lin or lout):
            parts = []
            for t, neg, x in ((src_type, src_neg, pkt.src), (dst_type, dst_neg, pkt.dst)):
                if t is None:
                    continue
                if t == "LOCAL":
                    parts.append(_neg(ctx.is_local(x), neg))
                else:
                    parts.append(ctx.opaque_bool(f"{where}: addrtype {t}"))
            return z3.And(*parts) if parts else z3.BoolVal(True)
        case CommentMatch():
            return z3.BoolVal(True)
    if isinstance(m, OpaqueMatch) and m.module == SLOT_MODULE and ctx.slots:
        slot = ctx.slots[int(m.args[0])]
        conds = [z3.Implies(u, match_term(atom, pkt, mark, ctmark, ctx, where))
                 for u, atom in zip(slot.use, slot.atoms, strict=True)]
        return z3.And(slot.enabled, *conds)
    return ctx.opaque_bool(f"{where}: unmodelled match {type(m).__name__}")


# ------------------------------------------------------------------------------------------------
# Chains


Cont = Callable[[Any, Any], Dec]


class Traversal:
    """Builds the decision of one table's built-in chain for one packet (see module docstring)."""

    def __init__(self, ctx: Ctx, table: Table, pkt: Pkt) -> None:
        self.ctx = ctx
        self.table = table
        self.pkt = pkt
        self.memo: dict[tuple[str, int, int, int, int], Dec] = {}
        self._conts: list[Cont] = []
        self._cid_of: dict[int, int] = {}
        self.zero_port = z3.BitVecVal(0, 16)
        self.zero_addr = z3.BitVecVal(0, ctx.w)

    def dec(self, kind: int, mark: Any, ctmark: Any, port: Any = None, addr: Any = None) -> Dec:
        return Dec(z3.BitVecVal(kind, 8), self.zero_port if port is None else port,
                   self.zero_addr if addr is None else addr, mark, ctmark)

    def _cid(self, k: Cont) -> int:
        hit = self._cid_of.get(id(k))
        if hit is not None:
            return hit
        self._conts.append(k)  # keeps k alive, so its id is not reused
        self._cid_of[id(k)] = len(self._conts) - 1
        return len(self._conts) - 1

    def chain(self, name: str, mark: Any, ctmark: Any) -> Dec:
        c = self.table.chain(name)
        assert c is not None and c.builtin
        policy = c.policy or "ACCEPT"

        def end(m: Any, cm: Any) -> Dec:
            return self.dec(DROP if policy == "DROP" else CONT, m, cm)

        return self.run(c, 0, mark, ctmark, end)

    def run(self, chain: Chain, start: int, mark: Any, ctmark: Any, k: Cont) -> Dec:
        mid, cmid, kid = mark.get_id(), ctmark.get_id(), self._cid(k)
        key = (chain.name, start, mid, cmid, kid)
        hit = self.memo.get(key)
        if hit is not None:
            return hit
        # Scan forward for the first rule that always applies (the rest of the chain is dead) or
        # for a suffix already built; only then build the cascade back to front.
        n = len(chain.rules)
        cond_of: dict[int, Any] = {}
        end = n
        acc: Dec | None = None
        for j in range(start, n):
            if j > start:
                h = self.memo.get((chain.name, j, mid, cmid, kid))
                if h is not None:
                    end, acc = j, h
                    break
            rule = chain.rules[j]
            where = f"{self.table.name}::{chain.name}#{j + 1}"
            conds = [match_term(m, self.pkt, mark, ctmark, self.ctx, where) for m in rule.matches]
            c = z3.And(*conds) if conds else z3.BoolVal(True)
            cond_of[j] = c
            if z3.is_true(c) and rule.target is not None and not isinstance(rule.target, Log | Trace | CtTarget):
                end = j + 1
                break
        if acc is None:
            acc = k(mark, ctmark) if end == n else None
        for i in range(end - 1, start - 1, -1):
            rule = chain.rules[i]
            where = f"{self.table.name}::{chain.name}#{i + 1}"
            cond = cond_of[i]
            if z3.is_false(cond):
                if acc is not None:
                    self.memo[(chain.name, i, mid, cmid, kid)] = acc
                continue
            taken = self.target(rule, chain, i, mark, ctmark, k, acc, where)
            if taken is not None:
                # acc is None only below a rule that always applies: then this is that rule
                acc = taken if acc is None else ite(cond, taken, acc)
            if acc is not None:
                self.memo[(chain.name, i, mid, cmid, kid)] = acc
        assert acc is not None
        self.memo[key] = acc
        return acc

    def target(self, rule: Rule, chain: Chain, i: int, mark: Any, ctmark: Any, k: Cont, rest: Dec | None,
               where: str) -> Dec | None:
        t: Target | None = rule.target
        match t:
            case None | Log() | Trace():
                return None
            case CtTarget(_zone, notrack, extra):
                if notrack or extra:
                    return self.dec(UNK, mark, ctmark)
                return None
            case Accept():
                return self.dec(CONT, mark, ctmark)
            case Drop() | Reject():
                return self.dec(DROP, mark, ctmark)
            case Return():
                if chain.builtin:
                    return self.dec(DROP if chain.policy == "DROP" else CONT, mark, ctmark)
                return k(mark, ctmark)
            case Jump(target):
                callee = self.table.chain(target)
                if callee is None:
                    raise UnsupportedError(f"{where}: jump to missing chain {target}")

                def back(m: Any, cm: Any, _c: Chain = chain, _i: int = i, _k: Cont = k) -> Dec:
                    return self.run(_c, _i + 1, m, cm, _k)

                return self.run(callee, 0, mark, ctmark, back)
            case Goto(target):
                callee = self.table.chain(target)
                if callee is None:
                    raise UnsupportedError(f"{where}: goto to missing chain {target}")
                return self.run(callee, 0, mark, ctmark, k)
            case Redirect(to_ports, _random):
                port = self.pkt.dport if to_ports is None else z3.BitVecVal(to_ports.lo, 16)
                return self.dec(REDIR, mark, ctmark, port=port)
            case Dnat(to, extra):
                parsed = _dnat_target(to, self.ctx.family)
                if parsed is None or extra:
                    return self.dec(UNK, mark, ctmark)
                a, p = parsed
                port = self.pkt.dport if p is None else z3.BitVecVal(p, 16)
                return self.dec(DNAT, mark, ctmark, port=port, addr=addr_val(a, self.ctx.family))
            case Tproxy(on_port, _on_ip, tmark, tmask):
                newmark = mark if tmark is None else (mark & z3.BitVecVal(~tmask & 0xFFFFFFFF, 32)) ^ \
                    z3.BitVecVal(tmark, 32)
                return self.dec(TPROXY, newmark, ctmark, port=z3.BitVecVal(on_port, 16))
            case SetMark(value, mask):
                newmark = (mark & z3.BitVecVal(~mask & 0xFFFFFFFF, 32)) ^ z3.BitVecVal(value, 32)
                if z3.is_bv_value(mark):
                    newmark = z3.simplify(newmark)
                return self.run(chain, i + 1, newmark, ctmark, k)
            case ConnmarkTarget(action, value, mask, nfmask, ctmask):
                if action == "save-mark":
                    newct = (ctmark & z3.BitVecVal(~ctmask & 0xFFFFFFFF, 32)) ^ \
                        (mark & z3.BitVecVal(nfmask, 32))
                    return self.run(chain, i + 1, mark, newct, k)
                if action == "restore-mark":
                    newm = (mark & z3.BitVecVal(~nfmask & 0xFFFFFFFF, 32)) ^ \
                        (ctmark & z3.BitVecVal(ctmask, 32))
                    return self.run(chain, i + 1, newm, ctmark, k)
                newct = (ctmark & z3.BitVecVal(~mask & 0xFFFFFFFF, 32)) ^ z3.BitVecVal(value, 32)
                return self.run(chain, i + 1, mark, newct, k)
        if isinstance(t, OpaqueTarget) and t.name == SLOT_TARGET and self.ctx.slots:
            slot = self.ctx.slots[int(t.args[0])]
            assert rest is not None  # a slot's condition is never constant-true
            decs = [self.target(Rule((), choice), chain, i, mark, ctmark, k, rest, where) or rest
                    for choice in slot.targets]
            out = decs[-1]
            for j in range(len(decs) - 2, -1, -1):
                out = ite(slot.target == j, decs[j], out)
            return out
        # SNAT, MASQUERADE, opaque targets: the end is undetermined.
        return self.dec(UNK, mark, ctmark)


def _dnat_target(to: str, family: Family) -> tuple[IPAddress, int | None] | None:
    text = to.strip()
    try:
        if family == "ipv6":
            if text.startswith("["):
                host, _, rest = text[1:].partition("]")
                port = int(rest[1:]) if rest.startswith(":") else None
                return to_address(host), port
            return to_address(text), None
        host, _, port_s = text.partition(":")
        if "-" in host or "-" in port_s:
            return None
        return to_address(host), int(port_s) if port_s else None
    except (ValueError, Exception):
        return None


def table_decision(ctx: Ctx, ruleset: Ruleset, table: str, chain: str, pkt: Pkt, mark: Any,
                   ctmark: Any) -> Dec | None:
    t = ruleset.table(table)
    if t is None:
        return None
    c = t.chain(chain)
    if c is None or (not c.rules and c.policy == "ACCEPT"):
        return None
    return Traversal(ctx, t, pkt).chain(chain, mark, ctmark)


# ------------------------------------------------------------------------------------------------
# Hops and flows


@attrs.define
class HopVars:
    """The symbolic values of one hop (connection) of a flow."""

    src: Any
    dst: Any
    sport: Any
    dport: Any
    uid: Any | None
    gid: Any | None
    cls: Any = None  # BV8 hop class (DELIV/REFUSED/DROPPED/EGRESS/OUT/IN/UNDET)
    sock: Any = None  # BV16 app socket index (valid when DELIV)
    odst: Any = None  # original destination (pre-NAT) for a proxy hop
    odport: Any = None
    seen_src: Any = None  # source address the accepting socket sees


@attrs.define
class FlowEncoding:
    """All hops of a flow plus its outcome, ready for predicates."""

    ctx: Ctx
    hops: list[HopVars]
    active: list[Any]
    loop_at: list[Any]
    repeat: list[Any]  # hop n's proxy side saw the same original destination at an earlier hop
    outcome: Any  # BV8 in OUTCOME
    final_sock: Any
    final_src: Any
    endpoint: Any  # BV16: the endpoint index the proxy chooses for VIPs
    constraints: list[Any]
    sockets: list[tuple[str, Any]]  # (app name, Socket) by index


def _pipeline(ctx: Ctx, rs: Ruleset, hooks: list[tuple[str, str]], pkt: Pkt, mark: Any,
              ctmark: Any) -> Dec:
    """Traverse several (table, chain) stages in order; the first non-CONT decision wins."""
    decs: list[Dec] = []
    for table, chain in hooks:
        d = table_decision(ctx, rs, table, chain, pkt, mark, ctmark)
        if d is None:
            continue
        decs.append(d)
        mark, ctmark = d.mark, d.ctmark
    zero16 = z3.BitVecVal(0, 16)
    result = Dec(z3.BitVecVal(CONT, 8), zero16, z3.BitVecVal(0, ctx.w), mark, ctmark)
    for d in reversed(decs):
        result = ite(d.kind != z3.BitVecVal(CONT, 8), d, result)
    return result


_CACHE: list[tuple[World, tuple[Any, ...], tuple[FlowEncoding, HopVars, Any]]] = []
_CACHE_SIZE = 8


def encode_flow(world: World, family: Family, *, hops: int = 8,
                names: dict[str, int] | None = None, tag: str = "", share_hop0: bool = True,
                setup: Callable[[Ctx], None] | None = None, first: str = "any"
                ) -> tuple[FlowEncoding, HopVars, Any]:
    """Encode a flow whose hop 0 is free; see ``_encode_flow``. Encodings are reused for the same
    world object (questions about one world share one encoding: building it is most of the work).
    ``first`` limits the first connection to one that arrives from the ``"peer"`` or is opened
    ``"local"``ly (only that path is encoded), or leaves both (``"any"``)."""
    if setup is not None:
        return _encode_flow(world, family, hops=hops, names=names, tag=tag, share_hop0=share_hop0, setup=setup,
                            first=first)
    key = (family, hops, tuple(sorted((names or {}).items())), tag, share_hop0, first)
    for w, k, enc in _CACHE:
        if w is world and k == key:
            return enc
    enc = _encode_flow(world, family, hops=hops, names=names, tag=tag, share_hop0=share_hop0, first=first)
    _CACHE.insert(0, (world, key, enc))
    del _CACHE[_CACHE_SIZE:]
    return enc


def _encode_flow(world: World, family: Family, *, hops: int = 8,
                 names: dict[str, int] | None = None, tag: str = "", share_hop0: bool = True,
                 setup: Callable[[Ctx], None] | None = None, first: str = "any"
                 ) -> tuple[FlowEncoding, HopVars, Any]:
    """Encode a flow whose hop 0 is free (the caller constrains it with a ``Scope``).

    Returns the encoding, hop 0's variables and a BV8 ``client`` code (0 peer, 1 local). Hop 0's
    variables and the endpoint choice have fixed names, so two encodings (``tag`` keeps their
    internal variables apart) of two worlds talk about the same first connection.
    """
    ctx = Ctx(world, family, names=names, tag=tag)
    if setup is not None:
        setup(ctx)
    v0 = "" if share_hop0 else tag
    w = ctx.w
    rs = world.rules.for_family(family)
    proxy = world.proxy
    pod = ctx.pod_ip
    if pod is None:
        raise UnsupportedError(f"the pod has no {family} address")
    cons: list[Any] = []

    sockets: list[tuple[str, Any]] = []
    for app in world.apps:
        for s in app.sockets:
            sockets.append((app.name, s))
    listeners: list[tuple[int, int]] = [(proxy.outbound_port, OUT)]
    if proxy.inbound_port is not None and proxy.inbound_port != proxy.outbound_port:
        listeners.append((proxy.inbound_port, IN))

    client = z3.BitVec(f"{v0}client", 8)  # 0: peer, 1: local process
    cons.append(z3.ULE(client, 1))
    endpoint = z3.BitVec(f"{v0}endpoint", 16)
    h0 = HopVars(src=z3.BitVec(f"{v0}src0", w), dst=z3.BitVec(f"{v0}dst0", w),
                 sport=z3.BitVec(f"{v0}sport0", 16), dport=z3.BitVec(f"{v0}dport0", 16),
                 uid=z3.BitVec(f"{v0}uid0", 32), gid=z3.BitVec(f"{v0}gid0", 32))
    is_peer0 = client == 0
    peer_ip = world.peer_ip(family)
    pod_v = addr_val(pod, family)
    loop_v = addr_val(ctx.loopback, family)
    # Kernel source selection for a locally opened hop 0 (the peer's address for a peer).
    local_src0 = z3.If(ctx.is_loopback_range(h0.dst), loop_v, z3.If(ctx.is_local(h0.dst), h0.dst, pod_v))
    if peer_ip is not None:
        cons.append(h0.src == z3.If(is_peer0, addr_val(peer_ip, family), local_src0))
    else:
        cons.append(z3.Not(is_peer0))
        cons.append(h0.src == local_src0)
    cons.append(z3.Implies(is_peer0, h0.dst == pod_v))

    hv: list[HopVars] = []
    active: list[Any] = []
    loop_at: list[Any] = []
    repeat: list[Any] = []
    cur = h0
    act: Any = z3.BoolVal(True)
    if proxy.outbound != "passthrough":
        raise UnsupportedError("the solver models only a passthrough outbound proxy")
    for n in range(hops):
        if n == 0 and first == "peer":
            cons.append(is_peer0)
            _set(cur, _hop_peer(ctx, rs, cur, sockets, listeners))
        elif n == 0 and first == "local":
            cons.append(z3.Not(is_peer0))
            _set(cur, _hop_local(ctx, rs, cur, sockets, listeners))
        elif n == 0:
            peer_path = _hop_peer(ctx, rs, cur, sockets, listeners)
            local_path = _hop_local(ctx, rs, cur, sockets, listeners)
            _merge_into(cur, is_peer0, peer_path, local_path)
        else:
            _set(cur, _hop_local(ctx, rs, cur, sockets, listeners))
        hv.append(cur)
        active.append(act)
        is_proxy_hop = z3.Or(cur.cls == OUT, cur.cls == IN)
        repeats = [z3.And(p.cls == cur.cls, p.odst == cur.odst, p.odport == cur.odport) for p in hv[:-1]]
        rep = z3.Or(*repeats) if repeats else z3.BoolVal(False)
        repeat.append(rep)
        last = n == hops - 1
        lp = z3.And(act, is_proxy_hop, z3.BoolVal(True) if last else rep)
        loop_at.append(lp)
        if last:
            break
        nxt_act = z3.And(act, is_proxy_hop, z3.Not(rep))
        nxt = _proxy_upstream(ctx, world, cur, n + 1, endpoint, cons)
        nxt.uid = z3.BitVecVal(proxy.uid, 32)
        nxt.gid = z3.BitVecVal(proxy.gid, 32)
        cur = nxt
        act = nxt_act

    # outcome: the first active hop that ends, or a loop
    none16 = z3.BitVecVal(0xFFFF, 16)
    outcome: Any = z3.BitVecVal(LOOP, 8)
    fsock: Any = none16
    fsrc: Any = z3.BitVecVal(0, w)
    for n in range(len(hv) - 1, -1, -1):
        h = hv[n]
        ends = z3.And(active[n], z3.Not(z3.Or(h.cls == OUT, h.cls == IN)))
        outcome = z3.If(loop_at[n], z3.BitVecVal(LOOP, 8), z3.If(ends, h.cls, outcome))
        fsock = z3.If(loop_at[n], none16, z3.If(ends, h.sock, fsock))
        fsrc = z3.If(ends, h.seen_src, fsrc)
    enc = FlowEncoding(ctx=ctx, hops=hv, active=active, loop_at=loop_at, repeat=repeat, outcome=outcome,
                       final_sock=fsock, final_src=fsrc, endpoint=endpoint, constraints=cons,
                       sockets=sockets)
    return enc, h0, client


def _set(h: HopVars, r: HopVars) -> None:
    h.cls, h.sock, h.odst, h.odport, h.seen_src = r.cls, r.sock, r.odst, r.odport, r.seen_src


def _merge_into(h: HopVars, c: Any, a: HopVars, b: HopVars) -> None:
    h.cls = z3.If(c, a.cls, b.cls)
    h.sock = z3.If(c, a.sock, b.sock)
    h.odst = z3.If(c, a.odst, b.odst)
    h.odport = z3.If(c, a.odport, b.odport)
    h.seen_src = z3.If(c, a.seen_src, b.seen_src)


def _lookup(ctx: Ctx, dst: Any, dport: Any, sockets: list[tuple[str, Any]],
            listeners: list[tuple[int, int]]) -> tuple[Any, Any]:
    """Socket lookup for a local destination: (class, app socket index).

    An exact bind beats a wildcard on the same port; proxy listeners are wildcard sockets of both
    families. Returns class DELIV with the index, OUT/IN for a proxy listener, or REFUSED.
    """
    fam = ctx.family
    none16 = z3.BitVecVal(0xFFFF, 16)
    cls: Any = z3.BitVecVal(REFUSED, 8)
    idx: Any = none16
    wild: list[tuple[Any, Any, Any]] = []
    exact: list[tuple[Any, Any, Any]] = []
    for i, (_app, s) in enumerate(sockets):
        b = s.bind
        if b.version == 4:
            if fam != "ipv4":
                continue
            wildcard = int(b) == 0
        else:
            if fam == "ipv4" and not (int(b) == 0 and not s.v6only):
                continue
            wildcard = int(b) == 0
        pm = dport == z3.BitVecVal(s.port, 16)
        if wildcard:
            wild.append((pm, z3.BitVecVal(DELIV, 8), z3.BitVecVal(i, 16)))
        else:
            exact.append((z3.And(pm, dst == addr_val(b, fam)), z3.BitVecVal(DELIV, 8),
                          z3.BitVecVal(i, 16)))
    for port, side in listeners:
        wild.append((dport == z3.BitVecVal(port, 16), z3.BitVecVal(side, 8), none16))
    for cond, c, i in reversed(exact + wild):
        cls = z3.If(cond, c, cls)
        idx = z3.If(cond, i, idx)
    return cls, idx


def _side_for(ctx: Ctx, port_cls: Any, odst: Any, odport: Any) -> Any:
    """Outbound listener → OUT, unless the 1.0–1.2 virtual dispatch hands it to the inbound side."""
    p = ctx.world.proxy
    if not p.virtual_inbound_dispatch:
        return port_cls
    own = z3.Or(*[odst == addr_val(a, ctx.family) for a in ctx.world.pod_ips
                  if family_of(a) == ctx.family])
    ports = z3.BoolVal(True) if p.inbound_ports is None else \
        z3.Or(*[odport == z3.BitVecVal(x, 16) for x in p.inbound_ports]) if p.inbound_ports else \
        z3.BoolVal(False)
    return z3.If(z3.And(port_cls == OUT, own, ports), z3.BitVecVal(IN, 8), port_cls)


def _proxy_or_drop(ctx: Ctx, port: Any, listeners: list[tuple[int, int]], odst: Any, odport: Any) -> Any:
    """Class of a TPROXY'd SYN: the proxy listener on ``port`` (by side), or dropped if none."""
    cls: Any = z3.BitVecVal(DROPPED, 8)
    for lport, side in reversed(listeners):
        cls = z3.If(port == z3.BitVecVal(lport, 16), z3.BitVecVal(side, 8), cls)
    return _side_for(ctx, cls, odst, odport)


def _end(kind: Any, otherwise: Any) -> Any:
    """DROP → dropped, UNK → undetermined, anything else → ``otherwise``."""
    return z3.If(kind == DROP, z3.BitVecVal(DROPPED, 8),
                 z3.If(kind == UNK, z3.BitVecVal(UNDET, 8), otherwise))


def _nat_rewrite(d: Dec, dst: Any, dport: Any, redirect_to: Any) -> tuple[Any, Any]:
    new_dst = z3.If(d.kind == REDIR, redirect_to, z3.If(d.kind == DNAT, d.addr, dst))
    new_dport = z3.If(z3.Or(d.kind == REDIR, d.kind == DNAT), d.port, dport)
    return new_dst, new_dport


def _hop_peer(ctx: Ctx, rs: Ruleset, h: HopVars, sockets: list[tuple[str, Any]],
              listeners: list[tuple[int, int]]) -> HopVars:
    """A SYN from the peer: raw+mangle PREROUTING (TPROXY), nat PREROUTING, INPUT, socket."""
    iface = ctx.world.interface
    f = z3.BoolVal(False)
    pkt = Pkt(ctx.family, h.src, h.dst, h.sport, h.dport, None, None, iface, None, f)
    zero = z3.BitVecVal(0, 32)
    d1 = _pipeline(ctx, rs, [("raw", "PREROUTING"), ("mangle", "PREROUTING")], pkt, zero, zero)
    d1 = attrs.evolve(d1, kind=z3.If(z3.Or(d1.kind == REDIR, d1.kind == DNAT), z3.BitVecVal(UNK, 8), d1.kind))
    d2 = _pipeline(ctx, rs, [("nat", "PREROUTING")], pkt, d1.mark, d1.ctmark)
    tproxied = d1.kind == TPROXY
    pod_v = addr_val(ctx.pod_ip, ctx.family) if ctx.pod_ip is not None else h.dst
    new_dst, new_dport = _nat_rewrite(d2, h.dst, h.dport, pod_v)
    nat_done = z3.Or(d2.kind == REDIR, d2.kind == DNAT)
    p2 = Pkt(ctx.family, h.src, new_dst, h.sport, new_dport, None, None, iface, None, nat_done)
    d3 = _pipeline(ctx, rs, [("mangle", "INPUT"), ("filter", "INPUT"), ("nat", "INPUT")], p2,
                   d2.mark, d2.ctmark)
    d3kind = z3.If(z3.Or(d3.kind == REDIR, d3.kind == DNAT, d3.kind == TPROXY), z3.BitVecVal(UNK, 8), d3.kind)
    sock_cls, idx = _lookup(ctx, new_dst, new_dport, sockets, listeners)
    # the original destination the proxy reads back: pre-nat, or the destination TPROXY kept
    sock_cls = _side_for(ctx, sock_cls, h.dst, h.dport)
    tp_cls = _proxy_or_drop(ctx, d1.port, listeners, new_dst, new_dport)
    delivered = z3.If(tproxied, tp_cls, sock_cls)
    after_input = _end(d3kind, delivered)
    not_local = z3.And(z3.Not(tproxied), z3.Not(ctx.is_local(new_dst)))
    after_nat = _end(d2.kind, z3.If(not_local, z3.BitVecVal(UNDET, 8), after_input))
    # a DROP/UNK in nat wins even after TPROXY (the interpreter runs nat PREROUTING too)
    cls = _end(d1.kind, after_nat)
    none16 = z3.BitVecVal(0xFFFF, 16)
    odst = z3.If(tproxied, new_dst, h.dst)
    odport = z3.If(tproxied, new_dport, h.dport)
    return HopVars(src=h.src, dst=h.dst, sport=h.sport, dport=h.dport, uid=None, gid=None, cls=cls,
                   sock=z3.If(cls == DELIV, idx, none16), odst=odst, odport=odport, seen_src=h.src)


def _hop_local(ctx: Ctx, rs: Ruleset, h: HopVars, sockets: list[tuple[str, Any]],
               listeners: list[tuple[int, int]]) -> HopVars:
    """A SYN opened in the pod: OUTPUT, POSTROUTING, then (local) the lo re-entry and INPUT."""
    f = z3.BoolVal(False)
    pkt = Pkt(ctx.family, h.src, h.dst, h.sport, h.dport, h.uid, h.gid, None, ctx.is_local(h.dst), f)
    zero = z3.BitVecVal(0, 32)
    d1 = _pipeline(ctx, rs, [("raw", "OUTPUT"), ("mangle", "OUTPUT"), ("nat", "OUTPUT")], pkt, zero, zero)
    d1kind = z3.If(d1.kind == TPROXY, z3.BitVecVal(UNK, 8), d1.kind)
    loop_v = addr_val(ctx.loopback, ctx.family)
    new_dst, new_dport = _nat_rewrite(d1, h.dst, h.dport, loop_v)
    nat_done = z3.Or(d1.kind == REDIR, d1.kind == DNAT)
    local = ctx.is_local(new_dst)
    # filter OUTPUT still sees the interface routed before nat; POSTROUTING the re-routed one
    p2a = Pkt(ctx.family, h.src, new_dst, h.sport, new_dport, h.uid, h.gid, None, pkt.oif_lo, nat_done)
    d2a = _pipeline(ctx, rs, [("filter", "OUTPUT")], p2a, d1.mark, d1.ctmark)
    p2 = Pkt(ctx.family, h.src, new_dst, h.sport, new_dport, h.uid, h.gid, None, local, nat_done)
    d2b = _pipeline(ctx, rs, [("mangle", "POSTROUTING"), ("nat", "POSTROUTING")], p2, d2a.mark, d2a.ctmark)
    d2 = ite(d2a.kind != CONT, d2a, d2b)
    d2kind = z3.If(z3.Or(d2.kind == REDIR, d2.kind == DNAT, d2.kind == TPROXY), z3.BitVecVal(UNK, 8), d2.kind)
    p3 = Pkt(ctx.family, h.src, new_dst, h.sport, new_dport, None, None, "lo", None, nat_done)
    d3 = _pipeline(ctx, rs, [("raw", "PREROUTING"), ("mangle", "PREROUTING")], p3, d2.mark, d2.ctmark)
    d3kind = z3.If(z3.Or(d3.kind == REDIR, d3.kind == DNAT), z3.BitVecVal(UNK, 8), d3.kind)
    tproxied = d3kind == TPROXY
    d4 = _pipeline(ctx, rs, [("mangle", "INPUT"), ("filter", "INPUT")], p3, d3.mark, d3.ctmark)
    d4kind = z3.If(z3.Or(d4.kind == REDIR, d4.kind == DNAT, d4.kind == TPROXY), z3.BitVecVal(UNK, 8), d4.kind)
    sock_cls, idx = _lookup(ctx, new_dst, new_dport, sockets, listeners)
    sock_cls = _side_for(ctx, sock_cls, h.dst, h.dport)
    tp_cls = _proxy_or_drop(ctx, d3.port, listeners, new_dst, new_dport)
    delivered = _end(d4kind, z3.If(tproxied, tp_cls, sock_cls))
    # TPROXY without a listener drops before INPUT runs
    delivered = z3.If(z3.And(tproxied, tp_cls == DROPPED), z3.BitVecVal(DROPPED, 8), delivered)
    lo_path = _end(d3kind, delivered)
    routed = z3.If(local, lo_path, z3.BitVecVal(EGRESS, 8))
    cls = _end(d1kind, _end(d2kind, routed))
    # connect() from a loopback address (127.0.0.6) to a remote destination fails with EINVAL
    # (::6 is an ordinary address on lo and connects anywhere)
    cls = z3.If(z3.And(ctx.is_loopback_range(h.src), z3.Not(ctx.is_local(h.dst))), z3.BitVecVal(REFUSED, 8), cls)
    none16 = z3.BitVecVal(0xFFFF, 16)
    odst = z3.If(tproxied, new_dst, h.dst)
    odport = z3.If(tproxied, new_dport, h.dport)
    return HopVars(src=h.src, dst=h.dst, sport=h.sport, dport=h.dport, uid=h.uid, gid=h.gid, cls=cls,
                   sock=z3.If(cls == DELIV, idx, none16), odst=odst, odport=odport, seen_src=h.src)


def _proxy_upstream(ctx: Ctx, world: World, h: HopVars, n: int, endpoint: Any, cons: list[Any]) -> HopVars:
    """The connection the proxy opens for a proxy hop ``h`` (its class decides the side)."""
    fam = ctx.family
    w = ctx.w
    p = world.proxy
    odst, odport = h.odst, h.odport
    # outbound side: a service VIP:port goes to the chosen endpoint, anything else passes through
    out_dst: Any = odst
    out_port: Any = odport
    for svc in world.services:
        if family_of(svc.vip) != fam or not svc.endpoints:
            continue
        is_svc = z3.And(odst == addr_val(svc.vip, fam), odport == z3.BitVecVal(svc.port, 16))
        e_dst: Any = addr_val(svc.endpoints[-1].address, fam) if family_of(svc.endpoints[-1].address) == fam \
            else odst
        e_port: Any = z3.BitVecVal(svc.endpoints[-1].port, 16)
        for j in range(len(svc.endpoints) - 2, -1, -1):
            ep = svc.endpoints[j]
            if family_of(ep.address) != fam:
                continue
            e_dst = z3.If(endpoint == j, addr_val(ep.address, fam), e_dst)
            e_port = z3.If(endpoint == j, z3.BitVecVal(ep.port, 16), e_port)
        cons.append(z3.Implies(is_svc, z3.ULT(endpoint, len(svc.endpoints))))
        out_dst = z3.If(is_svc, e_dst, out_dst)
        out_port = z3.If(is_svc, e_port, out_port)
    loop_v = addr_val(ctx.loopback, fam)
    if ctx.knob_localhost is not None:
        in_dst: Any = z3.If(ctx.knob_localhost, loop_v, odst)
    else:
        in_dst = loop_v if p.inbound_endpoint == "localhost" else odst
    is_in = h.cls == IN
    dst = z3.If(is_in, in_dst, out_dst)
    dport = z3.If(is_in, odport, out_port)
    pod_v = addr_val(ctx.pod_ip, fam) if ctx.pod_ip is not None else z3.BitVecVal(0, w)
    auto_src = z3.If(ctx.is_loopback_range(dst), loop_v, z3.If(ctx.is_local(dst), dst, pod_v))
    bound = p.inbound_source(fam)
    in_src = auto_src if bound is None else addr_val(bound, fam)
    if ctx.knob_source is not None:
        passthrough = to_address("127.0.0.6" if fam == "ipv4" else "::6")
        in_src = z3.If(ctx.knob_source, addr_val(passthrough, fam), auto_src)
    src = z3.If(is_in, in_src, auto_src)
    sport = z3.BitVec(f"{ctx.tag}sport{n}", 16)
    return HopVars(src=src, dst=dst, sport=sport, dport=dport, uid=None, gid=None)
