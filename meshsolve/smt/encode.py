"""Encoding a pod world as Z3 constraints.

What is modelled
----------------
Exactly what the interpreter models, because it is the same code: the kernel semantics of
``meshsolve.semantics.kernel`` — every match and target, every hook and table of the kernel path
(``meshsolve.model.path``), the sockets, the proxy's hops — run over the Z3 domain
(``meshsolve.smt.domain``) instead of concrete values. A *flow* is a first connection (hop 0, its
destination, ports, ids and client kind free, and its socket mark when the question ranges over
marks) plus the connections the sidecar opens because of it (hops 1..K-1); each hop's SYN is a
symbolic packet.

What this module adds is the symbolic way of walking a chain. A chain is first-match: a rule's
matches are a conjunction of terms, and the chain's result is an if-then-else cascade built back
to front, so a 50,000-rule chain is one pass and one term DAG. Jumps build the callee with the rest
of the caller as its continuation; ``-g`` builds it with the caller's own continuation; ``RETURN``
and falling off a user chain continue the caller; a built-in chain ends in its policy. ``MARK``/
``CONNMARK`` do not end the traversal: the rest of the chain is rebuilt with the new mark (memoised
on the mark term). Suffixes are memoised on (chain, position, marks, continuation). A traversal
met again with other packet terms (a later hop, another property of the same world) is not built
again: it is built once over template variables and substituted (``Templates``).

Why it is sound
---------------
A match or target meshsolve does not decide (each declared in ``COARSENINGS`` in
``meshsolve.model.kinds``: unmodelled kinds and options, owner names nothing resolves) is a fresh
Boolean or an ``undetermined`` end, and a
port the kernel picks from a range is a fresh value in that range: the solver may choose either
way, so an unsatisfiable query (a proof) holds whatever they do. A satisfying model is only a
*candidate*: the analysis layer replays it in the interpreter and reports ``Unknown`` naming the
rule when the replay depends on such a choice.

Synthesis
---------
A rule slot of the synthesizer (``-m meshsolve-slot N -j MESHSOLVE-SLOT N``) stands for the
symbolic rule number N: its enabled flag, its chosen conditions (each one a registered match,
given meaning by the same ``match``) and its chosen target (each given meaning by ``effect``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

import attrs
import z3

import meshsolve.defaults as defaults
from meshsolve.errors import UnsupportedError
from meshsolve.model.collector import gc_paused
from meshsolve.model.net import Family, IPAddress, IPNetwork
from meshsolve.model.path import EPHEMERAL_PORTS, Stage
from meshsolve.model.rules import Chain, OpaqueMatch, OpaqueTarget, Rule, Ruleset, Table
from meshsolve.model.world import Socket, World
from meshsolve.semantics import kernel as K
from meshsolve.smt.domain import Z3Domain

__all__ = ["KIND", "OUTCOME", "Ctx", "FlowEncoding", "HopVars", "encode_flow"]

TCP = 6
SLOT_MODULE = "meshsolve-slot"
SLOT_TARGET = "MESHSOLVE-SLOT"
CONT, DROP, REJECT, NAT, TPROXY, UNK = K.CONT, K.DROP, K.REJECT, K.NAT, K.TPROXY, K.UNK
KIND = {"cont": CONT, "drop": DROP, "reject": REJECT, "nat": NAT, "tproxy": TPROXY, "unknown": UNK}
DELIV, REFUSED, DROPPED, EGRESS, OUT, IN, UNDET, LOOP = K.DELIV, K.REFUSED, K.DROPPED, K.EGRESS, K.OUT, K.IN, \
    K.UNDET, K.LOOP
REJECTED, FAILED = K.REJECTED, K.FAILED
OUTCOME = dict(K.OUTCOME_CODES)


def width(family: Family) -> int:
    return 32 if family == "ipv4" else 128


def addr_val(a: IPAddress, family: Family) -> z3.BitVecRef:
    return z3.BitVecVal(int(a), width(family))


def in_net(x: z3.BitVecRef, net: IPNetwork) -> z3.BoolRef:
    w = x.size()
    if (32 if net.version == 4 else 128) != w:
        return z3.BoolVal(False)
    if net.prefixlen == 0:
        return z3.BoolVal(True)
    mask = ((1 << net.prefixlen) - 1) << (w - net.prefixlen)
    return (x & z3.BitVecVal(mask, w)) == z3.BitVecVal(int(net.network_address), w)


def _port_in(var: Any, lo: int, hi: int) -> Any:
    if lo == hi:
        return var == z3.BitVecVal(lo, 16)
    if lo == 0 and hi == 65535:
        return z3.BoolVal(True)
    return z3.And(z3.UGE(var, z3.BitVecVal(lo, 16)), z3.ULE(var, z3.BitVecVal(hi, 16)))


class Ctx:
    """One encoding's state: the world, its family, the Z3 domain (fresh names, opaque choices,
    constraints), owner names, and the synthesizer's slots and proxy knobs."""

    def __init__(self, world: World, family: Family, *, names: dict[str, int] | None = None,
                 tag: str = "") -> None:
        self.tag = tag
        self.world = world
        self.family = family
        self.w = width(family)
        self.names = dict(names or {})
        self.d = Z3Domain(self.w, tag)
        self.env = K.Env.of(world, family, self.names)
        self.pod_ip = world.pod_ip(family)
        self.slots: dict[int, Any] = {}
        self.templates = Templates()
        self.eager = False  # build a traversal's template at its key's first packet (see ``Templates``)
        self.knob_localhost: Any = None  # Bool: the inbound side forwards to localhost (else original dst)
        self.knob_source: Any = None  # Bool: the inbound side binds the passthrough source (127.0.0.6 / ::6)

    @property
    def opaque(self) -> list[tuple[str, Any]]:
        return self.d.choices

    def is_local(self, x: Any) -> Any:
        return K.is_local(self.d, self.env, x)


