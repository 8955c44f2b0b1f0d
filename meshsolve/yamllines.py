"""YAML (or JSON) texts read once: the one loader of manifests and binds files, and the one way
meshsolve finds line numbers in them, for errors and for findings that point at a line.

:func:`yaml_documents` reads a stream's documents (libyaml's loader when PyYAML has it) with the
line each starts on; every failure of the reader is a ``SpecError`` with a line.

:func:`yaml_tree` composes one document into its node graph, for a reader that walks it node by
node (spec files), and :func:`node_line` gives a node's line: the composer's own mark, exact.

:class:`YamlLines` reads the text once (a 1 MB ``kubectl get pods -A -o yaml`` in well under a second)
and answers: the line of each object's ``metadata.name`` (in order, so the n-th pod of a List named
``x`` is found even when names repeat), and the first line at or after a given line where a key (or
a key with a value) starts. Keys may be bare, quoted (JSON) or after a list dash; values lose their
quotes and a trailing JSON comma.
"""

from __future__ import annotations

import bisect
import functools
import json
import re
from typing import Any

import yaml

from meshsolve.errors import SpecError

__all__ = ["LOADER", "YamlLines", "document_starts", "node_line", "yaml_documents", "yaml_lines", "yaml_tree",
           "yaml_value"]

#: libyaml's safe loader when PyYAML has it (about 10x faster than the pure-Python one; same resolver)
LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_DOC_START = re.compile(r"^---(?:\s|$)")
_DOC_END = re.compile(r"^\.\.\.(?:\s|$)")

_KEY = re.compile(r"""^(\s*)(-\s+)?(?:"([^"]*)"|'([^']*)'|([^\s:'"#-][^:#]*?))\s*:(?:\s+(.*)|\s*)$""")


def _blank_head(text: str) -> tuple[int, str]:
    """The empty lines ``text`` starts with (how many), and the rest: a fleet's pod is read as its own
    lines after as many empty ones as come before it in the file, so its lines are the file's."""
    body = text.lstrip("\n")
    return len(text) - len(body), body


def document_starts(text: str) -> list[int]:
    """The line each document of a YAML stream starts on: its first line with content (not a
    comment, a directive or a ``---``/``...`` marker), or a ``--- content`` line itself."""
    out: list[int] = []
    open_doc = True  # a document may start (at the top, after ``---`` or ``...``)
    skipped, body = _blank_head(text)
    for n, line in enumerate(body.splitlines(), skipped + 1):
        if line.startswith("---") and _DOC_START.match(line):
            rest = line[3:].strip()
            open_doc = not rest or rest.startswith("#")
            if not open_doc:  # ``--- {kind: Pod}``: the document starts on this line
                out.append(n)
        elif line.startswith("...") and _DOC_END.match(line):
            open_doc = True
        elif open_doc and line.strip() and not line.lstrip().startswith(("#", "%")):
            out.append(n)
            open_doc = False
    return out


class YamlLines:
    """Line numbers (1-based) of keys and of objects' ``metadata.name`` in one text."""

    def __init__(self, text: str) -> None:
        self.count = text.count("\n") + 1
        self._keys: dict[str, list[int]] = {}
        self._pairs: dict[tuple[str, str], list[int]] = {}
        self._names: dict[str, list[int]] = {}
        self._docs = document_starts(text)
        meta_indent: int | None = None  # column of an open ``metadata:`` key
        child_indent: int | None = None
        skipped, body = _blank_head(text)
        for n, line in enumerate(body.splitlines(), skipped + 1):
            m = _KEY.match(line)
            if not m:
                if meta_indent is not None and line.strip() and not line.strip().startswith(("#", "}", "]")) \
                        and len(line) - len(line.lstrip()) <= meta_indent:
                    meta_indent = None
                continue
            indent = len(m.group(1)) + (len(m.group(2)) if m.group(2) else 0)
            key = next(k for k in (m.group(3), m.group(4), m.group(5)) if k is not None).strip()
            value = (m.group(6) or "").strip()
            if value.endswith(","):
                value = value[:-1].rstrip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            self._keys.setdefault(key, []).append(n)
            self._pairs.setdefault((key, value), []).append(n)
            if meta_indent is not None:
                if indent <= meta_indent:
                    meta_indent = None
                else:
                    if child_indent is None:
                        child_indent = indent
                    if indent == child_indent and key == "name":
                        self._names.setdefault(value, []).append(n)
                        meta_indent = None
                    continue
            if key == "metadata" and value in ("", "{"):
                meta_indent, child_indent = indent, None

    def document_line(self, nth: int) -> int | None:
        """The line the ``nth`` (0-based) non-empty document of the stream starts on."""
        return self._docs[nth] if 0 <= nth < len(self._docs) else None

    def object_line(self, name: str, nth: int = 0) -> int | None:
        """The line of the ``nth`` (0-based) object whose ``metadata.name`` is ``name``."""
        found = self._names.get(name, [])
        return found[nth] if nth < len(found) else None

    def key_line(self, key: str, after: int = 0) -> int | None:
        """The first line at or after ``after`` where ``key:`` starts."""
        return self._first(self._keys.get(key, []), after)

    def pair_line(self, key: str, value: str, after: int = 0) -> int | None:
        """The first line at or after ``after`` with ``key: value``."""
        return self._first(self._pairs.get((key, value), []), after)

    @staticmethod
    def _first(found: list[int], after: int) -> int | None:
        i = bisect.bisect_left(found, after)
        return found[i] if i < len(found) else None


