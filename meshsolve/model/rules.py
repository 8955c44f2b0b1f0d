"""The iptables rule model: matches, targets, rules, chains, tables and rulesets.

Everything here is a frozen, hashable value. Converters normalise on construction so that equal
things compare equal (CIDRs become networks with host bits cleared, ports become ``PortRange``,
the basic matches of a rule are kept in the order iptables-save prints them). Provenance — the
source line a rule came from, and packet counters — is carried with ``eq=False``.

A rule's ``matches`` tuple holds the *basic* matches (``-s -d -i -o -p``) first, in that order,
followed by the *module* matches (``-m owner ...``) in the order they were given, because that is
the order the kernel keeps and iptables-save prints. Anything the parser does not model becomes an
``OpaqueMatch`` / ``OpaqueTarget`` holding its raw arguments: never silently dropped.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Iterator
from typing import Literal, TypeAlias

import attrs

from meshsolve.errors import WorldError
from meshsolve.model.load import LoadProblem
from meshsolve.model.net import (
    Family,
    IPAddress,
    IPNetwork,
    PortRange,
    decode_ids,
    family_of,
    to_address,
    to_network,
)
from meshsolve.model.nftrules import (
    AddressSet,
    FamilyMatch,
    InterfaceSet,
    MarkRanges,
    MarkStatements,
    MarkStep,
    PortPair,
    ProtocolSet,
    SocketOwner,
    TproxySocket,
)
from meshsolve.model.path import HOOKS, TABLE_HOOKS, Hook, Stage, kernel_order, stages
from meshsolve.model.path import TABLE_ORDER as TABLE_ORDER

__all__ = [
    "BUILTIN_CHAINS",
    "TABLE_ORDER",
    "Accept",
    "AddressSet",
    "AddrtypeMatch",
    "BaseChain",
    "Chain",
    "CommentMatch",
    "ConnmarkMatch",
    "ConnmarkTarget",
    "ConntrackMatch",
    "CtTarget",
    "Destination",
    "Dnat",
    "Drop",
    "FamilyMatch",
    "Goto",
    "InInterface",
    "InterfaceSet",
    "Jump",
    "LoadProblem",
    "Log",
    "MarkMatch",
    "MarkRanges",
    "MarkStatements",
    "MarkStep",
    "Masquerade",
    "Match",
    "MultiportMatch",
    "NatSpec",
    "NftTable",
    "OpaqueMatch",
    "OpaqueTarget",
    "Origin",
    "OutInterface",
    "OwnerMatch",
    "PortMatch",
    "PortPair",
    "Protocol",
    "ProtocolSet",
    "Redirect",
    "Reject",
    "Return",
    "Rule",
    "RuleRef",
    "Ruleset",
    "Rulesets",
    "SetMark",
    "SetMatch",
    "Snat",
    "SocketMatch",
    "SocketOwner",
    "Source",
    "StateMatch",
    "Table",
    "Target",
    "Tproxy",
    "TproxySocket",
    "Trace",
]

# Built-in chains of each table, in the order iptables-save lists them (the hooks it registers).
BUILTIN_CHAINS: dict[str, tuple[str, ...]] = {t: tuple(h) for t, h in TABLE_HOOKS.items()}


def _str_tuple(values: Iterable[str]) -> tuple[str, ...]:
    """``tuple`` as a typed converter (mypy's attrs plugin cannot infer ``converter=tuple``)."""
    return tuple(values)


@attrs.frozen
class Origin:
    """Where a rule or chain came from: ``source`` (file name) and 1-based ``lineno``; ``text`` is
    the rule as its own language writes it when that is not iptables (an nft rule's items), for
    traces."""

    source: str
    lineno: int
    text: str | None = None

    def __str__(self) -> str:
        return f"{self.source}:{self.lineno}"


# ---------------------------------------------------------------------------------------------
# Basic matches (-s -d -i -o -p)


@attrs.frozen
class Source:
    """``[!] -s NET``"""

    net: IPNetwork = attrs.field(converter=to_network)
    negated: bool = False


@attrs.frozen
class Destination:
    """``[!] -d NET``"""

    net: IPNetwork = attrs.field(converter=to_network)
    negated: bool = False


@attrs.frozen
class InInterface:
    """``[!] -i NAME`` (a trailing ``+`` is a prefix wildcard, as in iptables)."""

    name: str
    negated: bool = False


@attrs.frozen
class OutInterface:
    """``[!] -o NAME`` (a trailing ``+`` is a prefix wildcard)."""

    name: str
    negated: bool = False


_PROTO_NUMBERS = {"6": "tcp", "17": "udp", "1": "icmp", "58": "ipv6-icmp", "132": "sctp"}


def _proto_name(value: str) -> str:
    value = value.strip().lower()
    return _PROTO_NUMBERS.get(value, value)


@attrs.frozen
class Protocol:
    """``[!] -p NAME`` (numbers for tcp/udp/icmp/sctp are normalised to names)."""

    name: str = attrs.field(converter=_proto_name)
    negated: bool = False


BasicMatch: TypeAlias = Source | Destination | InInterface | OutInterface | Protocol
_BASIC_ORDER: dict[type, int] = {Source: 0, Destination: 1, InInterface: 2, OutInterface: 3, Protocol: 4}

# ---------------------------------------------------------------------------------------------
# Module matches (-m ...)


def _opt_range(value: PortRange | int | str | None) -> PortRange | None:
    if value is None or isinstance(value, PortRange):
        return value
    if isinstance(value, int):
        return PortRange.single(value)
    return PortRange.parse(value)


@attrs.frozen
class PortMatch:
    """``-m tcp|udp [!] --sport R [!] --dport R`` (implicit after ``-p tcp``/``-p udp``).

    ``extra`` keeps options of the module that are not modelled (``--syn``, ``--tcp-flags ...``)
    as raw tokens; a rule with extras is treated as opaque by the semantics.
    """

    module: Literal["tcp", "udp", "sctp", "udplite", "dccp"]
    sport: PortRange | None = attrs.field(default=None, converter=_opt_range)
    dport: PortRange | None = attrs.field(default=None, converter=_opt_range)
    sport_negated: bool = False
    dport_negated: bool = False
    extra: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    # decoded from ``extra``: ``--tcp-flags MASK COMP`` as (mask, comp, negated), and what is left
    tcp_flags: tuple[frozenset[str], frozenset[str], bool] | None = attrs.field(
        init=False, default=None, eq=False, repr=False)
    unmodelled: tuple[str, ...] = attrs.field(init=False, default=(), eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        flags, rest = _decode_tcp_flags(self.extra) if self.module == "tcp" else (None, self.extra)
        object.__setattr__(self, "tcp_flags", flags)
        object.__setattr__(self, "unmodelled", rest)


TCP_FLAGS: tuple[str, ...] = ("FIN", "SYN", "RST", "PSH", "ACK", "URG")


def _flag_set(text: str) -> frozenset[str] | None:
    out: set[str] = set()
    for item in text.upper().split(","):
        if item == "ALL":
            out.update(TCP_FLAGS)
        elif item in TCP_FLAGS:
            out.add(item)
        elif item != "NONE":
            return None
    return frozenset(out)


def _decode_tcp_flags(extra: tuple[str, ...]) -> tuple[tuple[frozenset[str], frozenset[str], bool] | None,
                                                        tuple[str, ...]]:
    """``[!] --tcp-flags MASK COMP`` (``--syn`` is stored in that form) out of a tcp match's extras."""
    toks = list(extra)
    for i, t in enumerate(toks):
        if t == "--tcp-flags" and i + 2 < len(toks):
            mask, comp = _flag_set(toks[i + 1]), _flag_set(toks[i + 2])
            if mask is None or comp is None:
                break
            neg = i > 0 and toks[i - 1] == "!"
            start = i - 1 if neg else i
            return (mask, comp & mask, neg), tuple(toks[:start] + toks[i + 3:])
    return None, extra


def _ranges(values: Iterable[PortRange | int | str]) -> tuple[PortRange, ...]:
    out = []
    for v in values:
        r = _opt_range(v)
        assert r is not None
        out.append(r)
    return tuple(out)


@attrs.frozen
class MultiportMatch:
    """``-m multiport [!] --dports|--sports|--ports a,b,c:d``"""

    kind: Literal["sports", "dports", "ports"]
    ports: tuple[PortRange, ...] = attrs.field(converter=_ranges)
    negated: bool = False
    module: Literal["multiport"] = "multiport"


@attrs.frozen
class OwnerMatch:
    """``-m owner [!] --uid-owner X [!] --gid-owner Y [!] --socket-exists [--suppl-groups]``.

    ``uid``/``gid`` keep the token as written: a number (``"1337"``), a range (``"1000-2000"``) or a
    user/group name (``"java"``) that is resolved only by the semantics (names are never dropped).
    """

    uid: str | None = None
    uid_negated: bool = False
    gid: str | None = None
    gid_negated: bool = False
    socket_exists: bool | None = None  # None: not given; True: --socket-exists; False: ! --socket-exists
    suppl_groups: bool = False
    module: Literal["owner"] = "owner"
    # decoded from ``uid``/``gid`` (``decode_ids``): the id range, None for a name (or not given)
    uid_range: tuple[int, int] | None = attrs.field(init=False, default=None, eq=False, repr=False)
    gid_range: tuple[int, int] | None = attrs.field(init=False, default=None, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "uid_range", None if self.uid is None else decode_ids(self.uid))
        object.__setattr__(self, "gid_range", None if self.gid is None else decode_ids(self.gid))


@attrs.frozen
class MarkMatch:
    """``-m mark [!] --mark VALUE[/MASK]``"""

    value: int
    mask: int = 0xFFFFFFFF
    negated: bool = False
    module: Literal["mark"] = "mark"


@attrs.frozen
class ConnmarkMatch:
    """``-m connmark [!] --mark VALUE[/MASK]``"""

    value: int
    mask: int = 0xFFFFFFFF
    negated: bool = False
    module: Literal["connmark"] = "connmark"


# Bit order in which the kernel keeps conntrack states (iptables-save prints them in this order).
CT_STATE_ORDER: tuple[str, ...] = ("INVALID", "NEW", "RELATED", "ESTABLISHED", "UNTRACKED", "SNAT", "DNAT")


def _states(values: Iterable[str]) -> tuple[str, ...]:
    vals = {v.strip().upper() for v in values}
    unknown = vals - set(CT_STATE_ORDER)
    if unknown:
        raise WorldError(f"unknown conntrack state(s): {', '.join(sorted(unknown))}")
    return tuple(s for s in CT_STATE_ORDER if s in vals)


@attrs.frozen
class ConntrackMatch:
    """``-m conntrack [!] --ctstate S1,S2`` (other conntrack options kept raw in ``extra``)."""

    states: tuple[str, ...] = attrs.field(converter=_states)
    negated: bool = False
    extra: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    module: Literal["conntrack"] = "conntrack"


@attrs.frozen
class StateMatch:
    """``-m state [!] --state S1,S2``"""

    states: tuple[str, ...] = attrs.field(converter=_states)
    negated: bool = False
    module: Literal["state"] = "state"


@attrs.frozen
class AddrtypeMatch:
    """``-m addrtype [!] --src-type T [!] --dst-type T [--limit-iface-in|--limit-iface-out]``"""

    src_type: str | None = None
    src_negated: bool = False
    dst_type: str | None = None
    dst_negated: bool = False
    limit_iface_in: bool = False
    limit_iface_out: bool = False
    module: Literal["addrtype"] = "addrtype"


@attrs.frozen
class CommentMatch:
    """``-m comment --comment TEXT`` (no effect on packets)."""

    text: str
    module: Literal["comment"] = "comment"


@attrs.frozen
class SocketMatch:
    """``-m socket [--transparent] [--nowildcard] [--restore-skmark]``"""

    options: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    module: Literal["socket"] = "socket"


@attrs.frozen
class SetMatch:
    """``-m set [!] --match-set NAME src|dst`` (an ipset of addresses), and nft's ``ip saddr|daddr
    [!=] @NAME`` for a set whose members the ruleset does not list: the members are the world's
    state (``World.ip_sets``), looked up by ``name``."""

    name: str
    direction: Literal["src", "dst"]
    negated: bool = False
    module: Literal["set"] = "set"


@attrs.frozen
class OpaqueMatch:
    """Any module meshsolve does not model, with its raw argument tokens (``!`` included).

    Analyses must treat it soundly: it may or may not match.
    """

    module: str
    args: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)


ModuleMatch: TypeAlias = (
    PortMatch | MultiportMatch | OwnerMatch | MarkMatch | ConnmarkMatch | ConntrackMatch | StateMatch
    | AddrtypeMatch | CommentMatch | SocketMatch | SetMatch | OpaqueMatch
)
# What only native nftables rules lower to (``meshsolve.model.nftrules``).
NftMatch: TypeAlias = (
    FamilyMatch | AddressSet | InterfaceSet | ProtocolSet | PortPair | SocketOwner | MarkRanges | TproxySocket
)
Match: TypeAlias = BasicMatch | ModuleMatch | NftMatch

# ---------------------------------------------------------------------------------------------
# Targets (-j / -g)


@attrs.frozen
class Accept:
    """``-j ACCEPT``"""


@attrs.frozen
class Drop:
    """``-j DROP``"""


@attrs.frozen
class Return:
    """``-j RETURN``"""


@attrs.frozen
class Reject:
    """``-j REJECT [--reject-with TYPE]``"""

    reject_with: str | None = None


@attrs.frozen
class Jump:
    """``-j USER_CHAIN``"""

    chain: str


@attrs.frozen
class Goto:
    """``-g USER_CHAIN``"""

    chain: str


@attrs.frozen
class Redirect:
    """``-j REDIRECT [--to-ports R] [--random]`` (nat PREROUTING/OUTPUT)."""

    to_ports: PortRange | None = attrs.field(default=None, converter=_opt_range)
    random: bool = False


@attrs.frozen
class Tproxy:
    """``-j TPROXY --on-port P [--on-ip A] [--tproxy-mark V[/M]]`` (mangle PREROUTING)."""

    on_port: int
    on_ip: IPAddress | None = None
    mark: int | None = None
    mask: int = 0xFFFFFFFF


@attrs.frozen
class SetMark:
    """``-j MARK``, normalised to the kernel's form: ``mark = (mark & ~mask) ^ value``.

    ``--set-mark V`` is ``SetMark(V, 0xffffffff)``; ``--set-mark V/M`` is ``SetMark(V, M | V)``;
    ``--or-mark B`` is ``SetMark(B, B)``; ``--and-mark B`` is ``SetMark(0, ~B)``; ``--xor-mark B``
    is ``SetMark(B, 0)``. iptables-save prints all of them as ``--set-xmark VALUE/MASK``.
    """

    value: int
    mask: int = 0xFFFFFFFF


@attrs.frozen
class ConnmarkTarget:
    """``-j CONNMARK --save-mark|--restore-mark|--set-xmark`` with its masks."""

    action: Literal["save-mark", "restore-mark", "set-xmark"]
    value: int = 0
    mask: int = 0xFFFFFFFF
    nfmask: int = 0xFFFFFFFF
    ctmask: int = 0xFFFFFFFF


@attrs.frozen
class CtTarget:
    """``-j CT [--zone N] [--notrack]`` (raw table); other options raw in ``extra``."""

    zone: int | None = None
    notrack: bool = False
    extra: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)