# ------------------------------------------------------------------------------------------------
# Chains


class State(tuple):  # type: ignore[type-arg]
    """What rules change as a chain runs: (mark, ctmark, conntrack zone), with its memo key (the
    terms' ids) computed once."""

    key: tuple[int, int, int]

    def __new__(cls, mark: Any, ctmark: Any, zone: Any) -> State:
        st = super().__new__(cls, (mark, ctmark, zone))
        st.key = (mark.get_id(), ctmark.get_id(), zone.get_id())
        return st


Cont = Callable[[State], K.Decision]


class Traversal:
    """Builds the decision of one table's built-in chain for one packet (see the module docstring)."""

    def __init__(self, ctx: Ctx, table: Table, stage: Stage, pkt: K.Pkt) -> None:
        self.ctx = ctx
        self.d = ctx.d
        self.table = table
        self.stage = stage
        self.pkt = pkt
        self.memo: dict[tuple[str, int, int, int, int, int], K.Decision] = {}
        self.views: dict[tuple[int, int, int], K.Pkt] = {}
        # a rule's condition and effect depend only on the rule and the packet's state, not on
        # the continuation: a chain jumped to from many places (KUBE-MARK-MASQ) is evaluated once
        # per state, and a MARK gives the same (simplified) next state each time. A condition with
        # a fresh term (an opaque match or choice) is not kept: each pass through the rule decides it
        # anew (-m statistic)
        self.conds: dict[tuple[str, int, int, int, int], Any] = {}
        self.effects: dict[tuple[str, int, int, int, int, int], K.Effect] = {}
        self.nexts: dict[tuple[str, int, int, int, int, int], State] = {}
        self._conts: list[Cont] = []
        self._cid_of: dict[int, int] = {}
        # the states the memos are keyed on, kept alive: Z3 reuses the id of a freed term, and a memo
        # key of a freed state's ids would then answer for another state
        self._states: list[State] = []
        self.zero_port = self.d.port(0)
        self.zero_addr = self.d.addr_bits(0)
        self._hide: list[tuple[Any, Any]] | None = None  # the packet's own non-atomic marks (``simple``)

    def close(self) -> None:
        """Drop the memos: a traversal's continuations refer to it, so without this only Python's
        cyclic collector would free it and the Z3 terms it holds, long after (a pass over every
        object a large encoding made); once its decision is built nothing reads them."""
        for m in (self.memo, self.views, self.conds, self.effects, self.nexts, self._cid_of):
            m.clear()
        self._conts.clear()
        self._states.clear()

    def dec(self, kind: int, st: State, port: Any = None, addr: Any = None) -> K.Decision:
        return K.Decision(self.d.kind(kind), self.zero_addr if addr is None else addr,
                          self.zero_port if port is None else port, *st)

    def view(self, st: State) -> K.Pkt:
        key = st.key
        v = self.views.get(key)
        if v is None:
            self._states.append(st)
            v = self.views[key] = attrs.evolve(self.pkt, mark=st[0], ctmark=st[1], zone=st[2])
        return v

    def effect(self, t: Any, chain: Chain, i: int, st: State) -> K.Effect:
        key = (chain.name, i, id(t), *st.key)  # a slot's choices are targets of one position
        eff = self.effects.get(key)
        if eff is None:
            self.d.where = f"{self.table.name}::{chain.name}#{i + 1}"
            before = self.d.made
            eff = K.effect(self.d, t, self.view(st), self.ctx.env, self.stage)
            if self.d.made == before:  # an effect with a fresh choice is made anew at each pass
                self.effects[key] = eff
        return eff

    def _cid(self, k: Cont) -> int:
        hit = self._cid_of.get(id(k))
        if hit is not None:
            return hit
        self._conts.append(k)  # keeps k alive, so its id is not reused
        self._cid_of[id(k)] = len(self._conts) - 1
        return len(self._conts) - 1

    def chain(self, c: Chain, st: State) -> K.Decision:
        assert c.builtin
        return self.run(c, 0, st, self.policy(c))

    def policy(self, c: Chain) -> Cont:
        pol = c.policy or "ACCEPT"
        code = CONT if pol == "ACCEPT" else DROP if pol == "DROP" else UNK

        def end(st: State) -> K.Decision:
            return self.dec(code, st)

        return end

    def condition(self, rule: Rule, chain: Chain, i: int, st: State) -> Any:
        key = (chain.name, i, *st.key)
        hit = self.conds.get(key)
        if hit is None:
            before = self.d.made
            hit = self._condition(rule, chain, i, st)
            if self.d.made == before:  # an opaque match is a new choice at each pass: not kept
                self.conds[key] = hit
        return hit

    def _condition(self, rule: Rule, chain: Chain, i: int, st: State) -> Any:
        p = self.view(st)
        self.d.where = f"{self.table.name}::{chain.name}#{i + 1}"
        parts = []
        for m in rule.matches:
            if isinstance(m, OpaqueMatch) and m.module == SLOT_MODULE and self.ctx.slots:
                slot = self.ctx.slots[int(m.args[0])]
                conds = [z3.Implies(u, K.match(self.d, atom, p, self.ctx.env))
                         for u, atom in zip(slot.use, slot.atoms, strict=True)]
                parts.append(z3.And(slot.enabled, *conds))
            else:
                parts.append(K.match(self.d, m, p, self.ctx.env))
        return self.d.and_(*parts)

    def run(self, chain: Chain, start: int, st: State, k: Cont) -> K.Decision:
        ids, kid = st.key, self._cid(k)
        key = (chain.name, start, *ids, kid)
        hit = self.memo.get(key)
        if hit is not None:
            return hit
        self._states.append(st)
        # Scan forward for the first rule that always applies (the rest of the chain is dead) or
        # for a suffix already built; only then build the cascade back to front.
        n = len(chain.rules)
        cond_of: dict[int, Any] = {}
        end = n
        acc: K.Decision | None = None
        for j in range(start, n):
            if j > start:
                h = self.memo.get((chain.name, j, *ids, kid))
                if h is not None:
                    end, acc = j, h
                    break
            rule = chain.rules[j]
            c = self.condition(rule, chain, j, st)
            cond_of[j] = c
            if self.d.is_true(c) and self.always_acts(rule, chain, j, st):
                end = j + 1
                break
        if acc is None:
            acc = k(st) if end == n else None
        for i in range(end - 1, start - 1, -1):
            rule = chain.rules[i]
            cond = cond_of[i]
            if self.d.is_false(cond):
                if acc is not None:
                    self.memo[(chain.name, i, *ids, kid)] = acc
                continue
            taken = self.target(rule.target, chain, i, st, k, acc)
            if taken is not None:
                # acc is None only below a rule that always applies: then this is that rule
                acc = taken if acc is None else K.merge_decision(self.d, cond, taken, acc)
            if acc is not None:
                self.memo[(chain.name, i, *ids, kid)] = acc
        assert acc is not None
        self.memo[key] = acc
        return acc

    def simple(self, new: Any, old: Any) -> Any:
        """A mark after a rule: the old term when unchanged, else simplified (equal marks, one term).
        Only what the chain did to the packet is simplified: the marks the packet came in with stand
        for themselves (a placeholder during the simplification). They may be large (the mark after
        an earlier table's cascade of 50,000 rules), and simplifying them again at each MARK cost
        seconds, for nothing the memo needs."""
        if new is old:
            return old
        if self._hide is None:
            self._hide = [(v, z3.Const(f"{self.d.tag}marks!in!{f}", v.sort()))
                          for f, v in (("mark", self.pkt.mark), ("ctmark", self.pkt.ctmark), ("zone", self.pkt.zone))
                          if isinstance(v, z3.ExprRef) and v.num_args() > 0]
        if not self._hide:
            return z3.simplify(new)
        small = z3.simplify(z3.substitute(new, *self._hide))
        return z3.substitute(small, *[(ph, v) for v, ph in self._hide])

    def always_acts(self, rule: Rule, chain: Chain, i: int, st: State) -> bool:
        t = rule.target
        if isinstance(t, OpaqueTarget) and t.name == SLOT_TARGET:
            return False
        return self.effect(t, chain, i, st).kind != "next"

    def target(self, t: Any, chain: Chain, i: int, st: State, k: Cont, rest: K.Decision | None) -> K.Decision | None:
        if isinstance(t, OpaqueTarget) and t.name == SLOT_TARGET and self.ctx.slots:
            slot = self.ctx.slots[int(t.args[0])]
            assert rest is not None  # a slot's condition is never constant-true
            decs = [self.target(choice, chain, i, st, k, rest) or rest for choice in slot.targets]
            out = decs[-1]
            for j in range(len(decs) - 2, -1, -1):
                out = K.merge_decision(self.d, slot.target == j, decs[j], out)
            return out
        eff = self.effect(t, chain, i, st)
        match eff.kind:
            case "next":
                return None
            case "marks":  # simplified, so equal marks are one term and the rest of the chain is memoised
                nkey = (chain.name, i, id(t), *st.key)
                after = self.nexts.get(nkey)
                if after is None:
                    after = self.nexts[nkey] = State(self.simple(eff.mark, st[0]), self.simple(eff.ctmark, st[1]),
                                                     self.simple(eff.zone, st[2]))
                return self.run(chain, i + 1, after, k)
            case "verdict":
                after = State(eff.mark, st[1], st[2]) if eff.code == TPROXY else st
                return self.dec(eff.code, after, port=eff.port, addr=eff.addr)
            case "return":
                if chain.builtin:
                    return self.policy(chain)(st)
                return k(st)
            case "jump":
                callee = self.table.chain(eff.chain)
                if callee is None:
                    raise UnsupportedError(f"{self.table.name}::{chain.name}#{i + 1}: jump to missing chain "
                                           f"{eff.chain}")

                def back(s2: State, _c: Chain = chain, _i: int = i, _k: Cont = k) -> K.Decision:
                    return self.run(_c, _i + 1, s2, _k)

                return self.run(callee, 0, st, back)
            case "goto":
                callee = self.table.chain(eff.chain)
                if callee is None:
                    raise UnsupportedError(f"{self.table.name}::{chain.name}#{i + 1}: goto to missing chain "
                                           f"{eff.chain}")
                return self.run(callee, 0, st, k)
        raise AssertionError(f"unknown effect {eff.kind}")  # pragma: no cover


