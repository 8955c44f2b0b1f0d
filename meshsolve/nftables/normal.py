"""The kernel's normal form: a ruleset as the kernel stores it and ``nft list ruleset`` prints it.

Loading ``nft -f`` text and listing it back changes the text without changing what the rules do;
``kernel_form`` applies the same changes to a model, so that a golden parsed from its ``nft -f``
form and its kernel listing compare equal (checked on the kernel in ``tests/test_nftables_kernel.py``):

- a ``meta l4proto P`` equality (in ``ip``/``ip6`` tables also ``ip protocol P``/``ip6 nexthdr P``)
  is dropped when a later item of the rule matches a ``P`` header field or any ``th`` field with
  no statement in between: the kernel keeps one protocol check and nft lists it as the field's
  dependency (``meta l4proto tcp ip daddr != 127.0.0.1 tcp dport 53`` → ``ip daddr != 127.0.0.1
  tcp dport 53``); nft itself inserts that check before the first ``P`` field when no earlier item
  says P. Only the last such equality before the field is the dependency, and in ``inet`` tables an
  ``ip protocol``/``ip6 nexthdr`` equality in between is that last check, kept with the ``meta l4proto``
  before it (``meta l4proto tcp ip protocol tcp tcp dport 2`` is listed as it is). In ``inet`` tables
  ``meta nfproto ipv4``/``ipv6`` goes the same way before ``ip``/``ip6`` fields. A ``th`` field is
  listed under the transport protocol an earlier item established (``meta l4proto tcp th dport
  53`` → ``tcp dport 53``, ``udp dport 1 th sport 2`` → ``udp dport 1 udp sport 2``);
- a one-element anonymous set is its element (``!= { 53 }`` → ``!= 53``, ``ct state { new }`` →
  the flag test ``ct state new``); the elements of an anonymous set with ranges or prefixes are
  merged where they touch (``{ 53, 54-60 }`` → ``{ 53-60 }``, still a set: so loading a listing
  again can change it once more, to ``53-60``);
- a source and a destination port match with one operator and single values become one compare
  of the transport header at the source port's place, listed source first (``tcp dport 5 counter
  tcp sport 6`` → ``meta l4proto tcp counter tcp sport 6 tcp dport 5``, ``log tcp sport 0 counter
  tcp dport 0`` → ``log tcp sport 0 tcp dport 0 counter``), when nft's merge pass puts them in one
  group: it collects single-value header compares and closes a group at a statement only once the
  group holds two, so ``tcp sport 1 counter tcp dport 2`` joins but ``tcp sport 1 ip saddr
  192.0.2.1 counter tcp dport 2`` does not (``_merge_ports``). A protocol match between the two
  stays where it was (``tcp sport 0 meta l4proto tcp tcp dport 0`` → ``tcp sport 0 tcp dport 0
  meta l4proto tcp``). nft 1.0.6 does this for ``!=`` too, which changes what the rule means:
  ``tcp dport != 5 tcp sport != 6`` is stored as ``(sport, dport) != (6, 5)`` (seen with ``nft
  --debug=netlink``);
- a mark compare under a mask of leading ones with the value inside the mask is listed as a
  prefix, read as its interval (``meta mark & 0xfffffffc == 4`` → ``meta mark 0x00000004/30`` =
  ``4-7``);
- in ``inet`` tables a plain ``reject`` after an IPv4 (IPv6) match is listed with that family's
  ICMP type, and a ``meta nfproto ipv4`` (``ipv6``) with no statement between it and an ICMP
  (ICMPv6) ``reject`` is that reject's dependency, not listed (``meta nfproto ipv4 tcp dport 0
  reject`` → ``tcp dport 0 reject with icmp port-unreachable``);
- a ``reject with tcp reset`` with no earlier tcp check gets ``meta l4proto tcp`` at the *front* of
  the rule (``ip saddr 192.0.2.1 reject with tcp reset`` → ``meta l4proto tcp ip saddr 192.0.2.1
  reject with tcp reset`` in an ``inet`` table); in ``ip``/``ip6`` tables the reject consumes that
  check unless a statement stands between them (``counter``), in ``inet`` tables it is listed. In
  ``inet`` tables a tcp reset also consumes a ``meta nfproto`` of either family with no statement
  in between: ``meta nfproto ipv6 meta l4proto tcp reject with tcp reset`` is listed ``meta l4proto
  tcp reject with tcp reset``, which reads back as a rule for both families (nft's listing loses
  the family there; the kernel keeps the check).

Values the converters already normalise (``/32`` hosts, hex marks, protocol numbers, state order,
the mark setter's ``& | ^`` form, the default log level and reject type) need nothing here. User
and group *names* stay names: the kernel stores the numbers ``nft`` resolved on the loading host.
"""

