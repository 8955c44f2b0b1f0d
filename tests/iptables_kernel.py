"""Kernel helpers for the iptables tests: load text with iptables-restore in a throw-away network
namespace (``unshare -n``: it disappears with the process, also on failure) and read it back."""

from __future__ import annotations

import subprocess

import attrs

from meshsolve.iptables import parse_text
from meshsolve.model import Chain, OwnerMatch, Rule, Ruleset, Rulesets, Table


def kernel_roundtrip(text: str, family: str) -> tuple[str, Ruleset]:
    """Restore ``text`` into a fresh namespace, dump it; return the dump without '#' lines and its
    parse (as the given family)."""
    tool = "iptables" if family == "ipv4" else "ip6tables"
    proc = subprocess.run(["unshare", "-n", "sh", "-c", f"{tool}-restore && {tool}-save"], input=text,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"{tool}-restore refused:\n{proc.stderr}\n{text}"
    dump = "".join(line + "\n" for line in proc.stdout.splitlines() if not line.startswith("#"))
    back = parse_text(f"# {family}\n" + dump, source=f"{tool}-save")
    return dump, back.for_family("ipv4" if family == "ipv4" else "ipv6")


@attrs.frozen
class Restored:
    """What the real loader did with one input in a fresh namespace."""

    returncode: int
    stderr: str
    ipv4_dump: str  # iptables-save afterwards, '#' lines dropped ('' when the load failed)
    ipv6_dump: str  # ip6tables-save afterwards, likewise


_SEPARATOR = "----- ip6tables-save -----"


def restore(text: str, tool: str = "iptables-restore") -> Restored:
    """Feed ``text`` to ``tool`` (iptables-restore or ip6tables-restore) in a throw-away namespace and
    dump both families after it, whatever it returned."""
    script = f'{tool}; rc=$?; iptables-save; echo "{_SEPARATOR}"; ip6tables-save; exit $rc'
    proc = subprocess.run(["unshare", "-n", "sh", "-c", script], input=text, capture_output=True,
                          text=True, timeout=60)
    v4, _, v6 = proc.stdout.partition(_SEPARATOR + "\n")

    def strip(dump: str) -> str:
        return "".join(line + "\n" for line in dump.splitlines() if not line.startswith("#"))

    return Restored(proc.returncode, proc.stderr, strip(v4), strip(v6))


def map_owner_names(rs: Rulesets) -> Rulesets:
    """Replace owner *names* (``java``, ``tomcat``, ``ftp``...) by fixed ids (5000, 5001, ...): the
    kernel stores numbers and the test machine need not have those users."""
    ids: dict[str, str] = {}

    def fix(v: str | None) -> str | None:
        if v is None or v[0].isdigit():
            return v
        return ids.setdefault(v, str(5000 + len(ids)))

    def rule(r: Rule) -> Rule:
        ms = tuple(attrs.evolve(m, uid=fix(m.uid), gid=fix(m.gid)) if isinstance(m, OwnerMatch) else m
                   for m in r.matches)
        return Rule(ms, r.target)

    def ruleset(x: Ruleset) -> Ruleset:
        return Ruleset(x.family, tuple(
            Table(t.name, tuple(Chain(c.name, tuple(rule(r) for r in c.rules), c.policy) for c in t.chains))
            for t in x.tables))

    return Rulesets(ruleset(rs.ipv4), ruleset(rs.ipv6))
