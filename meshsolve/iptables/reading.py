"""One reading of a pasted text: which form it is, the rules state it shows, and what else it says.

``read_text`` unwraps the text (``unwrap.py``), refuses the forms that cannot be read back exactly
(naming the command to run instead), and reads the rest:

- ``iptables-save`` output, restore input and ``iptables`` command lines (``document.py``);
- ``iptables -S`` / ``iptables -t nat -S`` listings, ``-S -v`` counters included: ``-P`` lines are
  chain policies, the table is the one the command line names (``-t nat``) or the one whose
  built-in chains the ``-P`` lines list;
- a dump whose ``*table`` line was cut off (``kubectl logs --tail``): the table is the one whose
  built-in chains its ``:CHAIN`` lines declare, said in a note;
- logs (``logs.py``): the state the kernel ended with (the last ``iptables-save`` dump; without one,
  the rules file a successful run loaded), the log's ``KEY=value`` header, the istio-iptables
  command line, and every **failure** the log shows (``iptables-restore: line N failed``, ``unable
  to initialize table``, ``Failed to execute ... exit status N``, ``panic: exit status N``, a
  ``bash -x`` traced command followed by iptables' error, ``nsenter failed``).

A failure is reported, never repaired: the reading keeps the state the log shows after it, if any,
and says what the failed run did not install. ``iptables-restore`` commits table by table (kernel
facts, fact 12): the tables of its input before the failing one were applied, the failing one and
those after it were not.

Nothing here knows which mesh wrote the rules; ``meshsolve.istio.fingerprint`` does.
"""

from __future__ import annotations

import re

import attrs

from meshsolve.errors import MeshsolveError, ParseError
from meshsolve.iptables.document import DocumentParser, NotPlain
from meshsolve.iptables.logs import Failure, LogReading, looks_like_log, parse_log
from meshsolve.iptables.tokens import Line, split_lines
from meshsolve.iptables.unwrap import Unwrapped, unwrap
from meshsolve.model.collector import gc_paused
from meshsolve.model.rules import Rulesets

__all__ = ["Failure", "Reading", "read_text", "read_unwrapped", "unwrap_text"]


@attrs.frozen
class Reading:
    """What one input shows. ``rulesets`` is the state (``None`` when the input shows none);
    ``incomplete`` is set when the input ends before its last block does."""

    source: str
    form: str
    rulesets: Rulesets | None
    state: str = "dump"  # "dump" (a listing of the state), "commands", "restore-input", "none"
    notes: tuple[str, ...] = ()
    failures: tuple[Failure, ...] = ()
    variables: tuple[tuple[str, str, int], ...] = ()  # KEY=value lines of a log (name, value, line)
    argv: tuple[int, str] | None = None  # an istio-iptables command line: (line, text)
    incomplete: ParseError | None = attrs.field(default=None, eq=False)
    text: str = attrs.field(default="", eq=False, repr=False)  # the unwrapped text
    lines: tuple[tuple[int, str], ...] = attrs.field(default=(), eq=False, repr=False)  # (input line, text)
    istio_log: bool = False  # the log has istio-init's header

    def require_rulesets(self) -> Rulesets:
        """The state, or the ``ParseError`` that says why there is none."""
        if self.rulesets is not None and self.incomplete is None:
            return self.rulesets
        if self.incomplete is not None:
            raise self.incomplete
        if self.failures:
            raise ParseError(f"this log shows a failed run ({self.failures[0]}) and no iptables-save dump "
                             "of the state after it", source=self.source, lineno=self.failures[0].lineno)
        raise ParseError("no rules in this input", source=self.source)


# -- forms that are refused ---------------------------------------------------------------------

