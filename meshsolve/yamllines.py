"""Where things are in a YAML (or pretty-printed JSON) text: the one way meshsolve finds line numbers
in manifests and binds files, for errors and for findings that point at a line.

:class:`YamlLines` reads the text once (a 1 MB ``kubectl get pods -A -o yaml`` in well under a second)
and answers: the line of each object's ``metadata.name`` (in order, so the n-th pod of a List named
``x`` is found even when names repeat), and the first line at or after a given line where a key (or
a key with a value) starts. Keys may be bare, quoted (JSON) or after a list dash; values lose their
quotes and a trailing JSON comma.
"""

from __future__ import annotations

import bisect
import functools
import re

__all__ = ["YamlLines", "yaml_lines"]

_KEY = re.compile(r"""^(\s*)(-\s+)?(?:"([^"]*)"|'([^']*)'|([^\s:'"#-][^:#]*?))\s*:(?:\s+(.*)|\s*)$""")


class YamlLines:
    """Line numbers (1-based) of keys and of objects' ``metadata.name`` in one text."""

    def __init__(self, text: str) -> None:
        self.count = text.count("\n") + 1
        self._keys: dict[str, list[int]] = {}
        self._pairs: dict[tuple[str, str], list[int]] = {}
        self._names: dict[str, list[int]] = {}
        meta_indent: int | None = None  # column of an open ``metadata:`` key
        child_indent: int | None = None
        for n, line in enumerate(text.splitlines(), 1):
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
