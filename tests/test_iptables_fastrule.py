"""The rule fast path (``iptables/fastrule.py``) gives exactly the full parser's answers.

Whole inputs are parsed twice, fast path on and off (``tables.FAST_RULES``), and the models are
compared, counters and origins included (they are not part of rule equality). Single rules are
checked word list by word list, also after shuffling and damaging them: whenever the fast path
answers, the full parser must give the same rule and jump; when the full parser refuses, the fast
path must leave the words to it. The common shapes must actually take the fast path. The same
holds for the text door (a rule's text after ``-A CHAIN``) and the whole-line door (a whole ``-A``
line), and for the shortcuts around them (the NAT address decoding, ``parse``'s nftables check).
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
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
    _render_is_rule_text(r)
    _render_is_rule_text(_same(render_save(r), pytest.MonkeyPatch()))  # pieces shared by the parser


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


def _agrees(got: object, full_words: Callable[[], list[str]], shown: object) -> bool:
    """A fast door's answer ``got`` against the full parser on the same rule (its words from
    ``full_words``, whose own refusal counts as the parser's); True if the door answered."""
    try:
        want, jump, counters = parse_rule_tokens(full_words())
    except LineError:
        assert got is None, f"a fast door accepted what the full parser refuses: {shown!r}"
        return False
    if got is None:
        return False
    assert counters is None
    assert got == (want, jump), shown
    return True


def _check_words(words: list[str]) -> bool:
    """Fast path against the full parser on one word list; True if the fast path answered."""
    return _agrees(FastRules().parse(list(words)), lambda: list(words), words)


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


# --- the text door (``FastRules.parse_text``) and the other shortcuts of a whole read ---------------

_TEXT_SUFFIXES = {".golden", ".txt", ".log", ".sh", ".iptables-save", ".iptables-nft-save", ".expected"}


def _text_inputs() -> list[Path]:
    """Every text input the repository and the shared reference hold (read both ways below)."""
    roots = [ROOT / "tests" / "data", GOLDENS.parent]
    return sorted(p for r in roots if r.is_dir() for p in r.rglob("*")
                  if p.is_file() and p.suffix in _TEXT_SUFFIXES)


def _reading_both_ways(text: str, monkeypatch: pytest.MonkeyPatch) -> tuple[object, object]:
    """``read_text`` with the fast paths on and off: the Reading's parts, or the error's."""
    from meshsolve.errors import ParseError
    from meshsolve.iptables import read_text

    out = []
    for fast in (True, False):
        with monkeypatch.context() as m:
            m.setattr(tables, "FAST_RULES", fast)
            try:
                r = read_text(text, "in.txt")
            except ParseError as exc:
                out.append(("error", str(exc), exc.lineno, exc.line))
                continue
        rs = r.rulesets
        out.append(("read", r.form, r.notes, r.state, rs, _details(rs) if rs is not None else None,
                    None if r.incomplete is None else str(r.incomplete)))
    return out[0], out[1]


def test_inputs_found() -> None:
    assert len(_text_inputs()) > 100  # the goldens and tests/data are where conftest says


