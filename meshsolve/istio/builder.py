"""A recording rule builder: Istio's emission stream (``-A`` appends and ``-I n`` inserts), replayed
into frozen ``Rulesets``.

Generators call ``append``/``insert`` in exactly the order istio-iptables (or the shell script)
issues its commands, per address family. ``build()`` replays the stream the way the kernel does
(an ``-I CHAIN n`` puts the rule at position n of what is already there) and declares every user
chain that owns a rule or is the target of a jump (the chains Istio creates with ``-N``).
Small match constructors used by the generators live here too.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from meshsolve.errors import InternalError
from meshsolve.model.net import Family, IPNetwork, PortRange
from meshsolve.model.rules import (
    BUILTIN_CHAINS,
    Chain,
    Destination,
    Goto,
    InInterface,
    Jump,
    Match,
    MultiportMatch,
    OutInterface,
    OwnerMatch,
    PortMatch,
    Protocol,
    Rule,
    Ruleset,
    Rulesets,
    Source,
    Table,
    Target,
)

__all__ = ["Op", "RuleBuilder", "dport", "dst", "in_if", "out_if", "owner_gid", "owner_uid", "sport",
           "src", "tcp", "udp"]


@attrs.frozen
class Op:
    """One recorded command: ``-A`` (``position`` None) or ``-I CHAIN position`` (1-based)."""

    family: Family
    table: str
    chain: str
    rule: Rule
    position: int | None = None


class RuleBuilder:
    """Mutable recorder of Istio's command stream; ``build()`` yields the frozen result."""

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.declared: list[tuple[Family, str, str]] = []

    def append(self, family: Family, table: str, chain: str, *matches: Match,
               target: Target | None) -> None:
        self.ops.append(Op(family, table, chain, Rule(matches, target)))

    def insert(self, family: Family, table: str, chain: str, position: int, *matches: Match,
               target: Target | None) -> None:
        self.ops.append(Op(family, table, chain, Rule(matches, target), position))

    def declare(self, family: Family, table: str, chain: str) -> None:
        """Create a (possibly empty) user chain, like a bare ``-N``."""
        self.declared.append((family, table, chain))

    def declarations(self, family: Family, table: str) -> tuple[str, ...]:
        """The user chains in the order istio-iptables declares them with ``-N``: first those that
        own a rule, in order of their first rule, then those that are only jumped to."""
        builtins = BUILTIN_CHAINS.get(table, ())
        owners: list[str] = []
        targets: list[str] = []
        for op in self.ops:
            if op.family != family or op.table != table:
                continue
            if op.chain not in builtins and op.chain not in owners:
                owners.append(op.chain)
            t = op.rule.target
            if isinstance(t, Jump | Goto) and t.chain not in builtins and t.chain not in targets:
                targets.append(t.chain)
        return (*owners, *(t for t in targets if t not in owners))

    def build(self) -> Rulesets:
        """Replay the stream into rulesets; only tables that received something appear."""
        chains: dict[tuple[Family, str], dict[str, list[Rule]]] = {}
        for fam, table, chain in self.declared:
            chains.setdefault((fam, table), {}).setdefault(chain, [])
        for op in self.ops:
            rules = chains.setdefault((op.family, op.table), {}).setdefault(op.chain, [])
            if op.position is None:
                rules.append(op.rule)
            else:
                if not 1 <= op.position <= len(rules) + 1:
                    raise InternalError(
                        f"-I {op.chain} {op.position}: index of insertion too big ({len(rules)} rules)")
                rules.insert(op.position - 1, op.rule)
        # Jump targets are declared too (Istio's -N for chains it jumps to).
        for (_fam, table), by_name in list(chains.items()):
            builtins = BUILTIN_CHAINS.get(table, ())
            for rules in list(by_name.values()):
                for r in rules:
                    if isinstance(r.target, Jump | Goto) and r.target.chain not in builtins:
                        by_name.setdefault(r.target.chain, [])
        out: dict[Family, list[Table]] = {"ipv4": [], "ipv6": []}
        for (fam, table), by_name in chains.items():
            builtins = BUILTIN_CHAINS.get(table, ())
            cs = [Chain(name, tuple(rules), "ACCEPT" if name in builtins else None)
                  for name, rules in by_name.items()]
            out[fam].append(Table(table, tuple(cs)))
        return Rulesets(Ruleset("ipv4", tuple(out["ipv4"])), Ruleset("ipv6", tuple(out["ipv6"])))


# ---------------------------------------------------------------------------------------------
# Match constructors, spelled like the iptables options they stand for.


def tcp() -> Protocol:
    return Protocol("tcp")


def udp() -> Protocol:
    return Protocol("udp")


def dport(port: int, proto: str = "tcp", *, negated: bool = False) -> PortMatch:
    """``--dport P`` (implicit ``-m tcp``/``-m udp``)."""
    return PortMatch(proto, dport=PortRange.single(port), dport_negated=negated)  # type: ignore[arg-type]


def sport(port: int, proto: str = "udp") -> PortMatch:
    return PortMatch(proto, sport=PortRange.single(port))  # type: ignore[arg-type]


def not_dports(ports: Iterable[int]) -> MultiportMatch:
    """``-m multiport ! --dports a,b``"""
    return MultiportMatch("dports", tuple(PortRange.single(p) for p in ports), negated=True)


def src(net: IPNetwork | str) -> Source:
    return Source(net)


def dst(net: IPNetwork | str, *, negated: bool = False) -> Destination:
    return Destination(net, negated)


def in_if(name: str) -> InInterface:
    return InInterface(name)


def out_if(name: str) -> OutInterface:
    return OutInterface(name)


def owner_uid(uid: str, *, negated: bool = False) -> OwnerMatch:
    return OwnerMatch(uid=uid, uid_negated=negated)


def owner_gid(gid: str, *, negated: bool = False) -> OwnerMatch:
    return OwnerMatch(gid=gid, gid_negated=negated)
