"""The nftables vocabulary meshsolve reads, written once: families, hooks, chain types, priorities,
the selectors whose values are typed, protocol and conntrack-state names, statement keywords.

The parser, the JSON reader, the renderer, the kernel normal form and the strategies all read these
tables; nothing else lists them.
"""

from __future__ import annotations

from enum import Enum
from typing import Literal, TypeAlias

__all__ = [
    "BARE_META_KEYS",
    "CHAIN_TYPES",
    "CT_STATES",
    "ETHERTYPES",
    "FAMILIES",
    "FAMILY_HOOKS",
    "HOOKS",
    "ITEM_STARTERS",
    "KEYWORDS",
    "L4_PAYLOADS",
    "LISTED_BARE",
    "LOG_LEVELS",
    "NFPROTOS",
    "PAYLOAD_BASES",
    "POLICIES",
    "PROTOCOLS",
    "PROTOCOL_ALIASES",
    "PROTOCOL_NAMES",
    "SELECTORS",
    "SET_TYPES",
    "STANDARD_PRIORITIES",
    "STATEMENT_WORDS",
    "VERDICTS",
    "ChainType",
    "Family",
    "Hook",
    "Policy",
    "ValueKind",
    "allowed_hooks",
    "priority_name_value",
]

Family: TypeAlias = Literal["ip", "ip6", "inet", "arp", "bridge", "netdev"]
ChainType: TypeAlias = Literal["filter", "nat", "route"]
Hook: TypeAlias = Literal["prerouting", "input", "forward", "output", "postrouting", "ingress", "egress"]
Policy: TypeAlias = Literal["accept", "drop"]

FAMILIES: tuple[Family, ...] = ("ip", "ip6", "inet", "arp", "bridge", "netdev")
CHAIN_TYPES: tuple[ChainType, ...] = ("filter", "nat", "route")
HOOKS: tuple[Hook, ...] = ("prerouting", "input", "forward", "output", "postrouting", "ingress", "egress")
POLICIES: tuple[Policy, ...] = ("accept", "drop")

_INET_HOOKS: tuple[Hook, ...] = ("prerouting", "input", "forward", "output", "postrouting")
#: The hooks a base chain of each family may attach to.
FAMILY_HOOKS: dict[Family, tuple[Hook, ...]] = {
    "ip": _INET_HOOKS,
    "ip6": _INET_HOOKS,
    "inet": (*_INET_HOOKS, "ingress"),
    "arp": ("input", "output"),
    "bridge": _INET_HOOKS,
    "netdev": ("ingress", "egress"),
}


def allowed_hooks(family: Family, chain_type: ChainType) -> tuple[Hook, ...]:
    """The hooks the kernel accepts for ``type chain_type`` in a ``family`` table."""
    hooks = FAMILY_HOOKS[family]
    if chain_type == "nat":
        return tuple(h for h in hooks if h in ("prerouting", "input", "output", "postrouting")) \
            if family in ("ip", "ip6", "inet") else ()
    if chain_type == "route":
        return ("output",) if family in ("ip", "ip6", "inet") else ()
    return hooks


#: Named base-chain priorities (ip, ip6, inet, arp, netdev) and their values.
STANDARD_PRIORITIES: dict[str, int] = {
    "raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50, "srcnat": 100,
}
#: The bridge family names its priorities differently.
_BRIDGE_PRIORITIES: dict[str, int] = {"dstnat": -300, "filter": -200, "out": 100, "srcnat": 300}
#: Names valid on one hook only (nft refuses ``priority dstnat`` on an output chain).
_PRIORITY_HOOK: dict[str, Hook] = {"dstnat": "prerouting", "srcnat": "postrouting"}


def priority_name_value(name: str, family: Family, hook: Hook) -> int | None:
    """The value of a named priority for this family and hook, or None where nft refuses it."""
    if family == "bridge":
        return _BRIDGE_PRIORITIES.get(name)
    value = STANDARD_PRIORITIES.get(name)
    if value is None:
        return None
    only = _PRIORITY_HOOK.get(name)
    if only is not None and hook != only:
        return None
    return value


class ValueKind(Enum):
    """What the right-hand side of a match on a selector holds."""

    ADDR4 = "IPv4 address"
    ADDR6 = "IPv6 address"
    PORT = "port number"
    PROTO = "protocol"
    NFPROTO = "ipv4 or ipv6"
    ETHERTYPE = "ethernet type"
    IFNAME = "interface name"
    UID = "user id or name"
    GID = "group id or name"
    MARK = "32-bit mark"
    ZONE = "conntrack zone"
    CTSTATE = "conntrack state"


#: Selectors (``base key``) whose values meshsolve types; any other selector makes an opaque item.
SELECTORS: dict[tuple[str, str], ValueKind] = {
    ("ip", "saddr"): ValueKind.ADDR4,
    ("ip", "daddr"): ValueKind.ADDR4,
    ("ip", "protocol"): ValueKind.PROTO,
    ("ip6", "saddr"): ValueKind.ADDR6,
    ("ip6", "daddr"): ValueKind.ADDR6,
    ("ip6", "nexthdr"): ValueKind.PROTO,
    **{(p, f): ValueKind.PORT for p in ("tcp", "udp", "th", "sctp", "dccp", "udplite") for f in ("sport", "dport")},
    ("meta", "l4proto"): ValueKind.PROTO,
    ("meta", "nfproto"): ValueKind.NFPROTO,
    ("meta", "protocol"): ValueKind.ETHERTYPE,
    ("meta", "iifname"): ValueKind.IFNAME,
    ("meta", "oifname"): ValueKind.IFNAME,
    ("meta", "iif"): ValueKind.IFNAME,
    ("meta", "oif"): ValueKind.IFNAME,
    ("meta", "skuid"): ValueKind.UID,
    ("meta", "skgid"): ValueKind.GID,
    ("meta", "mark"): ValueKind.MARK,
    ("ct", "state"): ValueKind.CTSTATE,
    ("ct", "mark"): ValueKind.MARK,
    ("ct", "zone"): ValueKind.ZONE,
}
#: Payload protocols (the ``base`` of payload selectors).
PAYLOAD_BASES: frozenset[str] = frozenset(b for b, _ in SELECTORS if b not in ("meta", "ct"))
#: Meta keys that may be written without ``meta`` (nft lists the interface ones bare).
BARE_META_KEYS: frozenset[str] = frozenset(("mark", "iif", "iifname", "oif", "oifname", "skuid", "skgid"))
#: Meta keys nft lists bare.
LISTED_BARE: frozenset[str] = frozenset(("iif", "iifname", "oif", "oifname"))

