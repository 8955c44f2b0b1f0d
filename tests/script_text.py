"""Reading an emitted capture script (``meshsolve.istio.render_script``) back: its here-documents and
the built-in rules it adds only where missing."""

from __future__ import annotations

import re
import shlex

from meshsolve.iptables import parse_text
from meshsolve.model.rules import Rulesets


def heredocs(script: str, function: str) -> list[list[str]]:
    """The bodies of the quoted here-documents inside the shell function ``function``."""
    lines = script.splitlines()
    start = lines.index(f"{function}() {{")
    out: list[list[str]] = []
    i = start + 1
    while lines[i] != "}":
        m = re.fullmatch(r"\tcat <<'(\w+)'", lines[i])
        if m:
            end = lines.index(m.group(1), i + 1)
            out.append(lines[i + 1:end])
            i = end
        i += 1
    return out


def intended_text(script: str) -> str:
    """The ``intended_FAMILY`` here-documents as restore input with ``# ipv4``/``# ipv6`` markers."""
    parts: list[str] = []
    for family in ("ipv4", "ipv6"):
        if f"intended_{family}() {{" not in script:
            continue
        parts.append(f"# {family}")
        for body in heredocs(script, f"intended_{family}"):
            for line in body:
                if line.startswith("*") and parts[-1] != f"# {family}":
                    parts.append("COMMIT")
                parts.append(line)
        parts.append("COMMIT")
    return "\n".join(parts) + "\n"


def intended_rules(script: str) -> Rulesets:
    return parse_text(intended_text(script), source="script")


def absent_calls(script: str) -> list[tuple[str, list[str], str]]:
    """Each ``if absent "$IPTn" TABLE CHAIN ARGS; then printf '%s\\n' LINE; fi``: (table, [chain, *args],
    LINE), every word undone as the shell undoes it."""
    out = []
    for line in script.splitlines():
        m = re.fullmatch(r'\tif absent "\$IPT[46]" (.*); then printf \'%s\\n\' (.*); fi', line)
        if m:
            words = shlex.split(m.group(1))
            (printed,) = shlex.split(m.group(2))
            out.append((words[0], words[1:], printed))
    return out