@pytest.mark.parametrize("path", _text_inputs(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_stored_input_reads_the_same_both_ways(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same rules, counters, origins, notes — or the same error, word for word, at the same line."""
    fast, full = _reading_both_ways(path.read_text(errors="replace"), monkeypatch)
    assert fast == full


@pytest.mark.parametrize("n", [0, 1, 7, 150, 2500])
def test_kube_dumps_of_several_sizes_read_the_same_and_take_the_text_door(
        n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    text = kube_dump(n)
    fast, full = _reading_both_ways(text, monkeypatch)
    assert fast == full and fast[0] == "read"
    door = FastRules()
    bodies = [s[3:].partition(" ")[2] for s in text.splitlines() if s.startswith("-A ")]
    assert bodies and all(door.parse_text(b) is not None for b in bodies)
    # and the same with iptables-save -c counters on every line
    counted = "\n".join(f"[3:4] {s}" if s.startswith("-A ") else s for s in text.splitlines()) + "\n"
    fast, full = _reading_both_ways(counted, monkeypatch)
    assert fast == full and fast[0] == "read"


def _check_text(text: str) -> bool:
    """The text door against the full parser on one rule's text; True if the door answered."""
    return _agrees(FastRules().parse_text(text), lambda: restore_words(text), text)


@_SETTINGS
@given(st.sampled_from(["ipv4", "ipv6"]).flatmap(lambda f: st.tuples(st.just(f), rules(f))),
       st.randoms(use_true_random=False))
def test_rule_text_shuffled_and_damaged(fr: tuple[str, Rule], rnd: random.Random) -> None:
    family, r = fr
    text = rule_text(r, family)  # type: ignore[arg-type]
    _check_text(text)
    words = text.split(" ")
    if len(words) > 1:
        k = rnd.randrange(len(words))
        _check_text(" ".join(words[:k] + words[k + 1:]))  # a word dropped
        _check_text(" ".join([*words[:k], words[k], *words[k:]]))  # a word doubled
        _check_text(" ".join(words[:k]) + "  " + " ".join(words[k:]))  # two spaces
        _check_text(" ".join(words[:k]) + ' "' + " ".join(words[k:]))  # a stray quote
        cuts = [k for k, w in enumerate(words) if w in ("-s", "-d", "-i", "-o", "-p", "-m", "-j", "-g")]
        pieces = [" ".join(words[a:b]) for a, b in zip([0, *cuts], [*cuts, len(words)], strict=True) if a < b]
        rnd.shuffle(pieces)
        _check_text(" ".join(pieces))


@pytest.mark.parametrize("args", [
    "--source 192.0.2.1 -j ACCEPT",  # a long option name: left to the word door
    "-s  192.0.2.1 -j ACCEPT",  # two spaces
    "-s\t192.0.2.1 -j ACCEPT",
    "-p tcp --dport 80 -j ACCEPT",  # the implicit tcp module
    '-m comment --comment "a \\"b\\" c" -j ACCEPT',  # an escape inside quotes
    '-m comment --comment a"b" -j ACCEPT',
    "-j ACCEPT -p tcp",  # the target not last
    "-s 192.0.2.1 -s 192.0.2.2 -j ACCEPT",  # a basic option twice
    "! -m tcp --dport 1 -j ACCEPT",
    "-m tcp --dport",
    "-m comment --comment",
    "-m foo --log-prefix -j ACCEPT",  # a free-text option's value is the next word, whatever it is
    "-m tcp --dport 80 extra -j ACCEPT",
    "-j",
    "-s ! -j ACCEPT",
    "-c 1 2 -j ACCEPT",
    '-m comment --comment "--comment" -j ACCEPT',  # a free-text option's name as its value
])
def test_text_door_leaves_what_it_does_not_cut(args: str) -> None:
    assert FastRules().parse_text(args) is None
    _check_text(args)  # and whatever the full parser says stands


def test_text_door_takes_the_common_shapes() -> None:
    for args in ("-p tcp -m tcp --dport 80 -j ACCEPT", "! -s 10.244.0.0/16 -d 10.96.0.1/32 -p tcp -m comment "
                 '--comment "ns0/svc0:p80 cluster IP" -m tcp --dport 443 -j KUBE-MARK-MASQ',
                 "-o lo -m owner --uid-owner 1337 -j RETURN", "-m mark ! --mark 0x4000/0x4000 -j RETURN",
                 "-p tcp -m comment --comment ns0/svc0:p80 -m tcp -j DNAT --to-destination 10.244.0.1:8000",
                 "-m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-X",
                 "-j MARK --set-xmark 0x4000/0x4000", "! -d 127.0.0.1/32 -o lo -p tcp -m tcp ! --dport 15008 "
                 "-m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT"):
        assert _check_text(args), args


@pytest.mark.parametrize("args", [
    '-m comment --comment "" -j ACCEPT',
    '-m comment --comment "a  b\t c" -j ACCEPT',
    '-m comment --comment "-j DROP" -j ACCEPT',
    '-m comment --comment "x" -m comment --comment "x" -j ACCEPT',
    '-m comment --comment "' + "y" * 300 + '" -j ACCEPT',  # longer than the kernel keeps
    "-m comment --comment plain -j ACCEPT",
])
def test_text_door_comments(args: str) -> None:
    _check_text(args)


def test_segment_starts_end_every_module() -> None:
    """What follows a segment in the text door ends a module's options for the full parser too."""
    from meshsolve.iptables.fastrule import SEGMENT_STARTS
    from meshsolve.iptables.matches import MODULE_OPTS
    from meshsolve.iptables.options import TERMINATORS, resolve_long

    for word in SEGMENT_STARTS:
        assert word == "!" or word in TERMINATORS
        for mod, spec in MODULE_OPTS.items():
            assert resolve_long(word, spec) is None, (word, mod)


def test_one_door_cache_serves_both_doors() -> None:
    door = FastRules()
    words = "-p tcp -m tcp --dport 80 -j ACCEPT"
    a = door.parse_text(words)
    b = door.parse(words.split())
    assert a is not None and b is not None and a == b
    assert a[0].matches[1] is b[0].matches[1]  # the piece is shared, not rebuilt


def _render_is_rule_text(r: Rulesets) -> None:
    """``render_save``/``render_restore`` render a shared match once: each line is still rule_text."""
    for rs in (r.ipv4, r.ipv6):
        want = [f"-A {c.name} {rule_text(x, rs.family)}".rstrip() for t in rs.tables for c in t.chains
                for x in c.rules]
        for text in (render_save(rs), render_restore(rs)):
            got = [s for s in text.splitlines() if s.startswith("-A ")]
            assert sorted(got) == sorted(want)
        got = [s.split(" ", 1)[1] for s in render_save(rs, counters=True).splitlines() if s.startswith("[")]
        assert sorted(got) == sorted(want)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["a", " ", "\n", "\r\n", "\\", "\\\n", "#", "\x01", "\ufffd", "x" * 40]),
                max_size=20).map("".join))
