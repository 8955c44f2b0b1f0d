"""Matches, targets, rules, chains, tables and rulesets in the parser's normal form.

What a match or target kind looks like when drawn, and where it may be drawn, is one entry of a
table keyed by the model class: ``BASIC_MATCHES`` (``-s -d -p -i -o``), ``MODULE_MATCHES``
(``-m ...``) and ``TARGETS``. ``matches()``, ``rules()`` and ``targets()`` draw from every entry
that fits the rule's ``Place``, in table order, so a new kind is one new entry.

The kinds only native nftables rules lower to (``meshsolve.model.nftrules``) fit only an ``nft``
place (``rules(..., nft=True)``): iptables has no text for them.

With ``kernel=True`` an entry fits only where the real kernel (iptables 1.8.9, nf_tables) accepts
it: where the kind registry (``meshsolve.model.kinds``) says the loader accepts it (owner in
OUTPUT/POSTROUTING, ``-i`` not on output hooks, ``-m socket`` in PREROUTING/INPUT, TPROXY in mangle
PREROUTING, REDIRECT/DNAT in nat PREROUTING/OUTPUT, SNAT in nat INPUT/POSTROUTING, MASQUERADE in nat
POSTROUTING, CT and TRACE in raw, REJECT in filter INPUT/FORWARD/OUTPUT, no DROP in nat), and NAT
ports only after ``-p tcp|udp``. User chains then hold only hook-independent rules, and jumps never
form a loop (a user chain only jumps to chains after it in name order). Owner ids are numbers
(names would need /etc/passwd).

A ``Palette`` makes rules about a given world: their addresses, ports, ids and marks are the
world's (see ``meshsolve.strategies._worlds``).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable
from typing import Any

import attrs
from hypothesis import strategies as st

from meshsolve.model.kinds import MATCH_KINDS, TARGET_KINDS
from meshsolve.model.net import Family, PortRange
from meshsolve.model.path import TABLE_HOOKS, TABLE_ORDER
from meshsolve.model.rules import (
    BUILTIN_CHAINS,
    Accept,
    AddressSet,
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
    FamilyMatch,
    Goto,
    InInterface,
    InterfaceSet,
    Jump,
    Log,
    MarkMatch,
    MarkRanges,
    MarkStatements,
    MarkStep,
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
    Rule,
    Ruleset,
    Rulesets,
    SetMark,
    SetMatch,
    Snat,
    SocketMatch,
    SocketOwner,
    Source,
    StateMatch,
    Table,
    Target,
    Tproxy,
    TproxySocket,
    Trace,
)
from meshsolve.strategies._addresses import networks, port_ranges

__all__ = [
    "BASIC_MATCHES",
    "MODULE_MATCHES",
    "TARGETS",
    "Draw",
    "Palette",
    "Place",
    "chain_names",
    "chains",
    "matches",
    "rules",
    "rulesets",
    "rulesets_pair",
    "tables",
    "targets",
]

M32 = 0xFFFFFFFF
_INPUT_HOOKS = ("PREROUTING", "INPUT", "FORWARD")
_OUTPUT_HOOKS = ("OUTPUT", "FORWARD", "POSTROUTING")
_STATES = ("INVALID", "NEW", "RELATED", "ESTABLISHED", "UNTRACKED")
_ADDRTYPES = ("UNSPEC", "UNICAST", "LOCAL", "BROADCAST", "ANYCAST", "MULTICAST", "BLACKHOLE",
              "UNREACHABLE", "PROHIBIT")
_NO_V6_ADDRTYPES = ("BROADCAST", "BLACKHOLE", "PROHIBIT")  # the kernel refuses them for IPv6


@attrs.frozen
class Palette:
    """The values a world's rules draw from, instead of anything: the CIDRs ``-s``/``-d`` name, the
    addresses NAT and TPROXY send to, ports and port ranges, owner ids, marks, interfaces and TCP
    flag options. With a palette, rules name what the world's flows carry, so they decide flows."""

    nets: tuple[str, ...]
    addrs: tuple[str, ...]
    ports: tuple[int, ...]
    ranges: tuple[tuple[int, int], ...] = ()
    ids: tuple[str, ...] = ("1000", "1337")
    marks: tuple[int, ...] = (0x539, 0x53A)
    masks: tuple[int, ...] = (M32, 0xFF)
    ifaces: tuple[str, ...] = ("lo", "eth0")
    tcp_extras: tuple[tuple[str, ...], ...] = ((),)
    protos: tuple[str | None, ...] = (None, "tcp", "tcp", "tcp", "udp")
    # only what the model decides: no kind or option it leaves undetermined (the kernel oracle's
    # worlds, whose flows are compared outcome for outcome)
    decided: bool = False
    # conntrack zones ``CT --zone`` puts packets in (raw table); none: CT is one of the rare kinds
    zones: tuple[int, ...] = ()

    def port_ranges(self) -> st.SearchStrategy[PortRange]:
        singles = st.sampled_from(self.ports).map(PortRange.single)
        if not self.ranges:
            return singles
        return st.one_of(singles, st.sampled_from(self.ranges).map(lambda r: PortRange(*r)))


