"""Addresses, networks, port ranges and bind addresses, and the address plans of the world strategies.

Every address drawn is a documentation or loopback address.
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Any

from hypothesis import strategies as st

import meshsolve.defaults as defaults
from meshsolve.model.net import Family, IPAddress, IPNetwork, PortRange, to_address

__all__ = ["SMALL_WORLD_ADDRS", "SPECIAL_DESTINATIONS", "WORLD_ADDRS", "addresses", "binds", "networks",
           "port_ranges"]

# The parser-facing space: documentation and loopback networks, and on IPv6 the IPv4-mapped and
# -compatible forms (they exercise inet_ntop's dotted output: ::ffff:192.0.2.1).
_DOC_V4 = [ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24",
                                             "127.0.0.0/8")]
_DOC_V6 = [ipaddress.ip_network(n) for n in ("2001:db8::/32", "::1/128", "::6/128", "::ffff:192.0.2.0/120",
                                             "::192.0.2.0/120")]

# The space a pod world's flows and binds use (no IPv4-mapped forms).
_ADDRESS_SPACE: dict[str, tuple[IPNetwork, ...]] = {
    "ipv4": tuple(ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24",
                                                    "127.0.0.0/8")),
    "ipv6": tuple(ipaddress.ip_network(n) for n in ("2001:db8::/32", "::1/128", "::6/128")),
}

_POD, _PEER = defaults.POD_IP, defaults.PEER_IP

# The worlds of ``worlds()``, per family: the pod, the peer, loopback, the wildcard, the proxy's
# passthrough source, a service VIP, an address outside the pod, and the CIDRs rules may name.
WORLD_ADDRS: dict[str, dict[str, Any]] = {
    "ipv4": {
        "pod": _POD["ipv4"], "peer": _PEER["ipv4"], "lo": "127.0.0.1", "wild": "0.0.0.0",
        "six": "127.0.0.6", "vip": "198.51.100.1", "out": "203.0.113.9",
        "cidrs": ("127.0.0.1/32", "127.0.0.6/32", "127.0.0.0/8", f"{_POD['ipv4']}/32", "192.0.2.0/24",
                  "198.51.100.0/24", "203.0.113.0/24"),
    },
    "ipv6": {
        "pod": _POD["ipv6"], "peer": _PEER["ipv6"], "lo": "::1", "wild": "::",
        "six": "::6", "vip": "2001:db8:1::1", "out": "2001:db8:2::9",
        "cidrs": ("::1/128", "::6/128", f"{_POD['ipv6']}/128", "2001:db8::/64", "2001:db8:1::/48",
                  "2001:db8:2::/48", "2001:db8::/32"),
    },
}

# The worlds of ``small_worlds()`` (the solver differential test's scopes use the same ones).
SMALL_WORLD_ADDRS: dict[str, dict[str, str]] = {
    "ipv4": dict(pod=_POD["ipv4"], peer=_PEER["ipv4"], vip="198.51.100.1", remote="203.0.113.5",
                 lo="127.0.0.1", src6="127.0.0.6", any="0.0.0.0", lonet="127.0.0.1/32",
                 srcnet="127.0.0.6/32", podnet=f"{_POD['ipv4']}/32"),
    "ipv6": dict(pod=_POD["ipv6"], peer=_PEER["ipv6"], vip="2001:db8:100::1", remote="2001:db8:203::5",
                 lo="::1", src6="::6", any="::", lonet="::1/128", srcnet="::6/128",
                 podnet=f"{_POD['ipv6']}/128"),
}

# Destinations connect() treats specially (rewrites to loopback, or refuses): the unspecified
# address, broadcast, multicast, link-local (IPv6 without a scope id), and 0.0.0.0/8.
SPECIAL_DESTINATIONS: dict[str, tuple[str, ...]] = {
    "ipv4": ("0.0.0.0", "255.255.255.255", "224.0.0.1", "169.254.1.1", "0.0.0.7", "127.255.255.255"),
    "ipv6": ("::", "ff02::1", "fe80::1"),
}


@functools.cache
def networks(family: Family) -> st.SearchStrategy[IPNetwork]:
    """Networks inside documentation/loopback space (never /0, which iptables-save omits)."""
    bases = _DOC_V4 if family == "ipv4" else _DOC_V6
    maxlen = 32 if family == "ipv4" else 128

    @st.composite
    def build(draw: st.DrawFn) -> IPNetwork:
        base = draw(st.sampled_from(bases))
        plen = draw(st.integers(base.prefixlen, maxlen))
        host = draw(st.integers(0, base.num_addresses - 1))
        addr = base.network_address + host
        return ipaddress.ip_network(f"{addr}/{plen}", strict=False)

    return build()


@functools.cache
def port_ranges(*, single_ok: bool = True, full_ok: bool = False) -> st.SearchStrategy[PortRange]:
    """Port ranges; never 0:65535 unless ``full_ok`` (iptables-nft drops that match)."""

    @st.composite
    def build(draw: st.DrawFn) -> PortRange:
        lo = draw(st.integers(0, 65535))
        if single_ok and draw(st.booleans()):
            return PortRange(lo, lo)
        hi = draw(st.integers(min(lo + 1, 65535), 65535))
        if (lo, hi) == (0, 65535) and not full_ok:
            hi = 65534
        if hi <= lo:
            lo, hi = 1, 2
        return PortRange(lo, hi)

    return build()


@functools.cache
def addresses(family: Family = "ipv4") -> st.SearchStrategy[IPAddress]:
    """Single addresses of ``family`` inside documentation or loopback space (192.0.2.0/24,
    198.51.100.0/24, 203.0.113.0/24, 127.0.0.0/8; 2001:db8::/32, ::1, ::6)."""
    bases = _ADDRESS_SPACE[family]

    @st.composite
    def build(draw: st.DrawFn) -> IPAddress:
        base = draw(st.sampled_from(bases))
        offset = draw(st.integers(0, min(base.num_addresses - 1, 2**16)))
        return base.network_address + offset

    return build()


def binds(family: Family = "ipv4", pod: str | IPAddress | None = None) -> st.SearchStrategy[IPAddress]:
    """The addresses an app can bind in a pod: the wildcard, loopback or the pod IP (``pod``,
    default the ``WORLD_ADDRS`` pod address of the family) — the columns of the bind matrix."""
    a = WORLD_ADDRS[family]
    return st.sampled_from([to_address(a["wild"]), to_address(a["lo"]), to_address(pod or a["pod"])])
