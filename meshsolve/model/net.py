"""Addresses, networks, ports and port ranges as normalised, hashable values."""

from __future__ import annotations

import ipaddress
import re
from typing import Literal, TypeAlias

import attrs

from meshsolve.errors import WorldError

__all__ = [
    "IPAddress",
    "IPNetwork",
    "Family",
    "PortRange",
    "decode_ids",
    "family_of",
    "to_address",
    "to_network",
    "to_port",
]

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
Family: TypeAlias = Literal["ipv4", "ipv6"]


def family_of(value: IPAddress | IPNetwork) -> Family:
    """``"ipv4"`` or ``"ipv6"`` for an address or a network."""
    return "ipv4" if value.version == 4 else "ipv6"


def to_address(value: str | IPAddress) -> IPAddress:
    """Normalise ``"192.0.2.1"`` / ``"2001:db8::1"`` / an address object to an address object."""
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return value
    try:
        return ipaddress.ip_address(str(value).strip())
    except ValueError:
        raise WorldError(f"not an IP address: {value!r}") from None


def to_network(value: str | IPAddress | IPNetwork) -> IPNetwork:
    """Normalise an address or CIDR to a network; a bare address becomes a /32 or /128.

    Host bits are cleared the way iptables does (``10.1.2.3/8`` is stored as ``10.0.0.0/8``).
    """
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return value
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return ipaddress.ip_network(value)
    try:
        return ipaddress.ip_network(str(value).strip(), strict=False)
    except ValueError:
        raise WorldError(f"not an IP network: {value!r}") from None


def to_port(value: int | str) -> int:
    """A TCP/UDP port number 0..65535 (0 is allowed only where the kernel allows it)."""
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise WorldError(f"not a port number: {value!r}") from None
    if not 0 <= port <= 65535:
        raise WorldError(f"port out of range 0..65535: {value!r}")
    return port


_ID_RANGE = re.compile(r"([0-9]+)(?:-([0-9]+))?")


def decode_ids(token: str) -> tuple[int, int] | None:
    """A uid/gid as rules write it (``--uid-owner``, ``meta skuid``) decoded once: a number or
    ``lo-hi`` (ASCII digits, 32 bits) → ``(lo, hi)``; None for anything else — a user or group name,
    which only the world can resolve."""
    m = _ID_RANGE.fullmatch(token.strip())
    if m is None:
        return None
    lo = int(m.group(1))
    hi = lo if m.group(2) is None else int(m.group(2))
    if max(lo, hi) > 0xFFFFFFFF:
        return None
    return lo, hi


@attrs.frozen(order=True)
class PortRange:
    """An inclusive port range ``lo..hi``; a single port has ``lo == hi``."""

    lo: int = attrs.field(converter=to_port)
    hi: int = attrs.field(converter=to_port)

    @hi.validator
    def _check(self, _attr: attrs.Attribute[int], hi: int) -> None:
        if hi < self.lo:
            raise WorldError(f"port range {self.lo}:{hi} is empty")

    @classmethod
    def single(cls, port: int | str) -> PortRange:
        p = to_port(port)
        return cls(p, p)

    @classmethod
    def parse(cls, text: str) -> PortRange:
        """``"80"`` or ``"1000:2000"`` (iptables) or ``"1000-2000"``; open ends as iptables allows."""
        text = text.strip()
        for sep in (":", "-"):
            if sep in text:
                lo, hi = text.split(sep, 1)
                return cls(to_port(lo) if lo else 0, to_port(hi) if hi else 65535)
        return cls.single(text)

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.lo <= port <= self.hi

    def __str__(self) -> str:
        return str(self.lo) if self.lo == self.hi else f"{self.lo}:{self.hi}"
