"""nft commands as values, and their replay into a ``Ruleset`` the way the kernel applies a batch.

Every reader produces commands: ``nft -f`` lines directly (``add table``, ``add chain``, ``insert
rule ... index N``, ``flush``, ``delete``...), the nested ``table { ... }`` form of ``nft list
ruleset`` as the adds it stands for, and the JSON forms likewise. ``replay`` applies them in order
to an (initially empty) state and checks what nft and the kernel check:

- the table and chain of a command exist (``add rule`` to a missing chain is refused);
- ``index N`` names an existing rule (0-based; ``insert`` goes before it, ``add`` after it), so an
  ``insert ... index 0`` into an empty chain is refused, as the kernel refuses it;
- ``position H`` / ``handle H`` name an existing rule handle;
- re-adding a chain with a different type, hook, priority or device is refused (a new policy is
  taken); re-adding a table or an identical chain is a no-op, ``create`` of an existing one fails;
- a chain that a rule jumps to cannot be deleted, and at the end every ``jump``/``goto`` names a
  chain of its table.

Handles given by a listing (``# handle N``, JSON ``handle``) are kept; others are numbered like the
kernel numbers a batch (one counter per table for chains, sets, rules and the anonymous sets of
rules; one counter for tables), so ``delete rule ... handle H`` written against a fresh load
replays (on the 36 Istio goldens the kernel loads, the numbering equals the kernel's). Handles never
compare.
"""

from __future__ import annotations

import ipaddress
from typing import TypeAlias

import attrs

from meshsolve.errors import ParseError
from meshsolve.model.rules import Origin
from meshsolve.nftables.kinds import Family
from meshsolve.nftables.model import (
    AnonSet,
    Chain,
    Element,
    HookSpec,
    Match,
    NamedSet,
    Opaque,
    Range,
    Rule,
    Ruleset,
    Table,
    Verdict,
)
from meshsolve.nftables.values import make_set

__all__ = [
    "AddChain",
    "AddElements",
    "AddObject",
    "AddRule",
    "AddSet",
    "AddTable",
    "Command",
    "DeleteChain",
    "DeleteRule",
    "DeleteSet",
    "DeleteTable",
    "FlushChain",
    "FlushRuleset",
    "FlushSet",
    "FlushTable",
    "RenameChain",
    "ReplaceRule",
    "replay",
]


@attrs.frozen
class AddTable:
    family: Family
    name: str
    flags: tuple[str, ...] = ()
    comment: str | None = None
    create: bool = False
    origin: Origin | None = attrs.field(default=None, eq=False, repr=False)
    handle: int | None = attrs.field(default=None, eq=False)


@attrs.frozen
class DeleteTable:
    family: Family
    name: str | None = None
    handle: int | None = None
    destroy: bool = False
    origin: Origin | None = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen
class FlushTable:
    family: Family
    name: str
    origin: Origin | None = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen
class FlushRuleset:
    family: Family | None = None
    origin: Origin | None = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen
class AddChain:
    family: Family
    table: str
    name: str
    hook: HookSpec | None = None
    comment: str | None = None
    create: bool = False
    origin: Origin | None = attrs.field(default=None, eq=False, repr=False)
    handle: int | None = attrs.field(default=None, eq=False)


@attrs.frozen
class DeleteChain:
    family: Family
    table: str
    name: str | None = None
    handle: int | None = None
    destroy: bool = False
    origin: Origin | None = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen
class FlushChain:
    family: Family
    table: str
    name: str
    origin: Origin | None = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen
class RenameChain:
    family: Family
    table: str
    name: str
    new_name: str
    origin: Origin | None = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen
class AddRule:
    """``add rule`` (``insert`` False) or ``insert rule``, at the end/head or relative to ``index``
    (0-based) or ``position`` (a rule handle)."""

    family: Family
    table: str
    chain: str
    rule: Rule
    insert: bool = False
    index: int | None = None
    position: int | None = None
    origin: Origin | None = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen
class ReplaceRule:
    family: Family
    table: str
    chain: str
    handle: int
    rule: Rule
    origin: Origin | None = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen
class DeleteRule:
    family: Family
    table: str
    chain: str
    handle: int
    destroy: bool = False
    origin: Origin | None = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen
class AddSet:
    family: Family
    table: str
    set: NamedSet
    create: bool = False
    origin: Origin | None = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen
class DeleteSet:
    family: Family
    table: str
    name: str | None = None
    handle: int | None = None
    destroy: bool = False
    origin: Origin | None = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen
