"""Render ``Rulesets`` as an idempotent POSIX shell script of ``iptables``/``ip6tables`` commands.

Running the script twice leaves the same rules as running it once: user chains are created or
flushed (``-N … || -F …``) and refilled; a rule in a built-in chain is appended only when ``-C``
does not find it. Chains are filled before the built-in hooks jump into them. Every token is
quoted with ``shlex.quote``.
"""

from __future__ import annotations

import shlex

# rule_text quotes like iptables-save ("\'" inside double quotes); shlex.split misreads that (a comment
# with a quote came out with stray backslashes, or raised ValueError), split_words undoes it exactly
from meshsolve.iptables import rule_text, split_words
from meshsolve.model.rules import Ruleset, Rulesets

__all__ = ["render_script"]


def _cmd(*tokens: str) -> str:
    return " ".join(shlex.quote(t) for t in tokens)


def _family(rs: Ruleset) -> list[str]:
    prog = "iptables" if rs.family == "ipv4" else "ip6tables"
    lines: list[str] = []
    for table in rs.tables:
        user = [c for c in table.chains if not c.builtin]
        builtin = [c for c in table.chains if c.builtin and c.rules]
        if not user and not builtin:
            continue
        lines.append(f"# {prog} {table.name}")
        for c in user:
            lines.append(f"{_cmd(prog, '-t', table.name, '-N', c.name)} 2>/dev/null || "
                         f"{_cmd(prog, '-t', table.name, '-F', c.name)}")
        for c in user:
            for r in c.rules:
                args = split_words(rule_text(r, rs.family))
                lines.append(_cmd(prog, "-t", table.name, "-A", c.name, *args))
        for c in builtin:
            for r in c.rules:
                args = split_words(rule_text(r, rs.family))
                lines.append(f"{_cmd(prog, '-t', table.name, '-C', c.name, *args)} 2>/dev/null || "
                             f"{_cmd(prog, '-t', table.name, '-A', c.name, *args)}")
    return lines


def render_script(rulesets: Rulesets, *, header: str = "") -> str:
    """An idempotent ``sh`` script installing ``rulesets`` (``header`` becomes ``#`` comments)."""
    lines = ["#!/bin/sh", "set -e"]
    lines += [f"# {h}" for h in header.splitlines() if h.strip()]
    lines += _family(rulesets.ipv4) + _family(rulesets.ipv6)
    return "\n".join(lines) + "\n"
