"""Taking off what wraps pasted text: log transports, per-line prefixes, prompts, paste decoration.

What users paste is rarely the bare output of one command. Each wrapper below was seen in real
pastes (``tests/data/corpus/``) and is removed only when it is unmistakable:

- **whole-input wrappers** (every non-empty line has them): Docker's ``json-file`` lines
  (``{"log":"...\\n","stream":...}``), CRI log lines (``TIMESTAMP stdout F text``; ``P`` marks a
  partial line continued by the next), ``kubectl logs --prefix`` (``[pod/NAME/CONTAINER] text``),
  a pod name repeated on every line (``kubectl logs -l`` / stern: ``POD [CONTAINER] text``),
  journald lines (``Mon DD HH:MM:SS host unit[pid]: text``), and a common indentation;
- **per-line wrappers**: logfmt records (``time=... level=... msg="..."``: the message, unescaped,
  its ``\\n`` making lines), an escaped ``out="..."``/``msg="..."`` value inside another line,
  Linkerd's ``YYYY/MM/DD HH:MM:SS`` prefix with its ``:; command`` / ``> command`` / ``< output``
  marks, Istio's ``TIMESTAMP<TAB>level<TAB>`` prefix, and markdown bold ``**`` at either end;
- **lines that are not content**: a shell prompt or the command that printed the text (``$ cmd``,
  ``root@host:~# cmd``, ``[root@host ~]# cmd``, ``> cmd``, ``* cmd``, or a bare first line such as
  ``nsenter -t PID -n iptables -t nat -S``) is taken out and kept as :attr:`Unwrapped.command`;
  ``bash -x`` trace lines (``+ iptables ...``) keep their text, marked ``trace`` (``Line.mark``).

Line numbers stay those of the input, so every later error still names the line the user has.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace

from meshsolve.iptables.tokens import Line

__all__ = ["Unwrapped", "unwrap"]

# Programs whose command line, first in a paste, is the command that printed the rest.
_PRINTERS = re.compile(
    r"^(?:sudo\s+)?(?:kubectl|k|oc|stern|nsenter|netstat|ss|docker|crictl|cat|journalctl|"
    r"ip\s+netns\s+exec|(?:\S*/)?ip6?tables(?:-legacy|-nft)?-save|"
    r"(?:\S*/)?ip6?tables(?:-legacy|-nft)?(?:\s+\S+)*?\s+(?:-S|-L|--list(?:-rules)?|-[a-zA-Z]*[SL][a-zA-Z]*)(?=\s|$)|"
    r"(?:\S*/)?(?:pilot-agent|istio-iptables(?:\.sh)?|kumactl|linkerd2-proxy-identity|proxy-init))(?:\s|$)")
_PROMPT = re.compile(r"^(?:\$|#|>|\*|[\w.\-]+@[\w.\-]+(?::\S*)?\s*[#$]|\[[\w.\-]+@[\w.\-]+[^\]]*\][#$])\s+(\S.*)$")
_TABLE_NAMES = frozenset({"nat", "filter", "mangle", "raw", "security"})
# What a ``_PROMPT`` match starts with, unless the line holds an '@' (``user@host``): "" for a blank line.
_PROMPT_STARTS = frozenset({"", "$", "#", ">", "*", "["})

_DOCKER = re.compile(r'^\{"log":')
_CRI = re.compile(r"^\d{4}-\d\d-\d\dT[\d:.]+(?:Z|[+-]\d\d:?\d\d) (?:stdout|stderr) ([FP]) ?")
_KPREFIX = re.compile(r"^\[pod/[^\]\s]+\] ")
_POD_TOKEN = re.compile(r"^[a-z0-9](?:[-a-z0-9.]*[a-z0-9])?$")
_JOURNAL = re.compile(r"^[A-Z][a-z]{2} +\d{1,2} \d\d:\d\d:\d\d \S+ [^\s:\[]+(?:\[\d+\])?: ")
_LOGFMT = re.compile(r'^(?:[\w.]+=(?:"(?:[^"\\]|\\.)*"|\S*)\s*)+$')
_LOGFMT_PAIR = re.compile(r'([\w.]+)=("(?:[^"\\]|\\.)*"|\S*)')
_ESCAPED_VALUE = re.compile(r'\b(out|msg|output)="((?:[^"\\]|\\.)*)"?')
_LINKERD = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d (?:(:;|>|<) ?)?")
_GO_LOG = re.compile(r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?\s+"
                     r"(?:(?:info|warn|warning|error|debug|fatal)\s+)?", re.IGNORECASE)
_TRACE = re.compile(r"^\++ (.*)$")


@dataclass
class Unwrapped:
    """Text with its wrappers taken off: ``lines`` keep the input's line numbers."""

    lines: list[Line]
    wrappers: list[str] = field(default_factory=list)  # what was taken off, in words
    notes: list[str] = field(default_factory=list)
    command: tuple[int, str] | None = None  # (line, command) that printed the text, if shown
    prompts: list[tuple[int, str]] = field(default_factory=list)  # every prompt/command line taken out
    log_transport: bool = False  # a log transport was taken off (the text is a log)
    nonempty: tuple[list[Line], list[Line]] | None = field(default=None, repr=False, compare=False)  # (see _nonempty)

    @property
    def text(self) -> str:
        return "\n".join(ln.text for ln in self.lines)