_L_CHAIN = re.compile(r"^Chain \S+ \((?:policy \w+|\d+ references)")
_L_HEADER = re.compile(r"^\s*(?:num\s+)?(?:pkts\s+bytes\s+)?target\s+prot\s+opt\s")
_DESCRIBE_KEYS = re.compile(
    r"^\s*(?:Name|Namespace|Priority|Node|Start Time|Labels|Annotations|Status|IP|IPs|Controlled By|"
    r"Init Containers|Containers|Container ID|Image|Image ID|Port|Host Port|Command|Args|State|"
    r"Last State|Reason|Exit Code|Started|Finished|Ready|Restart Count|Limits|Requests|Environment|"
    r"Mounts|Conditions|Volumes|QoS Class|Node-Selectors|Tolerations|Events|Service Account):(?:\s|$)")
_NFT = re.compile(r"^(?:table\s+(?:inet|ip|ip6|arp|bridge|netdev)\s+\S+\s*\{|add\s+table\s+\S+)")
_SOCKETS = re.compile(r"^(?:Proto\s+Recv-Q\s+Send-Q\s+Local Address|State\s+Recv-Q\s+Send-Q\s+Local Address|"
                      r"Netid\s+State\s+Recv-Q|Active (?:Internet|UNIX) connections)")


def describe_pod_lines(lines: list[Line]) -> int:
    """How many lines look like ``kubectl describe`` key lines."""
    return sum(1 for ln in lines if _DESCRIBE_KEYS.match(ln.text))