from __future__ import annotations

import ipaddress

import attrs

from meshsolve.nftables.kinds import L4_PAYLOADS, STATEMENT_WORDS, ValueKind
from meshsolve.nftables.model import (
    AnonSet,
    Element,
    Flags,
    Item,
    Match,
    Opaque,
    Range,
    Reject,
    Rule,
    Ruleset,
    Selector,
)

__all__ = ["kernel_form", "kernel_rule"]


def kernel_form(ruleset: Ruleset) -> Ruleset:
    """``ruleset`` as the kernel keeps it and nft lists it (see the module docstring)."""
    return Ruleset(tuple(
        attrs.evolve(t, chains=tuple(
            attrs.evolve(c, rules=tuple(kernel_rule(r, t.family) for r in c.rules)) for c in t.chains))
        for t in ruleset.tables))


def _mark_prefix(item: Item) -> Item:
    """``meta mark & 0xfffffffc == 4`` (a mask of leading ones, the value inside it) is listed as the
    prefix ``0x00000004/30``, which reads as the interval ``4-7``. A value with bits outside the mask
    (``& 0xfffffffc == 5``, listed ``0x00000005/30`` but never equal) stays a masked compare."""
    if not (isinstance(item, Match) and item.selector.kind is ValueKind.MARK and item.mask is not None
            and item.op in ("==", "!=") and isinstance(item.value, int) and not isinstance(item.value, bool)):
        return item
    host = ~item.mask & 0xFFFFFFFF
    if host & (host + 1) or item.value & host:  # not leading ones, or a value outside the mask
        return item
    return Match(item.selector, Range(item.value, item.value | host), item.op)


def kernel_rule(rule: Rule, family: str) -> Rule:
    items = [_mark_prefix(_set_form(i)) for i in rule.items]
    items = _implicit_dependencies(items)
    items = _merge_ports(items)
    if family == "inet":
        items = _reject_family(items)
    items = _drop_dependencies(items, family)
    return attrs.evolve(rule, items=tuple(items))


def _payload_base(item: Item) -> str | None:
    """The header an item reads (an opaque ``tcp flags ...`` reads the tcp header too)."""
    if isinstance(item, Match):
        b = item.selector.base
        return b if b not in ("meta", "ct") else None
    if isinstance(item, Opaque):
        head = item.text.split(" ", 1)[0]
        return head if head in (*L4_PAYLOADS, "th", "ip", "ip6") else None
    return None


def _is_statement(item: Item) -> bool:
    if isinstance(item, Opaque):
        return item.text.split(" ", 1)[0] in STATEMENT_WORDS
    return not isinstance(item, Match)


def _is_dependency(item: Item, key: str) -> bool:
    return (isinstance(item, Match) and item.selector == Selector("meta", key) and item.op == "=="
            and item.mask is None and isinstance(item.value, str | int))


def _implicit_dependencies(items: list[Item]) -> list[Item]:
    """nft puts ``meta l4proto P`` before the first ``P`` header match when no earlier item says P."""
    out: list[Item] = []
    known: object = None
    for item in items:
        if _is_dependency(item, "l4proto") or (
                isinstance(item, Match) and item.selector in (Selector("ip", "protocol"), Selector("ip6", "nexthdr"))
                and item.op == "==" and item.mask is None and isinstance(item.value, str | int)):
            known = item.value  # type: ignore[union-attr]
        base = _payload_base(item)
        if isinstance(item, Reject) and item.reason == "tcp reset" and known != "tcp":
            out.insert(0, Match(Selector("meta", "l4proto"), "tcp"))  # the reject's check goes first
            known = "tcp"
        if base in L4_PAYLOADS and known != base:
            out.append(Match(Selector("meta", "l4proto"), str(base)))
            known = base
        out.append(item)
    return out


def _port_match(item: Item) -> bool:
    return (isinstance(item, Match) and item.selector.key in ("sport", "dport")
            and item.selector.base in (*L4_PAYLOADS, "th") and item.op in ("==", "!=") and item.mask is None
            and isinstance(item.value, int))


#: Bit offsets in their header of the header fields nft may merge (a port pair, 2 + 2 bytes of the
#: transport header); every other single-value header match sorts after them.
_PORT_OFFSETS = {"sport": 0, "dport": 16}