def _nonempty(lines: list[Line], u: Unwrapped) -> list[Line]:
    """The non-blank lines of ``lines``; the steps that leave the lines as they are pass the same
    list on, so it is computed once for them (``u.nonempty``, the list it was computed for kept)."""
    last = u.nonempty
    if last is not None and last[0] is lines:
        return last[1]
    body = [ln for ln in lines if ln.text.strip()]
    u.nonempty = (lines, body)
    return body


def _unescape(value: str) -> str:
    """Go/logfmt string escapes: ``\\n``, ``\\t``, ``\\"``, ``\\\\``."""
    out: list[str] = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value):
            nxt = value[i + 1]
            out.append({"n": "\n", "t": "\t", '"': '"', "\\": "\\", "r": ""}.get(nxt, "\\" + nxt))
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _docker(lines: list[Line], u: Unwrapped) -> list[Line]:
    body = _nonempty(lines, u)
    if not body or not all(_DOCKER.match(ln.text.strip()) for ln in body):
        return lines
    out: list[Line] = []
    for ln in body:
        try:
            rec = json.loads(ln.text)
        except ValueError:
            return lines
        if not isinstance(rec, dict) or not isinstance(rec.get("log"), str):
            return lines
        text = rec["log"][:-1] if rec["log"].endswith("\n") else rec["log"]
        out.extend(Line(ln.lineno, part) for part in text.split("\n"))
    u.wrappers.append("Docker json-file log lines (the 'log' fields)")
    u.log_transport = True
    return out


def _cri(lines: list[Line], u: Unwrapped) -> list[Line]:
    body = _nonempty(lines, u)
    if not body or not all(_CRI.match(ln.text) for ln in body):
        return lines
    out: list[Line] = []
    partial: Line | None = None
    for ln in body:
        m = _CRI.match(ln.text)
        assert m is not None
        text = ln.text[m.end():]
        if partial is not None:
            partial.text += text
        else:
            partial = Line(ln.lineno, text)
        if m.group(1) == "F":
            out.append(partial)
            partial = None
    if partial is not None:
        out.append(partial)
    u.wrappers.append("CRI log prefixes (TIMESTAMP stdout F)")
    u.log_transport = True
    return out


def _prefixes(lines: list[Line], u: Unwrapped) -> list[Line]:
    body = _nonempty(lines, u)
    if len(body) >= 2 and all(_KPREFIX.match(ln.text) for ln in body):
        u.wrappers.append("kubectl logs --prefix ([pod/NAME/CONTAINER])")
        u.log_transport = True
        return [Line(ln.lineno, _KPREFIX.sub("", ln.text, count=1)) for ln in body]
    if len(body) < 3:
        return lines
    token = body[0].text.split(None, 1)[0]
    if any(ln.text.split(None, 1)[0] != token for ln in body):
        return lines  # (not one first word on every line)
    if "-" not in token or not _POD_TOKEN.match(token) or token in ("-", "--"):
        return lines
    out = [Line(ln.lineno, ln.text.split(None, 1)[1] if len(ln.text.split(None, 1)) > 1 else "")
           for ln in body]
    seconds = {ln.text.split(None, 1)[0] for ln in out if ln.text.strip()}
    container = seconds.pop() if len(seconds) == 1 else None
    if container is not None and _POD_TOKEN.match(container):  # stern: POD CONTAINER text
        out = [Line(ln.lineno, ln.text.split(None, 1)[1] if len(ln.text.split(None, 1)) > 1 else "")
               for ln in out]
        token += f" {container}"
    u.wrappers.append(f"'{token}' before every line (kubectl logs -l / stern)")
    u.log_transport = True
    return out


def _journal(lines: list[Line], u: Unwrapped) -> list[Line]:
    body = _nonempty(lines, u)
    hits = [ln for ln in body if _JOURNAL.match(ln.text)]
    if not hits or len(hits) < len(body) / 2:
        return lines
    u.wrappers.append("journald line prefixes (DATE host unit[pid]:)")
    u.log_transport = True
    return [replace(ln, text=_JOURNAL.sub("", ln.text, count=1)) for ln in lines]


def _untouched(s: str) -> bool:
    """Whether :func:`_per_line` leaves a line as it is, told without its expressions: a line with
    no logfmt message (``msg=``), no escaped line break (``\\n``) and no digit first (``_LINKERD``
    and ``_GO_LOG`` start with ``\\d``, and every character ``\\d`` matches is a digit to ``isdigit``)."""
    return "msg=" not in s and "\\n" not in s and not s[:1].isdigit()


