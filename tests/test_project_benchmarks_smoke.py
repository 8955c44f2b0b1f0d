"""The benchmark harness (``python -m benchmarks.run``) at its smallest sizes, so it never rots.

Speed is measured by the benchmark, never asserted here: this only checks that every section runs
and that the table, the JSON and the plot have the expected rows.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the benchmarks live beside the package, not in it
    sys.path.insert(0, str(ROOT))

from benchmarks import run as bench  # noqa: E402
from benchmarks.kubeproxy import kube_dump, service_count  # noqa: E402
from meshsolve.iptables import parse_text  # noqa: E402


def test_kube_proxy_dump_parses_with_the_expected_chains() -> None:
    text = kube_dump(100)
    rules = parse_text(text)
    nat = rules.ipv4.table("nat")
    assert nat is not None
    names = [c.name for c in nat.chains]
    assert "KUBE-SERVICES" in names and "ISTIO_OUTPUT" in names
    svc = nat.chain("KUBE-SERVICES")
    assert svc is not None and len(svc.rules) == service_count(100) + 1  # + the NodePort catch-all
    assert sum(n.startswith("KUBE-SVC-") for n in names) == service_count(100)
    # Istio's jumps come before kube-proxy's in OUTPUT and PREROUTING
    output = nat.chain("OUTPUT")
    assert output is not None and [str(getattr(r.target, "chain", "")) for r in output.rules] == \
        ["ISTIO_OUTPUT", "KUBE-SERVICES"]


def test_smoke_run_writes_the_table_json_and_plot(tmp_path: Path, goldens_dir: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHSOLVE_SHARED", str(goldens_dir.parent.parent))
    assert bench.main(["--smoke", "--out", str(tmp_path)]) == 0

    doc = json.loads((tmp_path / "results.json").read_text())
    res = doc["results"]
    assert doc["profile"] == "smoke"
    assert set(res) == {"idle", "goldens", "cli", "synth", "growth", "brute", "scale", "parse", "nft"}
    for section in ("goldens", "growth", "brute", "parse", "nft"):
        assert res[section] and all(r["status"] == "ok" for r in res[section]), res[section]
    g = res["goldens"][0]["result"]
    assert g["one_same_world_s"] and g["all_same_world_s"] and g["enum_flows"] > 0
    assert len(g["all_verdicts"]) == g["n_default_props"]
    assert res["cli"][0]["exit_codes"][0] in (0, 79, 80)
    assert [r["case"] for r in res["scale"]] == ["scale", "scale_enum"]
    assert res["scale"][1]["status"] == "ok" and res["scale"][1]["result"]["flows"] > 0
    assert res["brute"][0]["result"]["examined"] >= 1
    grown = res["growth"][0]["result"]
    assert grown["kind"] == "synthesized" and grown["proved"] and grown["conditions"] > 0
    assert grown["alternatives"] > grown["conditions"] and grown["apps"] == 3
    nft = res["nft"][0]["result"]
    assert nft["iptables"]["rules"] > 0 and nft["nftables"]["rules"] > 0 and nft["ratio_same"] > 0
    for r in (*res["goldens"], *res["parse"], *res["scale"]):
        if r["status"] == "ok":
            assert r["peak_rss_mib"] > 0

    md = (tmp_path / "results.md").read_text()
    for heading in ("## Targets", "## 1. Istio goldens", "## Whole processes", "## Baseline (b): brute-force",
                    "## Synthesis as the world grows", "## 3. Scale", "## Parsing"):
        assert heading in md
    assert f"| `{g['file']}` |" in md
    assert "| `meshsolve check --setup E` |" in md
    assert "| `istio-later-knobs.yaml` |" in md
    assert "one property, Istio golden, warm in-process" in md
    assert "parsing ≥ 100,000 lines/s" in md
    assert "| +0 / +0 / +0 | 3 |" in md

    svg = (tmp_path / "scale.svg").read_text()
    assert svg.startswith("<svg") and "symbolic check" in svg and "class-complete" in svg
