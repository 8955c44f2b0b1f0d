"""The rule fast path (``iptables/fastrule.py``) gives exactly the full parser's answers.

Whole inputs are parsed twice, fast path on and off (``tables.FAST_RULES``), and the models are
compared, counters and origins included (they are not part of rule equality). Single rules are
checked word list by word list, also after shuffling and damaging them: whenever the fast path
answers, the full parser must give the same rule and jump; when the full parser refuses, the fast
path must leave the words to it. The common shapes must actually take the fast path.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
from conftest import GOLDENS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import meshsolve.iptables.tables as tables
from meshsolve.iptables import parse_text, render_restore, render_save, rule_text
from meshsolve.iptables.fastrule import FastRules
from meshsolve.iptables.rule import parse_rule_tokens
from meshsolve.iptables.tokens import LineError, restore_words, restore_words_general
from meshsolve.model import Rule, Rulesets
from meshsolve.strategies import rules, rulesets_pair

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the benchmarks live beside the package, not in it
    sys.path.insert(0, str(ROOT))

from benchmarks.kubeproxy import kube_dump  # noqa: E402

_SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))


def _both_ways(text: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Rulesets, Rulesets]:
    with monkeypatch.context() as m:
        m.setattr(tables, "FAST_RULES", True)
        fast = parse_text(text, "in.txt")
        m.setattr(tables, "FAST_RULES", False)
        full = parse_text(text, "in.txt")
    return fast, full


def _details(r: Rulesets) -> list[tuple[str, str, int, object, object]]:
    """What rule equality leaves out: each rule's counters and origin, in order."""
    return [(rs.family, c.name, k, x.counters, x.origin) for rs in (r.ipv4, r.ipv6) for t in rs.tables
            for c in t.chains for k, x in enumerate(c.rules)]


def _same(text: str, monkeypatch: pytest.MonkeyPatch) -> Rulesets:
    fast, full = _both_ways(text, monkeypatch)
    assert fast == full
    assert _details(fast) == _details(full)
    return fast


@_SETTINGS
@given(rulesets_pair())
def test_generated_rulesets_parse_the_same_both_ways(r: Rulesets) -> None:
    with pytest.MonkeyPatch.context() as mp:
        for text in (render_save(r), render_restore(r), render_save(r, counters=True)):
            assert _same(text, mp) == r


def test_kube_proxy_dump_the_same_both_ways_and_mostly_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    text = kube_dump(800)
    parsed = _same(text, monkeypatch)
    assert sum(len(c.rules) for t in parsed.ipv4.tables for c in t.chains) > 800
    lines = [restore_words(s)[2:] for s in text.splitlines() if s.startswith("-A ")]
    fast = FastRules()
    taken = sum(fast.parse(words) is not None for words in lines)
    assert taken == len(lines)  # every kube-proxy and Istio shape is a common one


