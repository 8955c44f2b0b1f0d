"""Logs (``kubectl logs <pod> -c istio-init``, a CNI plugin's output, ...) → the state they show.

When the input contains log lines (timestamps, Istio's log phrases, ``KEY=value`` dumps...) around
dump blocks, the blocks are cut out between the log lines and, per family, the *last iptables-save
dump* (a block set with ``:CHAIN`` lines) is taken: that is the state the kernel ended with. Without a
save dump, the last restore input of a run that did not fail is used (said in a note: rules present
before the run are not shown). The family of a dump comes from the log line before it
(``ip6tables``/``IPv6`` → IPv6). Each dump is read by the document parser, shell commands excluded.

Besides the state, a log says how the run went. :func:`parse_log` collects the ``KEY=value``
header lines and every failure it shows (see ``reading.py`` for the list), and decides whether the
log is whole: an istio-init log that stops inside a block, after its header, after writing its
rules file but before loading it, or (``bash -x`` trace of ``istio-iptables.sh``, which dumps the
tables when it exits) before that final dump, *ends early*; nothing may be concluded from it.
"""

from __future__ import annotations

import re

import attrs

from meshsolve.errors import ParseError
from meshsolve.iptables.document import DUMP_LINE, HARMLESS, SAVE_CMD, SHELL_IPT, DocumentParser
from meshsolve.iptables.tokens import Line
from meshsolve.model.net import Family
from meshsolve.model.rules import Ruleset, Rulesets

_TS = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?\s*")
_STRONG_HINT = re.compile(r"^Tracing this script|Writing following contents|Running command|Istio iptables|"
                          r"iptables-restore: line \d+ failed|unable to initialize table|Failed to execute|^panic:|"
                          r"nsenter failed|^(?:Environment|Variables):\s*$")
_LOG_HINT = re.compile(
    r"^\d{4}-\d{2}-\d{2}[T ]\d|Final iptables state|Command output|Running command|Running iptables|"
    r"Writing following contents|Istio iptables|^(?:Environment|Variables):\s*$|^-{4,}\s*$|^[A-Z][A-Z0-9_]*=|"
    r"^(?:info|warn|error|debug)\s|iptables-restore: line \d+ failed|unable to initialize table|"
    r"Failed to execute|^panic:|nsenter failed|^Tracing this script", re.IGNORECASE)
_VAR = re.compile(r"^([A-Z][A-Z0-9_]*)=(.*)$")
_ISTIO_HEADER = re.compile(r"^(?:Environment:|Variables:|Istio iptables (?:environment|variables):)\s*$")
_RULES_FILE = re.compile(r"Writing following contents to rules file:\s*(\S*)|Running (ip6?tables\S*) with the "
                         r"following input:")
_RESTORE_RUN = re.compile(r"^(?:Running command(?: \([^)]*\))?:\s*)?(?:\S*/)?(ip6?tables(?:-legacy|-nft)?-restore)"
                          r"((?:\s+-.*)?)$")
_SAVE_RUN = re.compile(r"^(?:Running command(?: \([^)]*\))?:\s*)?(?:\S*/)?ip6?tables(?:-legacy|-nft)?-save\b")
_IPT_ERROR = re.compile(r"^(ip6?tables(?:-legacy|-nft)?(?:-restore)?)(?: v[\d.]+(?: \([\w_]+\))?)?: (.+)$")
_LINE_FAILED = re.compile(r"(ip6?tables(?:-legacy|-nft)?-restore)(?: v[\d.]+(?: \([\w_]+\))?)?: line (\d+) failed")
_NO_TABLE = re.compile(r"(ip6?tables(?:-legacy|-nft)?-restore)(?: v[\d.]+(?: \([\w_]+\))?)?: unable to initialize "
                       r"table '(\w+)'")
_ERROR_AT = re.compile(r"^Error occurred at line: (\d+)")
_FAILED_EXEC = re.compile(r"Failed to execute: (.*?)(?:, exit status (\d+))?\s*$")
_PANIC = re.compile(r"^panic: (?:exit status (\d+))?")
_NSENTER = re.compile(r"nsenter failed: exit status (\d+)")
_TRACED_IPT = re.compile(r"^(?:\S*/)?ip6?tables(?:-legacy|-nft)?\s")