def table_decision(ctx: Ctx, ruleset: Ruleset, stage: Stage, pkt: K.Pkt) -> K.Decision:
    """One table's decision at one stage (an absent or empty accepting chain continues)."""
    t = ruleset.table(stage.table)
    c = ruleset.start(stage)
    if t is None or c is None or (not c.rules and c.policy == "ACCEPT"):
        return K.Decision(z3.BitVecVal(CONT, 8), z3.BitVecVal(0, ctx.w), z3.BitVecVal(0, 16), pkt.mark, pkt.ctmark,
                          pkt.zone)
    zone = pkt.zone if not isinstance(pkt.zone, int) else z3.BitVecVal(pkt.zone, 16)
    return ctx.templates.decision(ctx, t, c, stage, attrs.evolve(pkt, zone=zone))


# ------------------------------------------------------------------------------------------------
# Traversals built once, substituted per hop

#: The packet fields that hold terms (a socket's view holds three more).
_TERM_FIELDS = ("src", "dst", "sport", "dport", "oif_lo", "uid", "gid", "mark", "ctmark", "natted", "zone",
                "conn_zone")
_SK_FIELDS = ("exists", "wildcard", "transparent")
_DEC_FIELDS = ("kind", "addr", "port", "mark", "ctmark", "zone")

