"""The nftables syntax model: tables, chains, sets and rules as frozen values, faithful to nft.

A rule is the sequence of its items as nft keeps them: typed matches (``Match``: a selector such as
``ip daddr`` or ``meta skuid``, an optional ``&`` mask, an operator and a value) and statements
(verdicts, ``counter``, ``redirect``, ``tproxy``, NAT, mark and zone setters, ``log``, ``reject``).
Anything else is an ``Opaque`` item holding its raw text, never dropped. A rule's ``comment`` is a
property of the rule, as in the kernel.

Values are decoded once, at construction: addresses are networks (a host is a /32 or /128), ports,
marks and ids are ints, protocol numbers with a name are names (``6`` → ``tcp``), a conntrack-state
list is in the kernel's bit order, the value a mark setter writes is the kernel's
``(source & mask) ^ xor`` pair (``ct mark & 0xfffff000 | 0x111`` and nft's listed
``ct mark & 0xfffff111 | 0x00000111`` are one value). Set elements are sorted by the parser
(``values.make_set``), which knows their type. Provenance (``Origin``) and the kernel's handles and
counters are kept with ``eq=False``.

Base chains say their family (through their table), type, hook and priority explicitly; the named
priorities (``dstnat`` …) are numbers here. ``Ruleset.base_chains(hook)`` lists the chains on one
hook in the order the kernel runs them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from typing import Literal, TypeAlias

import attrs

from meshsolve.errors import WorldError
from meshsolve.model.net import IPAddress, IPNetwork
from meshsolve.model.rules import Origin
from meshsolve.nftables.kinds import (
    CHAIN_TYPES,
    CT_STATES,
    FAMILIES,
    HOOKS,
    LOG_LEVELS,
    POLICIES,
    SELECTORS,
    VERDICTS,
    ChainType,
    Family,
    Hook,
    Policy,
    ValueKind,
    allowed_hooks,
)

__all__ = [
    "M32",
    "AnonSet",
    "Chain",
    "Counter",
    "Flags",
    "HookSpec",
    "Item",
    "Log",
    "MarkValue",
    "Match",
    "NamedSet",
    "Nat",
    "Opaque",
    "Range",
    "Redirect",
    "Reject",
    "Rule",
    "Ruleset",
    "Selector",
    "SetCtZone",
    "SetMark",
    "SetRef",
    "Table",
    "Tproxy",
    "Value",
    "Verdict",
]

M32 = 0xFFFFFFFF
Op: TypeAlias = Literal["==", "!=", "<", ">", "<=", ">=", "in"]
OPS: tuple[Op, ...] = ("==", "!=", "<", ">", "<=", ">=", "in")
L3: TypeAlias = Literal["ip", "ip6"]


def _tuple(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


# ---------------------------------------------------------------------------------------------
# Values


@attrs.frozen
class Range:
    """``lo-hi``, inclusive, of ports/numbers or of addresses of one family."""

    lo: int | IPAddress
    hi: int | IPAddress = attrs.field()

    @hi.validator
    def _check(self, _a: attrs.Attribute[int | IPAddress], hi: int | IPAddress) -> None:
        if type(self.lo) is not type(hi):
            raise WorldError(f"range ends of different kinds: {self.lo}-{hi}")
        if hi < self.lo:  # type: ignore[operator]
            raise WorldError(f"empty range {self.lo}-{hi}")


@attrs.frozen
class SetRef:
    """``@name``: a lookup in a named set of the same table."""

    name: str


def _state_order(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(names), key=lambda n: (CT_STATES.get(n, 1 << 40), n)))


@attrs.frozen
class Flags:
    """Conntrack states as a bitmask, in the kernel's bit order: with ``op`` ``in`` the flag test
    ``ct state established,related`` (any of them), with ``==``/``!=`` the value
    ``established | related``."""

    names: tuple[str, ...] = attrs.field(converter=_state_order)
    #: How the text wrote the list (``,`` or ``|``): a reading aid for the parser, not compared.
    written: str = attrs.field(default=",", eq=False, repr=False)


#: One element of an anonymous or named set.
Element: TypeAlias = int | str | IPNetwork | Range


@attrs.frozen
class AnonSet:
    """``{ a, b-c, 10.0.0.0/8 }``: an anonymous set (elements sorted and unique, see ``make_set``)."""

    elements: tuple[Element, ...]


Value: TypeAlias = int | str | IPNetwork | Range | AnonSet | SetRef | Flags


# ---------------------------------------------------------------------------------------------
# Matches


@attrs.frozen
class Selector:
    """What a match reads: a payload field (``base`` ``ip``/``ip6``/``tcp``/``udp``/``th``…), a
    ``meta`` key or a ``ct`` key. ``kind`` is None for selectors meshsolve does not type."""

    base: str
    key: str

    @property
    def kind(self) -> ValueKind | None:
        return SELECTORS.get((self.base, self.key))

    def __str__(self) -> str:
        return f"{self.base} {self.key}"


def _mask(mask: int | None) -> int | None:
    """An all-ones mask is no mask (nft drops it)."""
    return None if mask == M32 else mask


@attrs.frozen
class Match:
    """``selector [& mask] [op] value``. ``op`` ``==`` is nft's implicit operator, except for a flag
    list (``ct state established,related``) where the implicit operator is ``in``: "any of these
    bits" (nft's JSON calls it ``in``); an explicit ``ct state == established`` is ``==``."""

    selector: Selector
    value: Value
    op: Op = attrs.field(default="==")
    mask: int | None = attrs.field(default=None, converter=_mask)

    @op.validator
    def _op(self, _a: attrs.Attribute[str], op: str) -> None:
        if op not in OPS:
            raise WorldError(f"unknown operator {op!r}")