@attrs.frozen
class Place:
    """Where a match or target is drawn: the rule's family, table and chain, whether the kernel must
    accept it, the rule's ``-p`` (ports, REDIRECT and TPROXY need tcp or udp), the chains a jump
    may name, and the world's ``palette`` (None: any value)."""

    family: Family = "ipv4"
    table: str = "filter"
    chain: str = "INPUT"
    kernel: bool = False
    proto: str | None = None
    jumpable: tuple[str, ...] = ()
    palette: Palette | None = None
    nft: bool = False  # a rule of a native nftables table (the nft-only kinds fit only here)

    @property
    def builtin(self) -> bool:
        return self.chain in BUILTIN_CHAINS.get(self.table, ())

    def hook(self, *chains: str) -> bool:
        """A built-in chain named one of ``chains``."""
        return self.builtin and self.chain in chains

    @property
    def ports(self) -> bool:
        """The rule's protocol has ports."""
        return self.proto in ("tcp", "udp")

    def loader_accepts(self, kind: type) -> bool:
        """The kind registry's placement rule: the loader accepts ``kind`` here (a user chain may be
        reached from every hook of its table)."""
        k = MATCH_KINDS.get(kind) or TARGET_KINDS[kind]
        if self.builtin:
            return k.allowed(self.table, frozenset({self.chain}), self.chain) is None
        return k.allowed(self.table, frozenset(TABLE_HOOKS.get(self.table, ())), None) is None


def _anywhere(place: Place) -> bool:
    return True


@attrs.frozen
class Draw:
    """How one kind is drawn: ``build(place)`` is its strategy, drawn only where ``fits(place)``
    (and, with ``kernel``, where the kind registry says the loader accepts it)."""

    build: Callable[[Place], st.SearchStrategy[Any]]
    fits: Callable[[Place], bool] = _anywhere


def _kernel_or(cond: Callable[[Place], bool]) -> Callable[[Place], bool]:
    """Anywhere, or with ``kernel`` only where ``cond`` holds."""
    return lambda p: not p.kernel or cond(p)


# --- building blocks (built from small pieces: from_regex strategies are slow to draw) ---------------

_iface = st.builds(lambda stem, num, plus: f"{stem}{num}{'+' if plus else ''}",
                   st.sampled_from(["eth", "lo", "veth", "ens", "wg", "cni", "nic-x"]),
                   st.sampled_from(["", "0", "1", "12"]), st.booleans())
_owner_id = st.one_of(st.integers(0, 70000).map(str),
                      st.tuples(st.integers(0, 5000), st.integers(1, 5000)).map(
                          lambda t: f"{t[0]}-{t[0] + t[1]}"))
_mark = st.one_of(st.integers(0, M32), st.sampled_from([0x539, 0x53A, 0xFF, 0]))
_mask = st.one_of(st.just(M32), st.integers(0, M32))
_comment = st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=29)
_opaque_token = st.one_of(st.sampled_from(["10:20", "a,b", "x.y/z", "LOCAL", "_q-"]),
                          st.integers(0, 10**6).map(str))
