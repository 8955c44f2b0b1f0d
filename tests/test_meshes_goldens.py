"""Each mesh profile against that project's own expectations (../shared/reference/frontier/):
kumactl's dry-run goldens rule for rule, Kuma's real-container saves modulo comments, Consul's SDK
expected-rule lists (final rules and the command stream), Linkerd's proxy-init outputs."""

from __future__ import annotations

import shlex
from pathlib import Path

import attrs
import pytest
from conftest import REFERENCE

from meshsolve.iptables import parse_rule, parse_text, render_save
from meshsolve.meshes import consul, kuma, linkerd, without_comments
from meshsolve.model import Chain, Ruleset, Rulesets, Table

FRONTIER = REFERENCE / "frontier"
KUMACTL = FRONTIER / "kuma" / "kumactl"
CONTAINER = FRONTIER / "kuma" / "container"
IPV4 = ["--ip-family-mode", "ipv4"]


def _diff(got: Rulesets, want: Rulesets) -> str:
    return "\n".join(f"--- {f} generated\n{render_save(got.for_family(f))}\n--- {f} expected\n"
                     f"{render_save(want.for_family(f))}" for f in ("ipv4", "ipv6")
                     if got.for_family(f) != want.for_family(f))


def _no_empty_tables(rs: Rulesets) -> Rulesets:
    """Drop tables that hold nothing (a save lists mangle/raw with only empty built-in chains)."""
    def one(r: Ruleset) -> Ruleset:
        return Ruleset(r.family, tuple(t for t in r.tables if any(c.rules or not c.builtin for c in t.chains)))
    return Rulesets(one(rs.ipv4), one(rs.ipv6))


# --- kumactl install transparent-proxy --dry-run (app/kumactl/cmd/install/testdata) --------------

# golden file -> the flags of its test entry (the test adds --dry-run --ip-family-mode ipv4)
KUMACTL_CASES: dict[str, list[str]] = {
    "install-transparent-proxy.defaults.golden.txt": ["--kuma-dp-user", "root"],
    "install-transparent-proxy.dns.no-conntrack.golden.txt": [
        "--kuma-dp-user", "0", "--redirect-all-dns-traffic", "--redirect-dns-port", "12345",
        "--skip-dns-conntrack-zone-split"],
    "install-transparent-proxy.overrides.golden.txt": [
        "--kuma-dp-user", "root", "--redirect-outbound-port", "12345", "--redirect-inbound-port", "12346",
        "--exclude-outbound-ports", "2000,2001", "--exclude-inbound-ports", "1000,1001"],
    "install-transparent-proxy.excludedports.txt": [
        "--kuma-dp-user", "root", "--exclude-outbound-ports-for-uids", "tcp:1900,1902,1000-2000:106-108",
        "--exclude-outbound-ports-for-uids", "tcp:2900,2902,3000-5000:203",
        "--exclude-outbound-ports-for-uids", "udp:3900,3902,4000-6000:303"],
    "install-transparent-proxy.excludedports_simpler.txt": [
        "--kuma-dp-user", "root", "--exclude-outbound-ports-for-uids", "tcp:1900,1902,1000-2000:106-108",
        "--exclude-outbound-ports-for-uids", "tcp:2900,2902,3000-5000:203",
        "--exclude-outbound-ports-for-uids", "udp:3900,3902,4000-6000:303"],
    "install-transparent-proxy.excludedports_wildcards.txt": [
        "--kuma-dp-user", "root", "--exclude-outbound-ports-for-uids", "*:*:0"],
    "install-transparent-proxy.excludedports_allprotos.txt": [
        "--kuma-dp-user", "root", "--exclude-outbound-ports-for-uids", "tcp:*:0"],
    "install-transparent-proxy.excludedports_onlyuid.txt": [
        "--kuma-dp-user", "root", "--exclude-outbound-ports-for-uids", "123"],
}
# The older layout (DNS over TCP redirected from KUMA_MESH_OUTBOUND, conntrack zones on) whose file
# still carries an older harness's placeholders for the addresses and the inbound port.
OLD_DNS = "install-transparent-proxy.dns.golden.txt"