def test_split_lines_shortcut_matches_the_general_split(text: str) -> None:
    from meshsolve.errors import ParseError
    from meshsolve.iptables.tokens import split_lines, split_lines_general

    try:
        want = split_lines_general(text, "in.txt")
    except ParseError as exc:
        with pytest.raises(ParseError) as got:
            split_lines(text, "in.txt")
        assert (str(got.value), got.value.lineno) == (str(exc), exc.lineno)
        return
    assert split_lines(text, "in.txt") == want


def test_gc_paused_restores_the_collector() -> None:
    import gc

    from meshsolve.model.collector import gc_paused

    assert gc.isenabled()
    with pytest.raises(RuntimeError), gc_paused():
        assert not gc.isenabled()
        raise RuntimeError
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # left as it was found
    finally:
        gc.enable()


@settings(max_examples=400, deadline=None)
@given(st.one_of(
    st.ip_addresses(v=4).map(str),
    st.tuples(st.ip_addresses(v=4), st.integers(0, 40)).map(lambda t: f"{t[0]}/{t[1]}"),
    st.lists(st.sampled_from(["0", "1", "01", "255", "256", "999", ".", "/", "32", "033", " ", "a"]),
             max_size=9).map("".join)))
def test_parse_net_shortcut_is_ip_network(value: str) -> None:
    """Dotted quads skip ``ip_network``'s parser; the network (or the refusal) is the same."""
    import ipaddress

    from meshsolve.iptables.options import parse_net

    try:
        want = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        with pytest.raises(LineError):
            parse_net.__wrapped__(value, "-s")
        return
    got = parse_net.__wrapped__(value, "-s")
    assert (got, str(got), got.prefixlen, type(got)) == (want, str(want), want.prefixlen, type(want))