Template = tuple[Any, list[Any], list[tuple[str, Any]]]

#: Whether traversals are templated (the tests compare with building every one directly).
TEMPLATED = True


def _value_key(v: Any) -> tuple[Any, ...] | None:
    """What a field's value contributes to a template's key: the value itself when it is a Python
    value (it decides the traversal's shape: no owner, no output interface), None for a Z3 term,
    a constant included: a template variable stands for it. A constant is not folded into the
    template, so that one template serves the packets that differ in it (the app's uid, the
    proxy's, any uid): the chains that depend on it are small; the large ones are the same."""
    if v is None or isinstance(v, (bool, int)):
        return ("py", v)
    return None


class Templates:
    """Traversals of a table's built-in chain built once over *template* variables for the
    packet's non-constant terms, then instantiated per packet with ``z3.substitute``: the hops of a
    flow traverse the same chains with packets that differ only in their terms (a proxy's upstream
    connection to another destination), and so do the encodings of one world's properties; building
    a large chain is most of an encoding's time.

    A template's key is the table, chain and stage, the packet's Python values and constants (a
    constant folds while the chain is built, so a packet with another constant gets its own
    template) and which fields are terms. A key's first packet is built directly, as without
    templates, unless the encoding is ``eager`` (several hops, or not the world's first encoding:
    more packets of the key are likely); later packets substitute into the template. The fresh
    constants a traversal makes (the opaque choices of matches meshsolve does not decide) are
    replaced by new ones at each instance, with the same reasons: hops stay independent. A
    traversal that made a fresh constant that is not a choice is never templated (built directly
    each time). One ``Templates`` serves encodings of one world, family and owner names without
    synthesis slots or knobs (``shared_templates``)."""

    def __init__(self) -> None:
        self.seen: set[tuple[Any, ...]] = set()
        self.built: dict[tuple[Any, ...], Template | None] = {}
        self.encodings = 0
        self._n = 0

    def decision(self, ctx: Ctx, t: Table, c: Chain, stage: Stage, pkt: K.Pkt) -> K.Decision:
        key: list[Any] = [t.name, c.name, stage, pkt.protocol, pkt.iif, pkt.entry, pkt.before_ct, pkt.state,
                          pkt.flags, pkt.sk is None]
        terms: list[tuple[str, Any]] = []
        fields = [(f, getattr(pkt, f)) for f in _TERM_FIELDS]
        if pkt.sk is not None:
            fields += [("sk." + f, getattr(pkt.sk, f)) for f in _SK_FIELDS]
        for f, v in fields:
            vk = _value_key(v)
            key.append(vk if vk is not None else ("term", f, v.sort().sexpr()))
            if vk is None:
                terms.append((f, v))
        k = tuple(key)
        if not TEMPLATED or not terms or not (ctx.eager or k in self.seen):
            self.seen.add(k)
            return _direct(ctx, t, c, stage, pkt)
        if k not in self.built:
            self.built[k] = self._build(ctx, t, c, stage, pkt, terms)
        tpl = self.built[k]
        if tpl is None:
            return _direct(ctx, t, c, stage, pkt)
        return _instance(ctx, tpl, [v for _f, v in terms])

    def _build(self, ctx: Ctx, t: Table, c: Chain, stage: Stage, pkt: K.Pkt, terms: list[tuple[str, Any]]
               ) -> Template | None:
        d = ctx.d
        self._n += 1
        tvars = [z3.Const(f"template!{self._n}!{f}", v.sort()) for f, v in terms]
        plain = {f: tv for (f, _v), tv in zip(terms, tvars, strict=True) if not f.startswith("sk.")}
        sk = pkt.sk
        if sk is not None:
            sk = attrs.evolve(sk, **{f[3:]: tv for (f, _v), tv in zip(terms, tvars, strict=True)
                                     if f.startswith("sk.")})
        made, chosen = d.made, len(d.choices)
        dec = _direct(ctx, t, c, stage, attrs.evolve(pkt, sk=sk, **plain))
        fresh = d.choices[chosen:]
        del d.choices[chosen:]  # the template's own choices belong to no packet: each instance renews them
        if d.made - made != len(fresh):
            return None
        # one term holds the whole decision, so that one substitution shares its work across fields
        sorts = [getattr(dec, f).sort() for f in _DEC_FIELDS]
        whole = z3.Function(f"decision!{self._n}", *sorts, z3.BoolSort())(*(getattr(dec, f) for f in _DEC_FIELDS))
        return whole, tvars, fresh