# tcp options kept raw in PortMatch.extra, in the normal form (kernel flag order, option first)
_TCP_EXTRAS: tuple[tuple[str, ...], ...] = (
    (), (), ("--tcp-flags", "FIN,SYN,RST,ACK", "SYN"), ("!", "--tcp-flags", "SYN,ACK", "SYN"),
    ("--tcp-option", "5", "--tcp-flags", "FIN,SYN,RST,PSH,ACK,URG", "NONE"))
_LOG_OPTIONS = ["--log-tcp-sequence", "--log-tcp-options", "--log-ip-options", "--log-uid", "--log-macdecode"]
_LOG_EXTRAS = st.lists(st.sampled_from(list(_LOG_OPTIONS)), unique=True).map(
    lambda xs: tuple(sorted(xs, key=_LOG_OPTIONS.index)))
_SOCKET_OPTIONS = ("--transparent", "--nowildcard", "--restore-skmark")


def _nets(place: Place) -> st.SearchStrategy[Any]:
    if place.palette is None:
        return networks(place.family)
    return st.sampled_from(place.palette.nets)


def _marks(place: Place) -> tuple[st.SearchStrategy[int], st.SearchStrategy[int]]:
    """(values, masks) of marks."""
    if place.palette is None:
        return _mark, _mask
    return st.sampled_from(place.palette.marks), st.sampled_from(place.palette.masks)


def _ifaces(place: Place) -> st.SearchStrategy[str]:
    return _iface if place.palette is None else st.sampled_from(place.palette.ifaces)


def _ranges(place: Place, *, full_ok: bool = False) -> st.SearchStrategy[PortRange]:
    return port_ranges(full_ok=full_ok) if place.palette is None else place.palette.port_ranges()


@functools.cache
def _owner(place: Place) -> st.SearchStrategy[OwnerMatch]:
    ids = _owner_id if place.palette is None else st.sampled_from(place.palette.ids)

    @st.composite
    def build(draw: st.DrawFn) -> OwnerMatch:
        uid = draw(st.none() | ids)
        gid = draw(st.none() | ids)
        se = draw(st.sampled_from([None, True, False]))
        if uid is None and gid is None and se is None:
            uid = "1337"
        suppl = gid is not None and not (place.palette is not None and place.palette.decided) and draw(st.booleans())
        return OwnerMatch(uid=uid, uid_negated=uid is not None and draw(st.booleans()),
                          gid=gid, gid_negated=gid is not None and draw(st.booleans()),
                          socket_exists=se, suppl_groups=suppl)

    return build()


@functools.cache
def _port_match(place: Place) -> st.SearchStrategy[PortMatch]:
    proto = str(place.proto)
    ranges = _ranges(place)
    extras = _TCP_EXTRAS if place.palette is None else place.palette.tcp_extras

    @st.composite
    def build(draw: st.DrawFn) -> PortMatch:
        sport = draw(st.none() | ranges)
        dport = draw(st.none() | ranges)
        if sport is None and dport is None:
            dport = draw(ranges)

        def negatable(r: PortRange | None) -> bool:  # else iptables-nft stores the complement
            return r is not None and r.lo > 0 and r.hi < 65535

        extra = draw(st.sampled_from(extras)) if proto == "tcp" else ()
        return PortMatch(proto, sport, dport,  # type: ignore[arg-type]
                         negatable(sport) and draw(st.booleans()),
                         negatable(dport) and draw(st.booleans()), extra)

    return build()


@functools.cache
def _multiport(place: Place) -> st.SearchStrategy[MultiportMatch]:
    if place.palette is None:
        item = st.one_of(st.integers(0, 65535).map(lambda p: PortRange(p, p)), port_ranges(single_ok=False))
    else:
        item = place.palette.port_ranges()
    return st.builds(MultiportMatch, st.sampled_from(["sports", "dports", "ports"]),
                     st.lists(item, min_size=1, max_size=7 if place.palette is None else 3).map(tuple),
                     st.booleans())