def _kumactl(name: str) -> Rulesets:
    """A kumactl golden as the test compares it: ``-o <if>`` was replaced by ``-o ifPlaceholder``
    (here ``lo``), the DNS jump target by ``dnsJumpTargetPlaceholder`` (kuma-dp's queries RETURN)."""
    text = (KUMACTL / name).read_text(encoding="utf-8")
    text = text.replace("ifPlaceholder", "lo").replace("dnsJumpTargetPlaceholder", "RETURN")
    if name == OLD_DNS:
        text = (text.replace("-s subnetPlaceholder/mask", "-s 127.0.0.6/32")
                .replace("subnetPlaceholder/mask", "127.0.0.1/32").replace("inboundPort", "15006"))
    return parse_text(text, source=name)


def test_the_nine_kumactl_goldens_are_all_checked() -> None:
    assert sorted(p.name for p in KUMACTL.iterdir()) == sorted([*KUMACTL_CASES, OLD_DNS])


@pytest.mark.parametrize("name", sorted(KUMACTL_CASES))
def test_kumactl_golden(name: str) -> None:
    want = _kumactl(name)
    got = kuma.generate(kuma.parse_args([*KUMACTL_CASES[name], *IPV4]))
    assert got.ipv4.rule_count() > 0 and got.ipv6.empty
    assert got == want, _diff(got, want)


def test_kumactl_golden_of_the_older_dns_layout() -> None:
    config = kuma.parse_args(["--kuma-dp-user", "0", "--redirect-all-dns-traffic", "--redirect-dns-port", "12345",
                              *IPV4])
    want = _kumactl(OLD_DNS)
    assert kuma.generate(attrs.evolve(config, dns_tcp="redirect")) == want
    assert kuma.generate(config) != want  # today's layout returns DNS over TCP from OUTPUT instead


def test_a_different_kuma_configuration_does_not_match() -> None:
    want = _kumactl("install-transparent-proxy.defaults.golden.txt")
    assert kuma.generate(kuma.parse_args(IPV4)) != want  # uid 5678, not root's 0
    assert kuma.generate(kuma.parse_args(["--kuma-dp-user", "root"])) != want  # dual stack adds ip6tables


# --- Kuma's real-container saves (test/transparentproxy/testdata) ----------------------------------

# file -> (family, flags). The default set is kuma's default flags; the multiple-flags set is
# INDEX.md's flags, the IPv6 addresses (elided there) read back from the ip6tables save.
MULTIPLE = ["--redirect-all-dns-traffic", "--vnet", "docker0:172.17.0.0/16", "--vnet", "br+:172.18.0.0/16",
            "--vnet", "iface:::1/64", "--exclude-outbound-ports-for-uids", "53,3000-5000:106-108",
            "--exclude-outbound-ips", "10.0.0.1,192.168.0.0/24,fe80::1,fd00::/8",
            "--exclude-inbound-ips", "192.168.0.1,172.32.16.8/16,fe80::/10,a81b:a033:6399:73c7:72b6:aa8c:6f22:7098",
            "--exclude-inbound-ports", "4444,55555", "--exclude-outbound-ports", "1,22,333"]
CONTAINER_CASES: dict[str, tuple[str, list[str]]] = {
    "alpine-3-default.iptables.golden": ("ipv4", []),
    "amazon-linux-2-default.iptables.golden": ("ipv4", []),
    "rhel-8-default.iptables.golden": ("ipv4", []),
    "debian-12-with-multiple-flags.iptables-nft.golden": ("ipv4", MULTIPLE),
    "debian-12-with-multiple-flags.ip6tables-nft.golden": ("ipv6", MULTIPLE),
}


