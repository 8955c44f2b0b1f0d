"""Text → ``Rulesets``: the parser's entry points; every iptables text form, auto-detected.

Accepted forms, each read by its own module:

- iptables-save output, iptables-restore input (Istio's dialect included), istio-iptables dry-run
  transcripts and ``iptables``/``ip6tables`` shell command lines, which may be mixed in one input:
  ``document.py`` (table commands in ``tables.py``);
- ``iptables -S`` listings and dumps whose ``*table`` line was cut: ``reading.py``;
- ``kubectl logs <pod> -c istio-init`` output, recognised by its log lines: ``logs.py``;
- all of these inside log transports and paste decoration (CRI, Docker json-file, journald,
  logfmt, ``kubectl logs --prefix``, prompts, ``bash -x`` traces): ``unwrap.py``.

:func:`read_text` returns the whole :class:`Reading` (form, notes, failures a log shows, whether
the input ends early); :func:`parse_text` only its rules, raising when it has none.

Below them, ``tokens.py`` cuts lines and words, ``rule.py`` reads one rule's arguments with
``options.py`` (option scanning, value decoding), ``matches.py`` and ``targets.py``; the
normalisations that make a kernel round trip give equal models are listed in those three modules
(see also ``render.py``).

Every ParseError carries the source, the 1-based line number and the line, and says what was
expected. Inputs over ``MAX_INPUT_BYTES`` (100 MB; files are checked before reading), lines over
``MAX_LINE_CHARS`` (64 KiB), control characters and non-UTF-8 bytes are refused.
"""

from __future__ import annotations

import os
from pathlib import Path

from meshsolve.errors import ParseError
from meshsolve.iptables.reading import Reading, read_text
from meshsolve.iptables.rule import parse_rule
from meshsolve.iptables.tokens import MAX_LINE_CHARS
from meshsolve.model.rules import Rulesets

__all__ = ["MAX_INPUT_BYTES", "MAX_LINE_CHARS", "parse_file", "parse_rule", "parse_text", "read_file",
           "read_text", "file_text"]

#: Inputs larger than this are refused (before reading them whole, for files).
MAX_INPUT_BYTES = 100 * 1024 * 1024


def parse_text(text: str, source: str = "<string>") -> Rulesets:
    """Parse any supported iptables text form (auto-detected) into IPv4 + IPv6 rulesets.

    Raises ``ParseError`` (with source, line number and line) on anything it cannot read.
    """
    if len(text) > MAX_INPUT_BYTES:
        raise ParseError(f"input larger than {MAX_INPUT_BYTES} bytes", source=source)
    return read_text(text, source).require_rulesets()


def parse_file(path: str | os.PathLike[str], source: str | None = None) -> Rulesets:
    """Parse a file (``"-"`` reads standard input). Files over ``MAX_INPUT_BYTES`` are refused
    before they are read; text must be UTF-8."""
    name = source if source is not None else str(path)
    return parse_text(_file_text(path, name), source=name)


def file_text(path: str | os.PathLike[str], source: str | None = None) -> str:
    """A file's text (``"-"``: standard input), with ``parse_file``'s limits."""
    name = source if source is not None else str(path)
    return _file_text(path, name)


def read_file(path: str | os.PathLike[str], source: str | None = None) -> Reading:
    """:func:`read_text` of a file (``"-"``: standard input), with ``parse_file``'s limits."""
    name = source if source is not None else str(path)
    text = _file_text(path, name)
    if len(text) > MAX_INPUT_BYTES:
        raise ParseError(f"input larger than {MAX_INPUT_BYTES} bytes", source=name)
    return read_text(text, name)


def _file_text(path: str | os.PathLike[str], name: str) -> str:
    import sys

    if str(path) == "-":
        data = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
    else:
        p = Path(path)
        try:
            size = p.stat().st_size
            if size > MAX_INPUT_BYTES:
                raise ParseError(f"input larger than {MAX_INPUT_BYTES} bytes ({size})", source=name)
            with p.open("rb") as fh:
                data = fh.read(MAX_INPUT_BYTES + 1)
        except OSError as exc:
            raise ParseError(f"cannot read: {exc.strerror or exc}", source=name) from None
    if len(data) > MAX_INPUT_BYTES:
        raise ParseError(f"input larger than {MAX_INPUT_BYTES} bytes", source=name)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        lineno = data[:exc.start].count(b"\n") + 1
        raise ParseError(f"binary data: not UTF-8 text (byte 0x{data[exc.start]:02x})", source=name,
                         lineno=lineno) from None
    return text