def _addrtype(place: Place) -> st.SearchStrategy[AddrtypeMatch]:
    types = _ADDRTYPES if place.family == "ipv4" else tuple(t for t in _ADDRTYPES if t not in _NO_V6_ADDRTYPES)
    if place.palette is not None:  # the types the model decides
        types = tuple(t for t in ("UNSPEC", "UNICAST", "LOCAL", "BROADCAST", "MULTICAST") if t in types)
        if place.palette.decided and place.family == "ipv6":  # the kernel's IPv6 UNICAST also holds for
            types = tuple(t for t in types if t != "UNICAST")  # local addresses; the model's does not
    return st.builds(lambda src, sn, dst, dn: AddrtypeMatch(src, sn and src is not None, dst, dn),
                     st.none() | st.sampled_from(types), st.booleans(), st.sampled_from(types), st.booleans())


def _opaque_match(place: Place) -> st.SearchStrategy[OpaqueMatch]:
    if place.kernel:  # a module the kernel has, with arguments it accepts
        return st.just(OpaqueMatch("length", ("--length", "10:20")))
    return st.builds(OpaqueMatch, st.sampled_from(["length", "limit", "pkttype"]),
                     st.lists(_opaque_token, max_size=3).map(tuple))


def _socket(place: Place) -> st.SearchStrategy[SocketMatch]:
    """``-m socket`` with a subset of its options, in the order iptables-save prints them."""
    options = _SOCKET_OPTIONS[:2] if place.palette is not None and place.palette.decided else _SOCKET_OPTIONS
    return st.lists(st.sampled_from(options), unique=True, max_size=3).map(
        lambda opts: SocketMatch(tuple(o for o in _SOCKET_OPTIONS if o in opts)))


def _connmark_target(place: Place) -> st.SearchStrategy[ConnmarkTarget]:
    marks, masks = _marks(place)
    return st.one_of(st.builds(ConnmarkTarget, st.just("set-xmark"), marks, masks),
                     st.builds(lambda a, m1, m2: ConnmarkTarget(a, 0, M32, m1, m2),
                               st.sampled_from(["save-mark", "restore-mark"]), masks, masks))


def _tproxy(place: Place) -> st.SearchStrategy[Tproxy]:
    if place.palette is None:
        on_ip = st.none() | st.just(ipaddress.ip_address("2001:db8::1" if place.family == "ipv6" else "192.0.2.1"))
        port = st.integers(0, 65535)
    else:
        on_ip = st.none() | st.sampled_from(place.palette.addrs).map(ipaddress.ip_address)
        port = st.sampled_from(place.palette.ports)
    marks, masks = _marks(place)
    marked = st.builds(Tproxy, port, on_ip, marks, masks).filter(lambda t: (t.mark, t.mask) != (0, 0))
    if place.palette is not None and place.palette.decided:
        return marked  # the world's policy route needs the mark
    return st.one_of(st.builds(Tproxy, port, on_ip, st.none()), marked)


def _reject(place: Place) -> st.SearchStrategy[Reject]:
    types = ["icmp-host-prohibited", "icmp-net-unreachable"] if place.family == "ipv4" else [
        "icmp6-adm-prohibited", "icmp6-no-route"]
    if place.proto == "tcp" or not place.kernel:
        types.append("tcp-reset")
    return st.builds(Reject, st.none() | st.sampled_from(types))


def _ct(place: Place) -> st.SearchStrategy[CtTarget]:
    """``CT --zone N`` (from the palette's zones when it has some: what the model decides), else
    any zone or ``--notrack``."""
    if _zones(place):
        return st.sampled_from(_zones(place)).map(CtTarget)
    return st.one_of(st.builds(CtTarget, st.integers(1, 65535)), st.just(CtTarget(None, True)))


def _redirect(place: Place) -> st.SearchStrategy[Redirect]:
    """``REDIRECT [--to-ports R] [--random]``: iptables refuses --to-ports unless -p tcp/udp/sctp/dccp
    comes before the target; ``--random`` (a port the kernel picks at random) only where the palette
    does not ask for decided rules."""
    decided = place.palette is not None and place.palette.decided
    return st.builds(Redirect, st.none() | (_ranges(place, full_ok=True) if place.ports else st.nothing()),
                     st.just(False) if decided else st.booleans())


def _host(a: ipaddress.IPv4Address | ipaddress.IPv6Address, bracket: bool) -> str:
    return f"[{a}]" if bracket and a.version == 6 else str(a)