def looks_like_log(lines: list[Line]) -> bool:
    """Log phrases around lines that are neither dump lines nor shell commands (a script is no log)."""
    if not _off_grammar(lines):
        return False  # the cheap test first: a plain dump or script has no line off the grammar
    has_hint = any(_LOG_HINT.search(ln.text.strip()) for ln in lines if ln.text.strip())
    traced = any(ln.mark for ln in lines)
    if not has_hint and not traced:
        return False
    strong = any(_STRONG_HINT.search(ln.text.strip()) for ln in lines if ln.text.strip())
    # a shell script (iptables command lines) is never a log, even with VAR=value lines
    return traced or strong or not any(SHELL_IPT.match(ln.text.strip().split(None, 1)[0])
                                       for ln in lines if ln.text.strip())


def _off_grammar(lines: list[Line]) -> bool:
    """Whether some line is not valid in the strict grammar (a log needs one)."""
    for ln in lines:
        s = ln.text.strip()
        if not s or DUMP_LINE.match(s) or SAVE_CMD.match(s):
            continue
        first = s.split(None, 1)[0]
        if (SHELL_IPT.match(first) and not ln.mark) or HARMLESS.match(s):
            continue
        return True
    return False


@attrs.frozen
class Failure:
    """One failed step the log shows: what ran, what it said, what it left out."""

    lineno: int
    command: str  # "iptables-restore --noflush FILE", "iptables -t nat -N ISTIO_REDIRECT", ...
    error: str  # the error text, as printed
    status: int | None = None  # the exit status, when printed
    not_installed: str = ""  # in words: what this run did not install
    installed: str = ""  # in words: what it did install before failing

    def __str__(self) -> str:
        status = "" if self.status is None else f", exit status {self.status}"
        return f"`{self.command}` failed (line {self.lineno}: {self.error}{status})"


@attrs.frozen
class LogReading:
    """What a log shows (see the module notes)."""

    form: str
    rulesets: Rulesets | None
    state: str
    notes: tuple[str, ...]
    failures: tuple[Failure, ...]
    variables: tuple[tuple[str, str, int], ...]
    argv: tuple[int, str] | None
    incomplete: ParseError | None = attrs.field(eq=False)
    istio_header: bool


@attrs.frozen
class _Block:
    kind: str  # "save" | "restore"
    family: Family | None
    lines: tuple[Line, ...]
    closed: bool
    file: str | None = None  # the rules file a restore block was written to


def _blocks(lines: list[Line]) -> tuple[list[_Block], list[tuple[int, Line]]]:
    """Dump blocks cut out between log lines, and the other lines (with their index in ``lines``)."""
    blocks: list[_Block] = []
    others: list[tuple[int, Line]] = []
    hint: Family | None = None
    cur: list[Line] = []
    in_table = False
    pending_file: str | None = None
    pending_kind = "save"

    def close() -> None:
        nonlocal cur, pending_file
        if cur:
            kind = "save" if any(x.text.startswith(":") for x in cur) else "restore"
            if pending_kind == "restore":
                kind = "restore"
            blocks.append(_Block(kind, hint, tuple(cur), not in_table, pending_file))
            cur = []
            pending_file = None

    for i, ln in enumerate(lines):
        s = _TS.sub("", ln.text.strip(), count=1).strip()
        s = re.sub(r"^(?:info|warn|error|debug)\s+", "", s) if not in_table else s
        if not ln.mark and DUMP_LINE.match(s) and (in_table or s.startswith("*") or s.startswith("#")):
            if s.startswith("#") and not in_table and not cur:
                others.append((i, ln))
                continue
            if s.startswith("*"):
                in_table = True
            elif s == "COMMIT":
                in_table = False
            cur.append(Line(ln.lineno, s))
            continue
        if in_table and not s:
            continue
        close()
        in_table = False
        others.append((i, ln))
        low = s.lower()
        m = _RULES_FILE.search(s)
        if m:
            pending_kind = "restore"
            pending_file = m.group(1) or None
            tool = (m.group(1) or m.group(2) or "").lower()
            hint = "ipv6" if "ip6tables" in tool else "ipv4"
            continue
        if _SAVE_RUN.match(s) or ("iptables-save" in low and "generated" not in low):
            pending_kind = "save"
        if "ip6tables" in low or "ipv6" in low:
            hint = "ipv6"
        elif "iptables" in low or "ipv4" in low:
            hint = "ipv4"
    in_table_at_end = in_table
    if cur:
        in_table = in_table_at_end
        close()
    return blocks, others