def refusal(u: Unwrapped, source: str) -> ParseError | None:
    """A ``ParseError`` naming the form and the command to run, for forms meshsolve cannot read."""
    body = [ln for ln in u.lines if ln.text.strip()]
    for ln in body:
        if ln.text.startswith("Chain ") and _L_CHAIN.match(ln.text) and any(_L_HEADER.match(x.text) for x in body):
            return ParseError(
                "this is `iptables -L` output, which cannot be read back exactly (it prints names such "
                "as `anywhere` and `localhost` instead of addresses, hides interfaces without -v, and "
                "abbreviates matches): run `iptables-save` (or `iptables -t nat -S`) in the pod's "
                "network namespace and give that instead", source=source, lineno=ln.lineno, line=ln.text)
    if body and describe_pod_lines(body) >= max(3, len(body) // 4):
        code = next((ln for ln in body if re.match(r"^\s*Exit Code:\s*\d+", ln.text)), None)
        extra = "" if code is None else (f" (it shows a container that exited with code "
                                         f"{code.text.split(':', 1)[1].strip()}, line {code.lineno})")
        return ParseError(
            "this is `kubectl describe pod` output, which leaves out what capture depends on (the "
            "init container's full arguments, the containers' ports and ids): run `kubectl get pod NAME "
            f"-o yaml` and give that to --pod{extra}", source=source, lineno=body[0].lineno, line=body[0].text)
    for ln in body:
        if "table" in ln.text and _NFT.match(ln.text.strip()):
            return ParseError("this is an nftables ruleset (`nft list ruleset` or `nft -f` input); "
                              "meshsolve reads iptables rules only (Istio's --native-nftables mode is not "
                              "modelled yet)", source=source, lineno=ln.lineno, line=ln.text)
    if body and (re.match(r"^(?:apiVersion|kind|metadata|items):", body[0].text)
                 or (body[0].text.strip() == "{" and any('"apiVersion"' in x.text for x in body[:5]))):
        return ParseError("this is a Kubernetes manifest, not iptables rules: give it to --pod",
                          source=source, lineno=body[0].lineno, line=body[0].text)
    for ln in body[:3]:
        if _SOCKETS.match(ln.text.strip()):
            return ParseError("this is a socket listing (`ss` / `netstat`), not iptables rules: give it "
                              "to --binds (the apps' listeners)", source=source, lineno=ln.lineno,
                              line=ln.text)
    return None


def _is_content(ln: Line) -> bool:
    """Whether a line is neither blank nor a ``#`` comment."""
    s = ln.text.strip()
    return bool(s) and not s.startswith("#")


def _first_content(lines: list[Line]) -> Line | None:
    """The first line that is neither blank nor a ``#`` comment."""
    return next((ln for ln in lines if _is_content(ln)), None)


# -- iptables -S listings ------------------------------------------------------------------------

_S_LINE = re.compile(r"^-(?:P|N|A)\s+\S+")
_S_POLICY = re.compile(r"^-P\s+(\S+)\s+(\S+)(?:\s+-c\s+(\d+)\s+(\d+))?\s*$")
_TABLE_BY_BUILTINS: tuple[tuple[frozenset[str], str], ...] = (
    (frozenset({"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"}), "mangle"),
    (frozenset({"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"}), "nat"),
    (frozenset({"INPUT", "FORWARD", "OUTPUT"}), "filter"),
    (frozenset({"PREROUTING", "OUTPUT"}), "raw"),
)


def _table_of_builtins(names: set[str]) -> str | None:
    for builtins, table in _TABLE_BY_BUILTINS:
        if names == builtins:
            return table
    return None


def _command_table(command: str | None) -> str | None:
    if command is None:
        return None
    ipt = re.search(r"(?:^|\s|/)ip6?tables(?:-legacy|-nft)?\s", command)
    if ipt is None:
        return None
    m = re.search(r"(?:^|\s)(?:-t\s*|--table[= ])(\w+)", command[ipt.end() - 1:])
    return m.group(1) if m else None


def _listing(u: Unwrapped, source: str) -> tuple[list[Line], list[str]] | None:
    """An ``iptables -S`` listing as restore input (same line numbers), or None when not one."""
    head = _first_content(u.lines)
    if head is None or not _S_LINE.match(head.text.strip()):
        return None  # (the test below, on its first line)
    body = [ln for ln in u.lines if _is_content(ln)]
    if not body or not all(_S_LINE.match(ln.text.strip()) for ln in body):
        return None
    policies = [ln for ln in body if ln.text.strip().startswith("-P ")]
    news = [ln for ln in body if ln.text.strip().startswith("-N ")]
    if not policies and not news:
        return None
    notes: list[str] = []
    table = _command_table(u.command[1] if u.command else None)
    builtins = {_S_POLICY.match(p.text.strip()).group(1) for p in policies  # type: ignore[union-attr]
                if _S_POLICY.match(p.text.strip())}
    if table is None:
        table = _table_of_builtins(builtins) if builtins else None
        if table is None and not builtins and any("ISTIO_" in ln.text for ln in news):
            table = "nat"
            notes.append("an `iptables -S CHAIN` listing without the table: nat inferred from Istio's chain names")
        elif table is not None and table != "filter":
            notes.append(f"an `iptables -S` listing without `-t`: table {table} inferred from its built-in "
                         f"chains ({', '.join(sorted(builtins))})")
        elif table == "filter":
            notes.append("an `iptables -S` listing without `-t`: the filter table")
    if table is None:
        raise ParseError("an `iptables -S` listing whose table cannot be told (run `iptables -t TABLE -S`)",
                         source=source, lineno=body[0].lineno, line=body[0].text)
    first = body[0].lineno
    out: list[Line] = [Line(first, f"*{table}")]
    for ln in u.lines:
        s = ln.text.strip()
        if not s or s.startswith("#"):
            out.append(ln)
            continue
        m = _S_POLICY.match(s)
        if m:
            counters = f" [{m.group(3)}:{m.group(4)}]" if m.group(3) else ""
            out.append(Line(ln.lineno, f":{m.group(1)} {m.group(2)}{counters}"))
        elif s.startswith("-N "):
            out.append(Line(ln.lineno, f":{s.split()[1]} -"))
        else:
            out.append(ln)
    out.append(Line(body[-1].lineno, "COMMIT"))
    form_note = f"read as an `iptables -S` listing of the {table} table (-P lines are chain policies)"
    return out, [form_note, *notes]


def _tail_of_dump(u: Unwrapped) -> tuple[list[Line], str] | None:
    """A dump whose ``*table`` line is missing: its first content line is ``:CHAIN``."""
    first = _first_content(u.lines)
    if first is None or not first.text.strip().startswith(":"):
        return None
    body = [ln for ln in u.lines if _is_content(ln)]
    decl = []
    for ln in body:
        s = ln.text.strip()
        if not s.startswith(":"):
            break
        decl.append(s[1:].split()[0])
    builtins = {n for n in decl if n in {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"}}
    table = _table_of_builtins(builtins)
    if table is None:
        return None
    lines = [Line(body[0].lineno, f"*{table}"), *u.lines]
    return lines, (f"the input starts inside a table (its `*{table}` line is missing, as with `kubectl logs "
                   f"--tail`): table {table} inferred from its built-in chains")


# -- warnings printed by the back-ends ------------------------------------------------------------

_BACKEND_WARNING = re.compile(r"^#\s*Warning:\s*(\S+) tables present, use (\S+) to see them")


def _warnings(lines: list[Line]) -> list[str]:
    out = []
    for ln in lines:
        m = _BACKEND_WARNING.match(ln.text.strip())
        if m:
            out.append(f"line {ln.lineno}: the tool warned that {m.group(1)} tables also exist; they are not "
                       f"in this text (`{m.group(2)}` shows them) and are not modelled")
    return out


def _orphan_rules(lines: list[Line], source: str) -> None:
    """Rule lines with no table and no listing around them: say what is missing."""
    first = _first_content(lines)
    if first is None or not first.text.strip().startswith(("-A ", "-I ")):
        return
    body = [ln for ln in lines if _is_content(ln)]
    if any(ln.text.strip().startswith(("*", ":", "-P ", "-N ")) for ln in body):
        return
    texts = [ln.text.strip() for ln in body]
    extra = " and the same rules repeat" if len(texts) != len(set(texts)) else ""
    warned = _warnings(lines)
    if warned:
        extra += "; " + "; ".join(warned)
    raise ParseError("rule lines outside a *table ... COMMIT block: neither iptables-save output (each table "
                     "opens with `*table` and `:CHAIN` lines) nor an `iptables -S` listing (it starts with "
                     f"-P/-N lines){extra}; give the whole `iptables-save` output", source=source,
                     lineno=body[0].lineno, line=body[0].text)


# -- the entry point ------------------------------------------------------------------------------

def read_unwrapped(u: Unwrapped, source: str) -> Reading:
    """Read text whose wrappers are already off (see :func:`read_text`)."""
    plain = _plain_dump(u, source)
    if plain is not None:
        return plain
    refused = refusal(u, source)
    if refused is not None:
        raise refused
    notes = [*u.notes, *_warnings(u.lines)]
    if u.wrappers:
        notes.insert(0, "took off " + "; ".join(u.wrappers))
    text = u.text
    commands = [ln for ln in u.lines if ln.mark == ":;"]
    if commands and not any(ln.text.strip().startswith("*") for ln in u.lines):
        # a command log (Linkerd's `DATE TIME :; iptables ...`): the commands it ran, in order
        p = DocumentParser(source)
        p.feed(commands)
        notes.append(f"read the {len(commands)} iptables commands the log shows it ran")
        return Reading(source, "iptables commands (from a log)", p.result(), "commands", tuple(notes), (), (),
                       _argv_of(u), None, text, _numbered(u))
    if u.log_transport or looks_like_log(u.lines):
        log: LogReading = parse_log(u.lines, source)
        notes.extend(log.notes)
        notes.extend(f"the log shows a failure: {f}" for f in log.failures)
        return Reading(source, log.form, log.rulesets, log.state, tuple(notes), log.failures, log.variables,
                       log.argv or _argv_of(u), log.incomplete, text, _numbered(u), log.istio_header)
    listing = _listing(u, source)
    lines = u.lines
    form = "iptables-save / restore input"
    if listing is not None:
        lines, extra = listing
        notes.extend(extra)
        form = "iptables -S listing"
    else:
        tail = _tail_of_dump(u)
        if tail is not None:
            lines, note = tail
            notes.append(note)
        else:
            _orphan_rules(lines, source)
    p = DocumentParser(source)
    rulesets, incomplete = _parsed(p, lines, source)
    if any(ln.text.strip() and not ln.text.strip().startswith(("*", ":", "-", "#", "COMMIT", "["))
           for ln in lines):
        form = "iptables commands"
    state = "commands" if form == "iptables commands" else "dump"
    return Reading(source, form, rulesets, state, tuple(notes), (), (), _argv_of(u), incomplete, text, _numbered(u))


def _parsed(p: DocumentParser, lines: list[Line], source: str) -> tuple[Rulesets | None, ParseError | None]:
    """What ``p`` makes of ``lines``: (rulesets, None), or (None, the error) for an input that ends
    inside a block; any other error is raised."""
    try:
        p.feed(lines)
    except ParseError as exc:
        if "ends early" not in exc.message:
            raise
        return None, exc
    try:
        return p.result(), None
    except MeshsolveError as exc:
        if isinstance(exc, ParseError):
            raise
        raise ParseError(str(exc), source=source) from None


def _plain_dump(u: Unwrapped, source: str) -> Reading | None:
    """The reading of the commonest input, iptables-save output or restore input with nothing
    around it, in one pass; None for any other input (and for one with an error), which
    :func:`read_unwrapped` then reads step by step.

    Every line of such an input is blank or in the strict grammar (``DUMP_LINE``; the parser in
    plain mode raises ``NotPlain`` at the first that is not), and its first content line opens a
    table. No step of the general way changes anything for it: no refusal matches one of its lines,
    no line is off the grammar (so it is no log), no line is a command, it is no listing, no tail of a
    dump and no rules without a table; its notes are the tools' warnings, which are ``#`` lines.
    (The price: an input that leaves the grammar only near its end is read twice.)"""
    if u.wrappers or u.log_transport:
        return None  # (lines may be marked: Linkerd's commands, bash -x traces)
    first = _first_content(u.lines)
    if first is None or not first.text.strip().startswith("*"):
        return None
    p = DocumentParser(source)
    comments: list[Line] = []
    p.plain = comments
    try:
        rulesets, incomplete = _parsed(p, u.lines, source)
    except (NotPlain, MeshsolveError):
        return None  # (the general way finds the same error, or the refusal that comes first)
    return Reading(source, "iptables-save / restore input", rulesets, "dump", (*u.notes, *_warnings(comments)),
                   (), (), _argv_of(u), incomplete, u.text, _numbered(u))


def _numbered(u: Unwrapped) -> tuple[tuple[int, str], ...]:
    return tuple((ln.lineno, ln.text) for ln in u.lines)


_ARGV = re.compile(r"(?:^|\s|/)(?:pilot-agent\s+istio-iptables|istio-iptables(?:\.sh)?)(?:\s|$)")


def _argv_of(u: Unwrapped) -> tuple[int, str] | None:
    for n, cmd in u.prompts:
        if _ARGV.search(cmd):
            return n, cmd
    return None


def unwrap_text(text: str, source: str = "<string>") -> Unwrapped:
    """The text's lines with their wrappers taken off (``unwrap.py``), numbered as in the input."""
    return unwrap(split_lines(text.removeprefix("\ufeff"), source))


def read_text(text: str, source: str = "<string>") -> Reading:
    """Read any supported text (see the module notes). Raises ``ParseError`` for text that is not
    rules (naming the form and the command to run instead) and for lines it cannot read; an input
    that ends inside a block is *not* raised but kept in ``Reading.incomplete``."""
    with gc_paused():
        lines = split_lines(text.removeprefix("\ufeff"), source)  # a UTF-8 byte order mark is harmless
        return read_unwrapped(unwrap(lines), source)