@functools.cache
def _nat_to(place: Place) -> st.SearchStrategy[str]:
    """A decodable ``--to-destination``/``--to-source``: ``ADDR``, ``ADDR-ADDR``, and with a protocol
    that has ports ``ADDR:PORT``, ``ADDR:LO-HI`` (IPv6 in brackets), in iptables-save's form."""
    if place.palette is None:
        from meshsolve.strategies._addresses import addresses

        addr = addresses(place.family)
        port = st.integers(1, 65535)
    else:
        addr = st.sampled_from(place.palette.addrs).map(ipaddress.ip_address)
        port = st.sampled_from(place.palette.ports)

    @st.composite
    def build(draw: st.DrawFn) -> str:
        a = draw(addr)
        host = _host(a, False)
        ranged = not (place.palette is not None and place.palette.decided) and draw(st.integers(0, 4)) == 0
        if ranged:  # an address range
            host = f"{a}-{a + draw(st.integers(0, 3))}"
        if not place.ports or (ranged and a.version == 6) or draw(st.booleans()):
            return host
        host = _host(a, True) if not ranged else host
        lo = draw(port)
        if draw(st.booleans()):
            return f"{host}:{lo}"
        hi = min(65535, lo + draw(st.integers(1, 4)))
        return f"{host}:{lo}-{hi}"

    return build()


def _nft_only(place: Place) -> bool:
    return place.nft and not place.kernel


def _nft_mark_step() -> st.SearchStrategy[MarkStep]:
    return st.one_of(st.builds(MarkStep, st.sampled_from(["mark", "ctmark"]), st.none(), st.just(0), _mark),
                     st.builds(MarkStep, st.sampled_from(["mark", "ctmark"]), st.sampled_from(["mark", "ctmark"]),
                               _mask, st.one_of(st.just(0), _mark)))


_NFT_PROTOCOLS = ("tcp", "udp", "icmp", "ipv6-icmp", "sctp")
_mark_range = st.tuples(_mark, _mark).map(lambda t: (min(t), max(t)))


# --- the kind tables (order = the order of one_of's branches) ----------------------------------------

BASIC_MATCHES: dict[type, Draw] = {
    Source: Draw(lambda p: st.builds(Source, _nets(p), st.booleans())),
    Destination: Draw(lambda p: st.builds(Destination, _nets(p), st.booleans())),
    Protocol: Draw(lambda p: st.builds(Protocol, st.sampled_from(["tcp", "udp"]))),
    InInterface: Draw(lambda p: st.builds(InInterface, _ifaces(p), st.booleans()),
                      _kernel_or(lambda p: p.hook(*_INPUT_HOOKS))),
    OutInterface: Draw(lambda p: st.builds(OutInterface, _ifaces(p), st.booleans()),
                       _kernel_or(lambda p: p.hook(*_OUTPUT_HOOKS))),
}
"""``-s -d -p -i -o``: ``matches()`` draws one of them; ``rules()`` each at most once (``-p`` its own way)."""

