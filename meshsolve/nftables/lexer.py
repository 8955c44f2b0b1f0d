"""Tokens of nft's text syntax (``nft -f`` input and ``nft list ruleset`` output) and a cursor over
them that raises ``ParseError`` with the file, the line and what was expected.

Words are runs of anything but blanks, quotes and ``{ } ( ) ; , = ! < > & | ^ #``; quoted strings
have no escapes (nft has none); ``#`` starts a comment, except that ``# handle N`` (``nft -a``) is
kept as a token; a backslash at the end of a line joins the next line; newlines are tokens because
they end commands and rules.
"""

from __future__ import annotations

import re
from typing import Literal, NoReturn

import attrs

from meshsolve.errors import ParseError
from meshsolve.iptables import MAX_INPUT_BYTES, MAX_LINE_CHARS

__all__ = ["MAX_INPUT_BYTES", "MAX_LINE_CHARS", "Token", "Tokens", "check_text", "lex"]

Kind = Literal["word", "string", "punct", "nl", "handle", "eof"]

_SPECIAL = set(' \t\r\n"#{}();,=!<>&|^\\')
_TWO = ("!=", "==", "<=", ">=", "<<", ">>")
_HANDLE = re.compile(r"#\s*handle\s+([0-9]{1,12})\s*$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffd]")


@attrs.frozen
class Token:
    kind: Kind
    text: str
    lineno: int

    def raw(self) -> str:
        return f'"{self.text}"' if self.kind == "string" else self.text

    def __str__(self) -> str:
        return {"nl": "end of line", "eof": "end of input"}.get(self.kind, repr(self.raw()))


def check_text(text: str, source: str, what: str, *, line_limit: bool = True) -> list[str]:
    """Refuse oversized input, overlong lines (not for JSON: ``nft -j`` prints one line) and binary
    data; return the lines."""
    if len(text) > MAX_INPUT_BYTES:
        raise ParseError(f"input larger than {MAX_INPUT_BYTES} bytes", source=source)
    lines = text.split("\n")
    for k, line in enumerate(lines, start=1):
        if line_limit and len(line) > MAX_LINE_CHARS:
            raise ParseError(f"line longer than {MAX_LINE_CHARS} characters ({len(line)})", source=source,
                             lineno=k, line=line[:120])
        bad = _CONTROL.search(line)
        if bad:
            raise ParseError(f"binary data (character {bad.group()!r} at column {bad.start() + 1}); "
                             f"expected {what}", source=source, lineno=k, line=line[:120])
    return lines


def lex(text: str, source: str) -> tuple[list[Token], list[str]]:
    """Split ``text`` into tokens (ending with one ``eof``); also return its lines for messages."""
    lines = check_text(text, source, "nft text")
    toks: list[Token] = []
    add = toks.append
    i, n, line = 0, len(text), 1
    while i < n:
        c = text[i]
        if c in " \t\r":
            i += 1
        elif c == "\n":
            add(Token("nl", "\n", line))
            line += 1
            i += 1
        elif c == "\\" and text.startswith("\n", i + 1):
            i += 2
            line += 1
        elif c == "\\" and text.startswith("\r\n", i + 1):
            i += 3
            line += 1
        elif c == "#":
            j = text.find("\n", i)
            j = n if j < 0 else j
            m = _HANDLE.match(text, i, j)
            if m:
                add(Token("handle", m.group(1), line))
            i = j
        elif c == '"':
            j = text.find('"', i + 1)
            nl = text.find("\n", i + 1)
            if j < 0 or (0 <= nl < j):
                raise ParseError("unterminated string: expected a closing '\"' on the same line",
                                 source=source, lineno=line, line=lines[line - 1][:120])
            add(Token("string", text[i + 1:j], line))
            i = j + 1
        elif c in "{}();,":
            add(Token("punct", c, line))
            i += 1
        elif c in "=!<>&|^":
            two = text[i:i + 2]
            if two in _TWO:
                add(Token("punct", two, line))
                i += 2
            else:
                add(Token("punct", c, line))
                i += 1
        elif c == "\\":
            raise ParseError("stray backslash: expected it only at the end of a line", source=source,
                             lineno=line, line=lines[line - 1][:120])
        else:
            j = i + 1
            while j < n and text[j] not in _SPECIAL:
                j += 1
            add(Token("word", text[i:j], line))
            i = j
    add(Token("eof", "", line))
    return toks, lines


class Tokens:
    """A cursor over the tokens, with ``ParseError``s that name the source, line and expectation."""

    def __init__(self, toks: list[Token], lines: list[str], source: str) -> None:
        self.toks = toks
        self.lines = lines
        self.source = source
        self.i = 0

    def peek(self, ahead: int = 0) -> Token:
        return self.toks[min(self.i + ahead, len(self.toks) - 1)]

    def next(self) -> Token:
        tok = self.toks[self.i]
        if tok.kind != "eof":
            self.i += 1
        return tok

    def at(self, *texts: str) -> bool:
        t = self.peek()
        return t.kind in ("word", "punct") and t.text in texts

    def accept(self, *texts: str) -> bool:
        if self.at(*texts):
            self.i += 1
            return True
        return False

    def expect(self, text: str, what: str | None = None) -> Token:
        if not self.at(text):
            self.fail(f"expected {what or repr(text)}, got {self.peek()}")
        return self.next()

    def word(self, what: str) -> str:
        t = self.peek()
        if t.kind != "word":
            self.fail(f"expected {what}, got {t}")
        self.i += 1
        return t.text

    def name(self, what: str) -> str:
        """A name: a word or a quoted string (nft accepts both)."""
        t = self.peek()
        if t.kind not in ("word", "string") or (t.kind == "word" and t.text.startswith(("$", "@"))):
            if t.kind == "word" and t.text.startswith("$"):
                self.fail(f"variables ({t.text}) are not supported: expected {what}")
            self.fail(f"expected {what}, got {t}")
        if not t.text or len(t.text) > 255 or not t.text.isprintable():
            self.fail(f"expected {what} (1 to 255 printable characters), got {t}")
        self.i += 1
        return t.text

    def string(self, what: str) -> str:
        t = self.peek()
        if t.kind != "string" and t.kind != "word":
            self.fail(f"expected {what}, got {t}")
        self.i += 1
        return t.text

    def skip_newlines(self) -> None:
        while self.peek().kind == "nl":
            self.i += 1

    def skip_separators(self) -> None:
        while self.peek().kind == "nl" or self.at(";"):
            self.i += 1

    def line_of(self, lineno: int) -> str:
        return self.lines[lineno - 1][:200] if 0 < lineno <= len(self.lines) else ""

    def error(self, message: str, lineno: int | None = None) -> ParseError:
        ln = self.peek().lineno if lineno is None else lineno
        return ParseError(message, source=self.source, lineno=ln, line=self.line_of(ln))

    def fail(self, message: str, lineno: int | None = None) -> NoReturn:
        raise self.error(message, lineno)