def _direct(ctx: Ctx, t: Table, c: Chain, stage: Stage, pkt: K.Pkt) -> K.Decision:
    tr = Traversal(ctx, t, stage, pkt)
    try:
        return tr.chain(c, State(pkt.mark, pkt.ctmark, pkt.zone))
    finally:
        tr.close()


def _instance(ctx: Ctx, tpl: Template, values: list[Any]) -> K.Decision:
    whole, tvars, fresh = tpl
    pairs = list(zip(tvars, values, strict=True))
    for why, old in fresh:
        pairs.append((old, ctx.d.renew(why, old.sort())))
    got = z3.substitute(whole, *pairs)
    return K.Decision(*(got.arg(i) for i in range(len(_DEC_FIELDS))))


_TEMPLATES: list[tuple[World, tuple[Any, ...], Templates]] = []
_TEMPLATES_SIZE = 4


#: Worlds several encodings of which are coming (``expect_several``), the newest first.
_SEVERAL: list[World] = []


def expect_several(world: World) -> None:
    """Say that several encodings of ``world`` will follow (a set of properties): then its first
    encoding builds its traversals as templates too, and the later ones instantiate them rather
    than build the large chains again."""
    if not any(w is world for w in _SEVERAL):
        _SEVERAL.insert(0, world)
        del _SEVERAL[_TEMPLATES_SIZE:]


