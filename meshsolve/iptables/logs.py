"""``kubectl logs <pod> -c istio-init`` output → the rulesets the init container left behind.

When the input contains log lines (timestamps, Istio's log phrases, ``KEY=value`` dumps...) around
dump blocks, the blocks are cut out between the log lines and, per family, the *last iptables-save
dump* (a block set with ``:CHAIN`` lines) is taken: that is the state the kernel ended with. Without a
save dump, the last restore input is used. The family of a dump comes from the log line before it
(``ip6tables``/``IPv6`` → IPv6). Each dump is read by the document parser, shell commands excluded.
"""

from __future__ import annotations

import re

from meshsolve.errors import ParseError
from meshsolve.iptables.document import HARMLESS, SAVE_CMD, SHELL_IPT, DocumentParser
from meshsolve.iptables.tokens import Line
from meshsolve.model.net import Family
from meshsolve.model.rules import Ruleset, Rulesets

_TS = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?\s*")
_LOG_HINT = re.compile(
    r"^\d{4}-\d{2}-\d{2}[T ]\d|Final iptables state|Command output|Running command|Running iptables|"
    r"Writing following contents|^(?:Environment|Variables):\s*$|^-{4,}\s*$|^[A-Z][A-Z0-9_]*=|"
    r"^(?:info|warn|error|debug)\s", re.IGNORECASE)
_DUMP_LINE = re.compile(r"^(?:\*\s*\w+|:\S+\s+\S+(?:\s+\[\d+:\d+\])?|(?:\[\d+:\d+\]\s*)?-[ANIXFPD]\s.*|"
                        r"-[XF]|COMMIT|#.*)$")


def looks_like_log(lines: list[Line]) -> bool:
    """Log phrases around lines that are neither dump lines nor shell commands (a script is no log)."""
    has_hint = any(_LOG_HINT.search(ln.text.strip()) for ln in lines if ln.text.strip())
    if not has_hint:
        return False
    # a shell script (iptables command lines) is never a log, even with VAR=value lines
    if any(SHELL_IPT.match(ln.text.strip().split(None, 1)[0]) for ln in lines if ln.text.strip()):
        return False
    # only if some line is not valid in the strict grammar
    for ln in lines:
        s = ln.text.strip()
        if not s or _DUMP_LINE.match(s) or SAVE_CMD.match(s):
            continue
        first = s.split(None, 1)[0]
        if SHELL_IPT.match(first) or HARMLESS.match(s):
            continue
        return True
    return False


def parse_log(lines: list[Line], source: str) -> Rulesets:
    """Cut dump blocks out of ``kubectl logs`` output and keep the last save dump per family."""
    segments: list[tuple[Family | None, list[Line]]] = []
    hint: Family | None = None
    cur: list[Line] = []
    in_table = False
    for ln in lines:
        s = _TS.sub("", ln.text.strip(), count=1).strip()
        s = re.sub(r"^(?:info|warn|error|debug)\s+", "", s) if not in_table else s
        if _DUMP_LINE.match(s) and (in_table or s.startswith("*") or s.startswith("#")):
            if s.startswith("*"):
                in_table = True
            elif s == "COMMIT":
                in_table = False
            cur.append(Line(ln.lineno, s))
            continue
        if in_table and not s:
            continue
        if cur:
            segments.append((hint, cur))
            cur = []
        in_table = False
        low = s.lower()
        if "ip6tables" in low or "ipv6" in low:
            hint = "ipv6"
        elif "iptables" in low or "ipv4" in low:
            hint = "ipv4"
    if cur:
        segments.append((hint, cur))
    if not any(any(x.text.startswith("*") for x in seg) for _, seg in segments):
        raise ParseError("no iptables dump (*table ... COMMIT) found in this log", source=source,
                         lineno=lines[-1].lineno if lines else None)
    best: dict[Family, tuple[bool, Ruleset]] = {}
    for fam, seg in segments:
        if not any(x.text.startswith("*") for x in seg):
            continue
        p = DocumentParser(source)
        p.feed(seg, family_hint=fam, shell_ok=False)
        rs = p.result()
        is_save = any(x.text.startswith(":") for x in seg)
        both: tuple[Family, ...] = ("ipv4", "ipv6")
        for ff in both:
            r = rs.for_family(ff)
            if r.empty:
                continue
            prev = best.get(ff)
            if prev is None or is_save or not prev[0]:
                best[ff] = (is_save, r)
    v4 = best.get("ipv4")
    v6 = best.get("ipv6")
    return Rulesets(v4[1] if v4 else Ruleset("ipv4"), v6[1] if v6 else Ruleset("ipv6"))
