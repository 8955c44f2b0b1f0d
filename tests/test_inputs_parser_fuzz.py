"""Robustness of the parsers: bad input never crashes them, never hangs, and big input
is refused before it is read whole.

CI profile: a few hundred Hypothesis-mutated inputs per parser (``tests/fuzz/harness.py``); the
100,000-per-parser campaign is ``benchmarks/fuzz_campaign.py`` (and ``test_campaign_*`` below with
``--run-slow``). Every ``ParseError`` must carry a line number within the input (argv has no lines).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
from fuzz import harness as H
from hypothesis import HealthCheck, Phase, given, settings

from meshsolve.errors import MeshsolveError, ParseError, SpecError
from meshsolve.iptables import MAX_INPUT_BYTES, parse_file, parse_text
from meshsolve.istio import parse_flags, pods_from_file, pods_from_text
from meshsolve.istio.pod import MAX_MANIFEST_BYTES

ROOT = Path(__file__).resolve().parent.parent

CI = settings(max_examples=300, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))

IPTABLES_SEEDS = H.iptables_seeds()
POD_SEEDS = H.pod_seeds()
FLAG_SEEDS = H.flag_seeds()


def _explain(outcome: H.Outcome, value: object) -> str:
    return f"{outcome.kind}: {outcome.detail}\ninput: {value!r}"[:3000]


# ------------------------------------------------------------------------------------------------
# The seeds are real and valid: mutations start from inputs the parsers accept


def test_seed_corpora_are_real_and_accepted() -> None:
    assert len(IPTABLES_SEEDS) >= 35 + 3  # the 35 goldens, the legacy vectors, own corpus
    assert len(POD_SEEDS) >= 10 and len(FLAG_SEEDS) >= 20
    for text in IPTABLES_SEEDS:
        assert H.run_iptables(text).kind == "ok"
    accepted = [H.run_pods(t).kind for t in POD_SEEDS]
    assert accepted.count("ok") >= 10 and "crash" not in accepted  # tests/data/pods/bad are rejected
    flags = [H.run_flags(s.version, s.args, dict(s.env)).kind for s in FLAG_SEEDS]
    # all but the draft-PR goldens' flags (options Istio never merged) are accepted
    assert flags.count("ok") >= len(flags) - 4 and "crash" not in flags


# ------------------------------------------------------------------------------------------------
# The harness itself can fail


def test_harness_reports_foreign_exceptions_bad_line_numbers_and_hangs() -> None:
    def boom() -> None:
        raise KeyError("x")

    def no_line() -> None:
        raise ParseError("bad")

    def far_line() -> None:
        raise ParseError("bad", lineno=7)

    def hang() -> None:
        while True:
            pass

    assert H.classify(boom, lines=3).kind == "crash"
    assert H.classify(no_line, lines=3).kind == "crash"
    assert H.classify(far_line, lines=3).kind == "crash"
    assert H.classify(no_line, lines=None).kind == "rejected"
    assert H.classify(lambda: None, lines=1).kind == "ok"
    t0 = time.monotonic()
    out = H.classify(hang, lines=1, time_limit=0.2)
    assert out.kind == "crash" and "hang" in out.detail and time.monotonic() - t0 < 2


# ------------------------------------------------------------------------------------------------
# CI fuzz profile


@CI
@given(H.mutated_text(IPTABLES_SEEDS))
def test_fuzz_iptables(text: str) -> None:
    out = H.run_iptables(text)
    assert out.kind != "crash", _explain(out, text)


@CI
@given(H.mutated_text(POD_SEEDS))
def test_fuzz_pod_manifests(text: str) -> None:
    out = H.run_pods(text)
    assert out.kind != "crash", _explain(out, text)


@CI
@given(H.mutated_flags(FLAG_SEEDS))
def test_fuzz_flags(case: tuple[str, tuple[str, ...], dict[str, str]]) -> None:
    out = H.run_flags(*case)
    assert out.kind != "crash", _explain(out, case)


# ------------------------------------------------------------------------------------------------
# Regressions: inputs the fuzzer found (each crashed with a non-meshsolve exception before the fix)

HUGE = "9" * 5000  # int() refuses more than 4300 digits with a bare ValueError


@pytest.mark.parametrize("text", [
    f"*nat\n:OUTPUT ACCEPT [{HUGE}:0]\nCOMMIT\n",
    f"*nat\n[{HUGE}:0] -A OUTPUT -j RETURN\nCOMMIT\n",
    f"*nat\n-I OUTPUT {HUGE} -j RETURN\nCOMMIT\n",
    f"iptables -t nat -I OUTPUT {HUGE} -j RETURN\n",
    f"iptables -t nat -D OUTPUT {HUGE}\n",
    f"*filter\n-A OUTPUT -m owner --uid-owner {HUGE} -j ACCEPT\nCOMMIT\n",
    f"*filter\n-A OUTPUT -m owner --gid-owner 1-{HUGE} -j ACCEPT\nCOMMIT\n",
], ids=["chain-counter", "rule-counter", "insert-position", "shell-insert", "shell-delete", "uid", "gid-range"])
def test_iptables_huge_numbers_are_parse_errors(text: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_text(text)
    assert info.value.lineno is not None and 1 <= info.value.lineno <= text.count("\n") + 1


@pytest.mark.parametrize("argv", [
    ["-b", HUGE], ["-p", HUGE], ["-z", "\u00b2"], ["-b", "80,\u00b2"], ["-t", HUGE], ["-r", HUGE],
    ["--inbound-tunnel-port", HUGE], ["-q", "\u0663"],
], ids=["ports-huge", "proxy-port-huge", "superscript", "superscript-in-list", "mark-huge", "table-huge",
        "tunnel-huge", "arabic-indic"])
def test_flags_odd_numbers_are_spec_errors(argv: list[str]) -> None:
    with pytest.raises(SpecError):
        parse_flags(argv)


POD = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n"


@pytest.mark.parametrize(("text", "line"), [
    (POD + "spec:\n  containers:\n  - name: a\n    ports: [{containerPort: " + HUGE + "}]\n", 1),
    (POD + "  creationTimestamp: 2026-02-30\n", 1),
    (POD + "  labels: {a: \x07}\n", 5),
    (POD + "  labels: {a: \udcff}\n", 5),
    ("kind: Pod\nspec: " + "[" * 50_000 + "]" * 50_000 + "\n", 2),
    ("kind: [Pod]\n", 1),
    ("kind: List\nitems: 5\n", 1),
    (POD + "spec:\n  initContainers:\n  - name: istio-init\n    args: '-p 15001'\n", 8),
    (POD + "  annotations: [a, b]\n", 5),
    ("apiVersion: v1\nkind: Pod\nmetadata: [a]\n", 1),  # the document's line
    ("kind: Deployment\nspec: {template: [x]}\n", 1),
    (POD + "spec: {containers: 5}\n", 4),  # flow style: the pod's name line
    ("", 1),
], ids=["huge-int", "bad-date", "control-char", "lone-surrogate", "deep-nesting", "kind-list", "items-int",
        "args-string", "annotations-list", "metadata-list", "template-list", "containers-int", "empty"])
def test_pod_manifest_shapes_are_spec_errors_with_lines(text: str, line: int) -> None:
    with pytest.raises(SpecError) as info:
        pods_from_text(text)
    assert info.value.lineno == line, str(info.value)


def test_pod_errors_without_a_finer_position_name_the_pod() -> None:
    text = ("kind: List\nitems:\n- kind: Pod\n  metadata:\n    name: good\n- kind: Pod\n  metadata:\n"
            "    name: bad\n  status:\n    podIP: 192.0.2.999\n")
    with pytest.raises(SpecError) as info:
        pods_from_text(text)
    assert info.value.lineno == 8  # the bad pod's name line


def test_large_pod_list_is_linear_not_quadratic() -> None:
    """Finding a key's line per pod was quadratic: a 1 MB List of 2,222 pods took 411 s."""
    item = (ROOT / "tests/fuzz/corpus/pods/list-mixed.yaml").read_text().split("items:\n", 1)[1]
    text = "kind: List\nitems:\n" + item * (300_000 // len(item))
    t0 = time.perf_counter()
    pods = pods_from_text(text)
    assert len(pods) > 600
    assert time.perf_counter() - t0 < 15  # ~1 s here; the quadratic version took ~37 s


# ------------------------------------------------------------------------------------------------
# Big inputs: refused before they are read whole, memory stays small


def _write_lazily(path: Path, size: int, unit: bytes) -> None:
    chunk = unit * (1024 * 1024 // len(unit) + 1)
    with path.open("wb") as fh:
        written = 0
        while written < size:
            part = chunk[:size - written]
            fh.write(part)
            written += len(part)


def test_iptables_file_over_the_limit_is_refused_without_reading_it(tmp_path: Path) -> None:
    big = tmp_path / "big.rules"
    _write_lazily(big, MAX_INPUT_BYTES + 1, b"-A OUTPUT -p tcp -j RETURN\n")
    assert big.stat().st_size > 100 * 1000 * 1000
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        with pytest.raises(ParseError, match="larger than"):
            parse_file(big)
        elapsed = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 1.0 and peak < 1024 * 1024, (elapsed, peak)


def test_iptables_text_over_the_limit_is_refused_at_once() -> None:
    text = "#" * (MAX_INPUT_BYTES + 1)
    t0 = time.perf_counter()
    with pytest.raises(ParseError, match="larger than"):
        parse_text(text)
    assert time.perf_counter() - t0 < 0.5


def test_iptables_stdin_over_the_limit_is_refused_with_bounded_memory(tmp_path: Path) -> None:
    """``meshsolve parse -`` reads at most the limit + 1 byte from a pipe, then exits 65."""
    big = tmp_path / "big.rules"
    _write_lazily(big, MAX_INPUT_BYTES + 4096, b"-A OUTPUT -p tcp -j RETURN\n")
    # the process's own peak (VmHWM belongs to the address space exec made; getrusage's ru_maxrss
    # keeps the forking parent's peak on Linux, and a pytest worker's can be half a gigabyte)
    code = ("import re, sys\nfrom meshsolve.cli import main\nrc = main(['parse', '-'])\n"
            "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)\n"
            "print(hwm, file=sys.stderr)\nsys.exit(rc)\n")
    with big.open("rb") as fh:
        proc = subprocess.run([sys.executable, "-c", code], stdin=fh, capture_output=True, text=True,
                              timeout=120, cwd=ROOT)
    assert proc.returncode == 65, proc.stderr
    assert "larger than" in proc.stderr
    max_rss_kb = int(proc.stderr.strip().splitlines()[-1])
    assert max_rss_kb < 400 * 1024, max_rss_kb  # one bounded read buffer, not a growing copy


def test_iptables_long_line_and_binary_are_refused_with_their_line() -> None:
    with pytest.raises(ParseError) as info:
        parse_text("*nat\n-A OUTPUT " + "-m tcp " * 20_000 + "\nCOMMIT\n")
    assert info.value.lineno == 2
    with pytest.raises(ParseError) as info:
        parse_text("*nat\n:OUTPUT ACCEPT [0:0]\n\x00\x01\x02\nCOMMIT\n")
    assert info.value.lineno == 3


def test_pod_manifest_over_the_limit_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    _write_lazily(big, MAX_MANIFEST_BYTES + 1, b"# padding padding padding\n")
    t0 = time.perf_counter()
    with pytest.raises(SpecError, match="larger than"):
        pods_from_file(big)
    assert time.perf_counter() - t0 < 2.0
    with pytest.raises(SpecError, match="larger than"):
        pods_from_text("#" * (MAX_MANIFEST_BYTES + 1))


def test_pod_manifest_100mb_is_refused_before_parsing(tmp_path: Path) -> None:
    big = tmp_path / "huge.yaml"
    with big.open("wb") as fh:  # sparse: 100 MB that occupy no disk
        fh.truncate(100 * 1000 * 1000)
    tracemalloc.start()
    try:
        with pytest.raises(SpecError, match="larger than"):
            pods_from_file(big)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * MAX_MANIFEST_BYTES + 1024 * 1024  # the bounded read, not 100 MB


def test_pod_manifest_not_utf8_names_the_line(tmp_path: Path) -> None:
    p = tmp_path / "latin1.yaml"
    p.write_bytes(b"kind: Pod\nmetadata:\n  name: caf\xe9\n")
    with pytest.raises(SpecError) as info:
        pods_from_file(p)
    assert info.value.lineno == 3


def test_flags_huge_argv_finishes_quickly() -> None:
    argv = ["-b", ",".join(["80"] * 200_000)]
    t0 = time.perf_counter()
    with contextlib.suppress(MeshsolveError):
        parse_flags(argv)
    assert time.perf_counter() - t0 < 5
    with pytest.raises(SpecError):
        parse_flags(["-x", "x" * 10_000_000])


# ------------------------------------------------------------------------------------------------
# Slow profile: the 100,000-inputs-per-parser campaign (also runnable as benchmarks/fuzz_campaign.py)


@pytest.mark.slow
@pytest.mark.parametrize("parser", ["iptables", "pods", "flags", "specs"])
def test_campaign_100k(parser: str, tmp_path: Path) -> None:
    import json

    out = tmp_path / f"{parser}.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/fuzz_campaign.py"), "--parser", parser,
                           "--inputs", os.environ.get("MESHSOLVE_FUZZ_INPUTS", "100000"), "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT)
    summary = json.loads(out.read_text())
    assert summary["finished"] and summary["inputs"] >= int(os.environ.get("MESHSOLVE_FUZZ_INPUTS", "100000"))
    assert not summary["crashes"], summary["crashes"]
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("inner", ["{" * 5000, "[" * 100_000, "a: " + HUGE, "a: 2026-02-30", "\x07"],
                         ids=["deep-map", "deep-list", "huge-int", "bad-date", "control-char"])
def test_proxy_config_annotation_yaml_errors_are_spec_errors(inner: str) -> None:
    """Found by the campaign: deep nesting in proxy.istio.io/config raised RecursionError."""
    import json

    text = "kind: Pod\nmetadata:\n  name: p\n  annotations:\n    proxy.istio.io/config: " + json.dumps(inner) + "\n"
    with pytest.raises(SpecError) as info:
        pods_from_text(text)
    assert info.value.lineno == 5


# ------------------------------------------------------------------------------------------------
# The synthesis spec parser (meshsolve.analysis.spec): both findings of the first campaign, fixed by the lead


def test_spec_control_character_names_its_line() -> None:
    from meshsolve.analysis.spec import parse_spec

    text = (ROOT / "specs/istio-later-knobs.yaml").read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    lines[2] = lines[2].rstrip("\n") + "\x07\n"
    with pytest.raises(SpecError) as info:
        parse_spec("".join(lines))
    assert info.value.lineno == 3


def test_spec_deep_nesting_is_a_spec_error() -> None:
    from meshsolve.analysis.spec import parse_spec

    with pytest.raises(SpecError):
        parse_spec("name: x\nfamily: " + "[" * 50_000 + "]" * 50_000 + "\n")


@settings(max_examples=150, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=list(HealthCheck))
@given(H.mutated_text(H.spec_seeds()))
def test_fuzz_specs(text: str) -> None:
    out = H.run_spec(text)
    assert out.kind != "crash", _explain(out, text)


# ------------------------------------------------------------------------------------------------
# The CLI on fuzzed input: a one-line error and exit 65, never a traceback


@settings(max_examples=40, deadline=None, database=None, phases=[Phase.generate],
          suppress_health_check=list(HealthCheck))
@given(iptables=H.mutated_text(IPTABLES_SEEDS), pod=H.mutated_text(POD_SEEDS))
def test_cli_on_fuzzed_files_exits_0_or_65(iptables: str, pod: str) -> None:
    import tempfile

    from meshsolve.cli import main

    with tempfile.TemporaryDirectory(prefix="msrb") as d:
        rules = Path(d) / "rules.txt"
        rules.write_bytes(iptables.encode("utf-8", "surrogateescape"))
        manifest = Path(d) / "pod.yaml"
        manifest.write_bytes(pod.encode("utf-8", "surrogateescape"))
        for argv in (["parse", str(rules)], ["generate", "--pod", str(manifest), "-o", "script"]):
            with contextlib.redirect_stdout(None), contextlib.redirect_stderr(None):
                rc = main(argv)
            assert rc in (0, 65), (argv, rc)