@functools.lru_cache(maxsize=4)
def yaml_lines(text: str) -> YamlLines:
    """The index of ``text``, built once per text."""
    return YamlLines(text)


def yaml_value(text: str) -> Any:
    """One YAML document (an annotation's nested YAML, a binds file); the reader's errors propagate."""
    return yaml.load(text, Loader=LOADER)


def yaml_documents(text: str, source: str) -> tuple[tuple[Any, int], ...]:
    """The stream's non-empty documents, each with the 1-based line it starts on (a JSON text is
    one document, read by the JSON reader). Every failure of the reader (bad syntax, a control
    character, a 5000-digit integer, an impossible date, nesting too deep for the recursive
    composer) is a ``SpecError`` with a line number."""
    if text.lstrip().startswith("{"):
        try:
            return ((json.loads(text), (document_starts(text) or [1])[0]),)
        except (ValueError, RecursionError):
            pass  # YAML's flow style, or broken JSON: the YAML reader says where
    try:  # the reader checks every character when it is made
        loader = LOADER(text)
    except yaml.reader.ReaderError as exc:
        raise SpecError(f"not valid YAML: {exc.reason} ({exc.character!r})", source=source,
                        lineno=text.count("\n", 0, exc.position) + 1) from None
    except UnicodeEncodeError as exc:  # libyaml's loader encodes first: a lone surrogate
        raise SpecError(f"not valid YAML: {exc.reason} ({exc.object[exc.start:exc.end]!r})", source=source,
                        lineno=text.count("\n", 0, exc.start) + 1) from None
    starts = document_starts(text)  # not the whole index: a big List is read in chunks, in parallel
    docs: list[tuple[Any, int]] = []
    seen = 0  # documents with content so far: the index of their lines in ``starts``

    def line() -> int:
        return starts[min(seen, len(starts) - 1)] if starts else 1

    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None or (isinstance(node, yaml.ScalarNode) and node.value == "" and not node.style):
                continue  # an empty document: no line of its own
            docs.append((loader.construct_document(node), line()))
            seen += 1
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise SpecError(f"not valid YAML: {exc.problem or exc.context or exc}", source=source,
                        lineno=None if mark is None else mark.line + 1) from None
    except yaml.reader.ReaderError as exc:  # no mark: a character position in the text
        raise SpecError(f"not valid YAML: {exc.reason} ({exc.character!r})", source=source,
                        lineno=text.count("\n", 0, exc.position) + 1) from None
    except (yaml.YAMLError, ValueError, OverflowError, RecursionError) as exc:
        mark = getattr(loader, "get_mark", lambda: None)()  # libyaml's has none: the document's line
        raise SpecError(f"not valid YAML: {type(exc).__name__}: {str(exc)[:200]}", source=source,
                        lineno=line() if mark is None else mark.line + 1) from None
    finally:
        loader.dispose()
    return tuple((d, n) for d, n in docs if d is not None)


def node_line(node: yaml.Node) -> int:
    """The 1-based line a node of :func:`yaml_tree` starts on."""
    return int(node.start_mark.line) + 1


def yaml_tree(text: str, source: str) -> yaml.Node | None:
    """One document's node graph (None for an empty text), for a reader that needs each value's
    line (:func:`node_line`); every failure of the composer is a ``SpecError`` with a line."""
    try:
        return yaml.compose(text)
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow: say which line
        raise SpecError(f"not valid YAML: character {exc.character!r} is not allowed", source=source,
                        lineno=text.count("\n", 0, max(exc.position, 0)) + 1) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise SpecError(f"not valid YAML: {getattr(exc, 'problem', exc)}", source=source,
                        lineno=None if mark is None else mark.line + 1) from None
    except RecursionError:
        raise SpecError("not valid here: the YAML nests too deeply", source=source, lineno=1) from None
