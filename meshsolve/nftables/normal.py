"""The kernel's normal form: a ruleset as the kernel stores it and ``nft list ruleset`` prints it.

Loading ``nft -f`` text and listing it back changes the text without changing what the rules do;
``kernel_form`` applies the same changes to a model, so that a golden parsed from its ``nft -f``
form and its kernel listing compare equal (checked on the kernel in ``tests/test_nft_kernel.py``):

- a ``meta l4proto P`` equality is dropped when a later item of the rule matches a ``P`` header
  field (``meta l4proto tcp ip daddr != 127.0.0.1 tcp dport 53`` → ``ip daddr != 127.0.0.1 tcp
  dport 53``: the kernel keeps one protocol check, nft lists it as the field's dependency), and a
  ``th`` field after it takes the protocol's name (``meta l4proto tcp th dport 53`` → ``tcp dport
  53``); in ``inet`` tables ``meta nfproto ipv4``/``ipv6`` goes the same way before ``ip``/``ip6``
  fields. Only the last such equality before the field is the dependency;
- a one-element anonymous set is its element (``!= { 53 }`` → ``!= 53``); the elements of an
  anonymous set with ranges or prefixes are merged where they touch (``{ 53, 54-60 }`` →
  ``{ 53-60 }``);
- consecutive equality matches on fields of one header with single values are listed in header
  order (``tcp dport 5 tcp sport 6`` → ``tcp sport 6 tcp dport 5``: the kernel merges them into one
  load).

Values the converters already normalise (``/32`` hosts, hex marks, protocol numbers, state order,
the mark setter's ``& | ^`` form, the default log level and reject type) need nothing here. User
and group *names* stay names: the kernel stores the numbers ``nft`` resolved on the loading host.
"""

from __future__ import annotations

import ipaddress

import attrs

from meshsolve.nftables.kinds import L4_PAYLOADS, PAYLOAD_OFFSETS
from meshsolve.nftables.model import AnonSet, Element, Item, Match, Opaque, Range, Rule, Ruleset, Selector

__all__ = ["kernel_form", "kernel_rule"]


def kernel_form(ruleset: Ruleset) -> Ruleset:
    """``ruleset`` as the kernel keeps it and nft lists it (see the module docstring)."""
    return Ruleset(tuple(
        attrs.evolve(t, chains=tuple(
            attrs.evolve(c, rules=tuple(kernel_rule(r, t.family) for r in c.rules)) for c in t.chains))
        for t in ruleset.tables))


def kernel_rule(rule: Rule, family: str) -> Rule:
    items = [_set_form(i) for i in rule.items]
    items = _drop_dependencies(items, family)
    items = _header_order(items)
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


def _is_dependency(item: Item, key: str) -> bool:
    return (isinstance(item, Match) and item.selector == Selector("meta", key) and item.op == "=="
            and item.mask is None and isinstance(item.value, str | int))


def _drop_dependencies(items: list[Item], family: str) -> list[Item]:
    drop: set[int] = set()
    out = list(items)
    l4: int | None = None
    l3: int | None = None
    for k, item in enumerate(items):
        if _is_dependency(item, "l4proto"):
            l4 = k
            continue
        if family == "inet" and _is_dependency(item, "nfproto"):
            l3 = k
            continue
        base = _payload_base(item)
        if base is None:
            continue
        if base in L4_PAYLOADS or base == "th":
            if l4 is not None:
                proto = items[l4].value  # type: ignore[union-attr]
                if base == proto:
                    drop.add(l4)
                elif base == "th" and proto in L4_PAYLOADS and isinstance(item, Match):
                    drop.add(l4)
                    out[k] = attrs.evolve(item, selector=Selector(str(proto), item.selector.key))
            l4 = None
        elif base in ("ip", "ip6") and l3 is not None:
            if items[l3].value == ("ipv4" if base == "ip" else "ipv6"):  # type: ignore[union-attr]
                drop.add(l3)
            l3 = None
    return [x for k, x in enumerate(out) if k not in drop]


def _single_value(item: Item) -> bool:
    if not (isinstance(item, Match) and item.op == "==" and item.mask is None
            and (item.selector.base, item.selector.key) in PAYLOAD_OFFSETS):
        return False
    v = item.value
    return isinstance(v, int) or (isinstance(v, ipaddress.IPv4Network | ipaddress.IPv6Network)
                                  and v.num_addresses == 1)


def _header_order(items: list[Item]) -> list[Item]:
    out: list[Item] = []
    k = 0
    while k < len(items):
        j = k
        if _single_value(items[k]):
            base = items[k].selector.base  # type: ignore[union-attr]
            while j + 1 < len(items) and _single_value(items[j + 1]) and \
                    items[j + 1].selector.base == base:  # type: ignore[union-attr]
                j += 1
        run = items[k:j + 1]
        if len(run) > 1:
            run = sorted(run, key=lambda m: PAYLOAD_OFFSETS[(m.selector.base, m.selector.key)])  # type: ignore[union-attr]
        out.extend(run)
        k = j + 1
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
    cls = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    nets = list(ipaddress.summarize_address_range(cls(lo), cls(hi)))
    if len(nets) == 1:
        return nets[0]
    return Range(cls(lo), cls(hi))


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
        return attrs.evolve(item, value=els[0])
    is_interval = any(isinstance(e, Range) or (isinstance(e, ipaddress.IPv4Network | ipaddress.IPv6Network)
                                               and e.num_addresses > 1) for e in els)
    if is_interval:
        return attrs.evolve(item, value=AnonSet(_merge(els)))
    return item