# ---------------------------------------------------------------------------------------------
# Statements


@attrs.frozen
class Verdict:
    """``accept``, ``drop``, ``return``, ``continue``, ``jump CHAIN``, ``goto CHAIN``."""

    kind: Literal["accept", "drop", "return", "continue", "jump", "goto"]
    chain: str | None = attrs.field(default=None)

    @chain.validator
    def _chain(self, _a: attrs.Attribute[str | None], chain: str | None) -> None:
        if self.kind not in VERDICTS:
            raise WorldError(f"unknown verdict {self.kind!r}")
        if (chain is not None) != (self.kind in ("jump", "goto")):
            raise WorldError(f"verdict {self.kind} {'needs' if chain is None else 'takes no'} chain")


@attrs.frozen
class Counter:
    """``counter [packets N bytes M]`` (the numbers are state, not rule: they do not compare)."""

    packets: int = attrs.field(default=0, eq=False)
    bytes: int = attrs.field(default=0, eq=False)


@attrs.frozen
class Redirect:
    """``redirect [to :port[-port_max]] [flags]``."""

    port: int | None = None
    port_max: int | None = None
    flags: tuple[str, ...] = attrs.field(default=(), converter=_tuple)


@attrs.frozen
class Tproxy:
    """``tproxy [ip|ip6] to [address][:port]``. ``family`` is the address's when there is one, the
    table's in ``ip``/``ip6`` tables, and as written (or None) in ``inet`` tables."""

    family: L3 | None = None
    address: IPAddress | None = None
    port: int | None = None


@attrs.frozen
class Nat:
    """``snat``/``dnat`` ``[ip|ip6] to address[-address_max][:port[-port_max]]`` and ``masquerade
    [to :port]``, with their flags (``persistent``, ``random``...). ``family`` as for ``Tproxy``."""

    kind: Literal["snat", "dnat", "masquerade"]
    family: L3 | None = None
    address: IPAddress | None = None
    address_max: IPAddress | None = None
    port: int | None = None
    port_max: int | None = None
    flags: tuple[str, ...] = attrs.field(default=(), converter=_tuple)


