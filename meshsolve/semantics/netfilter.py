"""Concrete netfilter: one packet through one table at one hook.

What is modelled (the first packet of a connection only — a TCP SYN or the first UDP datagram):

* Traversal: rules are tried in order, the first rule whose matches all hold applies its target;
  ``-j CHAIN`` pushes the return point, ``-g CHAIN`` does not (a RETURN from a goto'd chain goes back
  to the last ``-j``), ``RETURN`` pops, falling off a user chain returns, and the built-in chain's
  policy applies at the end of the built-in chain (a RETURN in a built-in chain too).
* Terminating targets: ``ACCEPT`` ends this table at this hook; ``DROP``/``REJECT`` drop; ``REDIRECT``
  and ``DNAT`` (nat PREROUTING/OUTPUT) rewrite the destination and end the table; ``TPROXY`` (mangle
  PREROUTING) diverts to a local listener and ends the table. ``SNAT``/``MASQUERADE`` and targets the
  model does not know give ``undetermined`` instead of a guess.
* Non-terminating targets: no target, ``LOG``, ``TRACE``, ``MARK`` (``mark = (mark & ~mask) ^ value``),
  ``CONNMARK`` save/restore/set-xmark with the kernel's masks, ``CT --zone`` (no effect on one
  connection's fate; ``CT --notrack`` would switch NAT off, so it is undetermined).
* A match that the model cannot decide (``OpaqueMatch``, ``-m socket``, an owner *name*, a source
  port when the flow leaves it to the kernel, unknown tcp options) makes the rule undetermined
  only when every decidable match of the rule holds and its target has an effect: a rule that
  fails on a decidable match is skipped whatever the opaque part says.
* ``-m owner`` sees the socket of the process that opened the connection (locally generated
  packets); a packet without a local socket matches only if every owner option is negated (as
  ``xt_owner`` does). ``--suppl-groups`` is evaluated against the primary gid (apps in a world have
  no supplementary groups).
* Conntrack state of a first packet: ``NEW``; after a destination rewrite also ``DNAT``.
* ``-m addrtype``: ``LOCAL`` for the pod's local addresses, ``MULTICAST``/``BROADCAST``/``UNSPEC``
  by address class, ``UNICAST`` otherwise.
* Interface names: ``+`` at the end is a prefix wildcard; at a hook without an input (output)
  interface the name is empty, so ``-i X`` fails and ``! -i X`` holds.
"""

from __future__ import annotations

import ipaddress
from typing import Literal, TypeAlias

import attrs

from meshsolve.errors import WorldError
from meshsolve.model.net import Family, IPAddress, IPNetwork, PortRange, to_address
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
    Masquerade,
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
    RuleRef,
    Ruleset,
    SetMark,
    Snat,
    SocketMatch,
    Source,
    StateMatch,
    Tproxy,
    Trace,
)

__all__ = [
    "HOOKS",
    "Env",
    "Packet",
    "Step",
    "TableResult",
    "evaluate_match",
    "owner_id_matches",
    "traverse",
]

Hook: TypeAlias = Literal["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"]
HOOKS: tuple[Hook, ...] = ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING")
_MASK32 = 0xFFFFFFFF
_MAX_DEPTH = 64  # the kernel's own limit on nested jumps is in this order


@attrs.frozen
class Packet:
    """The first packet of a connection as netfilter sees it at one hook.

    ``sport`` is ``None`` when the kernel picks an ephemeral port; ``uid``/``gid`` are the opening
    process's ids for locally generated packets and ``None`` for packets from another host.
    """

    family: Family
    protocol: str
    src: IPAddress
    dst: IPAddress
    sport: int | None
    dport: int
    iif: str | None = None
    oif: str | None = None
    uid: int | None = None
    gid: int | None = None
    mark: int = 0
    ctmark: int = 0
    ctstates: tuple[str, ...] = ("NEW",)