MODULE_MATCHES: dict[type, Draw] = {
    MarkMatch: Draw(lambda p: st.builds(MarkMatch, *_marks(p), st.booleans())),
    ConnmarkMatch: Draw(lambda p: st.builds(ConnmarkMatch, *_marks(p), st.booleans())),
    ConntrackMatch: Draw(lambda p: st.builds(
        ConntrackMatch, st.lists(st.sampled_from(_STATES), min_size=1, unique=True).map(tuple), st.booleans())),
    StateMatch: Draw(lambda p: st.builds(
        StateMatch, st.lists(st.sampled_from(_STATES[:4]), min_size=1, unique=True).map(tuple), st.booleans())),
    CommentMatch: Draw(lambda p: st.builds(CommentMatch, _comment)),
    AddrtypeMatch: Draw(_addrtype),
    OpaqueMatch: Draw(_opaque_match),
    PortMatch: Draw(_port_match, lambda p: p.ports),
    MultiportMatch: Draw(_multiport, lambda p: p.ports),
    OwnerMatch: Draw(_owner, _kernel_or(lambda p: p.hook("OUTPUT", "POSTROUTING"))),
    SocketMatch: Draw(_socket, _kernel_or(lambda p: p.hook("PREROUTING", "INPUT"))),
    # an ipset lookup: its members are the world's (none given here: undecided), so never in decided rules
    SetMatch: Draw(lambda p: st.builds(SetMatch, st.sampled_from(["probes", "allow-v4"]),
                                       st.sampled_from(["src", "dst"]), st.booleans()),
                   lambda p: not p.kernel),  # the kernel cannot load a lookup of a set that does not exist
    # nftables only
    FamilyMatch: Draw(lambda p: st.builds(FamilyMatch, st.sampled_from(["ipv4", "ipv6"]), st.booleans()),
                      _nft_only),
    AddressSet: Draw(lambda p: st.builds(AddressSet, st.sampled_from(["src", "dst"]),
                                         st.lists(networks(p.family), min_size=1, max_size=4), st.booleans()),
                     _nft_only),
    InterfaceSet: Draw(lambda p: st.builds(InterfaceSet, st.sampled_from(["in", "out"]),
                                           st.lists(_iface, min_size=1, max_size=3), st.booleans()), _nft_only),
    ProtocolSet: Draw(lambda p: st.builds(ProtocolSet, st.lists(st.sampled_from(_NFT_PROTOCOLS), min_size=1,
                                                                max_size=3), st.booleans()), _nft_only),
    PortPair: Draw(lambda p: st.builds(PortPair, st.sampled_from(["tcp", "udp", "th"]), st.integers(0, 65535),
                                       st.integers(0, 65535), st.booleans()), _nft_only),
    SocketOwner: Draw(lambda p: st.builds(SocketOwner, st.sampled_from(["uid", "gid"]),
                                          st.lists(_owner_id, min_size=1, max_size=3), st.booleans()), _nft_only),
    MarkRanges: Draw(lambda p: st.builds(MarkRanges, st.sampled_from(["meta", "ct"]),
                                         st.lists(_mark_range, min_size=1, max_size=3), _mask, st.booleans()),
                     _nft_only),
    TproxySocket: Draw(lambda p: st.builds(TproxySocket, st.none() | st.integers(1, 65535)), _nft_only),
}
"""``-m ...``: ``rules()`` draws up to three of them, ``matches()`` one (as one of the basic ones)."""

TARGETS: dict[type, Draw] = {
    Accept: Draw(lambda p: st.just(Accept())),
    Return: Draw(lambda p: st.just(Return())),
    Log: Draw(lambda p: st.builds(Log, st.none() | _comment, st.none() | st.sampled_from(["0", "3", "6", "7"]),
                                  _LOG_EXTRAS)),
    Drop: Draw(lambda p: st.just(Drop())),
    Jump: Draw(lambda p: st.sampled_from(p.jumpable).map(Jump), lambda p: bool(p.jumpable)),
    Goto: Draw(lambda p: st.sampled_from(p.jumpable).map(Goto), lambda p: bool(p.jumpable)),
    SetMark: Draw(lambda p: st.builds(SetMark, *_marks(p)), _kernel_or(lambda p: p.table == "mangle")),
    ConnmarkTarget: Draw(_connmark_target, _kernel_or(lambda p: p.table == "mangle")),
    Tproxy: Draw(_tproxy, _kernel_or(lambda p: p.builtin and p.ports)),
    Redirect: Draw(_redirect, _kernel_or(lambda p: p.builtin)),
    Dnat: Draw(lambda p: st.builds(Dnat, _nat_to(p)), _kernel_or(lambda p: p.builtin)),
    Snat: Draw(lambda p: st.builds(Snat, _nat_to(p)), _kernel_or(lambda p: p.builtin)),
    Masquerade: Draw(lambda p: st.builds(Masquerade, st.none() | (_ranges(p) if p.ports else st.nothing())),
                     _kernel_or(lambda p: p.builtin)),
    CtTarget: Draw(_ct),
    Trace: Draw(lambda p: st.just(Trace())),
    Reject: Draw(_reject),
    OpaqueTarget: Draw(lambda p: st.builds(OpaqueTarget, st.just("NFLOG"),
                                           st.integers(1, 100).map(lambda g: ("--nflog-group", str(g))))),
    # nftables only
    MarkStatements: Draw(lambda p: st.builds(MarkStatements, st.lists(_nft_mark_step(), min_size=1, max_size=3)),
                         _nft_only),
}
"""``-j``/``-g``: ``targets()`` draws one of them."""