@attrs.frozen
class MarkValue:
    """The value a mark setter writes: ``(source & mask) ^ xor`` (``source`` None: the constant
    ``xor``; ``mask`` is then 0)."""

    source: Literal["meta", "ct"] | None
    mask: int = M32
    xor: int = 0

    def __attrs_post_init__(self) -> None:
        if not (0 <= self.mask <= M32 and 0 <= self.xor <= M32):
            raise WorldError(f"mark value out of 32 bits: mask {self.mask:#x} xor {self.xor:#x}")
        if self.source is None and self.mask != 0:
            object.__setattr__(self, "mask", 0)

    @classmethod
    def constant(cls, value: int) -> MarkValue:
        return cls(None, 0, value)


@attrs.frozen
class SetMark:
    """``meta mark set VALUE`` (``key`` ``meta``) or ``ct mark set VALUE`` (``key`` ``ct``)."""

    key: Literal["meta", "ct"]
    value: MarkValue


@attrs.frozen
class SetCtZone:
    """``ct zone set N``."""

    zone: int


def _log_level(value: str | None) -> str | None:
    return None if value in (None, "warn", "warning") else value


@attrs.frozen
class Log:
    """``log [prefix "..."] [level L] [group N] [flags ...]``; the default level ``warn`` is None."""

    prefix: str | None = None
    level: str | None = attrs.field(default=None, converter=_log_level)
    group: int | None = None
    flags: tuple[str, ...] = attrs.field(default=(), converter=_tuple)

    @level.validator
    def _level(self, _a: attrs.Attribute[str | None], level: str | None) -> None:
        if level is not None and level not in LOG_LEVELS:
            raise WorldError(f"unknown log level {level!r}")


@attrs.frozen
class Reject:
    """``reject [with ...]``; ``reason`` is the text after ``with`` (None: the family default)."""

    reason: str | None = None


@attrs.frozen
class Opaque:
    """An item (or table object) meshsolve does not model, kept as its raw text."""

    text: str


Item: TypeAlias = Match | Verdict | Counter | Redirect | Tproxy | Nat | SetMark | SetCtZone | Log | Reject | Opaque
STATEMENTS: tuple[type, ...] = (Verdict, Counter, Redirect, Tproxy, Nat, SetMark, SetCtZone, Log, Reject)


# ---------------------------------------------------------------------------------------------
# Rules, chains, sets, tables


def _items(values: Iterable[Item]) -> tuple[Item, ...]:
    return tuple(values)


@attrs.frozen
class Rule:
    """One rule: its items in order, its comment; the kernel handle and source line do not compare."""

    items: tuple[Item, ...] = attrs.field(converter=_items)
    comment: str | None = None
    handle: int | None = attrs.field(default=None, eq=False)
    origin: Origin | None = attrs.field(default=None, eq=False, repr=False)

    @property
    def verdict(self) -> Verdict | None:
        """The rule's verdict, when it ends with one."""
        last = self.items[-1] if self.items else None
        return last if isinstance(last, Verdict) else None

    def matches(self) -> tuple[Match, ...]:
        return tuple(i for i in self.items if isinstance(i, Match))


@attrs.frozen
class HookSpec:
    """What makes a chain a base chain: ``type T hook H [device D] priority P; policy X;``."""

    type: ChainType
    hook: Hook
    priority: int
    policy: Policy = "accept"
    device: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.type not in CHAIN_TYPES or self.hook not in HOOKS or self.policy not in POLICIES:
            raise WorldError(f"not a base chain: type {self.type} hook {self.hook} policy {self.policy}")


def _rules(values: Iterable[Rule]) -> tuple[Rule, ...]:
    return tuple(values)


@attrs.frozen
class Chain:
    """A chain: base (``hook`` set) or regular, its rules in order."""

    name: str
    rules: tuple[Rule, ...] = attrs.field(default=(), converter=_rules)
    hook: HookSpec | None = None
    comment: str | None = None
    handle: int | None = attrs.field(default=None, eq=False)
    origin: Origin | None = attrs.field(default=None, eq=False, repr=False)

    @property
    def is_base(self) -> bool:
        return self.hook is not None


