"""istio-iptables argv / environment → CaptureConfig, including validation errors."""

from __future__ import annotations

import shlex
from typing import Any

import pytest
from istio_vectors import BASE, MASTER

from meshsolve.errors import SpecError
from meshsolve.iptables import parse_text
from meshsolve.istio.config import CaptureConfig, from_go_fields, normalise_version
from meshsolve.istio.flags import parse_flags
from meshsolve.istio.generate import generate


@pytest.mark.parametrize("argv", [
    ["-p", "15002"], ["-p15002"], ["-p=15002"], ["--envoy-port", "15002"], ["--envoy-port=15002"],
    ["istio-iptables", "-p", "15002"], ["pilot-agent", "istio-iptables", "--envoy-port", "15002"],
])
def test_flag_spellings(argv: list[str]) -> None:
    assert parse_flags(argv).proxy_port == 15002


def test_flag_beats_env_beats_default() -> None:
    env = {"ISTIO_INBOUND_PORTS": "80", "ISTIO_SERVICE_CIDR": "*"}
    assert parse_flags(["-b", "90"], env).inbound_ports == (90,)
    assert parse_flags([], env).inbound_ports == (80,)
    assert parse_flags([], env).outbound_cidrs == "*"
    assert parse_flags([]).inbound_ports == ()
    assert parse_flags([]).outbound_cidrs == ()


@pytest.mark.parametrize(("env", "field"), [
    ({"ISTIO_META_DNS_CAPTURE": "true"}, "redirect_dns"),
    ({"REDIRECT_DNS": "1"}, "redirect_dns"),
    ({"INVALID_DROP": "true"}, "drop_invalid"),
    ({"DROP_INVALID": "T"}, "drop_invalid"),
    ({"ISTIO_DUAL_STACK": "true"}, "dual_stack"),
    ({"CAPTURE_ALL_DNS": "true"}, "capture_all_dns"),
    ({"ENABLE_INBOUND_IPV6": "true"}, "enable_ipv6"),
])
def test_boolean_env(env: dict[str, str], field: str) -> None:
    assert getattr(parse_flags([], env), field) is True
    assert getattr(parse_flags([]), field) is False


def test_boolean_flags() -> None:
    assert parse_flags(["--redirect-dns"]).redirect_dns
    assert not parse_flags(["--redirect-dns=false"], {"REDIRECT_DNS": "true"}).redirect_dns
    assert parse_flags(["--drop-invalid=true", "--dual-stack", "--capture-all-dns"]).drop_invalid
    assert parse_flags(["-n", "--dry-run=true"]) == parse_flags([])
    with pytest.raises(SpecError, match="--redirect-dns: 'maybe' is not a boolean"):
        parse_flags(["--redirect-dns=maybe"])


def test_env_only_settings() -> None:
    cfg = parse_flags([], {"ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR": "127.0.0.1/8",
                           "ISTIO_OUTBOUND_OWNER_GROUPS": "java,202",
                           "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE": "888"})
    assert str(cfg.host_ipv4_loopback_cidr) == "127.0.0.0/8"
    assert cfg.owner_groups_include == ("java", "202")
    assert cfg.owner_groups_exclude == ("888",)


def test_all_short_flags() -> None:
    cfg = parse_flags(["-p", "1", "-z", "2", "-e", "3", "-u", "4,5", "-g", "6", "-m", "tproxy", "-b", "7,8",
                       "-d", "9", "-c", "eth9", "-i", "192.0.2.0/24", "-x", "192.0.2.128/25", "-q", "10",
                       "-o", "11", "-k", "eth1", "-t", "12", "-r", "13"])
    assert cfg == CaptureConfig(proxy_port=1, inbound_capture_port=2, inbound_tunnel_port=3,
                                proxy_uids=("4", "5"), proxy_gids=("6",), mode="TPROXY", inbound_ports=(7, 8),
                                inbound_ports_exclude=(9,), exclude_interfaces=("eth9",),
                                outbound_cidrs=("192.0.2.0/24",), outbound_cidrs_exclude=("192.0.2.128/25",),
                                outbound_ports=(10,), outbound_ports_exclude=(11,),
                                reroute_interfaces=("eth1",), tproxy_mark=12, tproxy_route_table=13)


