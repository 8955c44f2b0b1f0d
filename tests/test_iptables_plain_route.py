"""The one-pass reading of plain iptables-save / restore text (``reading._plain_dump``) against the
step-by-step reading it stands in for.

``read_unwrapped`` first tries to read an input as a plain dump (every line blank or in the strict
grammar, the first content line a ``*table`` line); when that route answers, the general way
(refusals, logs, listings, a dump's tail, rules without a table, the form test) is skipped. Every
input here is read both ways — the second time with the plain route turned off — and must give the
same reading, or the same error. The inputs are the project's pasted corpus, the other test data,
Istio's golden rule files and hand-made cases at the route's edges; the test also checks that the
route answered for some of them and declined others, so a route that never runs cannot pass.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.kubeproxy import kube_dump
from meshsolve.errors import MeshsolveError
from meshsolve.iptables import reading
from meshsolve.iptables.reading import Reading, read_text, unwrap_text
from tests.conftest import GOLDENS

DATA = Path(__file__).parent / "data"

EDGES = {
    "plain": "*nat\n:PREROUTING ACCEPT [0:0]\n:X - [0:0]\n-A PREROUTING -j X\n-A X -p tcp -j RETURN\nCOMMIT\n",
    "warning comment": ("# Warning: iptables-legacy tables present, use iptables-legacy-save to see them\n"
                        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
                        "-A INPUT -s 192.0.2.1/32 -j DROP\nCOMMIT\n"),
    "counters": "*nat\n:OUTPUT ACCEPT [3:180]\n[1:60] -A OUTPUT -d 192.0.2.1/32 -j RETURN\nCOMMIT\n",
    "restore form": "* nat\n-N ISTIO_X\n-A OUTPUT -j ISTIO_X\n-I ISTIO_X 1 -p tcp -j RETURN\nCOMMIT\n",
    "ends early": "*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -j RETURN\n",
    "bad rule": "*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -s nowhere -j RETURN\nCOMMIT\n",
    "undeclared chain": "*nat\n-A NOPE -j RETURN\nCOMMIT\n",
    "then a listing": ("*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -s nowhere -j RETURN\nCOMMIT\n"
                       "Chain INPUT (policy ACCEPT)\ntarget     prot opt source               destination\n"),
    "then a command": "*nat\n:OUTPUT ACCEPT [0:0]\nCOMMIT\niptables -t nat -A OUTPUT -j RETURN\n",
    "then a log hint": ("*nat\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n# Final iptables state\n"
                        "2024-01-01T00:00:00Z info done\n"),
    "a long option": "*nat\n:OUTPUT ACCEPT [0:0]\n--append OUTPUT -j RETURN\nCOMMIT\n",
    "a long option and a log phrase": ("*nat\n:OUTPUT ACCEPT [0:0]\n# Final iptables state\n"
                                       "--append OUTPUT -j RETURN\nCOMMIT\n"),  # (a log)
    "then a harmless line": "*nat\n:OUTPUT ACCEPT [0:0]\nCOMMIT\nset -e\n",  # (iptables commands)
    "assignment after": "*nat\n:OUTPUT ACCEPT [0:0]\nCOMMIT\nCOMMIT=1\n",
    "two families": ("# ipv4\n*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -d 192.0.2.1/32 -j RETURN\nCOMMIT\n"
                     "# ipv6\n*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -d 2001:db8::1/128 -j RETURN\nCOMMIT\n"),
    "wrong family": "# ipv6\n*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -d 192.0.2.1/32 -j RETURN\nCOMMIT\n",
    "indented": "  *nat\n  :OUTPUT ACCEPT [0:0]\n  -A OUTPUT -j RETURN\n  COMMIT\n",
    "prompt first": "$ iptables-save\n*nat\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n",
    "kube-proxy": kube_dump(30),
}


def _inputs() -> list[tuple[str, str]]:
    out = list(EDGES.items())
    for path in sorted(DATA.rglob("*")):
        if path.is_file() and path.suffix in (".txt", ".log", ".golden", ".save", ".rules", ""):
            out.append((str(path.relative_to(DATA)), path.read_text(encoding="utf-8", errors="replace")))
    if GOLDENS.is_dir():
        for path in sorted(GOLDENS.rglob("*.golden")):
            out.append((f"golden/{path.name}", path.read_text(encoding="utf-8")))
    return out


INPUTS = _inputs()


def _outcome(text: str) -> tuple[str, object]:
    """The reading (every field, those left out of equality too), or the error, as comparable values."""
    try:
        r: Reading = read_text(text, "in.txt")
    except MeshsolveError as exc:
        return "error", (type(exc).__name__, str(exc))
    inc = r.incomplete
    return "reading", (r, None if inc is None else (str(inc), inc.lineno), r.text, r.lines)


def _answers(text: str) -> bool:
    """Whether the plain route answers for ``text`` (an error counts as declining)."""
    try:
        return reading._plain_dump(unwrap_text(text, "in.txt"), "in.txt") is not None
    except MeshsolveError:
        return False


@pytest.mark.parametrize(("name", "text"), INPUTS, ids=[n for n, _ in INPUTS])
def test_the_plain_route_reads_as_the_general_way(name: str, text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    fast = _outcome(text)
    monkeypatch.setattr(reading, "_plain_dump", lambda u, source: None)
    general = _outcome(text)
    assert fast == general


def test_the_plain_route_answers_for_dumps_and_declines_the_rest() -> None:
    for name in ("plain", "warning comment", "counters", "restore form", "ends early", "two families",
                 "prompt first", "kube-proxy"):
        assert _answers(EDGES[name]), name
    for name in ("bad rule", "undeclared chain", "then a listing", "then a command", "then a log hint",
                 "a long option", "a long option and a log phrase", "then a harmless line", "assignment after",
                 "wrong family", "indented"):
        assert not _answers(EDGES[name]), name
    assert sum(_answers(text) for _, text in INPUTS) >= 15  # saved dumps among the data (20 when written)
