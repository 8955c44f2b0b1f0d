"""Istio's istio-iptables goldens (../shared/reference/istio-goldens): all 35 parse, with the rule
counts per (family, table) that an independent line splitter finds; kernel round trip."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
import yaml
from conftest import GOLDENS
from iptables_kernel import kernel_roundtrip, map_owner_names

from meshsolve.iptables import parse_file, parse_text, render_restore, render_save
from meshsolve.model import OwnerMatch, Rule, Rulesets
from meshsolve.model.rules import (
    ConnmarkTarget,
    Destination,
    MarkMatch,
    MultiportMatch,
    PortMatch,
    Redirect,
    SetMark,
    Source,
    Tproxy,
)


def _golden_files() -> list[Path]:
    return sorted(GOLDENS.glob("*.golden")) + sorted(GOLDENS.glob("non-master/*/*.golden"))


GOLDEN_FILES = _golden_files()


def _ids(paths: list[Path]) -> list[str]:
    return [p.stem if p.parent.name == "istio-goldens" else f"{p.parent.name}/{p.stem}" for p in paths]


def independent_counts(text: str) -> Counter[tuple[str, str]]:
    """Count -A/-I lines per (family, table) without the parser: transcript blocks switch to IPv6
    at the first '* table' whose name is <= the previous one; command lines name their family."""
    counts: Counter[tuple[str, str]] = Counter()
    family, table, prev = "ipv4", "", ""
    for raw in text.splitlines():
        line = raw.strip()
        m = re.match(r"^\*\s*(\w+)$", line)
        if m:
            table = m.group(1)
            if prev and table <= prev:
                family = "ipv6"
            prev = table
            continue
        if line.startswith(("-A ", "-I ")):
            counts[(family, table)] += 1
            continue
        m = re.match(r"^(ip6?tables) -t (\w+) -[AI] ", line)
        if m:
            counts[("ipv6" if m.group(1) == "ip6tables" else "ipv4", m.group(2))] += 1
    return counts


def model_counts(rs: Rulesets) -> Counter[tuple[str, str]]:
    out: Counter[tuple[str, str]] = Counter()
    for fam in (rs.ipv4, rs.ipv6):
        for t in fam.tables:
            n = sum(len(c.rules) for c in t.chains)
            if n:
                out[(fam.family, t.name)] = n
    return out


def test_there_are_35_goldens() -> None:
    assert len(GOLDEN_FILES) == 35
    assert sum(1 for p in GOLDEN_FILES if p.parent.name == "istio-goldens") == 28


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=_ids(GOLDEN_FILES))
def test_golden_parses_with_independent_counts(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    rs = parse_file(path)
    expected = independent_counts(text)
    assert expected, "the line splitter found no rules"
    assert model_counts(rs) == expected


def test_rule_totals_match_the_manifest(goldens_dir: Path) -> None:
    manifest = yaml.safe_load((goldens_dir / "MANIFEST.yaml").read_text(encoding="utf-8"))
    entries = manifest["files"] if isinstance(manifest, dict) and "files" in manifest else manifest
    if isinstance(entries, dict):
        entries = next(v for v in entries.values() if isinstance(v, list))
    seen = 0
    for entry in entries:
        if not isinstance(entry, dict) or "rule_lines" not in entry:
            continue
        rs = parse_file(goldens_dir / entry["file"])
        assert rs.ipv4.rule_count() + rs.ipv6.rule_count() == entry["rule_lines"], entry["file"]
        seen += 1
    assert seen == 35


def _rules(rs: Rulesets, family: str, table: str, chain: str) -> tuple[Rule, ...]:
    c = rs.for_family("ipv4" if family == "ipv4" else "ipv6").chain(table, chain)
    assert c is not None, (family, table, chain)
    return c.rules


def test_tproxy_golden_details(goldens_dir: Path) -> None:
    rs = parse_file(goldens_dir / "tproxy.golden")
    # -I ISTIO_INBOUND 1/2/3 replayed: the three inserted rules come first, in order
    inbound = _rules(rs, "ipv4", "mangle", "ISTIO_INBOUND")
    assert inbound[0].find(MarkMatch) == MarkMatch(1337)
    assert inbound[1].find(Source) == Source("127.0.0.6/32")
    assert inbound[2].find(MarkMatch) == MarkMatch(1338, negated=True)
    assert len(inbound) == 5
    tp = _rules(rs, "ipv4", "mangle", "ISTIO_TPROXY")[0]
    assert tp.target == Tproxy(15006, None, 1337, 0xFFFFFFFF)
    assert tp.find(Destination) == Destination("127.0.0.1/32", negated=True)
    assert _rules(rs, "ipv4", "mangle", "ISTIO_DIVERT")[0].target == SetMark(1337, 0xFFFFFFFF)
    pre = _rules(rs, "ipv4", "mangle", "PREROUTING")
    assert pre[-1].target == ConnmarkTarget("save-mark")
    out = _rules(rs, "ipv4", "nat", "ISTIO_OUTPUT")
    assert out[1].find(MultiportMatch) == MultiportMatch("dports", (53, 15008), negated=True)
    assert out[1].find(OwnerMatch) == OwnerMatch(uid="1337")
    assert out[2].find(PortMatch) == PortMatch("tcp", dport=53, dport_negated=True)
    dns = _rules(rs, "ipv4", "nat", "ISTIO_OUTPUT_DNS")
    assert dns[0].target == dns[1].target == Redirect(15053)  # --to-ports and --to-port
    v6 = _rules(rs, "ipv6", "mangle", "ISTIO_TPROXY")[0]
    assert v6.find(Destination) == Destination("::1/128", negated=True)


def test_legacy_owner_names_are_kept(goldens_dir: Path) -> None:
    rs = parse_file(goldens_dir / "non-master/pr-37057-draft/outbound-owner-users.golden")
    last = _rules(rs, "ipv4", "nat", "ISTIO_OUTPUT")[-2]
    assert [m for m in last.matches if isinstance(m, OwnerMatch)] == [
        OwnerMatch(uid="101", uid_negated=True), OwnerMatch(uid="tomcat", uid_negated=True)]
    assert rs.ipv6.empty


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=_ids(GOLDEN_FILES))
def test_golden_render_parse_roundtrip(path: Path) -> None:
    rs = parse_file(path)
    assert parse_text(render_save(rs)) == rs
    assert parse_text(render_restore(rs)) == rs


@pytest.mark.kernel
@pytest.mark.parametrize("path", GOLDEN_FILES, ids=_ids(GOLDEN_FILES))
def test_golden_kernel_roundtrip(path: Path) -> None:
    """Render → iptables-restore in a throw-away namespace → iptables-save → parse: equal model,
    and the kernel's text equals ours (after dropping '#' lines). Owner names are mapped to ids
    first, because the kernel stores numbers."""
    rs = map_owner_names(parse_file(path))
    for family in ("ipv4", "ipv6"):
        ruleset = rs.for_family(family)  # type: ignore[arg-type]
        if ruleset.empty:
            continue
        ours = render_save(ruleset)
        theirs, back = kernel_roundtrip(ours, family)
        assert theirs == ours
        assert back == ruleset


@pytest.mark.kernel
def test_golden_restore_form_kernel_roundtrip(goldens_dir: Path) -> None:
    rs = map_owner_names(parse_file(goldens_dir / "tproxy.golden"))
    for family in ("ipv4", "ipv6"):
        ruleset = rs.for_family(family)  # type: ignore[arg-type]
        _, back = kernel_roundtrip(render_restore(ruleset), family)
        assert back == ruleset