@attrs.frozen
class NatSpec:
    """A decoded ``--to-destination``/``--to-source``: ``ADDR[-ADDR][:PORT[-PORT]]`` (IPv6 in
    brackets when a port follows). ``addr`` None: only the port is mapped."""

    addr: IPAddress | None
    addr_hi: IPAddress | None = None
    port_lo: int | None = None
    port_hi: int | None = None


# ``A.B.C.D`` or ``A.B.C.D:PORT`` written as iptables-save writes them (no leading zeros): kube-proxy's
# every DNAT. Such text decodes to one address and port, and is its own canonical form.
_PLAIN_NAT = re.compile(r"(0|[1-9][0-9]{0,2})\.(0|[1-9][0-9]{0,2})\.(0|[1-9][0-9]{0,2})\.(0|[1-9][0-9]{0,2})"
                        r"(?::(0|[1-9][0-9]{0,4}))?")


def _plain_nat(text: str) -> NatSpec | None:
    """The spec of ``_PLAIN_NAT`` text (None: not such text, or an octet or port out of range):
    what the general decoding below gives, without ``ipaddress``' string parser."""
    m = _PLAIN_NAT.fullmatch(text)
    if m is None:
        return None
    a, b, c, d, port = m.groups()
    a_, b_, c_, d_ = int(a), int(b), int(c), int(d)
    p = None if port is None else int(port)
    if a_ > 255 or b_ > 255 or c_ > 255 or d_ > 255 or (p is not None and p > 65535):
        return None
    return NatSpec(ipaddress.IPv4Address((a_ << 24) | (b_ << 16) | (c_ << 8) | d_), None, p, None)