@pytest.mark.parametrize("name", sorted(CONTAINER_CASES))
def test_kuma_container_save(name: str) -> None:
    family, flags = CONTAINER_CASES[name]
    text = (CONTAINER / name).read_text(encoding="utf-8").replace("ifPlaceholder", "lo")
    want = _no_empty_tables(without_comments(parse_text(("# ipv6\n" if family == "ipv6" else "") + text,
                                                        source=name)))
    got = kuma.generate(kuma.parse_args(flags)).for_family(family)  # type: ignore[arg-type]
    assert got == want.for_family(family), render_save(got) + "\n---\n" + render_save(want.for_family(family))  # type: ignore[arg-type]


def test_rhel_8_prints_postrouting_before_output_and_it_parses_the_same() -> None:
    rhel = (CONTAINER / "rhel-8-default.iptables.golden").read_text(encoding="utf-8")
    alpine = (CONTAINER / "alpine-3-default.iptables.golden").read_text(encoding="utf-8")
    assert rhel.index(":POSTROUTING") < rhel.index(":OUTPUT") and alpine.index(":OUTPUT") < alpine.index(":POSTROUTING")
    assert parse_text(rhel) == parse_text(alpine)


# --- Consul's SDK (sdk/iptables/iptables_test.go expected lists) -----------------------------------

CONSUL_CASES = {
    "sdk-iptables-test.default.rules.txt": consul.ConsulConfig(proxy_uid=123, inbound_port=20000, dns_chain=False),
    "sdk-iptables-test.exclude-outbound-cidrs.rules.txt": consul.ConsulConfig(
        proxy_uid=123, inbound_port=20000, outbound_port=21000, exclude_outbound_cidrs=("1.1.1.1", "2.2.2.2/24"),
        dns_chain=False),
}