@pytest.mark.parametrize("path", sorted(GOLDENS.glob("*.golden")), ids=lambda p: p.stem)
def test_istio_goldens_the_same_both_ways(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _same(path.read_text(), monkeypatch)


def _check_words(words: list[str]) -> bool:
    """Fast path against the full parser on one word list; True if the fast path answered."""
    got = FastRules().parse(list(words))
    try:
        want, jump, counters = parse_rule_tokens(list(words))
    except LineError:
        assert got is None, f"fast path accepted what the full parser refuses: {words}"
        return False
    if got is None:
        return False
    assert counters is None
    assert got == (want, jump), words
    return True


@_SETTINGS
@given(st.sampled_from(["ipv4", "ipv6"]).flatmap(lambda f: st.tuples(st.just(f), rules(f))),
       st.randoms(use_true_random=False))
def test_rule_words_shuffled_and_damaged(fr: tuple[str, Rule], rnd: random.Random) -> None:
    family, r = fr
    words = restore_words(rule_text(r, family))  # type: ignore[arg-type]
    _check_words(words)
    # options in another order: cut at the rule-level options and shuffle the pieces
    cuts = [k for k, w in enumerate(words) if w.startswith("-") and not w.startswith("--")
            and (k == 0 or words[k - 1] != "!")] + [len(words)]
    pieces = [words[a:b] for a, b in zip([0, *cuts[:-1]], cuts, strict=True) if a < b]
    rnd.shuffle(pieces)
    _check_words([w for p in pieces for w in p])
    if words:
        k = rnd.randrange(len(words))
        _check_words(words[:k] + words[k + 1:])  # a word dropped
        _check_words([*words[:k], words[k], *words[k:]])  # a word doubled
        _check_words([*words, "-c", "1", "2"])  # counters: left to the full parser


@pytest.mark.parametrize("args", [
    "-p tcp --dport 80 -j ACCEPT",  # the implicit tcp module
    "-p tcp -m tcp --dport 80 --sport 1 -j ACCEPT",
    "-p tcp -m tcp --dport 80 -p tcp -j ACCEPT",
    "-p tcp -m comment --comment x --dport 80 -j ACCEPT",
    "-p tcp -m comment --comment x ! --dport 80 -j ACCEPT",
    "-m comment --comment x -p udp -m udp --dport 53 -j REDIRECT --to-ports 15053",
    "-j REDIRECT --to-ports 15001 -p tcp",
    "-p tcp -j REDIRECT --to-ports 15001",
    "! -p tcp -j REDIRECT --to-ports 15001",
    "! -m tcp --dport 1 -j ACCEPT",
    "-m tcp ! --dport 1 -j ACCEPT",
    "-s 10.0.0.0/8 ! -s 10.0.0.0/8 -j ACCEPT",
    "-d 0.0.0.0/0 -p all -j ACCEPT",
    "! -d 0.0.0.0/0 -j ACCEPT",
    "! -p all -j ACCEPT",
    "-s 192.0.2.1,192.0.2.2 -j ACCEPT",
    "-j",
    "-j ACCEPT ACCEPT",
    "-g ISTIO_X",
    "-g ISTIO_X --foo",
    "-m statistic --mode random --probability 0.5 -j KUBE-SEP-X",
    "-m sctp --dport 1 -j ACCEPT",
    "-m owner --uid-owner 1337 -j RETURN",
    "-m owner ! --uid-owner 1337 -j RETURN",
    "-m mark --mark 0x539/0xfff -j CONNMARK --save-mark",
    "-i lo -o lo ! -d 127.0.0.1/32 -j ISTIO_IN_REDIRECT",
    "-o lo -j",
    "-p tcp -m multiport --dports 80,443 -j ACCEPT",
    "-p tcp -m multiport --dports 80,,443 -j ACCEPT",
    "-m tcp --dport 0:65535 -j ACCEPT",
    "-j MARK --set-xmark 0x4000/0x4000",
    "-j DNAT --to-destination 10.244.0.1:8000",
    "-p tcp -j DNAT --to-destination 10.244.0.1:8000",
    "-c 1 2 -j ACCEPT",
    "",
])
def test_edge_shapes(args: str) -> None:
    _check_words(args.split())


def test_common_shapes_take_the_fast_path() -> None:
    for args in ("-p tcp -m tcp --dport 80 -j ACCEPT", "! -s 10.244.0.0/16 -d 10.96.0.1/32 -p tcp -m comment "
                 "--comment x -m tcp --dport 443 -j KUBE-MARK-MASQ", "-o lo -m owner --uid-owner 1337 -j RETURN",
                 "-p tcp -j DNAT --to-destination 10.244.0.1:8000", "-j MARK --set-xmark 0x4000/0x4000"):
        assert _check_words(args.split()), args


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(['"', " ", "\t", "a", "-", "é", "x y", '""', "\\"]), max_size=14).map("".join))
def test_restore_words_shortcuts_match_the_general_split(line: str) -> None:
    try:
        want = restore_words_general(line)
    except LineError:
        with pytest.raises(LineError):
            restore_words(line)
        return
    assert restore_words(line) == want
