"""How the parser cuts text before reading it: input → lines → words, and shell lines → commands.

- :func:`split_lines`: lines numbered from 1, a trailing backslash joining the next line (shell line
  continuation, not in ``#`` comments); a line over ``MAX_LINE_CHARS``, control characters and the
  Unicode replacement character (what undecodable bytes became) are refused.
- :func:`restore_words`: one rule line of save/restore input, split the way iptables-restore
  splits it (measured on 1.8.9): only double quotes group, and a closing quote ends the word, so
  ``--comment "say "hi" now"`` gives ``say `` and ``hi now``, which the loader then refuses as a
  bad argument. Inside quotes a backslash escapes any character; outside, ``'`` and ``\\`` are
  ordinary characters. :func:`split_words` is its public door.
- :func:`tokenize`: one shell command's words (POSIX quoting, plus the ``\\'`` that
  iptables-save writes inside double quotes); also used for a lone rule given as a string.
- :func:`split_shell`: a shell line cut at ``||``, ``&&`` and ``;`` outside quotes;
  :func:`drop_redirections` removes ``2>/dev/null`` and friends from a command's words.

Problems inside one line raise :class:`LineError`, which the caller turns into a ``ParseError``
carrying the source and the line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from meshsolve.errors import ParseError

#: A single line longer than this is refused (iptables' own restore buffer is far smaller).
MAX_LINE_CHARS = 64 * 1024


class LineError(Exception):
    """Internal: a problem inside one line; turned into ParseError with the line's position."""


@dataclass(slots=True)
class Line:
    """One logical input line (continuations joined) and the number of its first physical line."""

    lineno: int
    text: str
    mark: str = ""  # what an unwrapped line was marked as: "trace" (bash -x), ":;" / ">" / "<" (Linkerd)


_BAD_CHAR = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffd]")


def split_lines(text: str, source: str) -> list[Line]:
    """``text`` → numbered logical lines; ParseError for over-long lines and binary data."""
    raws = text.split("\n")
    if "\\" not in text and _BAD_CHAR.search(text) is None and max(map(len, raws)) <= MAX_LINE_CHARS:
        # the common case, checked on the whole text at once: no continuation, nothing to refuse
        return [Line(k, raw.rstrip("\r")) for k, raw in enumerate(raws, start=1)]
    return split_lines_general(text, source)


def split_lines_general(text: str, source: str) -> list[Line]:
    """:func:`split_lines` line by line, without its shortcut (the tests compare the two)."""
    lines: list[Line] = []
    pending: list[str] = []
    start = 1
    for k, raw in enumerate(text.split("\n"), start=1):
        if len(raw) > MAX_LINE_CHARS:
            raise ParseError(f"line longer than {MAX_LINE_CHARS} characters ({len(raw)})", source=source,
                             lineno=k, line=raw[:120])
        bad = _BAD_CHAR.search(raw)
        if bad:
            raise ParseError(f"binary data (character {bad.group()!r} at column {bad.start() + 1}); "
                             "expected iptables text", source=source, lineno=k, line=raw[:120])
        line = raw.rstrip("\r")
        if not pending:
            start = k
        # shell line continuation
        if line.endswith("\\") and not line.endswith("\\\\") and not line.lstrip().startswith("#"):
            pending.append(line[:-1])
            continue
        pending.append(line)
        lines.append(Line(start, " ".join(pending) if len(pending) > 1 else pending[0]))
        pending = []
    if pending:
        lines.append(Line(start, " ".join(pending)))
    return lines


# a word of a restore line whose quotes pair up and hold no backslash: an unquoted run, optionally
# followed by a quoted part (whose closing quote ends the word), or an unquoted run alone
_RESTORE_WORD = re.compile(r'[^ \t\r\n\v\f"]*"[^"]*"|[^ \t\r\n\v\f"]+')


def restore_words(line: str) -> list[str]:
    """Split one save/restore rule line into words as iptables-restore does (see the module notes).

    An unclosed double quote is refused (the loader would take the rest of the line, newline
    included, as one word).
    """
    if '"' not in line and line.isascii():
        return line.split()  # fast path: nothing quoted
    if "\\" not in line and line.count('"') % 2 == 0:
        # fast path: quotes pair up and nothing is escaped, so each quoted part is plain text
        return [w.replace('"', "") if '"' in w else w for w in _RESTORE_WORD.findall(line)]
    return restore_words_general(line)