def _commands(path: Path) -> tuple[list[str], list[tuple[str, int | None, object]]]:
    """The ``-N`` chains and the ``-A``/``-I`` operations of an expected list, in order."""
    chains: list[str] = []
    ops: list[tuple[str, int | None, object]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        words = shlex.split(line)
        assert words[:3] == ["iptables", "-t", "nat"], line
        op, chain, rest = words[3], words[4], words[5:]
        if op == "-N":
            chains.append(chain)
        else:
            ops.append((chain, 1 if op == "-I" else None, parse_rule(rest)))
    return chains, ops


@pytest.mark.parametrize("name", sorted(CONSUL_CASES))
def test_consul_expected_rules(name: str) -> None:
    config = CONSUL_CASES[name]
    path = FRONTIER / "consul" / name
    want = parse_text(path.read_text(encoding="utf-8"), source=name)
    assert consul.generate(config) == want, _diff(consul.generate(config), want)
    chains, ops = _commands(path)
    b = consul.record(config)
    assert [c for _f, _t, c in b.declared] == chains
    assert [(o.chain, o.position, o.rule) for o in b.ops] == ops


def test_consul_excludes_are_inserted_so_the_last_given_comes_first() -> None:
    c = consul.ConsulConfig(proxy_uid=5995, inbound_port=20000, exclude_uids=("5996", "5997"))
    out = consul.generate(c).ipv4.chain("nat", consul.OUTPUT_CHAIN)
    assert out is not None
    assert [str(r.matches[0].uid) for r in out.rules[:2]] == ["5997", "5996"]  # type: ignore[union-attr]


def test_consul_annotation_json() -> None:
    text = ('{"ConsulDNSIP":"","ConsulDNSPort":0,"ProxyUserID":"5995","ProxyInboundPort":20000,'
            '"ProxyOutboundPort":15001,"ExcludeInboundPorts":["20200"],"ExcludeOutboundPorts":null,'
            '"ExcludeOutboundCIDRs":null,"ExcludeUIDs":["5996"],"NetNS":""}')
    c = consul.config_from_json(text)
    assert (c.proxy_uid, c.inbound_port, c.exclude_inbound_ports, c.exclude_uids) == (5995, 20000, ("20200",), ("5996",))
    assert consul.generate(c) == consul.generate(consul.parse_args(
        ["consul", "connect", "redirect-traffic", "-proxy-uid", "5995", "-proxy-inbound-port", "20000", "-exclude-inbound-port", "20200", "-exclude-uid", "5996"]))


# --- Linkerd's proxy-init ------------------------------------------------------------------------

CHART_ARGS = ["--firewall-bin-path", "iptables-nft", "--firewall-save-bin-path", "iptables-nft-save", "--incoming-proxy-port", "4143", "--outgoing-proxy-port", "4140", "--proxy-uid", "2102", "--inbound-ports-to-ignore", "4190,4191,4567,4568", "--outbound-ports-to-ignore", "4567,4568"]


def test_linkerd_chart_defaults_against_the_simulate_listing() -> None:
    want = parse_text((FRONTIER / "linkerd" / "DERIVED-default-proxy-init-simulate.txt").read_text(encoding="utf-8"))
    config = linkerd.parse_args(CHART_ARGS)
    assert config.iptables_mode == "nft"
    assert linkerd.generate(config) == want
    assert linkerd.generate(config) == linkerd.generate(linkerd.LinkerdConfig())  # the profile's defaults


def test_linkerd_docs_table_modulo_comments() -> None:
    text = (FRONTIER / "linkerd" / "docs-iptables-reference.rules.txt").read_text(encoding="utf-8")
    text = text.replace("--dports <ports> -j RETURN", "--dports 4567,4568 -j RETURN", 2)
    text = text.replace("-A PROXY_INIT_REDIRECT -p tcp --match multiport --dports 4567,4568",
                        "-A PROXY_INIT_REDIRECT -p tcp --match multiport --dports 4190,4191,4567,4568")
    want = parse_text(text)
    assert without_comments(linkerd.generate(linkerd.LinkerdConfig())) == want


def test_linkerd_partial_state_has_the_default_inbound_chain_and_no_hook() -> None:
    """linkerd2#13171: PROXY_INIT_REDIRECT exactly as the defaults write it, PREROUTING empty."""
    dump = parse_text((FRONTIER / "linkerd" / "issue-13171-partial-state.iptables-nft-save").read_text(encoding="utf-8"))
    gen = linkerd.generate(linkerd.LinkerdConfig())
    assert dump.ipv4.chain("nat", linkerd.REDIRECT_CHAIN) == gen.ipv4.chain("nat", linkerd.REDIRECT_CHAIN)
    assert dump.ipv4.chain("nat", "PREROUTING") == Chain("PREROUTING", (), "ACCEPT")
    assert dump.ipv4.chain("nat", linkerd.OUTPUT_CHAIN) is None


def test_linkerd_ignore_ports_split_at_fifteen_references() -> None:
    ports = [str(p) for p in range(5000, 5013)] + ["6000-6010", "7000"]  # 13 + 2 + 1 = 16 references
    config = linkerd.LinkerdConfig(inbound_ports_to_ignore=ports)
    chain = linkerd.generate(config).ipv4.chain("nat", linkerd.REDIRECT_CHAIN)
    assert chain is not None
    groups = [r.matches[1].ports for r in chain.rules[:-1]]  # type: ignore[union-attr]
    assert [len(g) for g in groups] == [14, 1]  # 13 singles + one range = 15 references, then 7000


def test_linkerd_subnets_to_ignore_are_inbound_only_by_source() -> None:
    config = linkerd.LinkerdConfig(subnets_to_ignore=("203.0.113.0/24",))
    rules = linkerd.generate(config).ipv4
    inbound = rules.chain("nat", linkerd.REDIRECT_CHAIN)
    outbound = rules.chain("nat", linkerd.OUTPUT_CHAIN)
    assert inbound is not None and outbound is not None
    assert any("-s 203.0.113.0/24" in render_save(Ruleset("ipv4", (Table("nat", (inbound,)),))) for _ in [0])
    assert "203.0.113.0" not in render_save(Ruleset("ipv4", (Table("nat", (outbound,)),)))


@pytest.mark.parametrize(("version", "endpoint"), [("stable-2.10.2", "localhost"), ("2.10", "localhost"),
                                                    ("edge-21.6.1", "localhost"), ("stable-2.11.0", "original_dst"),
                                                    ("edge-24.11.8", "original_dst"), ("current", "original_dst")])
def test_linkerd_inbound_targets_the_original_destination_since_2_11(version: str, endpoint: str) -> None:
    p = linkerd.proxy_behavior(linkerd.LinkerdConfig(version=version))
    assert (p.uid, p.outbound_port, p.inbound_port, p.inbound_endpoint) == (2102, 4140, 4143, endpoint)
    assert p.inbound_source_v4 is None


# --- Consul's nftables port (sdk/nftables/nftables_test.go expected lists) ------------------------

CONSUL_NFT = {
    "sdk-nftables-test.default.rules.txt": consul.ConsulConfig(proxy_uid=123, inbound_port=20000),
    "sdk-nftables-test.exclude-uids.rules.txt": consul.ConsulConfig(proxy_uid=123, inbound_port=20000,
                                                                    outbound_port=21000, exclude_uids=("456", "789")),
}


@pytest.mark.parametrize("name", sorted(CONSUL_NFT))
def test_consul_nftables_expected_rules(name: str) -> None:
    from meshsolve.meshes.consul_nft import nft_emission, nft_generate
    from meshsolve.nftables import parse_text as nft_parse
    from meshsolve.nftables import read_commands

    lines = (FRONTIER / "consul" / name).read_text(encoding="utf-8").splitlines()
    assert all(line.startswith("nft ") for line in lines)
    text = "".join(line[4:] + "\n" for line in lines)  # the test list's commands, as `nft -f` input
    want_commands, _ = read_commands(text, source=name)
    config = CONSUL_NFT[name]
    assert nft_emission(config) == want_commands
    assert nft_generate(config) == nft_parse(text, source=name)
    assert nft_generate(attrs.evolve(config, proxy_uid=124)) != nft_parse(text, source=name)


@pytest.mark.kernel
def test_consul_nftables_rules_load_into_the_kernel() -> None:
    import subprocess

    from meshsolve.meshes.consul_nft import nft_generate
    from meshsolve.nftables import render

    config = consul.ConsulConfig(proxy_uid=5995, inbound_port=20000, exclude_uids=("5996",),
                                 exclude_outbound_ports=("25",), exclude_outbound_cidrs=("203.0.113.0/24",),
                                 exclude_inbound_ports=("20200",))
    text = render(nft_generate(config))
    proc = subprocess.run(["unshare", "-n", "sh", "-c", "nft -f - && nft list table inet nat"], input=text,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr + text
    assert "skuid 5996 return" in proc.stdout and "tcp dport 25 return" in proc.stdout


# --- every Kuma container save parses ------------------------------------------------------------

def test_every_kuma_container_save_parses_without_a_crash() -> None:
    """The files of kuma/container/: each parses into rules, or — a save command that did not run —
    is refused with a ParseError naming its line; nothing else escapes."""
    from meshsolve.errors import ParseError

    outcomes: dict[str, str] = {}
    for path in sorted(CONTAINER.iterdir()):
        try:
            rs = parse_text(path.read_text(encoding="utf-8"), source=path.name)
            outcomes[path.name] = f"rules {rs.ipv4.rule_count()}+{rs.ipv6.rule_count()}"
        except ParseError as exc:
            assert exc.lineno == 1 and exc.source == path.name
            outcomes[path.name] = "refused"
    assert len(outcomes) == 6
    assert [n for n, o in outcomes.items() if o == "refused"] == ["alpine-3-default.iptables-legacy.golden"]
    assert (CONTAINER / "alpine-3-default.iptables-legacy.golden").read_text().strip() == "executable not found"


@pytest.mark.parametrize("name", sorted(CONTAINER_CASES))
def test_kuma_container_save_through_the_cli(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    from meshsolve.cli import main

    family = CONTAINER_CASES[name][0]
    assert main(["parse", str(CONTAINER / name), "--family", family]) == 0
    out = capsys.readouterr().out
    assert "KUMA_MESH_OUTBOUND" in out


# --- Kuma's saves from sixteen distributions: every one parses ----------------------------------

MORE_CONTAINER = Path(__file__).resolve().parent / "data" / "kuma-saves"  # SOURCES.md there
CONTAINER_SAVES = sorted([*CONTAINER.glob("*.golden"), *MORE_CONTAINER.glob("*.golden")], key=lambda p: p.name)


def _family_of(path: Path) -> str:
    return "ipv6" if path.name.split(".")[1].startswith("ip6tables") else "ipv4"


def _read_save(path: Path, interface: str = "ifPlaceholder") -> Rulesets:
    text = path.read_text(encoding="utf-8").replace("ifPlaceholder", interface)
    return parse_text(("# ipv6\n" if _family_of(path) == "ipv6" else "") + text, source=path.name)


def test_the_saves_cover_sixteen_distributions() -> None:
    distributions = {p.name.split(".")[0].replace("-with-multiple-flags", "").replace("-default", "")
                     for p in CONTAINER_SAVES}
    assert len(distributions) == 16, sorted(distributions)


@pytest.mark.parametrize("path", CONTAINER_SAVES, ids=lambda p: p.name)
def test_each_distributions_kuma_save_parses(path: Path) -> None:
    from meshsolve.errors import ParseError
    from meshsolve.istio.fingerprint import mesh_of_rules

    if path.read_text(encoding="utf-8").strip() == "executable not found":  # the save command did not run
        with pytest.raises(ParseError) as exc:
            _read_save(path)
        assert exc.value.lineno == 1
        return
    rules = _read_save(path)
    family = _family_of(path)
    got = rules.for_family(family)  # type: ignore[arg-type]
    assert got.chain("nat", "KUMA_MESH_OUTBOUND") is not None and got.rule_count() >= 11
    assert mesh_of_rules(rules).kind == "kuma"
    assert parse_text(("# ipv6\n" if family == "ipv6" else "") + render_save(got)).for_family(family) == got  # type: ignore[arg-type]
    if "-default." in path.name:  # kumactl's defaults: the same rules on every distribution
        want = kuma.generate(kuma.parse_args([])).for_family(family)  # type: ignore[arg-type]
        on_lo = _no_empty_tables(without_comments(_read_save(path, "lo")))  # the harness's placeholder: lo
        assert on_lo.for_family(family) == want  # type: ignore[arg-type]


def test_save_order_quirks_parse_to_the_same_rules() -> None:
    """Older iptables-nft-save prints :POSTROUTING before :OUTPUT (RHEL 8, Ubuntu 20.04) and, in
    Debian 10's 1.8.2, protocol numbers (``-p 17``) and the comment after the other matches."""
    ubuntu = MORE_CONTAINER / "ubuntu-20-04-default.ip6tables-nft.golden"
    debian11 = MORE_CONTAINER / "debian-11-default.ip6tables-nft.golden"
    text = ubuntu.read_text(encoding="utf-8")
    assert text.index(":POSTROUTING") < text.index(":OUTPUT")
    assert without_comments(_read_save(ubuntu)) == without_comments(_read_save(debian11))
    debian10 = MORE_CONTAINER / "debian-10-with-multiple-flags.iptables-nft.golden"
    assert "-A PREROUTING -p 17 -m udp --sport 53 -m comment" in debian10.read_text(encoding="utf-8")
    debian12 = CONTAINER / "debian-12-with-multiple-flags.iptables-nft.golden"
    if debian12.exists():
        old, new = (without_comments(_read_save(p)).ipv4 for p in (debian10, debian12))
        assert old.table("raw") == new.table("raw")