@attrs.frozen
class Env:
    """What rules may ask about the host: its local networks and each interface's primary address."""

    local_nets: tuple[IPNetwork, ...]
    iface_addrs: tuple[tuple[str, IPAddress], ...]

    def is_local(self, addr: IPAddress) -> bool:
        return any(addr.version == n.version and addr in n for n in self.local_nets)

    def primary(self, iface: str | None, family: Family) -> IPAddress | None:
        version = 4 if family == "ipv4" else 6
        for name, addr in self.iface_addrs:
            if name == iface and addr.version == version:
                return addr
        return None


@attrs.frozen
class Step:
    """A rule whose matches held (``rule`` set) or a built-in chain's policy (``rule`` None, index 0)."""

    ref: RuleRef
    rule: Rule | None
    policy: str | None = None


@attrs.frozen
class TableResult:
    """The outcome of one table at one hook.

    ``verdict``: ``continue`` (accepted, go on to the next table/hook), ``drop``, ``nat`` (destination
    rewritten to ``new_dst:new_dport``), ``tproxy`` (divert to the listener at ``new_dst:new_dport``,
    destination unchanged), ``undetermined``. ``packet`` carries the marks as changed by the table.
    """

    verdict: Literal["continue", "drop", "nat", "tproxy", "undetermined"]
    packet: Packet
    steps: tuple[Step, ...] = ()
    rule: RuleRef | None = None
    new_dst: IPAddress | None = None
    new_dport: int | None = None
    reason: str = ""


# ---------------------------------------------------------------------------------------------
# Matches: True (holds), False (fails), None (the model cannot tell; ``why`` says what)


@attrs.frozen
class _Unknown:
    why: str


_Tri: TypeAlias = bool | _Unknown


def _iface(name: str, actual: str | None) -> bool:
    actual = actual or ""
    if name.endswith("+"):
        return actual.startswith(name[:-1])
    return actual == name


def _port_in(port: int | None, rng: PortRange | None, negated: bool, what: str) -> _Tri:
    if rng is None:
        return True
    if port is None:
        return _Unknown(f"the {what} is chosen by the kernel")
    return (port in rng) != negated


def owner_id_matches(token: str, value: int) -> bool | None:
    """``--uid-owner``/``--gid-owner`` token against an id: a number, ``lo-hi``, or a name (None)."""
    token = token.strip()
    lo_s, sep, hi_s = token.partition("-")
    try:
        lo = int(lo_s)
        hi = int(hi_s) if sep else lo
    except ValueError:
        return None
    return lo <= value <= hi


def _owner(m: OwnerMatch, pkt: Packet) -> _Tri:
    if pkt.uid is None or pkt.gid is None:
        # xt_owner without a local socket: holds only if every given option is negated
        given = [(m.uid is not None, m.uid_negated), (m.gid is not None, m.gid_negated),
                 (m.socket_exists is not None, m.socket_exists is False)]
        return all(neg for present, neg in given if present)
    if m.uid is not None:
        hit = owner_id_matches(m.uid, pkt.uid)
        if hit is None:
            return _Unknown(f"owner name {m.uid!r} is not resolved")
        if hit == m.uid_negated:
            return False
    if m.gid is not None:
        hit = owner_id_matches(m.gid, pkt.gid)
        if hit is None:
            return _Unknown(f"group name {m.gid!r} is not resolved")
        if hit == m.gid_negated:
            return False
    return m.socket_exists is not False


def _addr_type(addr: IPAddress, env: Env) -> str:
    if addr.is_unspecified:
        return "UNSPEC"
    if env.is_local(addr):
        return "LOCAL"
    if addr.is_multicast:
        return "MULTICAST"
    if addr.version == 4 and addr == ipaddress.IPv4Address("255.255.255.255"):
        return "BROADCAST"
    return "UNICAST"


def _addrtype(m: AddrtypeMatch, pkt: Packet, env: Env) -> _Tri:
    if m.limit_iface_in or m.limit_iface_out:
        return _Unknown("addrtype --limit-iface-* is not modelled")
    for want, negated, addr in ((m.src_type, m.src_negated, pkt.src), (m.dst_type, m.dst_negated, pkt.dst)):
        if want is None:
            continue
        types = {t.strip().upper() for t in want.split(",")}
        if (_addr_type(addr, env) in types) == negated:
            return False
    return True


