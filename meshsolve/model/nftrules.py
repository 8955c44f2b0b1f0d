"""The match and target kinds only native nftables rules lower to (``meshsolve.nftables.lower``).

Most nft items mean what an iptables kind means and lower to it (``ip daddr 10.0.0.0/8`` is a
``Destination``, ``redirect to :15001`` a ``Redirect``). These kinds are for what iptables has no
word for, or means differently:

* ``FamilyMatch`` — ``meta nfproto``, and the family an ``ip``/``ip6`` field implies in an
  ``inet`` table (``ip daddr != 127.0.0.1`` does not hold for an IPv6 packet, negated or not);
* sets: ``AddressSet``, ``InterfaceSet``, ``ProtocolSet``, ``MarkRanges`` (anonymous and named sets,
  ranges, and a second match on a field a rule already tests);
* ``PortPair`` — nft 1.0.6 stores ``tcp dport != 5 tcp sport != 6`` as one compare of the two
  ports: it holds when *either* differs (``docs/nftables.md``);
* ``SocketOwner`` — ``meta skuid``/``skgid``: without a socket the kernel ends the rule (it does
  not match, ``!=`` included), unlike ``-m owner``;
* ``TproxySocket`` — ``tproxy`` finds a transparent socket, or ends the rule and the chain goes on
  (iptables' TPROXY drops instead): the lowering puts this guard before a ``Tproxy`` target;
* ``MarkStatements`` — several ``meta mark set``/``ct mark set`` statements in one rule, or one that
  no iptables target writes (``ct mark set meta mark ^ 1``).

Everything is a frozen value normalised by converters, like the rest of the rule model.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import attrs

from meshsolve.errors import WorldError
from meshsolve.model.net import Family, IPNetwork, decode_ids, to_network

__all__ = [
    "AddressSet",
    "FamilyMatch",
    "InterfaceSet",
    "MarkRanges",
    "MarkStatements",
    "MarkStep",
    "PortPair",
    "ProtocolSet",
    "SocketOwner",
    "TproxySocket",
]

_M32 = 0xFFFFFFFF


def _nets(values: Iterable[IPNetwork | str]) -> tuple[IPNetwork, ...]:
    nets = tuple(dict.fromkeys(to_network(v) for v in values))
    if not nets:
        raise WorldError("an address set needs at least one network")
    if len({n.version for n in nets}) != 1:
        raise WorldError(f"an address set holds one family: {', '.join(map(str, nets))}")
    return tuple(sorted(nets, key=lambda n: (int(n.network_address), n.prefixlen)))


def _names(values: Iterable[str]) -> tuple[str, ...]:
    out = tuple(sorted(dict.fromkeys(values)))
    if not out:
        raise WorldError("a set needs at least one element")
    return out


def _ranges(values: Iterable[tuple[int, int] | list[int]]) -> tuple[tuple[int, int], ...]:
    out = []
    for v in values:
        lo, hi = int(v[0]), int(v[1])
        if not 0 <= lo <= hi <= _M32:
            raise WorldError(f"not a 32-bit range: {lo}-{hi}")
        out.append((lo, hi))
    if not out:
        raise WorldError("a set needs at least one element")
    return tuple(sorted(set(out)))


@attrs.frozen
class FamilyMatch:
    """``meta nfproto ipv4|ipv6``: the packet's address family (``!=`` negated)."""

    family: Family
    negated: bool = False


@attrs.frozen
class AddressSet:
    """``ip saddr|daddr [!=] { NET, ... }`` (ranges become the networks that cover them)."""

    direction: Literal["src", "dst"]
    nets: tuple[IPNetwork, ...] = attrs.field(converter=_nets)
    negated: bool = False


@attrs.frozen
class InterfaceSet:
    """``iifname|oifname [!=] { NAME, ... }``; a trailing ``+`` is a prefix wildcard (nft's ``*``).
    A packet without that interface (``iifname`` on output hooks) has the empty name."""

    direction: Literal["in", "out"]
    names: tuple[str, ...] = attrs.field(converter=_names)
    negated: bool = False


@attrs.frozen
class ProtocolSet:
    """``meta l4proto [!=] { tcp, udp, ... }``"""

    names: tuple[str, ...] = attrs.field(converter=_names)
    negated: bool = False


@attrs.frozen
class PortPair:
    """The source and destination port of ``protocol`` (``th``: any protocol with ports) compared
    as one value: ``(sport, dport) == (a, b)``, or with ``negated`` ``!=`` — either differs."""

    protocol: str
    sport: int
    dport: int
    negated: bool = True


@attrs.frozen
class SocketOwner:
    """``meta skuid|skgid [!=] ID-or-set``: ids as written (``1337``, ``1000-2000``, a name only the
    world can resolve). Holds only for a packet with a local socket, ``!=`` too."""

    key: Literal["uid", "gid"]
    ids: tuple[str, ...] = attrs.field(converter=_names)
    negated: bool = False
    # decoded from ``ids`` (``decode_ids``), one per id: its range, None for a name
    ranges: tuple[tuple[int, int] | None, ...] = attrs.field(init=False, default=(), eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "ranges", tuple(decode_ids(t) for t in self.ids))


@attrs.frozen
class MarkRanges:
    """``meta mark|ct mark [& MASK] [!=] { RANGE, ... }`` (one value is a one-value range)."""

    source: Literal["meta", "ct"]
    ranges: tuple[tuple[int, int], ...] = attrs.field(converter=_ranges)
    mask: int = _M32
    negated: bool = False


@attrs.frozen
class TproxySocket:
    """What ``tproxy to :PORT`` needs to go on: a transparent socket takes the packet (a first
    packet: a transparent listener on ``port``, None = the packet's destination port; a later one:
    its connection's socket). Without one nft ends the rule and the chain continues."""

    port: int | None = None


@attrs.frozen
class MarkStep:
    """One setter: ``key`` (``mark`` or ``ctmark``) becomes ``(source & mask) ^ xor`` (``source``
    None: the constant ``xor``)."""

    key: Literal["mark", "ctmark"]
    source: Literal["mark", "ctmark"] | None = None
    mask: int = 0
    xor: int = 0

    def __attrs_post_init__(self) -> None:
        if not (0 <= self.mask <= _M32 and 0 <= self.xor <= _M32):
            raise WorldError(f"mark value out of 32 bits: {self.mask:#x} {self.xor:#x}")
        if self.source is None and self.mask:
            object.__setattr__(self, "mask", 0)


def _steps(values: Iterable[MarkStep]) -> tuple[MarkStep, ...]:
    out = tuple(values)
    if not out:
        raise WorldError("mark statements need at least one step")
    return out


@attrs.frozen
class MarkStatements:
    """Mark and conntrack-mark setters applied in order; the rule then continues."""

    steps: tuple[MarkStep, ...] = attrs.field(converter=_steps)
