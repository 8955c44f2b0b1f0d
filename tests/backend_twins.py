"""Istio's 27 twin configurations (the iptables goldens that have a ``--native-nftables`` golden of
the same name): both pods, and ``meshsolve diff`` between them with each difference replayed on the
kernel in both backends. Used by ``tests/test_nftables_backend_equivalence.py`` and to write the
table in ``docs/nftables.md`` (``python tests/backend_twins.py [NAME ...]``)."""

from __future__ import annotations

import ipaddress
import json
import sys
import time
from typing import Any

import attrs
from conftest import REFERENCE
from istio_vectors import BASE, MASTER

from meshsolve.analysis.diff import Different, DiffUnknown, Equivalent, diff
from meshsolve.analysis.worlds import world_from_config
from meshsolve.iptables import parse_text
from meshsolve.istio.config import from_go_fields
from meshsolve.model.world import World
from meshsolve.nftables.loadcheck import load_rulesets
from meshsolve.report.findings import diff_findings, lint_world

IPTABLES = REFERENCE / "istio-goldens"
NFT = REFERENCE / "frontier" / "istio-nftables-sidecar"
POD = (ipaddress.ip_address("192.0.2.10"), ipaddress.ip_address("2001:db8::10"))
CONFIGS: dict[str, dict[str, Any]] = {g["name"]: g["set"] for g in MASTER}
TWINS: tuple[str, ...] = tuple(sorted(n for n in CONFIGS if (NFT / f"{n}.golden").exists()
                                      and (IPTABLES / f"{n}.golden").exists()))


def twin_worlds(name: str) -> tuple[World, World]:
    """(iptables pod, nft pod) of one twin configuration, dual-stack, each with its golden's rules."""
    cfg = from_go_fields({**BASE, **CONFIGS[name]}, source=f"golden {name}")
    ipt_rules = parse_text((IPTABLES / f"{name}.golden").read_text(encoding="utf-8"), source=f"{name}.golden")
    nft_rules = load_rulesets((NFT / f"{name}.golden").read_text(encoding="utf-8"), f"{name}.golden")
    ipt = world_from_config(cfg, rules=ipt_rules, pod_ips=POD, name=name)
    nft = world_from_config(cfg.evolve(native_nftables=True), rules=nft_rules, pod_ips=POD, name=name)
    return ipt, nft


@attrs.frozen
class Row:
    name: str
    verdict: str  # equivalent / different / unknown
    findings: tuple[str, ...]  # diff's findings: "MSH0154 With IPv6 off, ..."
    load: tuple[str, ...]  # what loading either side would refuse (MSH0151 ...)
    unknown: tuple[str, ...]
    kernel: tuple[str, ...]  # per differing flow: "agrees" or what disagreed
    seconds: float


def compare(name: str, *, kernel: bool = True, timeout_ms: int | None = None) -> Row:
    from meshsolve.oracle.compare import differences
    from meshsolve.oracle.run import KernelWorld

    ipt, nft = twin_worlds(name)
    start = time.monotonic()
    results = diff(ipt, nft) if timeout_ms is None else diff(ipt, nft, timeout_ms=timeout_ms)
    seconds = time.monotonic() - start
    found = diff_findings(ipt, nft, results)
    load = tuple(f"{f.code} {f.message}" for f in (*lint_world(ipt), *lint_world(nft)))
    different = [r for r in results if isinstance(r, Different)]
    unknown = tuple(r.reason for r in results if isinstance(r, DiffUnknown))
    verdict = "different" if different else "unknown" if unknown else "equivalent"
    assert verdict != "equivalent" or any(isinstance(r, Equivalent) for r in results)
    replays: list[str] = []
    if kernel:
        for r in different:
            bad = []
            for label, world, expected in (("iptables", ipt, r.a), ("nftables", nft, r.b)):
                with KernelWorld(world) as kw:
                    if differences(expected, kw.run(r.flow), hits=False):
                        bad.append(label)
            replays.append("agrees" if not bad else "kernel differs on " + " and ".join(bad))
    return Row(name, verdict, tuple(f"{f.code} {f.message}" for f in found), load, unknown, tuple(replays), seconds)


if __name__ == "__main__":
    for n in sys.argv[1:] or TWINS:
        print(json.dumps(attrs.asdict(compare(n))), flush=True)