def evaluate_match(m: Match, pkt: Packet, env: Env) -> bool | str:
    """True/False, or a string saying why the model cannot decide this match for this packet."""
    r = _match(m, pkt, env)
    return r.why if isinstance(r, _Unknown) else r


def _match(m: Match, pkt: Packet, env: Env) -> _Tri:
    if isinstance(m, Source):
        return (pkt.src.version == m.net.version and pkt.src in m.net) != m.negated
    if isinstance(m, Destination):
        return (pkt.dst.version == m.net.version and pkt.dst in m.net) != m.negated
    if isinstance(m, InInterface):
        return _iface(m.name, pkt.iif) != m.negated
    if isinstance(m, OutInterface):
        return _iface(m.name, pkt.oif) != m.negated
    if isinstance(m, Protocol):
        return (m.name == "all" or m.name == pkt.protocol) != m.negated
    if isinstance(m, PortMatch):
        if m.module != pkt.protocol:
            return False
        for tok in _strip_syn(m.extra):
            return _Unknown(f"{m.module} option {tok} is not modelled")
        if "--syn" in m.extra and ("!" in m.extra) == (pkt.protocol == "tcp"):
            return False  # the first TCP packet is a SYN
        s = _port_in(pkt.sport, m.sport, m.sport_negated, "source port")
        d = _port_in(pkt.dport, m.dport, m.dport_negated, "destination port")
        if s is False or d is False:
            return False
        return s if isinstance(s, _Unknown) else d
    if isinstance(m, MultiportMatch):
        if pkt.protocol not in ("tcp", "udp", "sctp", "udplite", "dccp"):
            return False
        d_hit = any(pkt.dport in r for r in m.ports)
        if m.kind == "dports":
            return d_hit != m.negated
        if pkt.sport is None:
            if m.kind == "ports" and d_hit:
                return not m.negated
            return _Unknown("the source port is chosen by the kernel")
        s_hit = any(pkt.sport in r for r in m.ports)
        hit = s_hit if m.kind == "sports" else (s_hit or d_hit)
        return hit != m.negated
    if isinstance(m, OwnerMatch):
        return _owner(m, pkt)
    if isinstance(m, MarkMatch):
        return ((pkt.mark & m.mask) == m.value) != m.negated
    if isinstance(m, ConnmarkMatch):
        return ((pkt.ctmark & m.mask) == m.value) != m.negated
    if isinstance(m, ConntrackMatch):
        if m.extra:
            return _Unknown(f"conntrack options {' '.join(m.extra)} are not modelled")
        return bool(set(m.states) & set(pkt.ctstates)) != m.negated
    if isinstance(m, StateMatch):
        return bool(set(m.states) & set(pkt.ctstates)) != m.negated
    if isinstance(m, AddrtypeMatch):
        return _addrtype(m, pkt, env)
    if isinstance(m, CommentMatch):
        return True
    if isinstance(m, SocketMatch):
        return _Unknown("-m socket is not modelled")
    if isinstance(m, OpaqueMatch):
        return _Unknown(f"-m {m.module} {' '.join(m.args)}".rstrip() + " is not modelled")
    return _Unknown(f"{type(m).__name__} is not modelled")  # pragma: no cover - exhaustive above


