"""Robustness of the nftables readers: bad input never crashes them or hangs, and every error is a
``ParseError`` that names a line of the input.

CI profile: a few hundred mutated inputs per form (``tests/fuzz/nft_harness.py``). The campaign of
100,000 inputs per form is ``benchmarks/fuzz_campaign.py --parser nft-commands|nft-listing|nft-json``
(and ``test_campaign_100k`` below with ``--run-slow``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fuzz import harness as H
from fuzz import nft_harness as N
from hypothesis import HealthCheck, Phase, given, settings

from meshsolve.errors import ParseError
from meshsolve.nftables import parse_text

ROOT = Path(__file__).resolve().parent.parent
CI = settings(max_examples=300, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))


def _explain(out: H.Outcome, text: str) -> str:
    return f"{out.kind}: {out.detail}\ninput: {text!r}"[:3000]


@pytest.mark.parametrize("form", N.FORMS)
def test_seeds_are_real_and_accepted(form: str) -> None:
    corpus = N.seeds(form)
    assert len(corpus) >= {"commands": 42 + 2 + 1, "listing": 3 + 2, "json": 3 + 2}[form]
    for text in corpus:
        assert N.run_nft(text).kind == "ok", text[:200]


def test_runner_counts_other_errors_as_crashes() -> None:
    # a ParseError without a line, or any other exception, is a crash
    assert H.classify(lambda: (_ for _ in ()).throw(ParseError("x")), lines=2).kind == "crash"
    assert N.run_nft("add table inet t\nadd rule inet t c accept\n").kind == "rejected"


@CI
@given(N.strategy("commands"))
def test_fuzz_commands(text: str) -> None:
    out = N.run_nft(text)
    assert out.kind != "crash", _explain(out, text)


@CI
@given(N.strategy("listing"))
def test_fuzz_listing(text: str) -> None:
    out = N.run_nft(text)
    assert out.kind != "crash", _explain(out, text)


@CI
@given(N.strategy("json"))
def test_fuzz_json(text: str) -> None:
    out = N.run_nft(text)
    assert out.kind != "crash", _explain(out, text)


HUGE = "9" * 5000


@pytest.mark.parametrize("text", [
    f"add table inet t\nadd chain inet t c\nadd rule inet t c tcp dport {HUGE}\n",
    f"add table inet t\nadd chain inet t c\nadd rule inet t c index {HUGE} accept\n",
    f"add table inet t\nadd chain inet t c {{ type nat hook output priority {HUGE} ; }}\n",
    f"add table inet t\nadd chain inet t c\nadd rule inet t c counter packets {HUGE} bytes 1\n",
    "add table inet t\nadd chain inet t c\nadd rule inet t c " + "{ " * 20_000 + "\n",
    '{"nftables": [{"table": {"family": "inet", "name": "t"}}, {"chain": {"family": "inet", "table": "t", '
    '"name": "c", "type": "nat", "hook": "output", "prio": ' + HUGE + '}}]}',
    '{"nftables": [{"rule": {"family": "inet", "table": "t", "chain": "c", "expr": [' + '{"&": [' * 3000
    + "1" + ", 1]}" * 3000 + "]}}]}",
], ids=["port", "index", "priority", "counter", "braces", "json-prio", "json-deep-mask"])
def test_odd_inputs_are_parse_errors_with_lines(text: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_text(text)
    assert info.value.lineno is not None and 1 <= info.value.lineno <= H.line_count(text)


def test_json_set_element_that_is_a_list_is_kept_as_text() -> None:
    """Found by the JSON campaign: a list as an element of a typed set raised TypeError."""
    from meshsolve.nftables import Opaque

    text = ('{"nftables": [{"table": {"family": "inet", "name": "t"}}, {"set": {"family": "inet", "table": "t", '
            '"name": "s", "type": "inet_service", "elem": [[[22]], 443]}}]}')
    assert N.run_nft(text).kind == "ok"
    assert parse_text(text).tables[0].sets[0].elements == (Opaque("[[22]]"), 443)


def test_one_line_json_of_a_big_ruleset_is_read() -> None:
    """``nft -j`` prints everything on one line: no line-length limit for JSON."""
    rules = [{"rule": {"family": "inet", "table": "t", "chain": "c",
                       "expr": [{"match": {"op": "==", "left": {"meta": {"key": "mark"}}, "right": k}},
                                {"accept": None}]}} for k in range(3000)]
    text = json.dumps({"nftables": [{"table": {"family": "inet", "name": "t"}},
                                    {"chain": {"family": "inet", "table": "t", "name": "c"}}, *rules]})
    assert len(text) > 64 * 1024
    assert parse_text(text).rule_count() == 3000


@pytest.mark.slow
@pytest.mark.parametrize("form", N.FORMS)
def test_campaign_100k(form: str, tmp_path: Path) -> None:
    out = tmp_path / f"nft-{form}.json"
    n = os.environ.get("MESHSOLVE_FUZZ_INPUTS", "100000")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/fuzz_campaign.py"), "--parser", f"nft-{form}",
                           "--inputs", n, "--out", str(out)], capture_output=True, text=True, cwd=ROOT)
    summary = json.loads(out.read_text())
    assert summary["finished"] and summary["inputs"] >= int(n)
    assert not summary["crashes"], summary["crashes"]
    assert proc.returncode == 0, proc.stderr[-2000:]