@functools.lru_cache(maxsize=1024)  # a Dnat/Snat decodes its text twice: as given, then canonical
def decode_nat(text: str) -> NatSpec | None:
    """``--to-destination`` / ``--to-source`` text as a ``NatSpec``; None when it is not one."""
    plain = _plain_nat(text)
    if plain is not None:
        return plain
    t = text.strip()
    host, port_s = t, ""
    if t.startswith("["):
        end = t.rfind("]")
        if end < 0:
            return None
        host, rest = t[:end + 1], t[end + 1:]
        if rest and not rest.startswith(":"):
            if not rest.startswith("-["):
                return None
            end2 = rest.rfind("]")
            host, rest = t[:end + 1 + end2 + 1], rest[end2 + 1:]
        port_s = rest[1:] if rest.startswith(":") else rest
        if rest and not rest.startswith(":"):
            return None
    elif t.count(":") == 1:
        host, _, port_s = t.partition(":")
    try:
        lo_a = hi_a = None
        if host:
            a_lo, sep, a_hi = host.replace("[", "").replace("]", "").partition("-")
            lo_a = to_address(a_lo)
            hi_a = to_address(a_hi) if sep else None
            if hi_a is not None and (hi_a.version != lo_a.version or int(hi_a) < int(lo_a)):
                return None
        p_lo = p_hi = None
        if port_s:
            p1, sep, p2 = port_s.partition("-")
            if not p1.isdigit() or (sep and not p2.isdigit()):
                return None
            p_lo, p_hi = int(p1), int(p2) if sep else None
            if (p_hi is not None and p_hi < p_lo) or not 0 <= p_lo <= 65535 or (p_hi or 0) > 65535:
                return None
    except WorldError:
        return None
    if lo_a is None and p_lo is None:
        return None
    return NatSpec(lo_a, hi_a, p_lo, p_hi)


