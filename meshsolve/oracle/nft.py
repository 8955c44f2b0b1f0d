"""Native nftables tables on the kernel: the ``nft -f`` text the oracle loads, and its counters.

A world's ``NftTable``s carry the ``nft -f`` text they were read from (``NftTable.text``). The
oracle loads that text with every rule's counters replaced by one ``counter`` just before the
rule's last statement when that statement ends the rule (a verdict, ``redirect``, NAT, ``reject``;
after ``tproxy`` that counts only a packet tproxy found a socket for), else at its end: a counter
changes nothing a packet meets, and it moves exactly when the interpreter's traversal records the
rule as taken. A base chain with policy ``drop`` gets a last rule ``counter drop``, which stands for
the policy (index 0, as iptables' policy counters are).

``nft -j list ruleset`` gives the counters back, per rule in chain order: ``FAMILY NAME::CHAIN#n``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import attrs

from meshsolve.errors import OracleError
from meshsolve.model.rules import NftTable, RuleRef, SetMatch
from meshsolve.model.rules import Ruleset as Ruleset_
from meshsolve.model.world import IpSet
from meshsolve.nftables import Counter, Item, Nat, Redirect, Reject, Rule, Ruleset, Verdict, parse_text, render

__all__ = ["POLICY_COMMENT", "ipset_restore", "load_text", "parse_nft_counters", "set_lines"]

#: The comment of the rule that stands for a drop policy.
POLICY_COMMENT = "meshsolve: policy drop"
_ENDS = (Verdict, Redirect, Nat, Reject)


def _counted(rule: Rule) -> Rule:
    items: list[Item] = [i for i in rule.items if not isinstance(i, Counter)]
    if items and isinstance(items[-1], _ENDS):
        items.insert(len(items) - 1, Counter())
    else:
        items.append(Counter())
    return attrs.evolve(rule, items=tuple(items))


def set_lines(table: NftTable, sets: Iterable[IpSet]) -> list[str]:
    """The sets ``table``'s rules look up without listing their members (``SetMatch``), declared
    with the members the world gives (``add set`` / ``add element``); ``OracleError`` for a set the
    world does not give (nft cannot load a rule whose set does not exist)."""
    given = {s.name: s for s in sets}
    family, name = table.key.split(" ", 1)
    out: list[str] = []
    for ref in dict.fromkeys(m.name for c in table.table.chains for r in c.rules for m in r.matches
                             if isinstance(m, SetMatch)):
        s = given.get(ref)
        if s is None:
            raise OracleError(f"nft table {table.key} looks up set @{ref}, whose members the world does not give")
        kind = "ipv4_addr" if s.family == "ipv4" else "ipv6_addr"
        out.append(f"add set {family} {name} {ref} {{ type {kind} ; flags interval ; }}")
        if s.members:
            out.append(f"add element {family} {name} {ref} {{ {', '.join(str(n) for n in s.members)} }}")
    if out:
        out.insert(0, f"add table {family} {name}")
    return out


def load_text(tables: Iterable[NftTable], sets: Iterable[IpSet] = ()) -> str:
    """The ``nft -f`` text the oracle loads for ``tables`` (each once, in order; see the module
    docstring), with the sets they look up filled from ``sets`` (the world's ``ip_sets``).
    ``OracleError`` for a table without nft text (built in code, not read)."""
    sets = tuple(sets)
    out: list[str] = []
    seen: set[str] = set()
    for t in tables:
        if t.key in seen:
            continue
        seen.add(t.key)
        if t.text is None:
            raise OracleError(f"nft table {t.key} has no nft text to load (build it with meshsolve.nftables.lower)")
        syntax = parse_text(t.text, source=f"nft table {t.key}")
        tables_out = []
        for table in syntax.tables:
            chains = []
            for c in table.chains:
                rules = [_counted(r) for r in c.rules]
                if c.hook is not None and c.hook.policy == "drop":
                    rules.append(Rule((Counter(), Verdict("drop")), POLICY_COMMENT))
                chains.append(attrs.evolve(c, rules=tuple(rules)))
            tables_out.append(attrs.evolve(table, chains=tuple(chains)))
        out.extend(line + "\n" for line in set_lines(t, sets))
        out.append(render(Ruleset(tuple(tables_out))))
    return "".join(out)


def ipset_restore(rulesets: Iterable[Ruleset_], sets: Iterable[IpSet]) -> str:
    """``ipset restore`` input for the sets the iptables rules look up (``-m set``): each a
    ``hash:net`` of its family with the members the world gives; ``OracleError`` for a set the world
    does not give (iptables cannot load a rule whose set does not exist)."""
    given = {s.name: s for s in sets}
    out: list[str] = []
    for ref in dict.fromkeys(m.name for rs in rulesets for t in rs.tables for c in t.chains for r in c.rules
                             for m in r.matches if isinstance(m, SetMatch)):
        s = given.get(ref)
        if s is None:
            raise OracleError(f"the rules look up ipset {ref}, whose members the world does not give")
        out.append(f"create {ref} hash:net family {'inet' if s.family == 'ipv4' else 'inet6'}")
        out += [f"add {ref} {n}" for n in s.members]
    return "".join(line + "\n" for line in out)


def parse_nft_counters(text: str) -> dict[RuleRef, int]:
    """``nft -j list ruleset`` → packets per rule (``inet t::chain#n``, 1-based in chain order) and per
    drop policy (index 0: the counter of the rule that stands for it)."""
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise OracleError(f"nft -j list ruleset: not JSON ({exc.msg})") from None
    out: dict[RuleRef, int] = {}
    seen: dict[tuple[str, str], int] = {}
    for obj in data.get("nftables", ()):
        rule = obj.get("rule") if isinstance(obj, dict) else None
        if not isinstance(rule, dict):
            continue
        table = f"{rule.get('family')} {rule.get('table')}"
        chain = str(rule.get("chain"))
        packets = sum(int(e["counter"].get("packets", 0)) for e in rule.get("expr", ())
                      if isinstance(e, dict) and isinstance(e.get("counter"), dict))
        if rule.get("comment") == POLICY_COMMENT:
            out[RuleRef(table, chain, 0)] = packets
            continue
        n = seen[(table, chain)] = seen.get((table, chain), 0) + 1
        out[RuleRef(table, chain, n)] = packets
    return out