def _failures(lines: list[Line], blocks: list[_Block]) -> list[Failure]:
    out: list[Failure] = []
    restore_blocks = [b for b in blocks if b.kind == "restore"]
    last_restore_cmd: tuple[str, Family] | None = None
    i = 0
    while i < len(lines):
        ln = lines[i]
        s = ln.text.strip()
        i += 1
        if not s:
            continue
        m = _RESTORE_RUN.match(s)
        if m and not ln.mark:
            last_restore_cmd = (f"{m.group(1)}{m.group(2)}".strip(), "ipv6" if "ip6" in m.group(1) else "ipv4")
            continue
        if ln.mark == "trace" and _TRACED_IPT.match(s):
            nxt = next((x for x in lines[i:] if x.text.strip()), None)
            if nxt is not None and not nxt.mark and _IPT_ERROR.match(nxt.text.strip()) \
                    and not _LINE_FAILED.search(nxt.text):
                done = [x.text.strip() for x in lines[:i - 1] if x.mark == "trace" and _TRACED_IPT.match(x.text.strip())
                        and not _followed_by_error(lines, x)]
                installed = ("nothing" if not done else
                             f"{len(done)} earlier command{'s' if len(done) != 1 else ''} of this run took effect ("
                             + "; ".join(f"`{d}`" for d in done[:3]) + ("; ..." if len(done) > 3 else "") + ")")
                out.append(Failure(ln.lineno, s, nxt.text.strip(), None,
                                   "every command after it (istio-iptables.sh stops at the first failing command)",
                                   installed))
                i = lines.index(nxt) + 1
            continue
        lf = _LINE_FAILED.search(s)
        nt = _NO_TABLE.search(s)
        if lf or nt:
            tool = (lf or nt).group(1)  # type: ignore[union-attr]
            fam: Family = "ipv6" if "ip6" in tool else "ipv4"
            at = int(lf.group(2)) if lf else None
            table = nt.group(2) if nt else None
            j = i
            status: int | None = None
            command = last_restore_cmd[0] if last_restore_cmd and last_restore_cmd[1] == fam else f"{tool} ..."
            while j < len(lines):
                t = lines[j].text.strip()
                if _RESTORE_RUN.match(t) or (lines[j].mark == "trace") or _LINE_FAILED.search(t) \
                        or _NO_TABLE.search(t):
                    break
                e = _ERROR_AT.match(t)
                if e and at is None:
                    at = int(e.group(1))
                f = _FAILED_EXEC.search(t)
                if f and f.group(2):
                    status = int(f.group(2))
                    command = f.group(1).strip() or command
                    j += 1
                    break
                p = _PANIC.match(t)
                if p and p.group(1):
                    status = int(p.group(1))
                    j += 1
                    break
                j += 1
            block = next((b for b in reversed(restore_blocks) if b.family in (fam, None)
                          and b.lines and b.lines[0].lineno < ln.lineno), None)
            installed, missing = _restore_outcome(block, at, table)
            error = (lf or nt).group(0)  # type: ignore[union-attr]
            out.append(Failure(ln.lineno, command, error, status, missing, installed))
            i = j
            continue
        f = _FAILED_EXEC.search(s)
        if f:
            out.append(Failure(ln.lineno, f.group(1).strip(), s, int(f.group(2)) if f.group(2) else None,
                               "what that command would have installed", "not shown"))
            continue
        n = _NSENTER.search(s)
        if n:
            out.append(Failure(ln.lineno, "the CNI plugin's istio-iptables run (nsenter)", s[n.start():],
                               int(n.group(1)), "the pod's capture rules: the plugin reported the run failed",
                               "not known (its output is below, cut or not)"))
            continue
        p = _PANIC.match(s)
        if p and p.group(1) and not any(f.lineno < ln.lineno for f in out):
            out.append(Failure(ln.lineno, last_restore_cmd[0] if last_restore_cmd else "istio-iptables",
                               s, int(p.group(1)), "not known (the log does not say which step failed)",
                               "not known"))
    return out