def _fits(kind: type, d: Draw, place: Place) -> bool:
    return d.fits(place) and (not place.kernel or place.loader_accepts(kind))


def _one_of(table: dict[type, Draw], place: Place) -> list[st.SearchStrategy[Any]]:
    return [d.build(place) for kind, d in table.items() if _fits(kind, d, place)]


# kinds whose meaning the model leaves open (an undetermined end): a palette draws them rarely
_RARE: frozenset[type] = frozenset({OpaqueMatch, SetMatch, OpaqueTarget, CtTarget, Snat, Masquerade})


def _one_of_common(table: dict[type, Draw], place: Place) -> list[st.SearchStrategy[Any]]:
    return [d.build(place) for kind, d in table.items()
            if (kind not in _RARE or (kind is CtTarget and _zones(place))) and _fits(kind, d, place)]


def _zones(place: Place) -> tuple[int, ...]:
    return place.palette.zones if place.palette is not None else ()


@functools.cache
def _module_matches(place: Place, rare: bool = True) -> st.SearchStrategy[Match]:
    return st.one_of(*(_one_of if rare else _one_of_common)(MODULE_MATCHES, place))


@functools.cache
def _targets(place: Place, rare: bool = True) -> st.SearchStrategy[Target]:
    return st.one_of(*(_one_of if rare else _one_of_common)(TARGETS, place))


# --- public strategies ---------------------------------------------------------------------------


def matches(family: Family = "ipv4", table: str = "filter", chain: str = "INPUT",
            kernel: bool = False) -> st.SearchStrategy[Match]:
    """One match (basic or module) of the normal form, valid in ``table``/``chain``."""
    place = Place(family, table, chain, kernel)
    return st.one_of(*_one_of(BASIC_MATCHES, place), _module_matches(place))


def targets(family: Family = "ipv4", table: str = "filter", chain: str = "INPUT",
            jumpable: tuple[str, ...] = (), kernel: bool = False, proto: str | None = None,
            nft: bool = False) -> st.SearchStrategy[Target]:
    """A target valid for ``table``/``chain`` (all targets when ``kernel`` is False; ``nft``: the
    nftables-only ones too)."""
    return _targets(Place(family, table, chain, kernel, proto, tuple(jumpable), None, nft))


@st.composite
def rules(draw: st.DrawFn, family: Family = "ipv4", table: str = "filter", chain: str = "INPUT",
          jumpable: tuple[str, ...] = (), kernel: bool = False, palette: Palette | None = None,
          nft: bool = False) -> Rule:
    """One rule valid in ``table``/``chain``; jumps only to ``jumpable`` chains. With a ``palette``
    its values come from the palette, it has fewer matches, mostly ``-p tcp``, and the kinds the
    model leaves undetermined (unmodelled modules and targets, CT, SNAT/MASQUERADE) are rare.
    ``nft``: a rule of a native nftables table (its own kinds may be drawn too)."""
    place = Place(family, table, chain, kernel, None, tuple(jumpable), palette, nft)
    ms: list[Match] = []
    for kind, d in BASIC_MATCHES.items():
        if kind is not Protocol and _fits(kind, d, place) and draw(st.integers(0, 1 if palette is None else 3)) == 0:
            ms.append(draw(d.build(place)))
    # the protocol last: it decides which module matches and targets fit
    icmp = "icmp" if family == "ipv4" else "ipv6-icmp"
    protos = [None, "tcp", "udp", icmp] if palette is None else list(palette.protos)
    proto: str | None = draw(st.sampled_from(protos))
    if proto is not None:
        neg = proto not in ("tcp", "udp") and draw(st.booleans())
        ms.append(Protocol(proto, neg))
    place = attrs.evolve(place, proto=proto)
    rare = palette is None or (not palette.decided and draw(st.integers(0, 5)) == 0)
    seen: set[type] = set()
    for _ in range(draw(st.integers(0, 3 if palette is None else 2))):
        m = draw(_module_matches(place, rare))
        if kernel and type(m) in seen:
            continue  # iptables-nft may merge repeated native matches
        seen.add(type(m))
        ms.append(m)
    target = draw(st.none() | _targets(place, rare))
    return Rule(tuple(ms), target)


