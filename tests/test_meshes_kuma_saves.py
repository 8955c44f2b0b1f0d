"""Kuma's real-container saves of older Kuma releases (tests/data/kuma-saves/SOURCES.md; that every
save of the sixteen distributions parses, and that the default saves are the profile's rules, is in
tests/test_meshes_goldens.py): the multiple-flags saves are the profile's rules for those flags up
to the DNS rules, and numeric protocols read as their names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_meshes_goldens import CONTAINER_SAVES, MULTIPLE, _family_of, _no_empty_tables, _read_save

from meshsolve.iptables import parse_rule, render_save
from meshsolve.meshes import kuma, without_comments
from meshsolve.model import Ruleset

SAVES = Path(__file__).parent / "data" / "kuma-saves"
MULTIPLE_FLAGS = [p for p in CONTAINER_SAVES if "-with-multiple-flags." in p.name]


def _save(path: Path) -> Ruleset:
    return _no_empty_tables(without_comments(_read_save(path, "lo"))).for_family(_family_of(path))  # type: ignore[arg-type]


def _generated(path: Path) -> Ruleset:
    return kuma.generate(kuma.parse_args(MULTIPLE)).for_family(_family_of(path))  # type: ignore[arg-type]


_DNS = re.compile(r"(?<![0-9:])(53|15053)(?![0-9:])")
_NOT_DNS = " -m tcp ! --dport 53"


def _without_dns_rules(rs: Ruleset) -> list[str]:
    """The save's lines with the rules that name the DNS ports left out and the older releases'
    ``! --dport 53`` condition taken off the loopback rules."""
    return [line.replace(_NOT_DNS, "") for line in render_save(rs).splitlines() if not _DNS.search(line.replace(_NOT_DNS, ""))]


@pytest.mark.parametrize("path", MULTIPLE_FLAGS, ids=lambda p: p.name)
def test_a_multiple_flags_save_differs_at_most_in_the_dns_rules(path: Path) -> None:
    """Kuma's DNS rules changed between the releases these saves come from (``! --dport 53`` on the
    loopback rules, a TCP port-53 redirect); every other rule is what the profile generates."""
    got, want = _generated(path), _save(path)
    assert _without_dns_rules(got) == _without_dns_rules(want)


def test_the_dns_filter_keeps_the_rules_it_should() -> None:
    kept = _without_dns_rules(_generated(SAVES / "debian-13-with-multiple-flags.iptables.golden"))
    assert any("--dport 4444" in line for line in kept) and any("REDIRECT --to-ports 15001" in line for line in kept)
    assert not any("15053" in line for line in kept)


def test_numeric_protocols_read_as_their_names() -> None:
    """Debian 10's nft save writes ``-p 6``/``-p 17`` and puts ``-m comment`` after the matches."""
    text = (SAVES / "debian-10-with-multiple-flags.iptables-nft.golden").read_text(encoding="utf-8")
    assert "-p 6 " in text and "-p 17 " in text
    assert parse_rule("-p 6 -m tcp --dport 1 -j RETURN") == parse_rule("-p tcp -m tcp --dport 1 -j RETURN")
    assert parse_rule("-p 17 -m udp --dport 53 -j RETURN") == parse_rule("-p udp -m udp --dport 53 -j RETURN")