#: Set key types whose elements meshsolve types (other sets keep their elements as text).
SET_TYPES: dict[str, ValueKind] = {
    "ipv4_addr": ValueKind.ADDR4, "ipv6_addr": ValueKind.ADDR6, "inet_service": ValueKind.PORT,
    "inet_proto": ValueKind.PROTO, "ifname": ValueKind.IFNAME, "mark": ValueKind.MARK,
    "uid": ValueKind.UID, "gid": ValueKind.GID,
}

#: IP protocol names nft prints, by number (``meta l4proto 6`` is listed as ``tcp``): the names of
#: Debian's ``/etc/protocols`` (netbase), first name per number, which nft resolves numbers with.
PROTOCOLS: dict[str, int] = {
    "ip": 0, "icmp": 1, "igmp": 2, "ggp": 3, "ipencap": 4, "st": 5, "tcp": 6, "egp": 8, "igp": 9, "pup": 12,
    "udp": 17, "hmp": 20, "xns-idp": 22, "rdp": 27, "iso-tp4": 29, "dccp": 33, "xtp": 36, "ddp": 37,
    "idpr-cmtp": 38, "ipv6": 41, "ipv6-route": 43, "ipv6-frag": 44, "idrp": 45, "rsvp": 46, "gre": 47,
    "esp": 50, "ah": 51, "skip": 57, "ipv6-icmp": 58, "ipv6-nonxt": 59, "ipv6-opts": 60, "rspf": 73,
    "vmtp": 81, "eigrp": 88, "ospf": 89, "ax.25": 93, "ipip": 94, "etherip": 97, "encap": 98, "pim": 103,
    "ipcomp": 108, "vrrp": 112, "l2tp": 115, "isis": 124, "sctp": 132, "fc": 133, "mobility-header": 135,
    "udplite": 136, "mpls-in-ip": 137, "manet": 138, "hip": 139, "shim6": 140, "wesp": 141, "rohc": 142,
    "ethernet": 143,
}
PROTOCOL_ALIASES: dict[str, str] = {"icmpv6": "ipv6-icmp", "hopopt": "ip"}
PROTOCOL_NAMES: dict[int, str] = {v: k for k, v in PROTOCOLS.items()}
#: The layer-4 protocols that have a payload base of their own (a match on ``tcp dport`` implies
#: ``meta l4proto tcp``).
L4_PAYLOADS: frozenset[str] = frozenset(("tcp", "udp", "sctp", "dccp", "udplite"))

NFPROTOS: dict[str, int] = {"ipv4": 2, "ipv6": 10}
ETHERTYPES: dict[str, int] = {"ip": 0x0800, "arp": 0x0806, "ip6": 0x86DD, "vlan": 0x8100}

#: Conntrack states in the kernel's bit order (how nft lists a state list).
CT_STATES: dict[str, int] = {"invalid": 1, "established": 2, "related": 4, "new": 8, "untracked": 64}

#: The log levels nft knows; ``warn`` is the default and is not listed.
LOG_LEVELS: tuple[str, ...] = ("emerg", "alert", "crit", "err", "warn", "notice", "info", "debug", "audit")

VERDICTS: tuple[str, ...] = ("accept", "drop", "return", "continue", "jump", "goto")

#: Words that start a statement; with the selector bases they are where an opaque item ends.
STATEMENT_WORDS: frozenset[str] = frozenset((
    *VERDICTS, "counter", "redirect", "tproxy", "dnat", "snat", "masquerade", "log", "reject", "comment",
    "notrack", "queue", "limit", "quota",
))
ITEM_STARTERS: frozenset[str] = frozenset((*STATEMENT_WORDS, *PAYLOAD_BASES, "meta", "ct", *BARE_META_KEYS))

#: Words nft 1.0.6 refuses as a bare table/chain/set name (measured: ``add chain inet t WORD``);
#: such names are rendered quoted, which newer nft versions read.
KEYWORDS: frozenset[str] = frozenset((
    "accept", "drop", "return", "jump", "goto", "continue", "counter", "table", "chain", "rule", "set", "map",
    "element", "elements", "ip", "ip6", "inet", "arp", "bridge", "netdev", "tcp", "udp", "sctp", "dccp",
    "udplite", "th", "meta", "ct", "mark", "type", "hook", "priority", "policy", "comment", "log", "reject",
    "tproxy", "redirect", "snat", "dnat", "masquerade", "index", "handle", "position", "vmap", "flags", "device",
    "define", "include", "ruleset", "add", "insert", "delete", "flush", "create", "replace", "rename", "list",
    "and", "or", "xor", "icmp", "icmpv6", "ether", "vlan", "fib", "rt", "socket", "iif", "oif", "iifname",
    "oifname", "skuid", "skgid", "queue", "limit", "quota", "notrack", "random", "ah", "esp", "igmp",
))
