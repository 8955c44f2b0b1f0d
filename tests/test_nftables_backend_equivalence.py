"""Backend equivalence: Istio's 27 twin configurations, the iptables golden against the
``--native-nftables`` golden of the same name, compared by ``diff`` over every first connection in
both families; every difference is a finding (MSH0153, or MSH0154 for IPv6 captured with IPv6 off)
whose witness is replayed on the kernel in both backends. The table in ``docs/nftables.md`` is the
result of the slow test here (``--run-slow``), which checks it row by row."""

from __future__ import annotations

import re
from pathlib import Path

import attrs
import pytest
from backend_twins import TWINS, compare, twin_worlds
from nft_kernel import nft_unavailable_reason

from meshsolve.analysis.diff import Different, diff
from meshsolve.model.rules import Rulesets
from meshsolve.report.findings import diff_findings

DOCS = Path(__file__).resolve().parents[1] / "docs" / "nftables.md"
_reason = nft_unavailable_reason()
on_the_kernel = pytest.mark.skipif(_reason is not None, reason=f"kernel test skipped: {_reason}")


def _table() -> dict[str, tuple[str, str]]:
    """docs/nftables.md's equivalence table: name -> (verdict, codes)."""
    text = DOCS.read_text(encoding="utf-8")
    section = text[text.index("## Backend equivalence"):]
    section = section[:section.index("\n## ", 1)] if "\n## " in section[1:] else section
    rows = re.findall(r"^\| `([a-z0-9-]+)` \| (\w+) \| ([^|]*) \|", section, re.M)
    return {name: (verdict, codes.strip()) for name, verdict, codes in rows}


def test_there_are_27_twins_and_the_docs_table_lists_each_once() -> None:
    assert len(TWINS) == 27
    assert sorted(_table()) == sorted(TWINS)


@pytest.mark.parametrize("name", ["basic-exclude-nic", "ipv6-uid-gid"])
def test_an_equivalent_twin_gives_no_finding(name: str) -> None:
    row = compare(name, kernel=False)
    assert (row.verdict, row.findings) == ("equivalent", ())
    assert _table()[name][0] == "equivalent"


@pytest.mark.kernel
@on_the_kernel
@pytest.mark.parametrize("name", ["kube-virt-interfaces", "inbound-ports-wildcard"])
def test_ipv6_off_is_msh0154_and_the_kernel_agrees_in_both_backends(name: str) -> None:
    row = compare(name)
    assert row.verdict == "different" and row.findings and all(f.startswith("MSH0154 ") for f in row.findings)
    assert row.kernel and set(row.kernel) == {"agrees"}
    assert _table()[name] == ("different", "MSH0154")


def test_any_other_backend_difference_is_msh0153() -> None:
    """With IPv6 on (the nft side's IPv6 rules dropped and the iptables side's kept, so no side is
    'IPv6 off'), a difference is the general MSH0153 naming both backends."""
    ipt, nft = twin_worlds("ipv6-uid-gid")
    assert ipt.rules.ipv6.tables and nft.rules.ipv6.nft
    no_v6_capture = attrs.evolve(nft, rules=Rulesets(nft.rules.ipv4, attrs.evolve(nft.rules.ipv6, nft=())))
    results = diff(ipt, no_v6_capture)
    different = [r for r in results if isinstance(r, Different)]
    assert different
    found = diff_findings(ipt, no_v6_capture, results)
    assert found and {f.code for f in found} == {"MSH0153"}
    assert all("iptables" in f.message and "nftables" in f.message for f in found)
    assert diff_findings(ipt, ipt, diff(ipt, ipt)) == ()  # one backend on both sides: none


@pytest.mark.slow
@pytest.mark.kernel
@on_the_kernel
@pytest.mark.parametrize("name", TWINS)
def test_every_twin_as_the_docs_table_says(name: str) -> None:
    row = compare(name, timeout_ms=600_000)  # inbound-ports-tproxy needs more than diff's 20 s per call
    codes = ", ".join(sorted({f.split(" ", 1)[0] for f in (*row.findings, *row.load)}))
    assert (row.verdict, codes or "—") == _table()[name]
    assert all(r == "agrees" for r in row.kernel), row.kernel