def shared_templates(world: World, key: tuple[Any, ...]) -> Templates:
    """The templates of ``world``'s encodings with ``key`` (family and owner names)."""
    for w, k, tpl in _TEMPLATES:
        if w is world and k == key:
            return tpl
    tpl = Templates()
    _TEMPLATES.insert(0, (world, key, tpl))
    del _TEMPLATES[_TEMPLATES_SIZE:]
    return tpl


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
    cls: Any = None  # BV8 hop class (DELIV/REFUSED/DROPPED/EGRESS/OUT/IN/UNDET/REJECTED/FAILED)
    sock: Any = None  # BV16 app socket index (valid when DELIV)
    odst: Any = None  # original destination (pre-NAT) for a proxy hop
    odport: Any = None
    seen_src: Any = None  # source address the accepting socket sees
    mark: Any = None  # BV32 SO_MARK of the client's socket (hop 0 of an encoding with ``marks``), else None
    inner: Any = None  # BV16 tunnel target port hop 0 names (0: none) where the proxy has a tunnel listener


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
    sockets: list[tuple[str, Socket]]  # (app name, Socket) by index


_CACHE: list[tuple[World, tuple[Any, ...], tuple[FlowEncoding, HopVars, Any]]] = []
_CACHE_SIZE = 8


def encode_flow(world: World, family: Family, *, hops: int = defaults.HOPS,
                names: dict[str, int] | None = None, tag: str = "", share_hop0: bool = True,
                setup: Callable[[Ctx], None] | None = None, first: str = "any", marks: bool = False
                ) -> tuple[FlowEncoding, HopVars, Any]:
    """Encode a flow whose hop 0 is free; see ``_encode_flow``. Encodings are reused for the same
    world object (questions about one world share one encoding: building it is most of the work).
    ``first`` limits the first connection to one that arrives from the ``"peer"`` or is opened
    ``"local"``ly (only that path is encoded), or leaves both (``"any"``). ``marks``: the first
    connection's socket mark is free (``HopVars.mark``, for the scope to constrain); else it has none."""
    if setup is not None:
        with gc_paused():
            return _encode_flow(world, family, hops=hops, names=names, tag=tag, share_hop0=share_hop0,
                                setup=setup, first=first, marks=marks)
    key = (family, hops, tuple(sorted((names or {}).items())), tag, share_hop0, first, marks)
    for w, k, enc in _CACHE:
        if w is world and k == key:
            return enc
    with gc_paused():
        enc = _encode_flow(world, family, hops=hops, names=names, tag=tag, share_hop0=share_hop0, first=first,
                           marks=marks)
    _CACHE.insert(0, (world, key, enc))
    del _CACHE[_CACHE_SIZE:]
    return enc


