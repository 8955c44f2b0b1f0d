"""The long fuzz campaign over meshsolve's parsers.

    .venv/bin/python benchmarks/fuzz_campaign.py --parser iptables --inputs 100000 --out /tmp/iptables.json

Runs Hypothesis over mutated real inputs (see ``tests/fuzz/harness.py``) in chunks of ``--chunk``
examples (a fresh Hypothesis run per chunk keeps its memory flat), counts every input the parser
was called with and classifies the answer (ok / rejected with a line number / refused with another
``MeshsolveError`` / crash). Crashes do not stop the campaign: the first input of each distinct crash
is saved. The JSON summary is rewritten after every chunk, so a campaign cut short still reports
what finished. Exit status 1 when any crash was seen.
"""

from __future__ import annotations

import argparse
import collections
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fuzz import harness as H  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def strategy_and_runner(parser: str) -> tuple[st.SearchStrategy[Any], Any]:
    if parser == "flags":
        return H.mutated_flags(H.flag_seeds()), lambda x: H.run_flags(*x)
    if parser == "pods":
        return H.mutated_text(H.pod_seeds()), H.run_pods
    if parser == "iptables":
        return H.mutated_text(H.iptables_seeds()), H.run_iptables
    if parser == "specs":
        return H.mutated_text(H.spec_seeds()), H.run_spec
    if parser.startswith("nft-"):
        from fuzz import nft_harness as N

        return N.strategy(parser.removeprefix("nft-")), N.run_nft
    raise SystemExit(f"unknown parser {parser!r}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parser", required=True,
                    choices=("iptables", "pods", "flags", "specs", "nft-commands", "nft-listing", "nft-json"))
    ap.add_argument("--inputs", type=int, default=100_000)
    ap.add_argument("--chunk", type=int, default=5_000)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    strat, runner = strategy_and_runner(args.parser)
    counts: collections.Counter[str] = collections.Counter()
    crashes: dict[str, dict[str, Any]] = {}
    times: list[float] = []
    t_start = time.monotonic()

    def record(x: Any) -> None:
        o = runner(x)
        counts[o.kind] += 1
        times.append(o.seconds)
        if o.kind == "crash":
            key = o.detail[:120]
            entry = crashes.setdefault(key, {"count": 0, "example": repr(x)[:4000]})
            entry["count"] += 1

    def write(done: bool) -> None:
        ts = sorted(times)
        summary = {
            "parser": args.parser, "inputs": sum(counts.values()), "target": args.inputs,
            "finished": done, "counts": dict(counts), "crashes": crashes,
            "seconds": round(time.monotonic() - t_start, 1),
            "max_input_seconds": round(ts[-1], 4) if ts else None,
            "p99_input_seconds": round(ts[int(0.99 * (len(ts) - 1))], 4) if ts else None,
            "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
        Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")

    while sum(counts.values()) < args.inputs:
        n = min(args.chunk, args.inputs - sum(counts.values()))

        @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(strat)
        def chunk(x: Any) -> None:
            record(x)

        before = sum(counts.values())
        chunk()
        write(False)
        if sum(counts.values()) == before:  # pragma: no cover - Hypothesis generated nothing
            break
    write(True)
    print(json.dumps({"parser": args.parser, "inputs": sum(counts.values()), "counts": dict(counts),
                      "crash_kinds": len(crashes)}))
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