def restore_words_general(line: str) -> list[str]:
    """:func:`restore_words` without its shortcuts (the tests compare the two)."""
    out: list[str] = []
    cur: list[str] = []
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if c == '"':  # a quoted part: continues the word, and its closing quote ends the word
            i += 1
            while True:
                if i >= n:
                    raise LineError("unbalanced double quote")
                c = line[i]
                if c == "\\" and i + 1 < n:
                    cur.append(line[i + 1])
                    i += 2
                elif c == '"':
                    i += 1
                    break
                else:
                    cur.append(c)
                    i += 1
            out.append("".join(cur))
            cur = []
        elif c in " \t\r\n\v\f":
            if cur:
                out.append("".join(cur))
                cur = []
            i += 1
        else:
            cur.append(c)
            i += 1
    if cur:
        out.append("".join(cur))
    return out


def tokenize(line: str) -> list[str]:
    """Split one line like iptables-save quotes it (and like a POSIX shell, for command lines).

    Double quotes group; inside them a backslash escapes ``"``, ``\\``, ``'``, ``$`` and backtick
    (iptables' ``xtables_save_string`` writes ``\\'``, which POSIX shells would keep literally).
    Single quotes group literally. Outside quotes a backslash escapes the next character.
    """
    if line.isascii() and not any(c in line for c in "\"'\\"):
        return line.split()  # fast path: nothing quoted or escaped
    out: list[str] = []
    cur: list[str] = []
    have = False
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if c in " \t\r\n\v\f":
            if have:
                out.append("".join(cur))
                cur, have = [], False
            i += 1
        elif c == '"':
            have = True
            i += 1
            while True:
                if i >= n:
                    raise LineError("unbalanced double quote")
                c = line[i]
                if c == "\\" and i + 1 < n and line[i + 1] in "\"\\'$`":
                    cur.append(line[i + 1])
                    i += 2
                elif c == '"':
                    i += 1
                    break
                else:
                    cur.append(c)
                    i += 1
        elif c == "'":
            have = True
            j = line.find("'", i + 1)
            if j < 0:
                raise LineError("unbalanced single quote")
            cur.append(line[i + 1:j])
            i = j + 1
        elif c == "\\":
            if i + 1 >= n:
                raise LineError("backslash at end of line")
            cur.append(line[i + 1])
            have = True
            i += 2
        else:
            cur.append(c)
            have = True
            i += 1
    if have:
        out.append("".join(cur))
    return out


def split_words(line: str, *, source: str = "<line>") -> tuple[str, ...]:
    """The words of one line of iptables rule text, quoting undone as iptables-restore undoes it.

    The inverse of the renderer's quoting: for a rule's canonical text (``rule_text``) it gives the
    argument vector ``iptables`` takes, so ``split_words(rule_text(r, family))`` can be passed to a
    command line. Only double quotes group; inside them a backslash escapes the next character, and
    the closing quote ends the word. An unclosed quote raises ``ParseError`` naming ``source``.
    """
    try:
        return tuple(restore_words(line))
    except LineError as exc:
        raise ParseError(str(exc), source=source, lineno=1, line=line) from None


def split_shell(line: str) -> list[tuple[str, str]]:
    """Split a shell line at ``||``, ``&&`` and ``;`` outside quotes: ``[(op_before, text)]``."""
    parts: list[tuple[str, str]] = []
    op, start, i, n = ";", 0, 0, len(line)
    quote: str | None = None
    while i < n:
        c = line[i]
        if quote:
            if c == "\\" and quote == '"':
                i += 2
                continue
            if c == quote:
                quote = None
        elif c in "\"'":
            quote = c
        elif c == "\\":
            i += 2
            continue
        elif line.startswith(("||", "&&"), i) or c == ";":
            parts.append((op, line[start:i]))
            op = ";" if c == ";" else line[i:i + 2]
            i += 1 if c == ";" else 2
            start = i
            continue
        i += 1
    if quote:
        raise LineError("unbalanced " + ("double" if quote == '"' else "single") + " quote")
    parts.append((op, line[start:]))
    return [(o, t) for o, t in parts if t.strip() or o != ";"]


def drop_redirections(toks: list[str]) -> list[str]:
    """Remove ``2>/dev/null``, ``>out``, ``2>&1``, ``> file`` from a command's tokens."""
    out: list[str] = []
    skip = False
    for t in toks:
        if skip:
            skip = False
            continue
        if re.fullmatch(r"\d*(?:>>?|<)", t) or re.fullmatch(r"&>>?", t):
            skip = True
            continue
        if re.fullmatch(r"\d*(?:>>?|<)\S+|\d*>&\d+|&>>?\S+", t):
            continue
        out.append(t)
    return out