def _followed_by_error(lines: list[Line], x: Line) -> bool:
    k = lines.index(x) + 1
    nxt = next((y for y in lines[k:] if y.text.strip()), None)
    return nxt is not None and not nxt.mark and bool(_IPT_ERROR.match(nxt.text.strip()))


def _restore_outcome(block: _Block | None, at: int | None, table: str | None) -> tuple[str, str]:
    """(installed, not installed) of a failed iptables-restore: tables are committed one by one."""
    if block is None and at is not None and at <= 2:
        return ("nothing (a rules file opens with its first table, so line "
                f"{at} is in it)", "every table of its rules file (iptables-restore commits table by table)")
    if block is None:
        what = f"table {table}" if table else (f"the table holding line {at} of its input" if at else "its input")
        return ("not shown (the log does not show the rules file); tables before the failing one were "
                "applied", f"{what} and every table after it (iptables-restore commits table by table)")
    first = block.lines[0].lineno
    tables: list[tuple[str, int | None]] = []  # (name, commit offset)
    for ln in block.lines:
        s = ln.text.strip()
        if s.startswith("*"):
            tables.append((s[1:].strip(), None))
        elif s == "COMMIT" and tables:
            tables[-1] = (tables[-1][0], ln.lineno - first + 1)
    done: list[str] = []
    failed: list[str] = []
    for name, commit in tables:
        if table is not None:
            (failed if failed or name == table else done).append(name)
        elif at is not None and commit is not None and commit < at:
            done.append(name)
        else:
            failed.append(name)
    installed = ("the " + ", ".join(done) + " table" + ("s" if len(done) > 1 else "") + " of its rules file"
                 if done else "nothing")
    missing = ("the " + ", ".join(failed) + " table" + ("s" if len(failed) > 1 else "") + " of its rules file"
               if failed else "nothing")
    return installed, missing + " (iptables-restore commits table by table)"