def _merge_candidate(item: Item) -> bool:
    """A header-field compare with one value (``==``/``!=``, no mask, no set, no prefix): what nft
    collects to merge. Masked matches (``ip dscp``, ``tcp flags``), prefixes and sets are not."""
    if not (isinstance(item, Match) and item.selector.base in (*L4_PAYLOADS, "th", "ip", "ip6")
            and item.op in ("==", "!=") and item.mask is None):
        return False
    v = item.value
    if isinstance(v, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return v.prefixlen == v.max_prefixlen
    return isinstance(v, int | str) and not isinstance(v, bool)


def _merge_ports(items: list[Item]) -> list[Item]:
    """nft 1.0.6 merges header-field compares before it sends a rule (measured with ``nft
    --debug=netlink``, ``MERGE_CASES`` in ``tests/nft_kernel.py``): it walks the rule collecting the
    single-value header compares (``_merge_candidate``); at a statement it merges what it has
    collected if that is two or more and starts again, with fewer it goes on collecting across the
    statement; at the rule's end it merges what it has. Merging sorts the collected compares by
    their offset in the header and joins neighbours of one header and one operator (``!=`` too,
    which changes what the rule means: ``(sport, dport) != (6, 5)``) into one compare at the place
    of the first (the source port's); of the fields modelled only a source and a destination port
    join (``ip saddr`` + ``ip daddr`` stay two loads). The joined compare is listed source first
    under the protocol's name."""
    groups: list[list[int]] = []
    current: list[int] = []
    for k, item in enumerate(items):
        if _is_statement(item):
            if len(current) >= 2:
                groups.append(current)
                current = []
            continue
        if _merge_candidate(item):
            current.append(k)
    if len(current) >= 2:
        groups.append(current)
    out: list[Item | tuple[Match, Match] | None] = list(items)

    def offset(k: int) -> int:
        item = items[k]
        return _PORT_OFFSETS[item.selector.key] if isinstance(item, Match) and _port_match(item) else 48

    for group in groups:
        ordered = sorted(group, key=offset)
        last = ordered[0]
        joined = False
        for k in ordered[1:]:
            a, b = items[last], items[k]
            if (not joined and isinstance(a, Match) and isinstance(b, Match) and _port_match(a) and _port_match(b)
                    and a.selector.key == "sport" and b.selector.key == "dport" and a.op == b.op
                    and len({a.selector.base, b.selector.base} - {"th"}) <= 1):
                bases = {a.selector.base, b.selector.base} - {"th"}
                base = bases.pop() if bases else "th"
                out[last] = (attrs.evolve(a, selector=Selector(base, "sport")),
                             attrs.evolve(b, selector=Selector(base, "dport")))
                out[k] = None
                joined = True  # the joined compare (4 bytes at offset 0) joins nothing else modelled
                continue
            last, joined = k, False
    flat: list[Item] = []
    for x in out:
        if isinstance(x, tuple):
            flat.extend(x)
        elif x is not None:
            flat.append(x)
    return flat


#: Matches that establish the transport protocol.
_L4_PROTOCOL = (Selector("meta", "l4proto"), Selector("ip", "protocol"), Selector("ip6", "nexthdr"))
#: In ``ip`` and ``ip6`` tables the header's protocol field is a transport dependency too.
_L3_PROTOCOL = {(Selector("ip", "protocol"), "ip"), (Selector("ip6", "nexthdr"), "ip6")}


def _drop_dependencies(items: list[Item], family: str) -> list[Item]:
    """Drop the dependencies nft lists implicitly; name ``th`` fields after the known protocol."""
    drop: set[int] = set()
    out = list(items)
    l4: int | None = None
    l3: int | None = None
    context: object = None  # the transport protocol last established (a th field is listed under it)
    for k, item in enumerate(items):
        if isinstance(item, Match) and item.op == "==" and item.mask is None and isinstance(item.value, str | int) \
                and item.selector in _L4_PROTOCOL:
            context = item.value
            # an ``ip protocol`` in an inet table is listed, and is the last protocol check before a field
            dependency = item.selector == Selector("meta", "l4proto") or (item.selector, family) in _L3_PROTOCOL
            l4 = k if dependency else None
            if item.selector.base in ("ip", "ip6") and l3 is not None:  # a network header field
                if items[l3].value == ("ipv4" if item.selector.base == "ip" else "ipv6"):  # type: ignore[union-attr]
                    drop.add(l3)
                l3 = None
            continue
        if family == "inet" and _is_dependency(item, "nfproto"):
            l3 = k
            continue
        base = _payload_base(item)
        if isinstance(item, Reject) and l3 is not None and item.reason is not None and (
                item.reason == "tcp reset"
                or item.reason.split(" ", 1)[0] == ("icmp" if items[l3].value == "ipv4" else "icmpv6")):  # type: ignore[union-attr]
            drop.add(l3)  # an inet reject carries its family's check (a tcp reset either family's)
        if isinstance(item, Reject) and item.reason == "tcp reset" and family in ("ip", "ip6"):
            base = "tcp"  # consumes the tcp dependency in ip/ip6 tables (not in inet ones)
        elif _is_statement(item):
            l4 = l3 = None
            continue
        if base is None:
            continue
        if base in L4_PAYLOADS or base == "th":
            if l4 is not None:
                proto = items[l4].value  # type: ignore[union-attr]
                if base == proto or base == "th":
                    drop.add(l4)
            if base == "th" and context in L4_PAYLOADS and isinstance(item, Match):
                out[k] = attrs.evolve(item, selector=Selector(str(context), item.selector.key))
            elif base != "th":
                context = base
            l4 = None
        elif base in ("ip", "ip6") and l3 is not None:
            if items[l3].value == ("ipv4" if base == "ip" else "ipv6"):  # type: ignore[union-attr]
                drop.add(l3)
            l3 = None
    return [x for k, x in enumerate(out) if k not in drop]


def _reject_family(items: list[Item]) -> list[Item]:
    """In an ``inet`` table a plain ``reject`` after an IPv4 (IPv6) match is listed with the
    family's ICMP type."""
    l3: str | None = None
    out: list[Item] = []
    for item in items:
        if isinstance(item, Match) and item.selector.base in ("ip", "ip6"):
            l3 = item.selector.base
        elif isinstance(item, Match) and item.selector == Selector("meta", "nfproto") and item.op == "==" \
                and item.value in ("ipv4", "ipv6"):
            l3 = "ip" if item.value == "ipv4" else "ip6"
        if isinstance(item, Reject) and item.reason is None and l3 is not None:
            item = Reject("icmp port-unreachable" if l3 == "ip" else "icmpv6 port-unreachable")
        out.append(item)
    return out


def _interval(e: Element) -> tuple[int, int, int] | None:
    """(version or 0 for numbers, lo, hi) of an element, None for names."""
    if isinstance(e, bool):
        return None
    if isinstance(e, int):
        return 0, e, e
    if isinstance(e, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return e.version, int(e.network_address), int(e.broadcast_address)
    if isinstance(e, Range):
        if isinstance(e.lo, int) and isinstance(e.hi, int):
            return 0, e.lo, e.hi
        if not isinstance(e.lo, int) and not isinstance(e.hi, int):
            return e.lo.version, int(e.lo), int(e.hi)
    return None


def _from_interval(version: int, lo: int, hi: int) -> Element:
    if version == 0:
        return lo if lo == hi else Range(lo, hi)
    a = ipaddress.ip_address(lo) if version == 4 else ipaddress.IPv6Address(lo)
    b = ipaddress.ip_address(hi) if version == 4 else ipaddress.IPv6Address(hi)
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = list(
        ipaddress.summarize_address_range(a, b))
    if len(nets) == 1:
        return nets[0]
    return Range(a, b)


def _merge(elements: tuple[Element, ...]) -> tuple[Element, ...]:
    spans = [_interval(e) for e in elements]
    if any(s is None for s in spans) or len({s[0] for s in spans if s}) != 1:
        return elements
    merged: list[list[int]] = []
    for version, lo, hi in sorted(s for s in spans if s):
        if merged and lo <= merged[-1][2] + 1:
            merged[-1][2] = max(merged[-1][2], hi)
        else:
            merged.append([version, lo, hi])
    return tuple(_from_interval(v, lo, hi) for v, lo, hi in merged)


def _set_form(item: Item) -> Item:
    if not (isinstance(item, Match) and isinstance(item.value, AnonSet)):
        return item
    els = item.value.elements
    if len(els) == 1:
        if item.selector.kind is ValueKind.CTSTATE:  # ``ct state { new }`` is the flag test ``ct state new``
            return attrs.evolve(item, value=Flags((str(els[0]),)), op="in" if item.op == "==" else item.op)
        return attrs.evolve(item, value=els[0])
    is_interval = any(isinstance(e, Range) or (isinstance(e, ipaddress.IPv4Network | ipaddress.IPv6Network)
                                               and e.num_addresses > 1) for e in els)
    if is_interval:
        return attrs.evolve(item, value=AnonSet(_merge(els)))
    return item