def canonical_nat(text: str) -> str:
    """``--to-destination`` / ``--to-source`` text as iptables-save prints it back: the kernel keeps
    the decoded range, so a range whose ends are equal is the single address or port
    (``192.0.2.1-192.0.2.1:80-80`` → ``192.0.2.1:80``, ``::1-::1`` → ``::1``), IPv6 addresses are
    written compressed in lower case, bracketed only when a port follows
    (``[2001:db8::1-2001:db8::2]:80``), and a port without an address is ``:PORT`` (measured with
    iptables 1.8.9, both backends: ``tests/test_iptables_parse.py``). Text that does not decode, and
    the ``[ADDR]-[ADDR]`` form ip6tables refuses, stay as written."""
    spec = decode_nat(text)
    if spec is None or "]-[" in text or _PLAIN_NAT.fullmatch(text):
        return text  # (``_PLAIN_NAT`` text is written as iptables-save writes it back)
    host = ""
    if spec.addr is not None:
        host = str(spec.addr)
        if spec.addr_hi is not None and spec.addr_hi != spec.addr:
            host += f"-{spec.addr_hi}"
        if spec.addr.version == 6 and spec.port_lo is not None:
            host = f"[{host}]"
    if spec.port_lo is None:
        return host
    port = str(spec.port_lo)
    if spec.port_hi is not None and spec.port_hi != spec.port_lo:
        port += f"-{spec.port_hi}"
    return f"{host}:{port}"