def _strip_syn(extra: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(t for t in extra if t not in ("--syn", "!"))


def _rule_matches(rule: Rule, pkt: Packet, env: Env) -> _Tri:
    unknown: _Unknown | None = None
    for m in rule.matches:
        r = _match(m, pkt, env)
        if r is False:
            return False
        if isinstance(r, _Unknown) and unknown is None:
            unknown = r
    return unknown if unknown is not None else True


# ---------------------------------------------------------------------------------------------
# Traversal


def _loopback(family: Family) -> IPAddress:
    return to_address("127.0.0.1" if family == "ipv4" else "::1")


def _parse_dnat(to: str) -> tuple[IPAddress, int | None] | None:
    """``ADDR``, ``ADDR:PORT``, ``[V6]:PORT``, ``V6``; ranges return None (not modelled)."""
    text = to.strip()
    port: int | None = None
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest.startswith(":"):
            if not rest[1:].isdigit():
                return None
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, p = text.partition(":")
        if not p.isdigit():
            return None
        port = int(p)
    else:
        host = text
    try:
        return ipaddress.ip_address(host), port
    except ValueError:
        return None


def traverse(ruleset: Ruleset, table: str, hook: Hook, pkt: Packet, env: Env) -> TableResult:
    """Run ``pkt`` through the built-in chain ``hook`` of ``table`` (an absent table accepts).

    Raises ``WorldError`` for a jump to a missing chain or a jump nesting deeper than 64 (a cycle).
    """
    tbl = ruleset.table(table)
    chain = tbl.chain(hook) if tbl is not None else None
    if tbl is None or chain is None:
        return TableResult("continue", pkt)
    builtin = chain
    steps: list[Step] = []
    stack: list[tuple[Chain, int]] = []
    i = 0

    def policy() -> TableResult:
        pol = builtin.policy or "ACCEPT"
        ref = RuleRef(table, builtin.name, 0)
        if pol != "ACCEPT" or steps:
            steps.append(Step(ref, None, pol))
        if pol == "ACCEPT":
            return TableResult("continue", pkt, tuple(steps))
        if pol == "DROP":
            return TableResult("drop", pkt, tuple(steps), ref)
        return TableResult("undetermined", pkt, tuple(steps), ref, reason=f"policy {pol} is not modelled")

    def enter(name: str, ref: RuleRef) -> Chain:
        target = tbl.chain(name) if tbl is not None else None
        if target is None:
            raise WorldError(f"{ref} jumps to chain {name}, which does not exist in table {table}")
        if len(stack) > _MAX_DEPTH:
            raise WorldError(f"{ref}: jumps nest deeper than {_MAX_DEPTH} (a jump cycle?)")
        return target

    hops_taken = 0
    while True:
        hops_taken += 1
        if hops_taken > 100_000:
            raise WorldError(f"{table}::{hook}: traversal does not end (a goto cycle?)")
        if i >= len(chain.rules):
            if stack:
                chain, i = stack.pop()
                continue
            return policy()
        rule = chain.rules[i]
        ref = RuleRef(table, chain.name, i + 1)
        i += 1
        held = _rule_matches(rule, pkt, env)
        if held is False:
            continue
        tgt = rule.target
        if isinstance(held, _Unknown):
            if tgt is None or isinstance(tgt, Log | Trace):
                continue
            return TableResult("undetermined", pkt, tuple(steps), ref, reason=held.why)
        steps.append(Step(ref, rule))
        if tgt is None or isinstance(tgt, Log | Trace):
            continue
        if isinstance(tgt, Accept):
            return TableResult("continue", pkt, tuple(steps), ref)
        if isinstance(tgt, Drop | Reject):
            return TableResult("drop", pkt, tuple(steps), ref)
        if isinstance(tgt, Return):
            if stack:
                chain, i = stack.pop()
                continue
            return policy()
        if isinstance(tgt, Jump):
            nxt = enter(tgt.chain, ref)
            stack.append((chain, i))
            chain, i = nxt, 0
            continue
        if isinstance(tgt, Goto):
            chain, i = enter(tgt.chain, ref), 0
            continue
        if isinstance(tgt, SetMark):
            pkt = attrs.evolve(pkt, mark=(pkt.mark & ~tgt.mask & _MASK32) ^ tgt.value)
            continue
        if isinstance(tgt, ConnmarkTarget):
            if tgt.action == "save-mark":
                ctmark = (pkt.ctmark & ~tgt.ctmask & _MASK32) ^ (pkt.mark & tgt.nfmask)
                pkt = attrs.evolve(pkt, ctmark=ctmark)
            elif tgt.action == "restore-mark":
                mark = (pkt.mark & ~tgt.nfmask & _MASK32) ^ (pkt.ctmark & tgt.ctmask)
                pkt = attrs.evolve(pkt, mark=mark)
            else:
                pkt = attrs.evolve(pkt, ctmark=(pkt.ctmark & ~tgt.mask & _MASK32) ^ tgt.value)
            continue
        if isinstance(tgt, CtTarget):
            if tgt.notrack or tgt.extra:
                return TableResult("undetermined", pkt, tuple(steps), ref,
                                   reason="CT --notrack / CT options are not modelled")
            continue
        if isinstance(tgt, Redirect | Dnat):
            if table != "nat" or hook not in ("PREROUTING", "OUTPUT"):
                name = type(tgt).__name__.upper()
                raise WorldError(f"{ref}: {name} is only valid in nat PREROUTING/OUTPUT")
            return _nat(tgt, ref, hook, pkt, env, tuple(steps))
        if isinstance(tgt, Tproxy):
            if table != "mangle" or hook != "PREROUTING":
                raise WorldError(f"{ref}: TPROXY is only valid in mangle PREROUTING")
            # --on-ip 0.0.0.0 (what iptables-save prints when none was given) = the primary
            # address of the incoming interface, as nf_tproxy_laddr does
            given = tgt.on_ip if tgt.on_ip is not None and not tgt.on_ip.is_unspecified else None
            lst = given or env.primary(pkt.iif, pkt.family) or pkt.dst
            if tgt.mark is not None:
                pkt = attrs.evolve(pkt, mark=(pkt.mark & ~tgt.mask & _MASK32) ^ tgt.mark)
            return TableResult("tproxy", pkt, tuple(steps), ref, new_dst=lst, new_dport=tgt.on_port)
        if isinstance(tgt, Snat | Masquerade):
            return TableResult("undetermined", pkt, tuple(steps), ref,
                               reason=f"source NAT ({type(tgt).__name__.upper()}) is not modelled")
        if isinstance(tgt, OpaqueTarget):
            return TableResult("undetermined", pkt, tuple(steps), ref,
                               reason=f"target {tgt.name} is not modelled")
        return TableResult("undetermined", pkt, tuple(steps), ref,  # pragma: no cover - exhaustive
                           reason=f"target {type(tgt).__name__} is not modelled")


def _nat(tgt: Redirect | Dnat, ref: RuleRef, hook: Hook, pkt: Packet, env: Env,
         steps: tuple[Step, ...]) -> TableResult:
    if isinstance(tgt, Redirect):
        if hook == "OUTPUT":
            new_dst: IPAddress | None = _loopback(pkt.family)
        else:
            new_dst = env.primary(pkt.iif, pkt.family)
            if new_dst is None:  # the kernel drops when the incoming interface has no address
                return TableResult("drop", pkt, steps, ref)
        rng = tgt.to_ports
        if rng is None or pkt.dport in rng:
            port = pkt.dport if rng is None or rng.lo != rng.hi else rng.lo
        elif rng.lo == rng.hi:
            port = rng.lo
        else:
            return TableResult("undetermined", pkt, steps, ref,
                               reason=f"REDIRECT to the port range {rng} picks a port at random")
        return TableResult("nat", pkt, steps, ref, new_dst=new_dst, new_dport=port)
    parsed = _parse_dnat(tgt.to)
    if parsed is None or tgt.extra:
        return TableResult("undetermined", pkt, steps, ref,
                           reason=f"DNAT --to-destination {tgt.to} is not modelled")
    addr, dport = parsed
    if addr.version != pkt.dst.version:
        raise WorldError(f"{ref}: DNAT to {addr} in the {pkt.family} ruleset")
    return TableResult("nat", pkt, steps, ref, new_dst=addr, new_dport=pkt.dport if dport is None else dport)