def _set_items(values: Iterable[Element | Opaque]) -> tuple[Element | Opaque, ...]:
    return tuple(values)


@attrs.frozen
class NamedSet:
    """``set NAME { type T; flags F; elements = { ... } }`` or a ``map`` (``data_type`` set).

    Elements of a set whose type meshsolve knows are typed values; other elements (and every map
    element) are ``Opaque`` text."""

    name: str
    key_type: str
    kind: Literal["set", "map"] = "set"
    data_type: str | None = None
    flags: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    elements: tuple[Element | Opaque, ...] = attrs.field(default=(), converter=_set_items)
    extra: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    comment: str | None = None
    handle: int | None = attrs.field(default=None, eq=False)


def _chains(values: Iterable[Chain]) -> tuple[Chain, ...]:
    return tuple(values)


def _sets(values: Iterable[NamedSet]) -> tuple[NamedSet, ...]:
    return tuple(values)


def _objects(values: Iterable[Opaque]) -> tuple[Opaque, ...]:
    return tuple(values)


@attrs.frozen
class Table:
    """A table of one family: chains in creation order, named sets, and opaque objects (flowtables,
    named counters, ct helpers...)."""

    family: Family
    name: str
    chains: tuple[Chain, ...] = attrs.field(default=(), converter=_chains)
    sets: tuple[NamedSet, ...] = attrs.field(default=(), converter=_sets)
    objects: tuple[Opaque, ...] = attrs.field(default=(), converter=_objects)
    flags: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    comment: str | None = None
    handle: int | None = attrs.field(default=None, eq=False)
    _index: dict[str, Chain] = attrs.field(init=False, factory=dict, eq=False, repr=False, hash=False)

    def __attrs_post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise WorldError(f"unknown nftables family {self.family!r}")
        names = [c.name for c in self.chains]
        if len(set(names)) != len(names):
            raise WorldError(f"table {self.family} {self.name}: a chain name appears twice")
        for c in self.chains:
            if c.hook is not None and c.hook.hook not in allowed_hooks(self.family, c.hook.type):
                raise WorldError(f"table {self.family} {self.name} chain {c.name}: type {c.hook.type} "
                                 f"cannot use hook {c.hook.hook}")
        object.__setattr__(self, "_index", {c.name: c for c in self.chains})

    def chain(self, name: str) -> Chain | None:
        return self._index.get(name)

    def named_set(self, name: str) -> NamedSet | None:
        return next((s for s in self.sets if s.name == name), None)


def _tables(values: Iterable[Table]) -> tuple[Table, ...]:
    return tuple(values)


@attrs.frozen
class Ruleset:
    """Every table, in creation order (the order ``nft list ruleset`` prints them)."""

    tables: tuple[Table, ...] = attrs.field(default=(), converter=_tables)

    def table(self, family: Family, name: str) -> Table | None:
        return next((t for t in self.tables if t.family == family and t.name == name), None)

    def rule_count(self) -> int:
        return sum(len(c.rules) for t in self.tables for c in t.chains)

    def base_chains(self, hook: Hook | None = None) -> tuple[tuple[Table, Chain], ...]:
        """Base chains (of one hook, or all), in the order the kernel runs them on a hook: by
        priority, then in creation order (the kernel's order for equal priorities)."""
        found = [(t, c) for t in self.tables for c in t.chains
                 if c.hook is not None and (hook is None or c.hook.hook == hook)]
        order = {id(c): k for k, (_, c) in enumerate(found)}
        return tuple(sorted(found, key=lambda tc: (HOOKS.index(tc[1].hook.hook),  # type: ignore[union-attr]
                                                   tc[1].hook.priority,  # type: ignore[union-attr]
                                                   order[id(tc[1])])))

    def __iter__(self) -> Iterator[Table]:
        return iter(self.tables)


def host_network(address: IPAddress) -> IPNetwork:
    """A host address as the network the model keeps (``127.0.0.6`` → ``127.0.0.6/32``)."""
    return ipaddress.ip_network(address)