@attrs.frozen
class Dnat:
    """``-j DNAT --to-destination ADDR[:PORT]`` (in iptables-save's form: ``canonical_nat``);
    ``spec`` is the decoded form (None: not decodable)."""

    to: str = attrs.field(converter=canonical_nat)
    extra: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    spec: NatSpec | None = attrs.field(init=False, default=None, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "spec", decode_nat(self.to))


@attrs.frozen
class Snat:
    """``-j SNAT --to-source ADDR[:PORT]`` (in iptables-save's form: ``canonical_nat``); ``spec`` is
    the decoded form (None: not decodable)."""

    to: str = attrs.field(converter=canonical_nat)
    extra: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    spec: NatSpec | None = attrs.field(init=False, default=None, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "spec", decode_nat(self.to))


@attrs.frozen
class Masquerade:
    """``-j MASQUERADE [--to-ports R]``"""

    to_ports: PortRange | None = attrs.field(default=None, converter=_opt_range)
    extra: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)


@attrs.frozen
class Log:
    """``-j LOG [--log-prefix P] [--log-level L] ...`` (no effect on the packet's path)."""

    prefix: str | None = None
    level: str | None = None
    extra: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)


@attrs.frozen
class Trace:
    """``-j TRACE`` (raw table; no effect on the packet's path)."""