class FlushSet:
    family: Family
    table: str
    name: str
    origin: Origin | None = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen
class AddElements:
    """``add element`` (or ``delete element`` with ``delete``) into a named set or map."""

    family: Family
    table: str
    set_name: str
    elements: tuple[Element | Opaque, ...]
    delete: bool = False
    origin: Origin | None = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen
class AddObject:
    """A table object meshsolve keeps as text (named counter, quota, flowtable, ct helper...)."""

    family: Family
    table: str
    object: Opaque
    origin: Origin | None = attrs.field(default=None, eq=False, repr=False)


Command: TypeAlias = (AddTable | DeleteTable | FlushTable | FlushRuleset | AddChain | DeleteChain | FlushChain
                      | RenameChain | AddRule | ReplaceRule | DeleteRule | AddSet | DeleteSet | FlushSet
                      | AddElements | AddObject)


# ---------------------------------------------------------------------------------------------
# Replay


@attrs.define
class _ChainB:
    name: str
    hook: HookSpec | None
    comment: str | None
    handle: int
    origin: Origin | None
    rules: list[Rule] = attrs.field(factory=list)


@attrs.define
class _SetB:
    value: NamedSet
    handle: int
    elements: list[Element | Opaque] = attrs.field(factory=list)


@attrs.define
class _TableB:
    family: Family
    name: str
    flags: tuple[str, ...]
    comment: str | None
    handle: int
    next_handle: int = 1
    chains: dict[str, _ChainB] = attrs.field(factory=dict)
    sets: dict[str, _SetB] = attrs.field(factory=dict)
    objects: list[Opaque] = attrs.field(factory=list)

    def take_handle(self, given: int | None = None) -> int:
        """The next handle, or ``given`` (a listing's), after which numbering continues."""
        h = self.next_handle if given is None else given
        self.next_handle = max(self.next_handle, h + 1)
        return h


def _anon_sets(rule: Rule) -> int:
    """How many anonymous sets the kernel creates for a rule (each takes a handle)."""
    n = 0
    for item in rule.items:
        if isinstance(item, Match) and isinstance(item.value, AnonSet):
            els = item.value.elements
            if len(els) > 1 or (els and _is_interval(els[0])):
                n += 1
    return n


def _is_interval(e: Element) -> bool:
    return isinstance(e, Range) or (isinstance(e, ipaddress.IPv4Network | ipaddress.IPv6Network)
                                    and e.num_addresses > 1)