def _encode_flow(world: World, family: Family, *, hops: int = defaults.HOPS,
                 names: dict[str, int] | None = None, tag: str = "", share_hop0: bool = True,
                 setup: Callable[[Ctx], None] | None = None, first: str = "any", marks: bool = False
                 ) -> tuple[FlowEncoding, HopVars, Any]:
    """Encode a flow whose hop 0 is free (the caller constrains it with a ``Scope``).

    Returns the encoding, hop 0's variables and a BV8 ``client`` code (0 peer, 1 local). Hop 0's
    variables and the endpoint choice have fixed names, so two encodings (``tag`` keeps their
    internal variables apart) of two worlds talk about the same first connection.
    """
    ctx = Ctx(world, family, names=names, tag=tag)
    if setup is None:
        ctx.templates = shared_templates(world, (family, tuple(sorted((names or {}).items()))))
    ctx.eager = hops > 1 or ctx.templates.encodings > 0 or any(w is world for w in _SEVERAL)
    ctx.templates.encodings += 1
    if setup is not None:
        setup(ctx)
        if ctx.knob_source is not None and family == "ipv6" and world.proxy.inbound_source_v6 is None:
            # the passthrough source ::6 is on lo exactly when the knob binds it
            ctx.env = attrs.evolve(ctx.env, cond_local=((ipaddress.ip_network("::6/128"), ctx.knob_source),))
    d = ctx.d
    v0 = "" if share_hop0 else tag
    w = ctx.w
    rs = world.rules.for_family(family)
    if ctx.pod_ip is None:
        raise UnsupportedError(f"the pod has no {family} address")
    cons: list[Any] = []
    client = z3.BitVec(f"{v0}client", 8)  # 0: peer, 1: local process
    cons.append(z3.ULE(client, 1))
    endpoint = z3.BitVec(f"{v0}endpoint", 16)
    h0 = HopVars(src=z3.BitVec(f"{v0}src0", w), dst=z3.BitVec(f"{v0}dst0", w), sport=z3.BitVec(f"{v0}sport0", 16),
                 dport=z3.BitVec(f"{v0}dport0", 16), uid=z3.BitVec(f"{v0}uid0", 32), gid=z3.BitVec(f"{v0}gid0", 32),
                 mark=z3.BitVec(f"{v0}mark0", 32) if marks else None,
                 inner=z3.BitVec(f"{v0}inner0", 16) if world.proxy.tunnel_port in world.proxy.own_listeners else None)
    is_peer = client == 0
    if world.peer_ip(family) is None:
        cons.append(z3.Not(is_peer))
    # a peer connects to the pod's address (anything else would be forwarded, which is not modelled)
    cons.append(z3.Implies(is_peer, h0.dst == addr_val(ctx.pod_ip, family)))
    if first == "peer":
        cons.append(is_peer)
    elif first == "local":
        cons.append(z3.Not(is_peer))

    def tr(stage: Stage, pkt: K.Pkt) -> K.Decision:
        return table_decision(ctx, rs, stage, pkt)

    # a peer connects from ``src0``: the question's scope says which address (the world's peer by default)
    start = K.First(is_peer, h0.dst, h0.dport, h0.sport, h0.uid, h0.gid, endpoint, peer_src=h0.src,
                    mark=0 if h0.mark is None else h0.mark, inner=0 if h0.inner is None else h0.inner)
    knobs = K.Knobs(ctx.knob_localhost, ctx.knob_source)
    def sport(n: int) -> Any:  # the proxy's upstream source ports: the kernel picks them
        v = z3.BitVec(f"{tag}sport{n}", 16)
        cons.append(z3.And(z3.UGE(v, EPHEMERAL_PORTS[0]), z3.ULE(v, EPHEMERAL_PORTS[1])))
        return v

    records = K.run_flow(d, ctx.env, tr, start, hops=hops, knobs=knobs, paths=first, sports=sport)
    hv: list[HopVars] = []
    for r in records:
        leg = r.leg
        hv.append(HopVars(src=None, dst=leg.dst, sport=None, dport=leg.dport, uid=None, gid=None, cls=leg.cls,
                          sock=leg.sock, odst=leg.odst, odport=leg.odport, seen_src=leg.seen_src))
    hv[0].src, hv[0].sport, hv[0].uid, hv[0].gid, hv[0].mark = h0.src, h0.sport, h0.uid, h0.gid, h0.mark
    hv[0].inner = h0.inner
    hv[0].dst, hv[0].dport = h0.dst, h0.dport
    active = [r.active for r in records]
    loop_at = [r.loop for r in records]
    repeat = [r.repeat for r in records]
    # outcome: the first active hop that ends, or a loop
    none16 = z3.BitVecVal(K.NO_SOCKET, 16)
    outcome: Any = z3.BitVecVal(LOOP, 8)
    fsock: Any = none16
    fsrc: Any = z3.BitVecVal(0, w)
    for n in range(len(records) - 1, -1, -1):
        leg = records[n].leg
        ends = d.and_(active[n], d.not_(d.or_(d.eq(leg.cls, OUT), d.eq(leg.cls, IN))))
        outcome = d.ite(loop_at[n], z3.BitVecVal(LOOP, 8), d.ite(ends, leg.cls, outcome))
        fsock = d.ite(loop_at[n], none16, d.ite(ends, d.ite(d.eq(leg.cls, DELIV), leg.sock, none16), fsock))
        fsrc = d.ite(ends, leg.seen_src, fsrc)
    cons.extend(d.constraints)
    enc = FlowEncoding(ctx=ctx, hops=hv, active=active, loop_at=loop_at, repeat=repeat, outcome=outcome,
                       final_sock=fsock, final_src=fsrc, endpoint=endpoint, constraints=cons,
                       sockets=list(ctx.env.sockets))
    return enc, h0, client
