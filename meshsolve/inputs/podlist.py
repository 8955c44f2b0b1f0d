"""A pod listing (``kubectl get pods -A -o json`` or ``-o yaml``) read item by item, never whole.

A 100,000-pod listing is hundreds of megabytes of text and several gigabytes as Python objects, so
the ``items`` of a ``List`` are read from a buffered stream one at a time:

- JSON: the top-level object's keys are read in order; the ``items`` array is decoded one element
  at a time with ``json.JSONDecoder.raw_decode`` over a buffer refilled from the file;
- YAML: kubectl writes ``items:`` at the left margin, each item starting with ``- `` there; the
  lines of a batch of items are parsed together by :func:`meshsolve.yamllines.yaml_documents`
  (libyaml when PyYAML has it).

Each :class:`Listed` item carries its own text (its lines as they are in the file) and the line
that text starts on, so the lines a finding points at are the file's. Anything else (several YAML
documents, workloads, a single pod, a List whose items are indented, an alias to an anchor in
another batch) is read whole as before (:attr:`Listed.whole`): those are small in practice.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import attrs

from meshsolve.errors import SpecError
from meshsolve.yamllines import yaml_documents

__all__ = ["Listed", "PodListing", "Reread", "padded"]

#: Characters read from the file at a time.
CHUNK = 1 << 20
#: YAML items parsed together (libyaml's start-up is paid once per batch).
YAML_BATCH = 256

_WS = re.compile(r"[ \t\n\r]*")
_NAMESPACE_KIND = re.compile(r'"kind"[ \t]*:[ \t]*"Namespace"|^[ \t]*-?[ \t]*kind:[ \t]*["\']?Namespace\b', re.M)


@attrs.frozen
class Listed:
    """One object of the listing: the parsed document, and the text it was read from.

    ``text`` is the object's own lines (``whole`` False; ``line`` is the file's line of its first
    line), or the whole file for a listing read whole (``whole`` True, ``line`` 1)."""

    doc: Any = attrs.field(eq=False, repr=False)
    text: str = attrs.field(repr=False)
    line: int
    whole: bool = False


def padded(item: Listed) -> str:
    """The item's text at its place in the file: its own lines after ``line - 1`` empty ones, so a
    line found in it is the file's line."""
    return item.text if item.whole else "\n" * (item.line - 1) + item.text


class _Whole(Exception):
    """The listing is not in a shape read item by item: read it whole."""


class Reread(Exception):  # a signal to the caller, caught by it: never a user's error
    """Raised by iteration when the listing turned out, after some items, not to be in a shape read
    item by item: the caller drops what it read and iterates again (the whole file, this time)."""


class PodListing:
    """The objects of a pod listing, streamed (see the module notes); ``read`` and ``size`` (characters
    and bytes, close enough for progress) say how far the reader is."""

    def __init__(self, path: str | Path) -> None:
        self.whole = False  # set after a ``Reread``: the next iteration reads the file whole
        self.path = Path(path)
        self.source = str(path)
        try:
            self.size = self.path.stat().st_size
        except OSError as exc:
            raise SpecError(f"cannot read manifest: {exc.strerror}", source=self.source) from None
        self.read = 0

    def _open(self) -> IO[str]:
        try:
            return self.path.open(encoding="utf-8")
        except OSError as exc:
            raise SpecError(f"cannot read manifest: {exc.strerror}", source=self.source) from None

    def text(self) -> str:
        """The whole file (for a listing read whole)."""
        try:
            with self._open() as f:
                return f.read()
        except UnicodeDecodeError as exc:
            raise SpecError(f"not UTF-8 text: {exc.reason} at byte {exc.start}", source=self.source) from None

    def has_namespaces(self) -> bool:
        """Whether a ``Namespace`` object may be in the file (read in chunks, nothing kept)."""
        tail = ""
        with self._open() as f:
            while chunk := f.read(CHUNK):
                text = tail + chunk
                if "Namespace" in text and _NAMESPACE_KIND.search(text):
                    return True
                tail = chunk[-200:]
        return False

    def __iter__(self) -> Iterator[Listed]:
        """Every item of the List in order (or the file's documents, read whole); ``Reread`` when the
        stream turns out not to be a List after some items were yielded."""
        self.read = 0
        yielded = 0
        try:
            if not self.whole:
                with self._open() as f:
                    head = f.read(CHUNK)
                    stream = _JsonItems(f, head, self).items() if head.lstrip().startswith("{") else \
                        _yaml_items(f, head, self)
                    for item in stream:
                        yielded += 1
                        yield item
                return
        except _Whole:
            if yielded:
                self.whole = True
                raise Reread from None
        except UnicodeDecodeError as exc:
            raise SpecError(f"not UTF-8 text: {exc.reason} at byte {exc.start}", source=self.source) from None
        text = self.text()
        self.read = self.size
        for doc, _line in yaml_documents(text, self.source):
            yield Listed(doc, text, 1, True)