class _Replay:
    def __init__(self, source: str, lines: list[str] | None) -> None:
        self.source = source
        self.lines = lines or []
        self.tables: dict[tuple[str, str], _TableB] = {}
        self.table_handle = 0

    # -- errors
    def fail(self, cmd: Command, message: str) -> ParseError:
        o = cmd.origin
        if o is None:
            return ParseError(message, source=self.source)
        line = self.lines[o.lineno - 1][:200] if 0 < o.lineno <= len(self.lines) else None
        return ParseError(message, source=o.source, lineno=o.lineno, line=line)

    def table(self, cmd: Command, family: Family, name: str) -> _TableB:
        t = self.tables.get((family, name))
        if t is None:
            raise self.fail(cmd, f"table {family} {name} does not exist (nft: No such file or directory)")
        return t

    def chain(self, cmd: Command, t: _TableB, name: str) -> _ChainB:
        c = t.chains.get(name)
        if c is None:
            raise self.fail(cmd, f"chain {name} does not exist in table {t.family} {t.name} "
                                 "(nft: No such file or directory)")
        return c

    # -- commands
    def apply(self, cmd: Command) -> None:
        match cmd:
            case AddTable(family=fam, name=name, flags=flags, comment=comment, create=create):
                t = self.tables.get((fam, name))
                if t is not None:
                    if create:
                        raise self.fail(cmd, f"table {fam} {name} exists (nft: File exists)")
                    t.flags = flags or t.flags
                    t.comment = comment if comment is not None else t.comment
                    return
                self.table_handle = max(self.table_handle + 1, cmd.handle or 0)
                self.tables[(fam, name)] = _TableB(fam, name, flags, comment, self.table_handle)
            case DeleteTable(family=fam, name=name, handle=handle, destroy=destroy):
                key = next((k for k, t in self.tables.items()
                            if t.family == fam and (t.name == name if name is not None else t.handle == handle)),
                           None)
                if key is None:
                    if destroy:
                        return
                    raise self.fail(cmd, f"table {fam} {name or f'handle {handle}'} does not exist")
                del self.tables[key]
            case FlushTable(family=fam, name=name):
                for c in self.table(cmd, fam, name).chains.values():
                    c.rules.clear()
            case FlushRuleset(family=fam):
                self.tables = {k: t for k, t in self.tables.items() if fam is not None and t.family != fam}
            case AddChain():
                self._add_chain(cmd)
            case DeleteChain(family=fam, table=tname, name=name, handle=handle, destroy=destroy):
                t = self.table(cmd, fam, tname)
                found = next((c for c in t.chains.values()
                              if (c.name == name if name is not None else c.handle == handle)), None)
                if found is None:
                    if destroy:
                        return
                    raise self.fail(cmd, f"chain {name or f'handle {handle}'} does not exist in table {fam} {tname}")
                if any(isinstance(r.verdict, Verdict) and r.verdict.chain == found.name
                       for c in t.chains.values() if c is not found for r in c.rules):
                    raise self.fail(cmd, f"chain {found.name} is the target of a jump or goto "
                                         "(nft: Device or resource busy)")
                del t.chains[found.name]
            case FlushChain(family=fam, table=tname, name=name):
                self.chain(cmd, self.table(cmd, fam, tname), name).rules.clear()
            case RenameChain(family=fam, table=tname, name=name, new_name=new):
                t = self.table(cmd, fam, tname)
                c = self.chain(cmd, t, name)
                if new in t.chains:
                    raise self.fail(cmd, f"chain {new} exists in table {fam} {tname} (nft: File exists)")
                c.name = new
                t.chains = {(new if k == name else k): v for k, v in t.chains.items()}
                for other in t.chains.values():  # jumps name the chain object: they follow the rename
                    other.rules = [_retarget(r, name, new) for r in other.rules]
            case AddRule():
                self._add_rule(cmd)
            case ReplaceRule(family=fam, table=tname, chain=cname, handle=handle, rule=rule):
                t = self.table(cmd, fam, tname)
                c = self.chain(cmd, t, cname)
                k = self._rule_at_handle(cmd, c, handle)
                c.rules[k] = attrs.evolve(rule, handle=handle)
            case DeleteRule(family=fam, table=tname, chain=cname, handle=handle, destroy=destroy):
                t = self.table(cmd, fam, tname)
                c = self.chain(cmd, t, cname)
                if destroy and not any(r.handle == handle for r in c.rules):
                    return
                del c.rules[self._rule_at_handle(cmd, c, handle)]
            case AddSet(family=fam, table=tname, set=s, create=create):
                t = self.table(cmd, fam, tname)
                old = t.sets.get(s.name)
                if old is None:
                    t.sets[s.name] = _SetB(attrs.evolve(s, elements=()), t.take_handle(), list(s.elements))
                    return
                if create:
                    raise self.fail(cmd, f"set {s.name} exists in table {fam} {tname} (nft: File exists)")
                if (old.value.key_type, old.value.data_type, old.value.kind) != (s.key_type, s.data_type, s.kind):
                    raise self.fail(cmd, f"set {s.name} exists with another type ({old.value.key_type})")
                old.elements.extend(s.elements)
            case DeleteSet(family=fam, table=tname, name=name, handle=handle, destroy=destroy):
                t = self.table(cmd, fam, tname)
                set_name = next((k for k, v in t.sets.items()
                                 if (k == name if name is not None else v.handle == handle)), None)
                if set_name is None:
                    if destroy:
                        return
                    raise self.fail(cmd, f"set {name or f'handle {handle}'} does not exist in table {fam} {tname}")
                del t.sets[set_name]
            case FlushSet(family=fam, table=tname, name=name):
                self._set(cmd, fam, tname, name).elements.clear()
            case AddElements(family=fam, table=tname, set_name=name, elements=els, delete=delete):
                sb = self._set(cmd, fam, tname, name)
                if not delete:
                    sb.elements.extend(els)
                    return
                for e in els:
                    if e not in sb.elements:
                        raise self.fail(cmd, f"element {e} is not in set {name} (nft: No such file or directory)")
                    sb.elements.remove(e)
            case AddObject(family=fam, table=tname, object=obj):
                t = self.table(cmd, fam, tname)
                t.take_handle()
                t.objects.append(obj)
            case _:  # pragma: no cover - the match is exhaustive over Command
                raise AssertionError(cmd)

    def _set(self, cmd: Command, fam: Family, tname: str, name: str) -> _SetB:
        t = self.table(cmd, fam, tname)
        sb = t.sets.get(name)
        if sb is None:
            raise self.fail(cmd, f"set {name} does not exist in table {fam} {tname}")
        return sb

    def _add_chain(self, cmd: AddChain) -> None:
        t = self.table(cmd, cmd.family, cmd.table)
        old = t.chains.get(cmd.name)
        if old is None:
            t.chains[cmd.name] = _ChainB(cmd.name, cmd.hook, cmd.comment, t.take_handle(cmd.handle), cmd.origin)
            return
        if cmd.create:
            raise self.fail(cmd, f"chain {cmd.name} exists in table {cmd.family} {cmd.table} (nft: File exists)")
        if cmd.hook is None:
            return
        same = old.hook is not None and attrs.evolve(old.hook, policy=cmd.hook.policy) == cmd.hook
        if not same:
            raise self.fail(cmd, f"chain {cmd.name} exists with another type, hook or priority "
                                 "(nft: Operation not supported)")
        old.hook = cmd.hook

    def _rule_at_handle(self, cmd: Command, c: _ChainB, handle: int) -> int:
        for k, r in enumerate(c.rules):
            if r.handle == handle:
                return k
        raise self.fail(cmd, f"no rule with handle {handle} in chain {c.name} (nft: No such file or directory)")

    def _add_rule(self, cmd: AddRule) -> None:
        t = self.table(cmd, cmd.family, cmd.table)
        c = self.chain(cmd, t, cmd.chain)
        if cmd.index is not None:
            if not 0 <= cmd.index < len(c.rules):
                raise self.fail(cmd, f"index {cmd.index} names no rule of chain {c.name} ({len(c.rules)} rules; "
                                     "an insert into an empty chain is refused: nft: No such file or directory)")
            at = cmd.index if cmd.insert else cmd.index + 1
        elif cmd.position is not None:
            k = self._rule_at_handle(cmd, c, cmd.position)
            at = k if cmd.insert else k + 1
        else:
            at = 0 if cmd.insert else len(c.rules)
        if cmd.rule.handle is None:
            for _ in range(_anon_sets(cmd.rule)):
                t.take_handle()
        c.rules.insert(at, attrs.evolve(cmd.rule, handle=t.take_handle(cmd.rule.handle),
                                        origin=cmd.rule.origin or cmd.origin))

    # -- result
    def result(self) -> Ruleset:
        tables = []
        for t in self.tables.values():
            names = set(t.chains)
            for c in t.chains.values():
                for r in c.rules:
                    v = r.verdict
                    if v is not None and v.chain is not None and v.chain not in names:
                        o = r.origin
                        raise ParseError(f"{v.kind} to chain {v.chain}, which does not exist in table "
                                         f"{t.family} {t.name} (nft: No such file or directory)",
                                         source=o.source if o else self.source, lineno=o.lineno if o else None,
                                         line=self.lines[o.lineno - 1][:200]
                                         if o and 0 < o.lineno <= len(self.lines) else None)
            sets = tuple(attrs.evolve(s.value, elements=_set_elements(s.elements), handle=s.handle)
                         for s in t.sets.values())
            tables.append(Table(t.family, t.name,
                                tuple(Chain(c.name, tuple(c.rules), c.hook, c.comment, c.handle, c.origin)
                                      for c in t.chains.values()),
                                sets, tuple(t.objects), t.flags, t.comment, t.handle))
        return Ruleset(tuple(tables))


def _retarget(rule: Rule, old: str, new: str) -> Rule:
    v = rule.verdict
    if v is None or v.chain != old:
        return rule
    return attrs.evolve(rule, items=(*rule.items[:-1], Verdict(v.kind, new)))


def _set_elements(els: list[Element | Opaque]) -> tuple[Element | Opaque, ...]:
    if any(isinstance(e, Opaque) for e in els):
        return tuple(dict.fromkeys(els))
    return make_set([e for e in els if not isinstance(e, Opaque)])


def replay(commands: tuple[Command, ...] | list[Command], *, source: str = "<string>",
           lines: list[str] | None = None) -> Ruleset:
    """Apply ``commands`` in order to an empty ruleset (``ParseError`` where nft would refuse)."""
    r = _Replay(source, lines)
    for cmd in commands:
        r.apply(cmd)
    return r.result()