def _per_line(lines: list[Line], u: Unwrapped) -> list[Line]:
    out: list[Line] = []
    seen: set[str] = set()
    for ln in lines:
        s = ln.text
        if _untouched(s):
            out.append(ln)
            continue
        if "msg=" in s and _LOGFMT.match(s.strip()):
            pairs = dict(_LOGFMT_PAIR.findall(s.strip()))
            raw = pairs.get("msg", "")
            msg = _unescape(raw[1:-1]) if raw.startswith('"') else raw
            seen.add("logfmt records (time=... level=... msg=\"...\"): the messages, unescaped")
            out.extend(Line(ln.lineno, part) for part in msg.split("\n"))
            continue
        m = _ESCAPED_VALUE.search(s) if "\\n" in s else None  # a value with no \n is left as it is
        if m and "\\n" in m.group(2):
            seen.add(f"an escaped {m.group(1)}=\"...\" value (its \\n are line breaks)")
            out.append(Line(ln.lineno, s[:m.start()].rstrip()))
            out.extend(Line(ln.lineno, part) for part in _unescape(m.group(2)).split("\n"))
            continue
        m2 = _LINKERD.match(s)
        if m2:
            seen.add("Linkerd proxy-init log prefixes (DATE TIME, ':;' / '>' commands, '<' output)")
            out.append(Line(ln.lineno, s[m2.end():], m2.group(1) or ""))
            continue
        m3 = _GO_LOG.match(s)
        if m3:
            seen.add("log timestamps and levels")
            s = s[m3.end():]
            out.append(replace(ln, text=s))
        else:
            out.append(ln)  # unchanged (lines are never mutated, so sharing is safe)
    u.wrappers.extend(sorted(seen))
    u.log_transport = u.log_transport or any("logfmt" in w or "Linkerd" in w for w in seen)
    return out


def _bold(lines: list[Line], u: Unwrapped) -> list[Line]:
    out = []
    changed = False
    for ln in lines:
        s = ln.text
        if "**" not in s:
            out.append(ln)
            continue
        t = s.strip()
        if t.startswith("**") or t.endswith("**"):
            core = t[2:] if t.startswith("**") else t
            core = core[:-2] if core.endswith("**") else core
            m = _GO_LOG.match(core)  # '**error ...' after a stripped timestamp
            s = core[m.end():] if m else core
            changed = True
            out.append(replace(ln, text=s))
        else:
            out.append(ln)
    if changed:
        u.wrappers.append("markdown bold marks (**)")
    return out


def _dedent(lines: list[Line], u: Unwrapped) -> list[Line]:
    body = _nonempty(lines, u)
    if len(body) > 1 and (_PROMPT.match(body[0].text) or _PRINTERS.match(body[0].text)):
        body = body[1:]  # '* kubectl logs ...' above an indented paste
    if not body or not body[0].text.startswith(" "):
        return lines  # (no common indentation)
    indents = {len(ln.text) - len(ln.text.lstrip(" ")) for ln in body}
    common = min(indents)
    if common == 0:
        return lines
    u.wrappers.append(f"an indentation of {common} spaces on every line")
    return [replace(ln, text=ln.text[common:] if ln.text[:common].isspace() else ln.text) for ln in lines]


def _prompts(lines: list[Line], u: Unwrapped) -> list[Line]:
    out: list[Line] = []
    first = True
    for ln in lines:
        if not first and ln.text.lstrip()[:1] not in _PROMPT_STARTS and "@" not in ln.text:
            out.append(ln)  # (no ``_PROMPT`` match can start here)
            continue
        s = ln.text.strip()
        if not s:
            out.append(ln)
            continue
        cmd: str | None = None
        m = _PROMPT.match(s)
        if m and not (s.startswith("*") and m.group(1).split()[0] in _TABLE_NAMES) \
                and not (s.startswith("#") and not _PRINTERS.match(m.group(1))) \
                and not (s.startswith(">") and not _PRINTERS.match(m.group(1))) \
                and not (s.startswith("*") and not _PRINTERS.match(m.group(1))):
            cmd = m.group(1).strip()
        elif first and _PRINTERS.match(s) and not _TRACE.match(s):
            cmd = s
        first = False
        if cmd is not None:
            u.prompts.append((ln.lineno, cmd))
            if u.command is None:
                u.command = (ln.lineno, cmd)
            continue
        out.append(ln)
    if u.prompts:
        shown = "; ".join(f"line {n}: `{c[:80]}`" for n, c in u.prompts[:3])
        u.notes.append(f"skipped the command line{'s' if len(u.prompts) > 1 else ''} that printed the "
                       f"text ({shown})")
    return out


def _traces(lines: list[Line], u: Unwrapped) -> list[Line]:
    out = []
    traced = False
    for ln in lines:
        if "+" not in ln.text:
            out.append(ln)
            continue
        m = _TRACE.match(ln.text.strip())
        if m and not ln.mark:
            out.append(Line(ln.lineno, m.group(1), "trace"))
            traced = True
        else:
            out.append(ln)
    if traced:
        u.wrappers.append("bash -x trace marks (+ command)")
    return out


def unwrap(lines: list[Line]) -> Unwrapped:
    """Take the wrappers off ``lines`` (see the module notes); nothing is refused here."""
    u = Unwrapped(lines)
    cur = lines
    for step in (_docker, _cri, _prefixes, _journal, _dedent, _per_line, _bold, _prompts, _traces):
        cur = step(cur, u)
    u.lines = cur
    u.nonempty = None
    return u