@attrs.frozen
class OpaqueTarget:
    """A target meshsolve does not model (``NFQUEUE``, ``NFLOG``...), with its raw arguments."""

    name: str
    args: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)


Target: TypeAlias = (
    Accept | Drop | Return | Reject | Jump | Goto | Redirect | Tproxy | SetMark | ConnmarkTarget
    | CtTarget | Dnat | Snat | Masquerade | Log | Trace | OpaqueTarget | MarkStatements
)

# ---------------------------------------------------------------------------------------------
# Rules, chains, tables, rulesets


def _order_matches(matches: Iterable[Match]) -> tuple[Match, ...]:
    items = tuple(matches)
    last = -1  # the common case first: the basic matches already in order, each once, before the rest
    for m in items:
        rank = _BASIC_ORDER.get(type(m), 5)
        if rank <= last and rank != 5:
            break
        last = rank
    else:
        return items
    basic = sorted((m for m in items if type(m) in _BASIC_ORDER), key=lambda m: _BASIC_ORDER[type(m)])
    seen: set[type] = set()
    for m in basic:
        if type(m) in seen:
            raise WorldError(f"a rule may have only one {type(m).__name__} match")
        seen.add(type(m))
    modules = [m for m in items if type(m) not in _BASIC_ORDER]
    return (*basic, *modules)


@attrs.frozen
class Rule:
    """One rule: its matches (all must hold) and an optional target (no target = count only)."""

    matches: tuple[Match, ...] = attrs.field(default=(), converter=_order_matches)
    target: Target | None = None
    counters: tuple[int, int] | None = attrs.field(default=None, eq=False, repr=False)
    origin: Origin | None = attrs.field(default=None, eq=False, repr=False)

    def find(self, kind: type) -> Match | None:
        """The first match of the given class, or None."""
        for m in self.matches:
            if isinstance(m, kind):
                return m
        return None


def _rule_tuple(values: Iterable[Rule]) -> tuple[Rule, ...]:
    return tuple(values)


@attrs.frozen
class RuleRef:
    """A rule's address for traces and findings: ``nat::ISTIO_OUTPUT#2`` (1-based)."""

    table: str
    chain: str
    index: int

    def __str__(self) -> str:
        return f"{self.table}::{self.chain}#{self.index}"


@attrs.frozen
class Chain:
    """A chain: built-in ones carry a policy (``ACCEPT``/``DROP``), user chains ``None``."""

    name: str
    rules: tuple[Rule, ...] = attrs.field(default=(), converter=_rule_tuple)
    policy: str | None = None
    counters: tuple[int, int] | None = attrs.field(default=None, eq=False, repr=False)
    origin: Origin | None = attrs.field(default=None, eq=False, repr=False)

    @property
    def builtin(self) -> bool:
        return self.policy is not None


