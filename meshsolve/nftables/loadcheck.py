"""What ``nft -f`` would refuse, found before loading: load problems as values, not exceptions.

``load(text)`` reads nft input in any of its three forms. Text nft cannot even parse is a
``ParseError``, as everywhere. A transaction nft parses but refuses — an insert at an index the
chain does not have (Istio's empty-chain insert), a rule naming a chain or set that does not exist,
a chain redefined with another hook — is a ``LoadProblem`` of kind ``refused``: nft applies a
transaction whole or not at all, so nothing of it is loaded and the ruleset is empty. User and group
*names* (``meta skgid java``) are resolved by nft on the host that loads the rules (``Group does not
exist`` where it lacks them: measured, nft 1.0.6): each is a ``LoadProblem`` of kind ``name``, and the
rules are kept (the names stay unresolved: what they match is undetermined unless the world names
them).
"""

from __future__ import annotations

from collections.abc import Iterator

from meshsolve.errors import ParseError
from meshsolve.model.load import LoadProblem
from meshsolve.model.rules import Rulesets
from meshsolve.nftables.commands import replay
from meshsolve.nftables.kinds import ValueKind
from meshsolve.nftables.lower import lower
from meshsolve.nftables.model import AnonSet, Match, Ruleset
from meshsolve.nftables.parse import read_commands

__all__ = ["load", "load_rulesets", "name_problems"]


def load(text: str, source: str = "<string>") -> tuple[Ruleset, tuple[LoadProblem, ...]]:
    """What loading ``text`` leaves in the kernel, and the problems found (see the module docstring)."""
    commands, lines = read_commands(text, source)
    try:
        rs = replay(commands, source=source, lines=lines)
    except ParseError as exc:
        return Ruleset(), (LoadProblem("refused", exc.message, exc.source, exc.lineno, exc.line),)
    return rs, name_problems(rs, lines)


def load_rulesets(text: str, source: str = "<string>") -> Rulesets:
    """``load`` lowered to the rule model, the problems carried as ``Rulesets.load_problems``."""
    rs, problems = load(text, source)
    out = lower(rs)
    return Rulesets(out.ipv4, out.ipv6, problems)


def _names(value: object) -> Iterator[str]:
    items = value.elements if isinstance(value, AnonSet) else (value,)
    for e in items:
        if isinstance(e, str):
            yield e


def name_problems(rs: Ruleset, lines: list[str] | None = None) -> tuple[LoadProblem, ...]:
    """A ``name`` problem for every user or group name in a rule or set (once per name and line)."""
    out: list[LoadProblem] = []
    seen: set[tuple[str, int | None]] = set()
    for t in rs.tables:
        for s in t.sets:
            if s.key_type in ("uid", "gid"):
                for e in s.elements:
                    if isinstance(e, str) and (e, None) not in seen:
                        seen.add((e, None))
                        what = "user" if s.key_type == "uid" else "group"
                        out.append(LoadProblem("name", f"{what} name {e!r} in set {t.family} {t.name} {s.name}"))
        for c in t.chains:
            for r in c.rules:
                o = r.origin
                line = lines[o.lineno - 1] if o is not None and lines and 0 < o.lineno <= len(lines) else None
                for item in r.items:
                    if not isinstance(item, Match) or item.selector.kind not in (ValueKind.UID, ValueKind.GID):
                        continue
                    what = "user" if item.selector.kind is ValueKind.UID else "group"
                    key_word = "skuid" if what == "user" else "skgid"
                    for name in _names(item.value):
                        key = (name, None if o is None else o.lineno)
                        if key in seen:
                            continue
                        seen.add(key)
                        out.append(LoadProblem("name", f"{what} name {name!r} (meta {key_word})",
                                               o.source if o is not None else "<nft>",
                                               None if o is None else o.lineno, line))
    return tuple(out)