class _JsonItems:
    """The ``items`` of a JSON List, one ``raw_decode`` at a time over a refilled buffer."""

    def __init__(self, f: IO[str], head: str, listing: PodListing) -> None:
        self.f = f
        self.buf = head
        self.pos = 0
        self.eof = False
        self.listing = listing
        listing.read = len(head)
        self.base_line = 1  # the line of buf[counted]
        self.counted = 0
        self.decoder = json.JSONDecoder()

    def _fill(self) -> bool:
        chunk = self.f.read(CHUNK)
        if not chunk:
            self.eof = True
            return False
        self.listing.read += len(chunk)
        self.base_line += self.buf.count("\n", self.counted, self.pos)
        self.buf = self.buf[self.pos:] + chunk
        self.pos = self.counted = 0
        return True

    def _line(self, at: int) -> int:
        """The file's line of ``buf[at]`` (``at`` at or after the last position asked)."""
        self.base_line += self.buf.count("\n", self.counted, at)
        self.counted = at
        return self.base_line

    def _peek(self) -> str:
        while True:
            self.pos = _WS.match(self.buf, self.pos).end()  # type: ignore[union-attr]
            if self.pos < len(self.buf) or not self._fill():
                return self.buf[self.pos:self.pos + 1]

    def _expect(self, char: str) -> None:
        if self._peek() != char:
            raise _Whole  # not the shape streamed: the whole-file reader says what is wrong, and where
        self.pos += 1

    def _value(self) -> tuple[Any, int, int]:
        """The next JSON value, its start and end in ``buf``."""
        self._peek()
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buf, self.pos)
            except (ValueError, RecursionError):
                if self._fill():
                    continue
                raise _Whole from None
            if end == len(self.buf) and not isinstance(value, dict | list | str) and self._fill():
                continue  # a number or literal may go on in the next chunk
            start, self.pos = self.pos, end
            return value, start, end

    def items(self) -> Iterator[Listed]:
        self._expect("{")
        seen_items = False
        if self._peek() == "}":
            raise _Whole
        while True:
            key, _, _ = self._value()
            self._expect(":")
            if key == "items" and self._peek() == "[" and not seen_items:
                seen_items = True
                self.pos += 1
                if self._peek() == "]":
                    self.pos += 1
                else:
                    while True:
                        yield self._item()
                        if self._after("]"):
                            break
            else:
                self._value()
            if self._after("}"):
                break
        if not seen_items or self._peek() != "":
            raise _Whole  # one pod, or text after the object: read whole

    def _after(self, close: str) -> bool:
        """Past the separator after a value: True at ``close`` (the end of its array or object),
        False at a comma; anything else is not kubectl's layout."""
        nxt = self._peek()
        self.pos += 1
        if nxt == close:
            return True
        if nxt != ",":
            raise _Whole
        return False

    def _item(self) -> Listed:
        doc, start, end = self._value()
        line_start = self.buf.rfind("\n", 0, start) + 1
        lead = self.buf[line_start:start]
        # its own lines: from the start of its first line when only indentation precedes it there
        text = self.buf[line_start:end] if not lead.strip() else self.buf[start:end]
        return Listed(doc, text, self._line(start))


def _yaml_items(f: IO[str], head: str, listing: PodListing) -> Iterator[Listed]:
    """The items of a YAML List written as kubectl writes it (``items:`` and each ``- `` at the left
    margin), parsed in batches; anything else raises ``_Whole``."""
    listing.read = len(head)
    pending = head

    def lines() -> Iterator[str]:
        nonlocal pending
        while True:
            cut = pending.rfind("\n")
            if cut < 0:
                more = f.read(CHUNK)
                if not more:
                    if pending:
                        yield pending
                    return
                listing.read += len(more)
                pending += more
                continue
            block, pending = pending[:cut + 1], pending[cut + 1:]
            yield from block.splitlines(keepends=True)

    it = lines()
    n = 0
    for line in it:  # the header: keys at the left margin up to ``items:``
        n += 1
        if line.rstrip() == "items:":
            break
        if line.startswith("---") or line.startswith("- ") or line.startswith("..."):
            raise _Whole
    else:
        raise _Whole
    batch: list[tuple[int, list[str]]] = []  # (line, its lines) per item
    ended = False
    for line in it:
        n += 1
        if ended:
            if line.startswith(("---", "...", "-", "items:")):
                raise _Whole  # another document, or a second ``items``
            continue
        if line.startswith("-") and not line.startswith("- "):
            raise _Whole  # an item written ``-`` then its keys below: not the shape kubectl writes
        if line.startswith("- "):
            if len(batch) >= YAML_BATCH:
                yield from _yaml_batch(batch, listing.source)
                batch = []
            batch.append((n, [line]))
        elif line[:1] in (" ", "\n", "#", "\r") or line == "":
            if batch:
                batch[-1][1].append(line)
            elif line.strip() and not line.lstrip().startswith("#"):
                raise _Whole  # items indented under ``items:``
        else:
            ended = True  # the List's other keys (``kind: List``, ``metadata:``)
    if batch:
        yield from _yaml_batch(batch, listing.source)


def _yaml_batch(batch: list[tuple[int, list[str]]], source: str) -> Iterator[Listed]:
    texts = ["".join(lines) for _n, lines in batch]
    try:
        docs = yaml_documents("".join(texts), source)
    except SpecError:
        raise _Whole from None  # e.g. an alias to an anchor of an earlier batch; the whole-file reader says
    items = docs[0][0] if len(docs) == 1 else None
    if not isinstance(items, list) or len(items) != len(batch):
        raise _Whole
    for item, text, (line, _lines) in zip(items, texts, batch, strict=True):
        yield Listed(item, text, line)
