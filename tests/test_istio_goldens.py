"""Istio's own istio-iptables goldens (28 master files) regenerated from MANIFEST.yaml and compared as
models: same tables, chains and rules in order per chain, per family."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from istio_vectors import BASE, MASTER, NON_MASTER

from meshsolve.iptables import parse_text, render_save
from meshsolve.istio.config import from_go_fields
from meshsolve.istio.generate import generate
from meshsolve.model import Rulesets

# Files that cannot be matched, with the reason (none at the moment).
KNOWN_MISMATCHES: dict[str, str] = {}


def _diff(got: Rulesets, want: Rulesets) -> str:
    out = []
    for fam in ("ipv4", "ipv6"):
        g, w = got.for_family(fam), want.for_family(fam)
        if g != w:
            out.append(f"--- {fam} generated\n{render_save(g)}\n--- {fam} golden\n{render_save(w)}")
    return "\n".join(out)


def test_manifest_has_the_28_master_goldens(goldens_dir: Path) -> None:
    assert len(MASTER) == 28
    assert all((goldens_dir / g["file"]).is_file() for g in MASTER)


@pytest.mark.parametrize("entry", MASTER, ids=[g["name"] for g in MASTER])
def test_master_golden(entry: dict[str, Any], goldens_dir: Path) -> None:
    if entry["name"] in KNOWN_MISMATCHES:
        pytest.xfail(KNOWN_MISMATCHES[entry["name"]])
    config = from_go_fields({**BASE, **entry["set"]}, source=f"MANIFEST.yaml:{entry['name']}")
    want = parse_text((goldens_dir / entry["file"]).read_text(encoding="utf-8"), source=entry["file"])
    got = generate(config)
    assert got.ipv4.rule_count() > 0
    assert got == want, _diff(got, want)


@pytest.mark.parametrize("entry", NON_MASTER, ids=[g["name"] for g in NON_MASTER])
def test_pr_59544_vectors(entry: dict[str, Any], goldens_dir: Path) -> None:
    """PR #59544 (unmerged) writes one multiport rule; master (= our model) one rule per port.
    The single-port file shows master's own lines, so it must match; the others must differ."""
    config = from_go_fields({**BASE, **entry["set"]})
    want = parse_text((goldens_dir / entry["file"]).read_text(encoding="utf-8"), source=entry["file"])
    got = generate(config)
    if entry["name"] == "outbound-ports-exclude-single":
        assert got == want, _diff(got, want)
    else:
        assert got != want
        # same rules once the multiport rule is spelled out per port
        assert got.ipv4.rule_count() > want.ipv4.rule_count()


def test_a_different_version_does_not_match(goldens_dir: Path) -> None:
    """The comparison can fail: 1.10's rules for the wildcard golden differ (22 RETURN, -p tcp)."""
    entry = next(g for g in MASTER if g["name"] == "inbound-ports-wildcard")
    want = parse_text((goldens_dir / entry["file"]).read_text(encoding="utf-8"), source=entry["file"])
    assert generate(from_go_fields({**BASE, **entry["set"]}, version="1.10")) != want
    assert generate(from_go_fields({**BASE, **entry["set"]}, version="current")) == want


def test_logging_is_empty(goldens_dir: Path) -> None:
    base = from_go_fields(BASE)
    assert generate(base.evolve(trace_logging=True)) == generate(base)