@pytest.mark.parametrize("bad", [
    "-A KUBE-X -s 10.0.0.256/32 -j ACCEPT",
    "-A KUBE-X -s 10.0.0.1/33 -j ACCEPT",
    "-A KUBE-X -d 192.0.2.1,192.0.2.2 -j ACCEPT",
    "-A KUBE-X -p tcp -m tcp --dport 70000 -j ACCEPT",
    "-A KUBE-X -m owner --uid-owner -j ACCEPT",
    "-A KUBE-X -m mark --mark zz -j ACCEPT",
    "-A KUBE-X -j KUBE-MISSING",
    "-A KUBE-MISSING -j ACCEPT",
    "-A KUBE-X -j DNAT --to-destination 10.0.0.1:99999",
    "-A KUBE-X -m comment --comment \"unclosed -j ACCEPT",
    "-A KUBE-X -s 2001:db8::1/128 -j ACCEPT",
    "-A KUBE-X -i eth0/1 -j ACCEPT",
    "-A KUBE-X ! -p all -j ACCEPT",
    "-A KUBE-X -m statistic --mode random --probability x -j ACCEPT",
    "-A KUBE-X -j MARK --set-xmark 0x4000/0x4000 extra",
    "-A KUBE-X -g KUBE-X --foo",
])
def test_bad_rule_lines_give_the_same_error_both_ways(bad: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad line in a large dump: the same message, line number and line with the fast paths on."""
    text = kube_dump(20).replace("COMMIT\n", f":KUBE-X - [0:0]\n{bad}\nCOMMIT\n", 1)
    fast, full = _reading_both_ways(text, monkeypatch)
    assert fast == full
    if "statistic" not in bad:  # (an opaque --probability value is kept, not refused)
        assert fast[0] == "error" and fast[2] == text.splitlines().index(bad) + 1


# --- the whole-line door (``FastRules.parse_line``) ----------------------------------------------


def _check_line(line: str) -> bool:
    """The whole-line door against the full parser on one ``-A CHAIN ...`` line (stripped, as the
    reader gives it); True if the door answered. Its origin is the one it was given."""
    from meshsolve.model.rules import Origin

    got = FastRules().parse_line(line, None, "in.txt", 7)
    try:
        words = restore_words(line)
    except LineError:  # the reader refuses the line
        assert got is None, line
        return False
    if got is not None:
        chain, rule, jump = got
        assert words[:2] == ["-A", chain], line
        assert rule.origin == Origin("in.txt", 7) and rule.counters is None
        got_pair: object = (rule, jump)
    else:
        got_pair = None
    return _agrees(got_pair, lambda: words[2:] if len(words) > 2 else ["!"], line)


def _rule_lines(text: str) -> list[str]:
    return [s.strip() for s in text.splitlines() if s.strip().startswith("-A ")]


@pytest.mark.parametrize("n", [1, 7, 150, 2500])
def test_whole_line_door_takes_every_kube_proxy_and_istio_line(n: int) -> None:
    lines = _rule_lines(kube_dump(n))
    door = FastRules()
    got = [door.parse_line(s, None, "in.txt", k) for k, s in enumerate(lines)]
    assert lines and all(g is not None for g in got)
    for s in lines[:: max(1, len(lines) // 300)]:  # and a sample of them against the full parser
        assert _check_line(s), s


def test_whole_line_door_on_every_stored_rule_line() -> None:
    """Every ``-A`` line of the goldens and tests/data: the door's answer is the full parser's."""
    seen: set[str] = set()
    taken = 0
    for path in _text_inputs():
        for s in _rule_lines(path.read_text(errors="replace")):
            if s not in seen:
                seen.add(s)
                taken += _check_line(s)
    assert len(seen) > 250 and taken > 150  # (restore input in Istio's own order is left to the other doors)


@_SETTINGS
@given(st.sampled_from(["ipv4", "ipv6"]).flatmap(lambda f: st.tuples(st.just(f), rules(f))),
       st.sampled_from(["ISTIO_OUTPUT", "KUBE-SEP-X", "a\tb", "c"]), st.randoms(use_true_random=False))
def test_whole_line_door_on_rule_lines_shuffled_and_damaged(fr: tuple[str, Rule], chain: str,
                                                            rnd: random.Random) -> None:
    family, r = fr
    text = rule_text(r, family)  # type: ignore[arg-type]
    _check_line(f"-A {chain} {text}".strip())
    words = text.split(" ")
    if len(words) > 1:
        k = rnd.randrange(len(words))
        _check_line(f"-A {chain} " + " ".join(words[:k] + words[k + 1:]))  # a word dropped
        _check_line(f"-A {chain} " + " ".join([*words[:k], words[k], *words[k:]]))  # a word doubled
        _check_line(f"-A {chain} " + " ".join(words[:k]) + "  " + " ".join(words[k:]))  # two spaces
        _check_line(f"-A {chain} " + " ".join(words[:k]) + ' "' + " ".join(words[k:]))  # a stray quote
        cuts = [k for k, w in enumerate(words) if w in ("-s", "-d", "-i", "-o", "-p", "-m", "-j", "-g")]
        pieces = [" ".join(words[a:b]) for a, b in zip([0, *cuts], [*cuts, len(words)], strict=True) if a < b]
        rnd.shuffle(pieces)
        _check_line(f"-A {chain} " + " ".join(pieces))


@pytest.mark.parametrize("line", [
    "-A X -d 10.0.0.1/32 -s 10.0.0.2/32 -j ACCEPT",  # not in iptables-save's order
    "-A X -p tcp -s 10.0.0.2/32 -j ACCEPT",
    "-A X -s 10.0.0.1/32 -s 10.0.0.2/32 -j ACCEPT",
    "-A X -p tcp --dport 80 -j ACCEPT",  # the implicit tcp module
    "-A X -j ACCEPT -p tcp",
    "-A X -j LOG --log-prefix \"a b\"",
    "-A X -m comment --comment \"a \\\" b\" -j ACCEPT",
    "-A X -s -d -j ACCEPT",
    "-A X -s ! -j ACCEPT",
    "-A X",
    "-A X -j",
    "-A X -g Y --foo",
    "-A X -j DNAT --to-destination 10.0.0.1:99999",
    "-A X -j REDIRECT --to-ports 15001",  # no -p before a port: refused by the full parser
    "-A X -p tcp -j REDIRECT --to-ports 15001",
    "-A X ! -p all -j ACCEPT",
    "-A X -s 0.0.0.0/0 -d 0.0.0.0/0 -p all -j ACCEPT",
    "-A X -i eth0/1 -j ACCEPT",
    "-A X -m comment --comment \"--comment\" -j ACCEPT",
    "-A X -m comment --comment x -m tcp -p tcp -j ACCEPT",
    "-A X -p tcp -m tcp --dport 80 -m comment --comment \"x y\" -j ACCEPT",
    "-A X -j MARK --set-xmark 0x4000/0x4000",
    "-A X -j MARK --set-xmark 0x4000/0x4000 extra",
    "-A X -p udp -m udp --dport 53 -j REDIRECT --to-ports 15053",
    "-A X -c 1 2 -j ACCEPT",
    "-A X -s 10.0.0.256/32 -j ACCEPT",
    "-A X -m statistic --mode random --probability 0.5 -j KUBE-SEP-X",
])
def test_whole_line_door_edge_lines(line: str) -> None:
    _check_line(line)


def test_whole_line_door_takes_the_common_shapes() -> None:
    for line in ('-A KUBE-SVC-X ! -s 10.244.0.0/16 -d 10.96.0.1/32 -p tcp -m comment --comment '
                 '"ns0/svc0:p80 cluster IP" -m tcp --dport 443 -j KUBE-MARK-MASQ',
                 '-A KUBE-SEP-X -p tcp -m comment --comment "ns0/svc0:p80" -m tcp -j DNAT --to-destination '
                 '10.244.0.1:8000',
                 "-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m tcp ! --dport 15008 -m owner --uid-owner 1337 "
                 "-j ISTIO_IN_REDIRECT", "-A ISTIO_OUTPUT -j ISTIO_REDIRECT", "-A ISTIO_OUTPUT -o lo -j RETURN",
                 "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001"):
        assert _check_line(line), line


# --- the NAT address shortcut (``model/rules.py``) --------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.one_of(
    st.ip_addresses(v=4).map(str),
    st.tuples(st.ip_addresses(v=4), st.integers(0, 70000)).map(lambda t: f"{t[0]}:{t[1]}"),
    st.lists(st.sampled_from(["0", "1", "01", "255", "256", "999", ".", ":", "80", "65535", "65536", "080",
                              " ", "-", "[", "]", "a"]), max_size=10).map("".join)))
def test_plain_nat_address_decodes_as_the_general_way(text: str) -> None:
    """``A.B.C.D[:PORT]`` skips ``ipaddress``' parser; the spec, and the canonical text, are the same."""
    from meshsolve.model import rules as model

    got_spec = model.decode_nat.__wrapped__(text)
    got_text = model.canonical_nat(text)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(model, "_plain_nat", lambda _text: None)
        mp.setattr(model, "_PLAIN_NAT", __import__("re").compile(r"(?!)"))
        want_spec = model.decode_nat.__wrapped__(text)
        model.decode_nat.cache_clear()
        want_text = model.canonical_nat(text)
    model.decode_nat.cache_clear()
    assert got_spec == want_spec
    assert got_text == want_text


# --- the parse command's shortcuts (``cli.py``) ---------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["*nat", ":X - [0:0]", "-A X", "[1:2]", "#", "# c", " ", "\t", "\n", "\r\n",
                                 "\x0b", "\ufeff", "table ip x {", "add table ip x", "nft list ruleset", "$ ",
                                 "{", '{"nftables":', "x"]), max_size=8).map("".join))