def _table_chains(table: Table, chains: Iterable[Chain]) -> tuple[Chain, ...]:
    by_name: dict[str, Chain] = {}
    for c in chains:
        if c.name in by_name:
            raise WorldError(f"chain {c.name} appears twice in table {table.name}")
        by_name[c.name] = c
    builtins = BUILTIN_CHAINS.get(table.name, ()) if not table.nft else ()
    out: list[Chain] = []
    for name in builtins:
        found = by_name.pop(name, None)
        out.append(found if found is not None else Chain(name, (), "ACCEPT"))
    for name in sorted(by_name):
        c = by_name[name]
        if c.policy is not None and name not in builtins and not table.nft:
            raise WorldError(f"chain {name} is not built into table {table.name}; it cannot have a policy")
        out.append(c)
    return tuple(out)


@attrs.frozen
class Table:
    """A table with all its chains: built-ins (always present, kernel order) then user chains A→Z.
    An nftables table (``nft``) has no built-in chains: its base chains carry their policy."""

    name: str
    chains: tuple[Chain, ...] = attrs.field(default=())
    nft: bool = False
    _index: dict[str, Chain] = attrs.field(init=False, factory=dict, eq=False, repr=False, hash=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "chains", _table_chains(self, self.chains))
        object.__setattr__(self, "_index", {c.name: c for c in self.chains})

    def chain(self, name: str) -> Chain | None:
        return self._index.get(name)

    def __iter__(self) -> Iterator[Chain]:
        return iter(self.chains)


def _sorted_tables(tables: Iterable[Table]) -> tuple[Table, ...]:
    items = tuple(tables)
    names = [t.name for t in items]
    if len(set(names)) != len(names):
        raise WorldError(f"a table appears twice: {names}")

    def key(t: Table) -> tuple[int, str]:
        return (TABLE_ORDER.index(t.name), "") if t.name in TABLE_ORDER else (len(TABLE_ORDER), t.name)

    return tuple(sorted(items, key=key))


@attrs.frozen
class BaseChain:
    """An nftables base chain: the ``chain`` of its table registered at ``hook`` (the iptables hook
    names) with ``priority``, of ``type`` filter, nat or route."""

    chain: str
    hook: str
    priority: int
    type: Literal["filter", "nat", "route"] = "filter"


def _bases(values: Iterable[BaseChain]) -> tuple[BaseChain, ...]:
    return tuple(values)


@attrs.frozen
class NftTable:
    """A native nftables table in the rule model: ``family`` (``ip``, ``ip6`` or ``inet``: an inet
    table sits in both families' rulesets), ``name``, its chains as a ``Table`` (``nft=True``) and
    which of them are base chains. In traces its rules read ``inet NAME::CHAIN#n``."""

    family: Literal["ip", "ip6", "inet"]
    name: str
    table: Table
    bases: tuple[BaseChain, ...] = attrs.field(default=(), converter=_bases)
    #: the table as ``nft -f`` text, when it was read or generated as nft (what the kernel oracle loads)
    text: str | None = attrs.field(default=None, eq=False, repr=False)

    @property
    def key(self) -> str:
        return f"{self.family} {self.name}"


def _nft_tables(values: Iterable[NftTable]) -> tuple[NftTable, ...]:
    return tuple(values)


