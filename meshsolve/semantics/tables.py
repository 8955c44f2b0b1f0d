"""What one rule does — its matches and its target — written once over a value domain.

``match`` gives the meaning of every match kind and ``effect`` the meaning of every target kind, as
functions over a domain (``meshsolve.semantics.domain``): the interpreter's chain walk
(``meshsolve.semantics.netfilter``) and the solver's (``meshsolve.smt.encode``) both call them, and
``MATCHES``/``EFFECTS`` are keyed by the kind registry (``meshsolve.model.kinds``).

A first packet is the SYN of a connection (flags ``SYN``). Conntrack state: before conntrack has
looked the packet up (``raw``) a first packet has no entry and shows ``INVALID``, unless it carries
the entry of its OUTPUT pass (the loopback re-entry: ``NEW``); after, ``NEW``, plus ``DNAT`` (``SNAT``) once nat
rewrote its destination (source). ``-m connmark`` (negated too) and ``CONNMARK`` need an entry to read:
they never act in ``raw`` on a packet without one (``has_entry``). ``-m owner`` sees the socket of
the process that opened the connection; a packet without a local socket matches only an
all-negated owner match, as ``xt_owner`` does; its ids come decoded from the model
(``OwnerMatch.uid_range``), names resolved by the world. A match the model cannot decide is
``opaque`` in the domain (undetermined for the interpreter, a free choice for the solver), and a
target it cannot decide ends the table undetermined: each such case is looked up in
``COARSENINGS`` (``meshsolve.model.kinds``), which must declare it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from meshsolve.errors import WorldError
from meshsolve.model.kinds import coarsening
from meshsolve.model.path import Stage
from meshsolve.model.rules import (
    Accept,
    AddressSet,
    AddrtypeMatch,
    CommentMatch,
    ConnmarkMatch,
    ConnmarkTarget,
    ConntrackMatch,
    CtTarget,
    Destination,
    Dnat,
    Drop,
    FamilyMatch,
    Goto,
    InInterface,
    InterfaceSet,
    Jump,
    Log,
    MarkMatch,
    MarkRanges,
    MarkStatements,
    Masquerade,
    Match,
    MultiportMatch,
    OpaqueMatch,
    OpaqueTarget,
    OutInterface,
    OwnerMatch,
    PortMatch,
    PortPair,
    Protocol,
    ProtocolSet,
    Redirect,
    Reject,
    Return,
    SetMark,
    SetMatch,
    Snat,
    SocketMatch,
    SocketOwner,
    Source,
    StateMatch,
    Target,
    Tproxy,
    TproxySocket,
    Trace,
)
from meshsolve.semantics.domain import Domain
from meshsolve.semantics.env import Env, Pkt, is_local, lookup

__all__ = [
    "EFFECTS",
    "MATCHES",
    "Decision",
    "Effect",
    "effect",
    "match",
    "merge_decision",
]

_M32 = 0xFFFFFFFF
_META = {"meta": True}  # attrs metadata: concrete-only bookkeeping, not merged symbolically

# Decision kinds of one table traversal.
CONT, DROP, REJECT, NAT, TPROXY, UNK = range(6)
# The proxy's sides, as a listener's class (shared with the connection outcomes in ``kernel``).
OUT, IN = 4, 5

# ------------------------------------------------------------------------------------------------
# The world, as the kernel sees it for one address family


# ------------------------------------------------------------------------------------------------
# Packets and decisions


@attrs.define
class Decision:
    """The result of one table traversal: ``kind`` (CONT/DROP/REJECT/NAT/TPROXY/UNK), the NAT or
    TPROXY address and port, the marks and conntrack zone after the table; ``steps``/``rule``/
    ``reason`` are the concrete traversal's account (rules that held, the deciding rule, why
    undetermined)."""

    kind: Any
    addr: Any
    port: Any
    mark: Any
    ctmark: Any
    zone: Any
    steps: Any = attrs.field(default=None, metadata=_META)
    rule: Any = attrs.field(default=None, metadata=_META)
    reason: Any = attrs.field(default=None, metadata=_META)


def merge_decision(d: Domain, c: Any, a: Decision, b: Decision) -> Decision:
    """``a`` where ``c`` holds, else ``b`` (symbolic traversals build chains from these)."""
    if d.is_true(c):
        return a
    if d.is_false(c):
        return b
    return Decision(d.ite(c, a.kind, b.kind), d.ite(c, a.addr, b.addr), d.ite(c, a.port, b.port),
                    d.ite(c, a.mark, b.mark), d.ite(c, a.ctmark, b.ctmark), d.ite(c, a.zone, b.zone))


# ------------------------------------------------------------------------------------------------
# Matches: one function per kind, over the domain


def _iface_name(name: str, actual: str) -> bool:
    return actual.startswith(name[:-1]) if name.endswith("+") else actual == name


def _undecided(d: Domain, kind: type, option: str, text: str) -> Any:
    """A match the model leaves undecided (``text`` says which part of the rule): only what
    ``COARSENINGS`` declares as (``kind``, ``option``) may be, else ``KeyError``."""
    coarsening(kind, option)
    return d.opaque(text)


def _unknown(kind: type, option: str, text: str) -> Effect:
    """A target the model leaves undecided, declared in ``COARSENINGS`` as for ``_undecided``."""
    coarsening(kind, option)
    return Effect("verdict", UNK, why=text)


def _ids(decoded: tuple[int, int] | None, token: str, env: Env) -> tuple[int, int] | None:
    """An owner id range as the model decoded it, or a name the world resolves; None: neither."""
    if decoded is not None:
        return decoded
    v = env.name_id(token.strip())
    return None if v is None else (v, v)


def _m_source(d: Domain, m: Source, p: Pkt, env: Env) -> Any:
    return _neg(d, d.in_net(p.src, m.net), m.negated)


def _m_destination(d: Domain, m: Destination, p: Pkt, env: Env) -> Any:
    return _neg(d, d.in_net(p.dst, m.net), m.negated)


def _m_in(d: Domain, m: InInterface, p: Pkt, env: Env) -> Any:
    return d.const(_iface_name(m.name, p.iif or "") != m.negated)


def _m_out(d: Domain, m: OutInterface, p: Pkt, env: Env) -> Any:
    if p.oif_lo is None:
        return d.const(m.negated)
    on = d.ite(p.oif_lo, d.const(_iface_name(m.name, "lo")), d.const(_iface_name(m.name, env.iface)))
    return _neg(d, on, m.negated)


def _m_protocol(d: Domain, m: Protocol, p: Pkt, env: Env) -> Any:
    return d.const((m.name == "all" or m.name == p.protocol) != m.negated)


def _m_port(d: Domain, m: PortMatch, p: Pkt, env: Env) -> Any:
    if m.module != p.protocol:
        return d.const(False)
    parts: list[Any] = []
    if m.tcp_flags is not None:
        mask, comp, negated = m.tcp_flags
        parts.append(d.const(((p.flags & mask) == comp) != negated))
    if m.sport is not None:
        parts.append(_neg(d, d.in_range(p.sport, m.sport.lo, m.sport.hi, "source port"), m.sport_negated))
    if m.dport is not None:
        parts.append(_neg(d, d.in_range(p.dport, m.dport.lo, m.dport.hi, "destination port"), m.dport_negated))
    if m.unmodelled:
        parts.append(_undecided(d, PortMatch, "--tcp-option",
                                f"{m.module} option {' '.join(m.unmodelled)} is not modelled"))
    return d.and_(*parts)


def _m_multiport(d: Domain, m: MultiportMatch, p: Pkt, env: Env) -> Any:
    if p.protocol not in ("tcp", "udp", "sctp", "udplite", "dccp"):
        return d.const(False)
    dhit = d.or_(*[d.in_range(p.dport, r.lo, r.hi, "destination port") for r in m.ports])
    if m.kind == "dports":
        return _neg(d, dhit, m.negated)
    shit = d.or_(*[d.in_range(p.sport, r.lo, r.hi, "source port") for r in m.ports])
    return _neg(d, shit if m.kind == "sports" else d.or_(shit, dhit), m.negated)


def _m_owner(d: Domain, m: OwnerMatch, p: Pkt, env: Env) -> Any:
    if p.uid is None or p.gid is None:
        # xt_owner without a local socket: holds only if every given option is negated
        given = [(m.uid is not None, m.uid_negated), (m.gid is not None, m.gid_negated),
                 (m.socket_exists is not None, m.socket_exists is False)]
        return d.const(all(neg for present, neg in given if present))
    parts: list[Any] = []
    if m.uid is not None:
        rng = _ids(m.uid_range, m.uid, env)
        hit = d.in_range(p.uid, *rng, "uid") if rng else \
            _undecided(d, OwnerMatch, "NAME", f"owner name {m.uid!r} is not resolved")
        parts.append(_neg(d, hit, m.uid_negated))
    if m.gid is not None:
        rng = _ids(m.gid_range, m.gid, env)
        if rng is None:
            hit = _undecided(d, OwnerMatch, "NAME", f"group name {m.gid!r} is not resolved")
        elif m.suppl_groups:
            # the primary group is one of the process's groups; others are not in the world
            primary = d.in_range(p.gid, *rng, "gid")
            hit = d.or_(primary, _undecided(d, OwnerMatch, "--suppl-groups",
                                            "--suppl-groups: the process's supplementary groups are not modelled"))
        else:
            hit = d.in_range(p.gid, *rng, "gid")
        parts.append(_neg(d, hit, m.gid_negated))
    if m.socket_exists is not None:
        parts.append(d.const(m.socket_exists))
    return d.and_(*parts)


def _m_mark(d: Domain, m: MarkMatch, p: Pkt, env: Env) -> Any:
    # xt_mark compares the masked mark with the value as given: a value with bits outside the mask
    # never matches (seen on the kernel: --mark 0x539/0xff does not match mark 0x539)
    return _neg(d, d.eq(p.mark & m.mask, d.u32(m.value)), m.negated)


def _m_connmark(d: Domain, m: ConnmarkMatch, p: Pkt, env: Env) -> Any:
    # without a conntrack entry the match fails, negated or not; a value with bits outside the mask
    # never equals (xt_connmark compares (ctmark & mask) == value)
    return d.and_(has_entry(d, p), _neg(d, d.eq(p.ctmark & m.mask, d.u32(m.value)), m.negated))


def has_entry(d: Domain, p: Pkt) -> Any:
    """Whether the packet carries a conntrack entry a connmark match or target can read: none before
    conntrack looked it up (``raw``), unless it re-enters with its earlier pass's entry or a ``CT``
    target of this pass gave it a template (a zone); after, unless conntrack found nothing
    (``INVALID``: a later packet in another zone than its connection's)."""
    if p.before_ct and not p.entry:
        return d.not_(d.eq(p.zone, 0))
    return found_in_zone(d, p)


def ct_states(d: Domain, p: Pkt) -> dict[str, Any]:
    """The conntrack states a packet shows at the current stage: none looked up yet (before
    conntrack, without the entry of an earlier pass): ``INVALID``, or ``NEW`` after a ``CT --zone``
    target gave it a template; else its state, plus ``DNAT`` (``SNAT``) once nat rewrote its
    destination (source) — unless a later packet was looked up in another zone than its
    connection's, where conntrack finds nothing it belongs to (``INVALID``)."""
    if p.before_ct and not p.entry:
        # a CT target's template (a zone) is conntrack's NEW already; nothing at all is INVALID
        template = d.not_(d.eq(p.zone, 0))
        return {"INVALID": d.not_(template), "NEW": template}
    found = found_in_zone(d, p)
    return {p.state: found, "INVALID": d.not_(found), "DNAT": d.and_(found, p.natted),
            "SNAT": d.and_(found, p.snatted)}


def found_in_zone(d: Domain, p: Pkt) -> Any:
    """Whether conntrack finds the packet's connection: a first packet creates it; a later one is
    looked up in the zone the raw table gave it, which must be its connection's."""
    if p.conn_zone is None:
        return d.const(True)
    return d.eq(p.zone, p.conn_zone)


def _states_hit(d: Domain, states: Sequence[str], p: Pkt) -> Any:
    have = ct_states(d, p)
    return d.or_(*[have[s] for s in states if s in have])


def _m_conntrack(d: Domain, m: ConntrackMatch, p: Pkt, env: Env) -> Any:
    if m.extra:
        return _undecided(d, ConntrackMatch, "options", f"conntrack options {' '.join(m.extra)} are not modelled")
    return _neg(d, _states_hit(d, m.states, p), m.negated)


def _m_state(d: Domain, m: StateMatch, p: Pkt, env: Env) -> Any:
    return _neg(d, _states_hit(d, [s for s in m.states if s not in ("SNAT", "DNAT")], p), m.negated)


def _addr_types(d: Domain, x: Any, env: Env) -> dict[str, Any]:
    """Which ``-m addrtype`` types hold for an address (the kernel's route type for it)."""
    unspec = d.eq(x, d.addr(ipaddress.ip_address("0.0.0.0" if env.family == "ipv4" else "::")))
    local = d.and_(d.not_(unspec), is_local(d, env, x))
    mc = d.in_net(x, ipaddress.ip_network("224.0.0.0/4" if env.family == "ipv4" else "ff00::/8"))
    bc = d.eq(x, d.addr(ipaddress.IPv4Address("255.255.255.255"))) if env.family == "ipv4" else d.const(False)
    other = d.not_(d.or_(unspec, local, mc, bc))
    return {"UNSPEC": unspec, "LOCAL": local, "MULTICAST": mc, "BROADCAST": bc, "UNICAST": other}


def _m_addrtype(d: Domain, m: AddrtypeMatch, p: Pkt, env: Env) -> Any:
    if m.limit_iface_in or m.limit_iface_out:
        return _undecided(d, AddrtypeMatch, "--limit-iface", "addrtype --limit-iface-* is not modelled")
    parts: list[Any] = []
    for want, negated, x in ((m.src_type, m.src_negated, p.src), (m.dst_type, m.dst_negated, p.dst)):
        if want is None:
            continue
        have = _addr_types(d, x, env)
        names = [t.strip().upper() for t in want.split(",")]
        hit = d.or_(*[have[t] if t in have else _undecided(d, AddrtypeMatch, "TYPE", f"addrtype {t} is not modelled")
                      for t in names])
        parts.append(_neg(d, hit, negated))
    return d.and_(*parts)


def _m_comment(d: Domain, m: CommentMatch, p: Pkt, env: Env) -> Any:
    return d.const(True)


_SOCKET_OPTIONS = frozenset({"--transparent", "--nowildcard"})  # what ``_m_socket`` decides


def _m_socket(d: Domain, m: SocketMatch, p: Pkt, env: Env) -> Any:
    """``-m socket``: the packet belongs to a local socket. For a SYN that is the listener its
    destination finds, which a plain match ignores when it is bound to a wildcard address (unless
    ``--nowildcard``); later packets belong to their connection's socket. ``--transparent`` needs an
    ``IP_TRANSPARENT`` socket (seen on the kernel)."""
    opts = set(m.options)
    undecided = sorted(opts - _SOCKET_OPTIONS)
    if undecided:
        return _undecided(d, SocketMatch, undecided[0], f"-m socket {' '.join(m.options)} is not modelled")
    sk = p.sk
    if sk is None:
        _cls, _idx, _owner, sk = lookup(d, env, p.dst, p.dport, p.protocol)
    hit = sk.exists if "--nowildcard" in opts else d.and_(sk.exists, d.not_(sk.wildcard))
    if "--transparent" in opts:
        hit = d.and_(hit, sk.transparent)
    return hit


def _m_set(d: Domain, m: SetMatch, p: Pkt, env: Env) -> Any:
    """``-m set`` / nft ``@NAME``: the address is one of the set's members, as the world gives them
    (a set of the other family holds none of the packet's); a set the world does not give is
    undecided (its members are never guessed)."""
    given = env.world.ip_set(m.name)
    if given is None:
        return _undecided(d, SetMatch, "members", f"the members of set {m.name} are not given")
    x = p.src if m.direction == "src" else p.dst
    fam = 4 if env.family == "ipv4" else 6
    return _neg(d, d.or_(*[d.in_net(x, n) for n in given.members if n.version == fam]), m.negated)


def _m_opaque(d: Domain, m: OpaqueMatch, p: Pkt, env: Env) -> Any:
    return _undecided(d, OpaqueMatch, "", f"-m {m.module} {' '.join(m.args)}".rstrip() + " is not modelled")


def _neg(d: Domain, x: Any, negated: bool) -> Any:
    return d.not_(x) if negated else x


# --- nftables-only kinds (meshsolve.model.nftrules) ---------------------------------------------


def _m_family(d: Domain, m: FamilyMatch, p: Pkt, env: Env) -> Any:
    return d.const((env.family == m.family) != m.negated)


def _m_address_set(d: Domain, m: AddressSet, p: Pkt, env: Env) -> Any:
    x = p.src if m.direction == "src" else p.dst
    return _neg(d, d.or_(*[d.in_net(x, n) for n in m.nets]), m.negated)


def _iface_in_set(d: Domain, names: tuple[str, ...], actual: str) -> Any:
    return d.const(any(_iface_name(n, actual) for n in names))


def _m_interface_set(d: Domain, m: InterfaceSet, p: Pkt, env: Env) -> Any:
    """nft reads the name of a missing interface as the empty name (``iifname`` on output hooks)."""
    if m.direction == "in":
        hit = _iface_in_set(d, m.names, p.iif or "")
    elif p.oif_lo is None:
        hit = _iface_in_set(d, m.names, "")
    else:
        hit = d.ite(p.oif_lo, _iface_in_set(d, m.names, "lo"), _iface_in_set(d, m.names, env.iface))
    return _neg(d, hit, m.negated)


def _m_protocol_set(d: Domain, m: ProtocolSet, p: Pkt, env: Env) -> Any:
    return d.const((p.protocol in m.names) != m.negated)


_PORT_PROTOCOLS = ("tcp", "udp", "sctp", "udplite", "dccp")


def _m_port_pair(d: Domain, m: PortPair, p: Pkt, env: Env) -> Any:
    if p.protocol != m.protocol and not (m.protocol == "th" and p.protocol in _PORT_PROTOCOLS):
        return d.const(False)
    both = d.and_(d.in_range(p.sport, m.sport, m.sport, "source port"),
                  d.in_range(p.dport, m.dport, m.dport, "destination port"))
    return _neg(d, both, m.negated)


def _m_socket_owner(d: Domain, m: SocketOwner, p: Pkt, env: Env) -> Any:
    """``meta skuid``/``skgid``: without a local socket nft ends the rule (no match, ``!=`` too)."""
    x = p.uid if m.key == "uid" else p.gid
    if x is None:
        return d.const(False)
    hits = []
    for token, decoded in zip(m.ids, m.ranges, strict=True):
        rng = _ids(decoded, token, env)
        hits.append(d.in_range(x, *rng, m.key) if rng else
                    _undecided(d, SocketOwner, "NAME", f"{m.key} name {token!r} is not resolved"))
    return _neg(d, d.or_(*hits), m.negated)


def _m_mark_ranges(d: Domain, m: MarkRanges, p: Pkt, env: Env) -> Any:
    x = (p.mark if m.source == "meta" else p.ctmark) & m.mask
    hits = [d.eq(x, d.u32(lo)) if lo == hi else d.and_(_u32_ge(d, x, lo), _u32_le(d, x, hi)) for lo, hi in m.ranges]
    if m.source == "meta":
        return _neg(d, d.or_(*hits), m.negated)
    return d.and_(has_entry(d, p), _neg(d, d.or_(*hits), m.negated))


def _u32_ge(d: Domain, x: Any, v: int) -> Any:
    return _cmp(d, x, v, ge=True)


def _u32_le(d: Domain, x: Any, v: int) -> Any:
    return _cmp(d, x, v, ge=False)


def _cmp(d: Domain, x: Any, v: int, *, ge: bool) -> Any:
    """Unsigned ``x >= v`` (``ge``) or ``x <= v`` over 32 bits with the domain's bit operations: the
    most significant bit where ``x`` and ``v`` differ decides (all equal: holds). Built from the least
    significant bit up, so the most significant bit is the outermost test."""
    out: Any = d.const(True)
    for i in range(32):
        bit = 1 << i
        one = d.eq(x & bit, d.u32(bit))
        x_wins = one if ge else d.not_(one)  # x's bit is the larger (ge) / smaller (le) one
        out = d.or_(x_wins, out) if bool(v & bit) != ge else d.and_(x_wins, out)
    return out


def _m_tproxy_socket(d: Domain, m: TproxySocket, p: Pkt, env: Env) -> Any:
    """A later packet: its connection's socket is transparent; a first packet: a transparent listener
    on the port (the proxy's listeners are the world's transparent sockets, as for TPROXY)."""
    if p.sk is not None:
        return p.sk.transparent
    if not env.world.proxy.transparent:
        return d.const(False)
    port = p.dport if m.port is None else d.port(m.port)
    return d.or_(*[d.eq(port, d.port(lp)) for lp, _side in env.listeners()])


MATCHES: dict[type, Callable[[Domain, Any, Pkt, Env], Any]] = {
    Source: _m_source,
    Destination: _m_destination,
    InInterface: _m_in,
    OutInterface: _m_out,
    Protocol: _m_protocol,
    PortMatch: _m_port,
    MultiportMatch: _m_multiport,
    OwnerMatch: _m_owner,
    MarkMatch: _m_mark,
    ConnmarkMatch: _m_connmark,
    ConntrackMatch: _m_conntrack,
    StateMatch: _m_state,
    AddrtypeMatch: _m_addrtype,
    CommentMatch: _m_comment,
    SocketMatch: _m_socket,
    SetMatch: _m_set,
    OpaqueMatch: _m_opaque,
    FamilyMatch: _m_family,
    AddressSet: _m_address_set,
    InterfaceSet: _m_interface_set,
    ProtocolSet: _m_protocol_set,
    PortPair: _m_port_pair,
    SocketOwner: _m_socket_owner,
    MarkRanges: _m_mark_ranges,
    TproxySocket: _m_tproxy_socket,
}


def match(d: Domain, m: Match, p: Pkt, env: Env) -> Any:
    """Whether match ``m`` holds for packet ``p`` (a domain Boolean)."""
    return MATCHES[type(m)](d, m, p, env)


# ------------------------------------------------------------------------------------------------
# Targets: what each one does, as an effect the traversals apply


@attrs.frozen
class Effect:
    """What a rule's target does once its matches hold.

    ``kind``: ``next`` (no effect: the next rule), ``marks`` (new ``mark``/``ctmark``/``zone``, then
    the next rule), ``verdict`` (the table ends with ``code``: CONT for ACCEPT, DROP, REJECT, NAT with
    ``addr``/``port``, TPROXY with ``addr``/``port``/``mark``, UNK with ``why``), ``return``,
    ``jump``/``goto`` (``chain``)."""

    kind: str
    code: int = CONT
    addr: Any = None
    port: Any = None
    mark: Any = None
    ctmark: Any = None
    zone: Any = None
    chain: str = ""
    why: str = ""


EFFECT_KINDS = ("next", "marks", "verdict", "return", "jump", "goto")


def _t_none(d: Domain, t: Any, p: Pkt, env: Env, stage: Stage) -> Effect:
    return Effect("next")


def _t_accept(d: Domain, t: Accept, p: Pkt, env: Env, stage: Stage) -> Effect:
    return Effect("verdict", CONT)


def _t_drop(d: Domain, t: Drop, p: Pkt, env: Env, stage: Stage) -> Effect:
    return Effect("verdict", DROP)


def _t_reject(d: Domain, t: Reject, p: Pkt, env: Env, stage: Stage) -> Effect:
    return Effect("verdict", REJECT)


def _t_return(d: Domain, t: Return, p: Pkt, env: Env, stage: Stage) -> Effect:
    return Effect("return")


def _t_jump(d: Domain, t: Jump, p: Pkt, env: Env, stage: Stage) -> Effect:
    return Effect("jump", chain=t.chain)


def _t_goto(d: Domain, t: Goto, p: Pkt, env: Env, stage: Stage) -> Effect:
    return Effect("goto", chain=t.chain)


def _t_redirect(d: Domain, t: Redirect, p: Pkt, env: Env, stage: Stage) -> Effect:
    if stage.hook == "OUTPUT":
        addr: Any = d.addr(env.loopback)
    else:
        primary = env.primary(p.iif)
        if primary is None:  # the kernel drops when the incoming interface has no address
            return Effect("verdict", DROP)
        addr = d.addr(primary)
    rng = t.to_ports
    if rng is None:
        port = p.dport
    elif rng.lo == rng.hi:
        port = d.port(rng.lo)
    else:  # a port inside the range is kept; otherwise the first free port of the range, which for
        # one connection is its first (seen on the kernel: 24 of 24 times)
        port = d.ite(d.in_range(p.dport, rng.lo, rng.hi, "destination port"), p.dport, d.port(rng.lo))
    return Effect("verdict", NAT, addr=addr, port=port)


def _t_dnat(d: Domain, t: Dnat, p: Pkt, env: Env, stage: Stage) -> Effect:
    spec = t.spec
    if spec is None or t.extra:
        return _unknown(Dnat, "options", f"DNAT --to-destination {t.to} is not modelled")
    if spec.addr is not None and spec.addr.version != (4 if env.family == "ipv4" else 6):
        raise WorldError(f"DNAT to {spec.addr} in the {env.family} ruleset")
    if spec.addr_hi is not None and spec.addr_hi != spec.addr:
        return _unknown(Dnat, "ADDR-ADDR", f"DNAT to the address range {t.to} picks an address")
    if spec.port_lo is None:
        port = p.dport
    elif spec.port_hi in (None, spec.port_lo):
        port = d.port(spec.port_lo)
    else:
        assert spec.port_hi is not None
        port = d.ite(d.in_range(p.dport, spec.port_lo, spec.port_hi, "destination port"), p.dport,
                     d.port(spec.port_lo))
    return Effect("verdict", NAT, addr=p.dst if spec.addr is None else d.addr(spec.addr), port=port)


def _t_tproxy(d: Domain, t: Tproxy, p: Pkt, env: Env, stage: Stage) -> Effect:
    # --on-ip 0.0.0.0 (what iptables-save prints when none was given) = the primary address of the
    # incoming interface, as nf_tproxy_laddr does
    given = t.on_ip if t.on_ip is not None and not t.on_ip.is_unspecified else None
    listen = given or env.primary(p.iif)
    addr = d.addr(listen) if listen is not None else p.dst
    mark = p.mark if t.mark is None else (p.mark & (~t.mask & _M32)) ^ d.u32(t.mark)
    return Effect("verdict", TPROXY, addr=addr, port=d.port(t.on_port), mark=mark)


def _t_setmark(d: Domain, t: SetMark, p: Pkt, env: Env, stage: Stage) -> Effect:
    return Effect("marks", mark=(p.mark & (~t.mask & _M32)) ^ d.u32(t.value), ctmark=p.ctmark, zone=p.zone)


def _t_connmark(d: Domain, t: ConnmarkTarget, p: Pkt, env: Env, stage: Stage) -> Effect:
    """``CONNMARK``: without a conntrack entry (``has_entry``) it changes nothing."""
    if t.action == "save-mark":
        mark, ctmark = p.mark, (p.ctmark & (~t.ctmask & _M32)) ^ (p.mark & t.nfmask)
    elif t.action == "restore-mark":
        mark, ctmark = (p.mark & (~t.nfmask & _M32)) ^ (p.ctmark & t.ctmask), p.ctmark
    else:
        mark, ctmark = p.mark, (p.ctmark & (~t.mask & _M32)) ^ d.u32(t.value)
    has = has_entry(d, p)
    return Effect("marks", mark=d.ite(has, mark, p.mark), ctmark=d.ite(has, ctmark, p.ctmark), zone=p.zone)


def _t_ct(d: Domain, t: CtTarget, p: Pkt, env: Env, stage: Stage) -> Effect:
    """``CT --zone N``: the packet is looked up (a new connection: created) in conntrack zone N, both
    directions. A packet that already carries its entry (the loopback re-entry) is left alone."""
    if t.notrack:
        return _unknown(CtTarget, "--notrack", "CT --notrack is not modelled")
    if t.extra:
        return _unknown(CtTarget, "options", f"CT options {' '.join(t.extra)} are not modelled")
    if t.zone is None or p.entry or not stage.before_conntrack:
        return Effect("next")  # after conntrack (an nft chain above -200) the packet is tracked already
    return Effect("marks", mark=p.mark, ctmark=p.ctmark, zone=d.port(t.zone))


def _t_mark_statements(d: Domain, t: MarkStatements, p: Pkt, env: Env, stage: Stage) -> Effect:
    mark, ctmark = p.mark, p.ctmark
    for step in t.steps:
        src = d.u32(0) if step.source is None else (mark if step.source == "mark" else ctmark)
        value = (src & step.mask) ^ d.u32(step.xor)
        if step.key == "mark":
            mark = value
        else:
            ctmark = value
    return Effect("marks", mark=mark, ctmark=ctmark, zone=p.zone)


def _t_snat(d: Domain, t: Snat, p: Pkt, env: Env, stage: Stage) -> Effect:
    """``SNAT --to-source ADDR[:PORT]``: the connection's source becomes ``ADDR`` (its port ``PORT``,
    else the client's own, which one connection keeps); the nat hook (INPUT / POSTROUTING) makes it
    a source rewrite (``kernel._stage``), conntrack undoes it on the replies."""
    spec = t.spec
    if spec is None or t.extra or spec.addr is None or spec.addr_hi not in (None, spec.addr) \
            or spec.port_hi not in (None, spec.port_lo):
        return _unknown(Snat, "options", f"SNAT --to-source {t.to} {' '.join(t.extra)}".rstrip() + " picks an "
                                         "address or port the model does not decide")
    if spec.addr.version != (4 if env.family == "ipv4" else 6):
        raise WorldError(f"SNAT to {spec.addr} in the {env.family} ruleset")
    port = p.sport if spec.port_lo is None else d.port(spec.port_lo)
    return Effect("verdict", NAT, addr=d.addr(spec.addr), port=port)


def _t_masquerade(d: Domain, t: Masquerade, p: Pkt, env: Env, stage: Stage) -> Effect:
    return _unknown(Masquerade, "", "MASQUERADE (the output interface's address) is not modelled")


def _t_opaque(d: Domain, t: OpaqueTarget, p: Pkt, env: Env, stage: Stage) -> Effect:
    return _unknown(OpaqueTarget, "", f"target {t.name} is not modelled")


EFFECTS: dict[type, Callable[[Domain, Any, Pkt, Env, Stage], Effect]] = {
    Accept: _t_accept,
    Drop: _t_drop,
    Reject: _t_reject,
    Return: _t_return,
    Jump: _t_jump,
    Goto: _t_goto,
    Redirect: _t_redirect,
    Dnat: _t_dnat,
    Snat: _t_snat,
    Masquerade: _t_masquerade,
    Tproxy: _t_tproxy,
    SetMark: _t_setmark,
    ConnmarkTarget: _t_connmark,
    CtTarget: _t_ct,
    Log: _t_none,
    Trace: _t_none,
    OpaqueTarget: _t_opaque,
    MarkStatements: _t_mark_statements,
}


def effect(d: Domain, t: Target | None, p: Pkt, env: Env, stage: Stage) -> Effect:
    """What target ``t`` does to packet ``p`` at ``stage`` (no target: nothing)."""
    if t is None:
        return Effect("next")
    return EFFECTS[type(t)](d, t, p, env, stage)


