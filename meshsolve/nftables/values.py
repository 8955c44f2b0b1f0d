"""Typed values for selectors: one decoder for the text words and the JSON scalars of every form.

``scalar(kind, x)`` turns ``"127.0.0.6/32"``, ``"0x539"``, ``6``, ``"icmpv6"``... into the model's
normal values; ``element`` also reads ranges; ``make_set`` sorts and de-duplicates set elements the
way nft lists them (by value: protocols by number, addresses by address). Errors are ``BadValue``
with a message that says what was expected; the readers add the position.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

from meshsolve.model.net import IPNetwork
from meshsolve.nftables.kinds import (
    CT_STATES,
    ETHERTYPES,
    NFPROTOS,
    PROTOCOL_ALIASES,
    PROTOCOL_NAMES,
    PROTOCOLS,
    ValueKind,
)
from meshsolve.nftables.model import M32, Element, Range

__all__ = ["BadValue", "element", "make_range", "make_set", "mark_prefix", "number", "scalar"]


class BadValue(Exception):
    """Internal: a value that does not fit its selector (the reader adds file and line)."""


_DEC = re.compile(r"[0-9]{1,20}")
_HEX = re.compile(r"0[xX][0-9a-fA-F]{1,16}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_IFNAME_MAX = 15

#: Numeric bounds per kind (inclusive).
_BOUNDS: dict[ValueKind, int] = {
    ValueKind.PORT: 65535, ValueKind.PROTO: 255, ValueKind.NFPROTO: 255, ValueKind.ETHERTYPE: 65535,
    ValueKind.UID: M32, ValueKind.GID: M32, ValueKind.MARK: M32, ValueKind.ZONE: 65535,
}


def number(text: str | int, what: str, top: int = M32) -> int:
    """A decimal or ``0x`` number in ``0..top`` (digits are bounded before ``int()`` sees them)."""
    if isinstance(text, bool):
        raise BadValue(f"expected {what}, got {text!r}")
    if isinstance(text, int):
        value = text
    elif _DEC.fullmatch(text):
        value = int(text)
    elif _HEX.fullmatch(text):
        value = int(text, 16)
    else:
        raise BadValue(f"expected {what} (a number), got {text!r}")
    if not 0 <= value <= top:
        raise BadValue(f"{what} {text!r} is out of range 0..{top}")
    return value


def _network(text: str, version: int) -> IPNetwork:
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise BadValue(f"expected an IPv{version} address or prefix, got {text!r}") from None
    if net.version != version:
        raise BadValue(f"expected an IPv{version} address, got {text!r}")
    return net


def _named(table: dict[str, int], value: str | int, what: str, top: int) -> int | str:
    """A name from ``table`` (kept as the name) or a number (named when the table has it)."""
    if isinstance(value, str) and value in table:
        return value
    n = number(value, what, top)
    names = {v: k for k, v in table.items()}
    return names.get(n, n)


def scalar(kind: ValueKind, value: str | int) -> int | str | IPNetwork:
    """One value of ``kind`` from a text word or a JSON scalar."""
    if kind in (ValueKind.ADDR4, ValueKind.ADDR6):
        if not isinstance(value, str):
            raise BadValue(f"expected an address, got {value!r}")
        return _network(value, 4 if kind is ValueKind.ADDR4 else 6)
    if kind is ValueKind.PROTO:
        if isinstance(value, str):
            name = PROTOCOL_ALIASES.get(value, value)
            if name in PROTOCOLS:
                return name
        n = number(value, "a protocol name or number", 255)
        return PROTOCOL_NAMES.get(n, n)
    if kind is ValueKind.NFPROTO:
        return _named(NFPROTOS, value, "ipv4 or ipv6", 255)
    if kind is ValueKind.ETHERTYPE:
        return _named(ETHERTYPES, value, "an ethernet type", 65535)
    if kind is ValueKind.IFNAME:
        if isinstance(value, int) or not value or len(value) > _IFNAME_MAX + 1 or \
                (len(value) > _IFNAME_MAX and not value.endswith("*")) or \
                any(c in value for c in ' "\\/\t') or not value.isprintable():
            raise BadValue(f"expected an interface name (at most {_IFNAME_MAX} characters), got {value!r}")
        return value
    if kind in (ValueKind.UID, ValueKind.GID):
        if isinstance(value, str) and _NAME.fullmatch(value) and not _HEX.fullmatch(value):
            return value
        return number(value, "a user or group id", M32)
    if kind is ValueKind.CTSTATE:
        if value not in CT_STATES:
            raise BadValue(f"expected a conntrack state ({', '.join(CT_STATES)}), got {value!r}")
        return str(value)
    if kind is ValueKind.PORT and isinstance(value, str) and _NAME.fullmatch(value) and "." not in value:
        return value  # a service name: nft resolves it through /etc/services
    return number(value, kind.value, _BOUNDS[kind])


def mark_prefix(value: str | int, length: str | int) -> Range:
    """nft lists an aligned interval of marks as a prefix (``0x00000010/28`` = ``0x10-0x1f``)."""
    n = number(value, "a mark", M32)
    bits = number(length, "a prefix length", 32)
    if (bits == 0 and n != 0) or not 0 <= bits <= 32:
        raise BadValue(f"expected a mark prefix, got {value}/{length}")
    host = (1 << (32 - bits)) - 1
    return Range(n & ~host & M32, (n & ~host & M32) | host)


def element(kind: ValueKind, text: str | int) -> Element:
    """A set element or match value of ``kind``: a scalar or a ``lo-hi`` range (a word that is a
    scalar, such as the protocol ``ipv6-icmp`` or the user ``my-user``, is not split); marks may be
    written as prefixes."""
    if kind is ValueKind.MARK and isinstance(text, str) and "/" in text:
        value, _, length = text.partition("/")
        return mark_prefix(value, length)
    if isinstance(text, str) and "-" in text and kind in (
            ValueKind.PORT, ValueKind.MARK, ValueKind.ZONE, ValueKind.ADDR4, ValueKind.ADDR6,
            ValueKind.UID, ValueKind.GID, ValueKind.PROTO):
        try:
            return scalar(kind, text)
        except BadValue:
            pass
        lo, _, hi = text.partition("-")
        if lo and hi:
            return make_range(kind, lo, hi)
    return scalar(kind, text)


def make_range(kind: ValueKind, lo: str | int, hi: str | int) -> Range:
    """``lo-hi`` of ``kind`` (addresses must be single addresses, not prefixes)."""
    a, b = scalar(kind, lo), scalar(kind, hi)
    if isinstance(a, ipaddress.IPv4Network | ipaddress.IPv6Network):
        if not isinstance(b, ipaddress.IPv4Network | ipaddress.IPv6Network) or \
                a.num_addresses != 1 or b.num_addresses != 1:
            raise BadValue(f"expected a range of single addresses, got {lo}-{hi}")
        lo_v: int | ipaddress.IPv4Address | ipaddress.IPv6Address = a.network_address
        hi_v: int | ipaddress.IPv4Address | ipaddress.IPv6Address = b.network_address
    elif isinstance(a, int) and isinstance(b, int):
        lo_v, hi_v = a, b
    elif kind is ValueKind.PROTO and not isinstance(a, ipaddress.IPv4Network | ipaddress.IPv6Network) and \
            not isinstance(b, ipaddress.IPv4Network | ipaddress.IPv6Network):
        lo_v = a if isinstance(a, int) else PROTOCOLS[a]
        hi_v = b if isinstance(b, int) else PROTOCOLS[b]
    else:
        raise BadValue(f"expected a numeric range, got {lo}-{hi}")
    if hi_v < lo_v:  # type: ignore[operator]
        raise BadValue(f"empty range {lo}-{hi}")
    return Range(lo_v, hi_v)


def _str_number(value: str) -> int | None:
    for table in (PROTOCOLS, NFPROTOS, ETHERTYPES, CT_STATES):
        if value in table:
            return table[value]
    return None


def sort_key(e: Element) -> tuple[int, int, int, str]:
    """The order nft lists set elements in: by value (numbers, addresses), names after numbers."""
    if isinstance(e, Range):
        e = e.lo if isinstance(e.lo, int) else ipaddress.ip_network(e.lo)
    if isinstance(e, bool):
        return (3, 0, 0, repr(e))
    if isinstance(e, int):
        return (0, e, 0, "")
    if isinstance(e, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return (e.version, int(e.network_address), e.prefixlen, "")
    mapped = _str_number(e)
    if mapped is not None:
        return (0, mapped, 0, e)
    return (8, 0, 0, e)


def make_set(elements: Sequence[Element]) -> tuple[Element, ...]:
    """Set elements unique and sorted as nft lists them."""
    return tuple(sorted(dict.fromkeys(elements), key=sort_key))