@pytest.mark.parametrize(("argv", "fragment"), [
    (["-p", "99999"], "-p: '99999' in '99999' is not a port number"),
    (["-m", "FOO"], "-m: interception mode 'FOO'"),
    (["-x", "*"], "-x: '*' is not allowed"),
    (["-b", "80;reboot"], "';'"),
    (["-i", "$(reboot)"], "'$'"),
    (["-k", "eth1`id`"], "'`'"),
    (["-c", "eth'1"], "\"'\""),
    (["-i", "192.0.2.0/24\nreboot"], "'\\n'"),
    (["--istio-inbound-ports=80,x"], "--istio-inbound-ports: 'x'"),
    (["-Z", "1"], "unknown flag -Z"),
    (["--bogus"], "unknown flag --bogus"),
    (["-p"], "flag -p needs a value"),
    (["--cleanup-only"], "removes Istio's rules"),
])
def test_bad_flags(argv: list[str], fragment: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_flags(argv)
    assert fragment in str(info.value)


@pytest.mark.parametrize(("version", "argv", "field", "value", "note"), [
    # the Go tool (pflag): a value flag takes the next word, even a flag; words that are not flags are
    # ignored and parsing goes on; -i/-x items Go's CIDR parser refuses are skipped with a message
    ("1.5", ["-x", "-b", "*", "-d", "15090,15020"], "outbound_cidrs_exclude", (), "ignores '-b'"),
    ("1.5", ["-x", "-b", "*", "-d", "15090,15020"], "inbound_ports", (), "not a flag: '*'"),
    ("1.5", ["-x", "-b", "*", "-d", "15090,15020"], "inbound_ports_exclude", (15090, 15020), "not a flag"),
    ("current", ["-x", "10.0.0.0/33"], "outbound_cidrs_exclude", (), "ignores '10.0.0.0/33'"),
    ("current", ["-x", "192.0.2.1"], "outbound_cidrs_exclude", (), "invalid CIDR address: 192.0.2.1"),
    ("current", ["extra", "-b", "80"], "inbound_ports", (80,), "not a flag: 'extra'"),
    # the script (getopts): the first word that is not a flag ends the options
    ("1.1", ["-b", "9080", "*", "-d", "15020"], "inbound_ports_exclude", (), "getopts stops at '*'"),
    ("1.1", ["-b", "9080", "*", "-d", "15020"], "inbound_ports", (9080,), "(-d 15020) were ignored"),
])
def test_each_era_cuts_the_command_line_as_its_flag_library_did(version: str, argv: list[str], field: str,
                                                                 value: object, note: str) -> None:
    from meshsolve.istio.flags import read_flags

    got = read_flags(argv, version=version)
    assert getattr(got.config, field) == value
    assert any(note in n for n in got.notes), got.notes


def test_script_era_refuses_what_iptables_would_refuse_half_way() -> None:
    with pytest.raises(SpecError, match=r"-d -b -j RETURN.*errexit"):
        parse_flags(["-x", "-b", "*"], version="1.2")


def test_native_nftables_is_read_where_istio_iptables_has_it(capsys: pytest.CaptureFixture[str]) -> None:
    """``--native-nftables`` (flag or ``$NATIVE_NFTABLES``) selects Istio's nftables tables from 1.27
    on; an earlier istio-iptables has no such backend, which is said, not ignored; and the
    iptables output forms refuse it instead of printing rules the pod would not have."""
    for argv, env in ((["--native-nftables"], {}), (["--native-nftables=true"], {}), ([], {"NATIVE_NFTABLES": "1"})):
        assert parse_flags(argv, env).native_nftables
        with pytest.raises(SpecError, match="no nftables backend"):
            parse_flags(argv, env, version="1.20")
    assert not parse_flags(["--native-nftables=false"]).native_nftables
    assert parse_flags(["--native-nftables=false"]).version == parse_flags([]).version
    from meshsolve.cli import main

    assert main(["generate", "--", "--native-nftables"]) != 0
    assert "-o nft" in capsys.readouterr().err
    assert main(["generate", "-o", "nft", "--", "--native-nftables"]) == 0
    assert "table inet istio-proxy-nat" in capsys.readouterr().out


def test_bad_env_is_named() -> None:
    with pytest.raises(SpecError, match=r"\$ISTIO_LOCAL_EXCLUDE_PORTS: '70000'"):
        parse_flags([], {"ISTIO_LOCAL_EXCLUDE_PORTS": "70000"})


@pytest.mark.parametrize(("version", "argv", "fragment"), [
    ("1.2", ["-z", "15006"], "unknown flag -z for Istio 1.2's istio-iptables.sh"),
    ("1.0", ["-k", "eth1"], "unknown flag -k"),
    ("1.1", ["-o", "25"], "unknown flag -o"),
    ("1.2", ["-t"], "unit-test switch"),
    ("1.3", ["--envoy-port=1"], "has no long options"),
    ("1.2", ["clean"], "only removes"),
])
def test_script_era_getopts(version: str, argv: list[str], fragment: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_flags(argv, version=version)
    assert fragment in str(info.value)


def test_script_env() -> None:
    cfg = parse_flags([], {"ENVOY_PORT": "15011", "ISTIO_INBOUND_PORTS": "*", "ISTIO_SERVICE_CIDR": "*",
                           "ISTIO_INBOUND_TPROXY_MARK": "7"}, version="1.1")
    assert (cfg.proxy_port, cfg.inbound_ports, cfg.outbound_cidrs, cfg.tproxy_mark) == (15011, "*", "*", 7)
    assert parse_flags(["-p", "1"], {"ENVOY_PORT": "2"}, version="1.0").proxy_port == 1


@pytest.mark.parametrize(("text", "want"), [
    ("1.10", "1.10"), ("1.10.3", "1.10"), ("v1.2.5", "1.2"), ("master", "current"), ("HEAD", "current"),
    ("1.25.0-beta.1", "1.25"),
])
def test_versions(text: str, want: str) -> None:
    assert normalise_version(text) == want


@pytest.mark.parametrize("text", ["2.0", "1.99", "banana", ""])
def test_bad_versions(text: str) -> None:
    with pytest.raises(SpecError, match="unknown Istio version"):
        normalise_version(text)


FLAG_SETTABLE = [g for g in MASTER if not g.get("not_flag_settable")]


@pytest.mark.parametrize("entry", FLAG_SETTABLE, ids=[g["name"] for g in FLAG_SETTABLE])
def test_golden_as_flags(entry: dict[str, Any], goldens_dir: Any) -> None:
    """The manifest's as_flags, parsed as a user's argv, give the golden too (base -u/-g 1337)."""
    argv = [tok for flag in entry["as_flags"] for tok in shlex.split(flag)]
    cfg = parse_flags(argv)
    expected = from_go_fields({**BASE, **entry["set"]})
    assert cfg == expected.evolve(inbound_capture_port=cfg.inbound_capture_port)
    want = parse_text((goldens_dir / entry["file"]).read_text(encoding="utf-8"), source=entry["file"])
    assert generate(cfg) == want


def test_config_value_checks() -> None:
    with pytest.raises(SpecError, match="-k: 'a-very-long-interface-name' is not a Linux interface"):
        parse_flags(["-k", "a-very-long-interface-name"])
    with pytest.raises(SpecError, match="TPROXY mark"):
        parse_flags(["-t", "0"])
    with pytest.raises(SpecError, match="not a number"):
        parse_flags(["-r", "main"])