def test_iptables_start_is_never_nft(text: str) -> None:
    """What ``parse`` reads as iptables without importing nftables is never nftables input."""
    from meshsolve.cli import _opens_iptables_text
    from meshsolve.nftables import is_nft

    if _opens_iptables_text(text):
        assert not is_nft(text)


def test_iptables_start_on_stored_inputs() -> None:
    from meshsolve.cli import _opens_iptables_text
    from meshsolve.nftables import is_nft

    paths = _text_inputs() + sorted(GOLDENS.parent.rglob("*.nft-list-ruleset.txt"))
    opened = 0
    for path in paths:
        text = path.read_text(errors="replace")
        if _opens_iptables_text(text):
            opened += 1
            assert not is_nft(text), path
    assert opened > 30  # (the rest are logs, transcripts, listings: nftables detection decides them)


def test_parse_command_reads_nft_and_restores_the_collector(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    import gc

    from meshsolve.cli import main
    from meshsolve.nftables import parse_text as nft_parse
    from meshsolve.nftables import render as nft_render

    nft = ROOT / "tests" / "data" / "ambient" / "ingress-before-1.29.nft.golden"
    assert gc.isenabled()
    assert main(["parse", str(nft)]) == 0
    out = capsys.readouterr().out
    assert out == nft_render(nft_parse(nft.read_text()))
    assert gc.isenabled()
    bad = tmp_path / "bad.txt"
    bad.write_text("*nat\n-A NOPE -j ACCEPT\nCOMMIT\n")
    assert main(["parse", str(bad)]) == 65  # an error on the way out: the collector is back too
    assert gc.isenabled()