@attrs.frozen
class Ruleset:
    """All tables of one address family: iptables' (``tables``) and native nftables ones (``nft``).

    The order is the order of registration, which decides between base chains of equal priority
    (the one registered last runs first): iptables' tables are registered before every native table,
    then the ``nft`` tables in order, each table's base chains in the order of ``bases`` (the order
    ``nft list ruleset`` lists tables and chains: the order they were created). The kernel oracle
    loads them in this order (``Rulesets.nft_load_order``)."""

    family: Family = "ipv4"
    tables: tuple[Table, ...] = attrs.field(default=(), converter=_sorted_tables)
    nft: tuple[NftTable, ...] = attrs.field(default=(), converter=_nft_tables)

    def table(self, name: str) -> Table | None:
        """An iptables table by name, or an nftables one by its ``FAMILY NAME`` key."""
        for t in self.tables:
            if t.name == name:
                return t
        for n in self.nft:
            if n.key == name:
                return n.table
        return None

    def chain(self, table: str, chain: str) -> Chain | None:
        t = self.table(table)
        return None if t is None else t.chain(chain)

    def stages(self, hook: Hook) -> tuple[Stage, ...]:
        """Every base chain run at ``hook``, in kernel order (``model.path.kernel_order``): iptables'
        tables at their fixed priorities, native nftables base chains at theirs, nat chains inside
        the nat hook, the later registration first on a tie."""
        if not self.nft:
            return stages(hook)
        registered = [s for h in HOOKS for s in stages(h)]
        for n in self.nft:
            registered += [Stage(n.key, b.hook, b.priority, b.chain, b.type)  # type: ignore[arg-type]
                           for b in n.bases]
        return kernel_order(hook, registered, lambda s: self.start(s) is not None)

    def start(self, stage: Stage) -> Chain | None:
        """The chain a stage starts in (an absent table or chain: None, which accepts)."""
        t = self.table(stage.table)
        return None if t is None else t.chain(stage.chain or stage.hook)

    def rule(self, ref: RuleRef) -> Rule:
        c = self.chain(ref.table, ref.chain)
        if c is None or not 1 <= ref.index <= len(c.rules):
            raise KeyError(str(ref))
        return c.rules[ref.index - 1]

    def all_tables(self) -> tuple[Table, ...]:
        return (*self.tables, *(n.table for n in self.nft))

    def rule_count(self) -> int:
        return sum(len(c.rules) for t in self.all_tables() for c in t.chains)

    @property
    def empty(self) -> bool:
        return not self.tables and not self.nft


def _problems(values: Iterable[LoadProblem]) -> tuple[LoadProblem, ...]:
    return tuple(values)


@attrs.frozen
class Rulesets:
    """What a pod's network namespace holds: the IPv4 (iptables) and IPv6 (ip6tables) rulesets, and
    what loading them would have refused (``load_problems``: found before loading, reported as
    findings; a refused transaction left nothing of itself in the rulesets)."""

    ipv4: Ruleset = attrs.field(factory=lambda: Ruleset("ipv4"))
    ipv6: Ruleset = attrs.field(factory=lambda: Ruleset("ipv6"))
    load_problems: tuple[LoadProblem, ...] = attrs.field(default=(), converter=_problems, eq=False)

    @ipv4.validator
    def _v4(self, _a: attrs.Attribute[Ruleset], v: Ruleset) -> None:
        if v.family != "ipv4":
            raise WorldError("Rulesets.ipv4 must be an ipv4 ruleset")

    @ipv6.validator
    def _v6(self, _a: attrs.Attribute[Ruleset], v: Ruleset) -> None:
        if v.family != "ipv6":
            raise WorldError("Rulesets.ipv6 must be an ipv6 ruleset")

    def for_family(self, family: Family) -> Ruleset:
        return self.ipv4 if family == "ipv4" else self.ipv6

    def nft_load_order(self) -> tuple[NftTable, ...]:
        """Every native table once (an ``inet`` one sits in both families), in an order that keeps
        each family's ``nft`` order: the registration order both rulesets assume. ``WorldError``
        when the two families list their shared ``inet`` tables in different orders."""
        v6 = list(self.ipv6.nft)
        keys6 = [t.key for t in v6]
        out: list[NftTable] = []
        done: set[str] = set()
        j = 0
        for t in self.ipv4.nft:
            if t.key in keys6:
                at = keys6.index(t.key)
                if at < j:
                    raise WorldError(f"the nft table {t.key} is listed in a different order in the two families")
                out += [u for u in v6[j:at] if u.key not in done]
                done.update(u.key for u in v6[j:at])
                j = at + 1
            if t.key not in done:
                out.append(t)
                done.add(t.key)
        out += [u for u in v6[j:] if u.key not in done]
        return tuple(out)

    def for_address(self, addr: IPAddress | IPNetwork) -> Ruleset:
        return self.for_family(family_of(addr))
