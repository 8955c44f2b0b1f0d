"""``unwrap._per_line`` passes most lines through after one cheap test (``_untouched``), without
its expressions. The test must never pass a line that the expressions would change: for any lines,
``_per_line`` gives the same lines, marks and notes with the cheap test as with every line going
through the expressions (the cheap test turned off)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshsolve.iptables import unwrap as unwrap_module
from meshsolve.iptables.tokens import Line
from meshsolve.iptables.unwrap import Unwrapped

# What makes a line a per-line wrapper's (logfmt, an escaped value, Linkerd's and Go's log
# prefixes), digits of other scripts (some ``isdigit`` but not ``\d``), and plain rule text.
_PIECES = st.sampled_from([
    "2024/01/02 03:04:05 ", "2024/01/02 03:04:05 :; ", "2024/01/02 03:04:05 > ", "2024/01/02 03:04:05 < ",
    "2024-01-02T03:04:05.123Z\tinfo\t", "2024-01-02 03:04:05,1 ERROR ", "time=x level=info msg=",
    'msg="-A X\\n-A Y"', 'out="line\\nnext"', "msg=", "\\n", "\\", '"', "=", " ", "\t", "**",
    "-A OUTPUT -j RETURN", "iptables -t nat -S", "\u0663", "\u00b2", "\U0001d7d9", "1", "2024",
])
_LINE_TEXT = st.lists(st.one_of(_PIECES, st.text(max_size=4)), max_size=6).map("".join)


def _per_line(texts: list[str]) -> tuple[list[tuple[int, str, str]], list[str], bool]:
    lines = [Line(k, t) for k, t in enumerate(texts, start=1)]
    u = Unwrapped(lines)
    out = unwrap_module._per_line(lines, u)
    return [(ln.lineno, ln.text, ln.mark) for ln in out], u.wrappers, u.log_transport


@settings(max_examples=400, deadline=None)
@given(st.lists(_LINE_TEXT, min_size=1, max_size=6))
def test_the_cheap_test_passes_only_lines_the_expressions_leave(texts: list[str]) -> None:
    with_test = _per_line(texts)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(unwrap_module, "_untouched", lambda s: False)
        without = _per_line(texts)
    assert with_test == without


def test_the_cheap_test_is_taken_and_can_be_told_apart() -> None:
    """The comparison above can fail: a cheap test that passed a Linkerd line would change it."""
    texts = ["2024/01/02 03:04:05 :; iptables -t nat -S", "-A OUTPUT -j RETURN"]
    assert _per_line(texts)[0][0] == (1, "iptables -t nat -S", ":;")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(unwrap_module, "_untouched", lambda s: True)
        assert _per_line(texts)[0][0] == (1, texts[0], "")