chain_names = st.builds(lambda stem, num: f"{stem}{num}",
                        st.sampled_from(["ISTIO_", "A", "KUBE-", "Z_", "X", "ISTIO_IN_", "ISTIO_OUT"]),
                        st.sampled_from(["", "1", "2", "B", "REDIRECT", "OUTPUT", "DNS"]))
"""User chain names, Istio- and kube-proxy-like."""


@st.composite
def chains(draw: st.DrawFn, family: Family = "ipv4", table: str = "filter", name: str | None = None,
           jumpable: tuple[str, ...] = (), kernel: bool = False, max_rules: int = 4) -> Chain:
    """A chain: a user chain (random name unless given) or, for a built-in ``name``, that chain
    with a policy."""
    cname = name or draw(chain_names)
    builtin = cname in BUILTIN_CHAINS.get(table, ())
    rs = draw(st.lists(rules(family, table, cname, jumpable, kernel), max_size=max_rules))
    policy = (draw(st.sampled_from(["ACCEPT", "DROP"])) if table == "filter" else "ACCEPT") if builtin \
        else None
    return Chain(cname, tuple(rs), policy)


@st.composite
def tables(draw: st.DrawFn, family: Family = "ipv4", name: str | None = None,
           kernel: bool = False, max_rules: int = 4) -> Table:
    """A table with built-in chains (random policy in filter) and up to three user chains."""
    tname = name or draw(st.sampled_from(list(TABLE_ORDER)))
    users = sorted(draw(st.lists(chain_names, max_size=3, unique=True)))
    out: list[Chain] = []
    for k, u in enumerate(users):
        out.append(draw(chains(family, tname, u, tuple(users[k + 1:]), kernel, max_rules)))
    for b in BUILTIN_CHAINS[tname]:
        out.append(draw(chains(family, tname, b, tuple(users), kernel, max_rules)))
    return Table(tname, tuple(out))


@st.composite
def rulesets(draw: st.DrawFn, family: Family = "ipv4", kernel: bool = False,
             max_rules: int = 4) -> Ruleset:
    """A ruleset of one family with zero to five distinct tables."""
    names = draw(st.lists(st.sampled_from(list(TABLE_ORDER)), unique=True, max_size=5))
    return Ruleset(family, tuple(draw(tables(family, n, kernel, max_rules)) for n in names))


def rulesets_pair(kernel: bool = False, max_rules: int = 4) -> st.SearchStrategy[Rulesets]:
    """IPv4 + IPv6 ``Rulesets``."""
    return st.builds(Rulesets, rulesets("ipv4", kernel, max_rules), rulesets("ipv6", kernel, max_rules))


@st.composite
def rules_of_kind(draw: st.DrawFn, kind: type, family: Family = "ipv4", table: str = "filter",
                  chain: str = "INPUT", jumpable: tuple[str, ...] = (), kernel: bool = False,
                  palette: Palette | None = None) -> Rule:
    """A ``-p tcp`` rule valid in ``table``/``chain`` that has a match or target of ``kind`` (see
    :func:`kind_fits` for where one can be drawn)."""
    place = Place(family, table, chain, kernel, "tcp", tuple(jumpable), palette)
    ms: list[Match] = [Protocol("tcp")]
    target: Target | None
    if kind in TARGETS:
        target = draw(TARGETS[kind].build(place))
    else:
        entry = BASIC_MATCHES.get(kind) or MODULE_MATCHES[kind]
        if kind is not Protocol:
            ms.append(draw(entry.build(place)))
        target = draw(st.none() | _targets(place, False))
    return Rule(tuple(ms), target)


def kind_fits(kind: type, family: Family, table: str, chain: str, *, kernel: bool = False,
              jumpable: tuple[str, ...] = ()) -> bool:
    """Whether :func:`rules_of_kind` can draw ``kind`` in ``table``/``chain``."""
    place = Place(family, table, chain, kernel, "tcp", tuple(jumpable))
    entry = BASIC_MATCHES.get(kind) or MODULE_MATCHES.get(kind) or TARGETS[kind]
    return _fits(kind, entry, place)