def parse_log(lines: list[Line], source: str) -> LogReading:
    """Cut dump blocks out of a log; keep the last save dump per family; collect failures."""
    blocks, others = _blocks(lines)
    notes: list[str] = []
    variables = tuple((m.group(1), m.group(2).strip(), ln.lineno) for _, ln in others
                      if (m := _VAR.match(ln.text.strip())) and not ln.mark)
    istio_header = any(_ISTIO_HEADER.match(ln.text.strip()) for _, ln in others)
    failures = _failures(lines, blocks)
    incomplete: ParseError | None = None
    last_content = next((ln for ln in reversed(lines) if ln.text.strip()), None)
    open_block = next((b for b in blocks if not b.closed), None)
    if open_block is not None:
        t = [x for x in open_block.lines if x.text.startswith("*")][-1]
        incomplete = ParseError(f"missing COMMIT for table {t.text.lstrip('*').strip()} (opened at line "
                                f"{t.lineno}): the input ends early", source=source,
                                lineno=last_content.lineno if last_content else None,
                                line=last_content.text if last_content else None)
    best: dict[Family, tuple[bool, Ruleset]] = {}
    for b in blocks:
        if not b.closed:
            continue
        if not any(x.text.startswith("*") for x in b.lines):
            continue
        p = DocumentParser(source)
        p.feed(list(b.lines), family_hint=b.family, shell_ok=False)
        rs = p.result()
        is_save = b.kind == "save"
        both: tuple[Family, ...] = ("ipv4", "ipv6")
        for ff in both:
            r = rs.for_family(ff)
            if r.empty and not (is_save and b.family == ff):
                continue
            prev = best.get(ff)
            if prev is None or is_save or not prev[0]:
                best[ff] = (is_save, r)
    saves = any(s for s, _ in best.values())
    restores_only = bool(best) and not saves
    traced_istio = istio_header and any(ln.mark == "trace" for ln in lines)
    if incomplete is None and istio_header and not failures:
        if not blocks and not traced_istio:
            incomplete = ParseError("this istio-init log ends after its header: it shows no rules and no "
                                    "outcome (the input ends early)", source=source,
                                    lineno=last_content.lineno if last_content else None)
        elif traced_istio and not saves:
            incomplete = ParseError("this `bash -x` trace of istio-iptables.sh stops before the script's final "
                                    "iptables-save dump (it prints one when it exits, also on failure): the "
                                    "input ends early", source=source,
                                    lineno=last_content.lineno if last_content else None)
        elif restores_only and not _restore_ran(lines, blocks):
            incomplete = ParseError("this istio-init log ends after writing its rules file, before "
                                    "iptables-restore's outcome (the input ends early)", source=source,
                                    lineno=last_content.lineno if last_content else None)
    if incomplete is None and saves:
        last_save = max(b.lines[-1].lineno for b in blocks if b.kind == "save" and b.closed)
        later = next((ln for ln in lines if ln.lineno > last_save and ln.mark not in ("<",)
                      and _changes_rules(ln.text.strip())), None)
        if later is not None:
            incomplete = ParseError("the log runs iptables commands after its last iptables-save dump: the state "
                                    "they left is not shown (the input ends early)", source=source,
                                    lineno=later.lineno, line=later.text)
    if failures and not saves:
        best = {}
    if restores_only and best:
        notes.append("no iptables-save dump in the log: the state is the rules file istio-init loaded "
                     "(rules present before the run are not shown)")
    rulesets: Rulesets | None = None
    if best:
        v4 = best.get("ipv4")
        v6 = best.get("ipv6")
        rulesets = Rulesets(v4[1] if v4 else Ruleset("ipv4"), v6[1] if v6 else Ruleset("ipv6"))
    elif not failures and incomplete is None:
        raise ParseError("no iptables dump (*table ... COMMIT) found in this log", source=source,
                         lineno=lines[-1].lineno if lines else None)
    if failures and rulesets is not None:
        notes.append("the iptables-save dump after the failure is the state the netns was left in")
    form = "istio-init log" if istio_header else "log"
    state = "dump" if saves else ("restore-input" if rulesets is not None else "none")
    argv = next(((ln.lineno, ln.text.strip()) for _, ln in others
                 if re.search(r"(?:^|\s|/)(?:pilot-agent\s+istio-iptables|istio-iptables(?:\.sh)?)\s+-", ln.text)),
                None)
    return LogReading(form, rulesets, state, tuple(notes), tuple(failures), variables, argv, incomplete,
                      istio_header)


def _changes_rules(text: str) -> bool:
    """An ``iptables`` command line that changes the rules (not a listing or a check)."""
    words = text.split()
    if not words or not SHELL_IPT.match(words[0]):
        return False
    return any(w in ("-A", "-I", "-D", "-N", "-X", "-F", "-P", "-R", "--append", "--insert", "--delete",
                     "--new-chain", "--delete-chain", "--flush", "--policy", "--replace") for w in words[1:])


def _restore_ran(lines: list[Line], blocks: list[_Block]) -> bool:
    """A restore command (or a later log line) follows the last rules file written."""
    last = max((b.lines[-1].lineno for b in blocks if b.kind == "restore"), default=0)
    if any(re.search(r"Running ip6?tables\S*-restore with the following input", ln.text) for ln in lines):
        return True  # the 1.2x phrase runs the restore it prints
    return any(_RESTORE_RUN.match(ln.text.strip()) and ln.lineno >= last for ln in lines) or any(
        _SAVE_RUN.match(ln.text.strip()) and ln.lineno >= last for ln in lines)
