"""Istio's ambient in-pod goldens regenerated from their configurations, rule for rule: the very text
(iptables-restore documents, iptables commands, nft transactions), the rules it builds (the rule
model for iptables, the nftables syntax model and command stream for nft), for the 14 + 14 HEAD
goldens, the historical TPROXY-era ones and the ingress-mode goldens before the connmark fix."""

from __future__ import annotations

import pytest
from ambient_vectors import HISTORICAL, IPTABLES, LOCAL, NFTABLES, POD_GOLDENS, TEST_V6, pod_config, read_golden

from meshsolve.errors import SpecError, UnsupportedError
from meshsolve.iptables import parse_file, parse_text
from meshsolve.istio.ambient import AmbientConfig, host_rules, host_text, inpod_rules, inpod_text
from meshsolve.istio.ambient.nft import (
    host_nft_ruleset,
    host_nft_text,
    inpod_nft_commands,
    inpod_nft_ruleset,
    inpod_nft_text,
)
from meshsolve.nftables import parse_text as nft_parse
from meshsolve.nftables import read_commands


def test_every_golden_has_a_configuration() -> None:
    for d in (IPTABLES, NFTABLES):
        names = sorted(p.stem for p in d.glob("*.golden"))
        assert len(names) == 14
        assert sorted([*POD_GOLDENS, "hostprobe", "hostprobe_ipv6"]) == names


@pytest.mark.parametrize("name", sorted(POD_GOLDENS))
def test_iptables_pod_golden(name: str) -> None:
    path = IPTABLES / f"{name}.golden"
    c = pod_config(name)
    assert inpod_text(c) == read_golden(path)
    got = inpod_rules(c)
    assert got == parse_file(path)
    assert got.ipv4.rule_count() > 0 and got.ipv6.empty != c.enable_ipv6


@pytest.mark.parametrize("name", sorted(POD_GOLDENS))
def test_nft_pod_golden(name: str) -> None:
    text = (NFTABLES / f"{name}.golden").read_text(encoding="utf-8")
    c = pod_config(name, "nftables")
    assert inpod_nft_text(c).rstrip() == text.rstrip()
    commands, _ = read_commands(text, source=name)
    assert inpod_nft_commands(c) == commands
    assert inpod_nft_ruleset(c) == nft_parse(text, source=name)


@pytest.mark.parametrize("v6", [False, True])
def test_host_probe_goldens(v6: bool) -> None:
    name = "hostprobe_ipv6" if v6 else "hostprobe"
    path = IPTABLES / f"{name}.golden"
    c = AmbientConfig(redirect_dns=True, enable_ipv6=v6)  # the host test keeps the chart's v6 address
    assert host_text(c) == read_golden(path)
    assert host_rules(c) == parse_file(path)
    text = (NFTABLES / f"{name}.golden").read_text(encoding="utf-8")
    n = AmbientConfig(backend="nftables", redirect_dns=True, enable_ipv6=v6, probe_snat_v6=TEST_V6, kubelet_uid=1000)
    assert host_nft_text(n).rstrip() == text.rstrip()
    assert host_nft_ruleset(n) == nft_parse(text, source=name)


def test_host_probe_rules_differ_by_backend() -> None:
    """iptables matches any socket of the node, nft kubelet's uid (A4's two forms)."""
    rs = host_rules(AmbientConfig())
    rule = rs.ipv4.chain("nat", "ISTIO_POSTRT").rules[0]  # type: ignore[union-attr]
    assert any(getattr(m, "socket_exists", None) is True for m in rule.matches)
    assert "skuid 1000" in host_nft_text(AmbientConfig(backend="nftables", kubelet_uid=1000))
    assert "socket" not in host_nft_text(AmbientConfig(backend="nftables", kubelet_uid=1000))


def test_historical_tproxy_goldens() -> None:
    c = AmbientConfig(version="1.21", redirect_dns=True)
    assert c.is_tproxy and c.command_form
    path = HISTORICAL / "1.21.0-default-tproxy-era.golden"
    assert inpod_text(c) == read_golden(path)
    assert inpod_rules(c) == parse_file(path)
    host = HISTORICAL / "1.21.0-hostprobe.golden"
    assert host_text(c) == read_golden(host)
    assert host_rules(c) == parse_file(host)
    t = AmbientConfig(version="1.24", tproxy=True, redirect_dns=True)
    path = HISTORICAL / "1.24.0-tproxy.golden"
    assert inpod_text(t) == read_golden(path)
    assert inpod_rules(t) == parse_file(path)


@pytest.mark.parametrize("name", ["ingress", "ingress_and_virtual_interfaces"])
def test_ingress_before_the_connmark_fix(name: str) -> None:
    """Before 1.29 ingress mode left the mangle connmark rule out (the fix of Istio's #58546)."""
    path = LOCAL / f"{name}-before-1.29.iptables.golden"
    old = pod_config(name, version="1.28")
    assert not old.ingress_connmark
    assert inpod_text(old) == read_golden(path)
    assert inpod_rules(old) == parse_text(read_golden(path))
    assert inpod_rules(pod_config(name)) != inpod_rules(old)  # HEAD has the rule
    if name == "ingress":
        text = read_golden(LOCAL / "ingress-before-1.29.nft.golden")
        n = pod_config(name, "nftables", version="1.28")
        assert inpod_nft_text(n) == text
        assert inpod_nft_ruleset(n) == nft_parse(text)


def test_a_different_configuration_does_not_match() -> None:
    want = parse_file(IPTABLES / "default.golden")
    assert inpod_rules(pod_config("dns_pod_disabled_and_on_globally")) != want
    assert inpod_rules(pod_config("default", enable_ipv6=True)) != want
    assert inpod_text(pod_config("ingress")) != read_golden(IPTABLES / "virtual_interfaces.golden")


def test_dns_settings() -> None:
    assert AmbientConfig(version="1.24").dns is False  # the chart's default before 1.25
    assert AmbientConfig(version="1.25").dns is True
    assert AmbientConfig(redirect_dns=True, dns_override="disabled").dns is False
    assert AmbientConfig(redirect_dns=False, dns_override="enabled").dns is True


@pytest.mark.parametrize(("kw", "match"), [
    ({"version": "1.20"}, r"1\.21"),
    ({"version": "1.25", "tproxy": True}, "TPROXY"),
    ({"version": "1.23", "tproxy": False}, "REDIRECT"),
    ({"version": "1.23", "ingress": True}, r"1\.24"),
    ({"version": "1.24", "dns_override": "enabled"}, r"1\.25"),
    ({"version": "1.24", "virtual_interfaces": "eth1"}, r"1\.25"),
    ({"version": "1.27", "backend": "nftables"}, r"1\.28"),
    ({"version": "1.24", "tproxy": True, "ingress": True}, "TPROXY"),
])
def test_settings_an_era_does_not_have(kw: dict[str, object], match: str) -> None:
    with pytest.raises(UnsupportedError, match=match):
        AmbientConfig(**kw)  # type: ignore[arg-type]


def test_bad_values() -> None:
    with pytest.raises(SpecError, match="interface"):
        AmbientConfig(virtual_interfaces="eth 1")
    with pytest.raises(SpecError, match="IPv4"):
        AmbientConfig(probe_snat_v4="2001:db8::1")
    with pytest.raises(SpecError, match="DNS override"):
        AmbientConfig(dns_override="maybe")  # type: ignore[arg-type]
    with pytest.raises(UnsupportedError, match=r"1\.28"):
        inpod_nft_text(AmbientConfig(version="1.26"))
