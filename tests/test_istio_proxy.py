"""The sidecar's ProxyBehavior per Istio version."""

from __future__ import annotations

import pytest

from meshsolve.errors import SpecError
from meshsolve.istio import CaptureConfig, generate, parse_flags, proxy_behavior
from meshsolve.model import App, ProxyBehavior, Socket, World, to_address


def _cfg(version: str, *argv: str) -> CaptureConfig:
    return parse_flags(list(argv), version=version)


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])
def test_script_era_single_virtual_listener(version: str) -> None:
    p = proxy_behavior(version, _cfg(version, "-p", "15001", "-u", "1337", "-b", "80,90", "-i", "*"))
    assert p == ProxyBehavior(uid=1337, gid=1337, outbound_port=15001, inbound_port=None,
                              virtual_inbound_dispatch=True, inbound_ports=(80, 90),
                              inbound_endpoint="localhost")
    assert p.inbound_source("ipv4") is None


def test_1_2_wildcard_with_inbound_capture_port_env() -> None:
    cfg = parse_flags(["-b", "*"], {"INBOUND_CAPTURE_PORT": "15006"}, version="1.2")
    p = proxy_behavior("1.2", cfg)
    assert (p.inbound_port, p.virtual_inbound_dispatch, p.inbound_ports) == (15006, False, None)


@pytest.mark.parametrize("version", ["1.3", "1.5", "1.9"])
def test_localhost_era(version: str) -> None:
    p = proxy_behavior(version, _cfg(version, "-b", "*"))
    assert (p.inbound_port, p.inbound_endpoint, p.virtual_inbound_dispatch) == (15006, "localhost", False)
    assert p.inbound_source_v4 is None and p.inbound_source_v6 is None


@pytest.mark.parametrize("version", ["1.10", "1.18", "current"])
def test_original_dst_era(version: str) -> None:
    p = proxy_behavior(version, _cfg(version, "-b", "*", "-u", "1337"))
    assert (p.inbound_port, p.inbound_endpoint) == (15006, "original_dst")
    assert p.inbound_source_v4 == to_address("127.0.0.6")
    assert p.inbound_source_v6 == to_address("::6")


def test_ids_and_ports_follow_the_config() -> None:
    p = proxy_behavior("current", _cfg("current", "-p", "16001", "-z", "16006", "-u", "2000", "-g", "3000"))
    assert (p.uid, p.gid, p.outbound_port, p.inbound_port) == (2000, 3000, 16001, 16006)


def test_tproxy_runs_as_root_with_gid() -> None:
    p = proxy_behavior("current", _cfg("current", "-m", "TPROXY", "-b", "*", "-u", "1337"))
    assert (p.uid, p.gid) == (0, 1337)


def test_non_numeric_proxy_id() -> None:
    with pytest.raises(SpecError, match="proxy uid"):
        proxy_behavior("current", _cfg("current", "-u", "istio-proxy", "-g", "1337"))


@pytest.mark.parametrize("version", ["1.2", "1.3", "1.10", "current"])
def test_behaviour_and_rules_make_a_valid_world(version: str) -> None:
    """Proxy behaviour + generated rules are accepted by the world model (ports, chains, hooks)."""
    cfg = _cfg(version, "-p", "15001", "-u", "1337", "-i", "*", "-b", "8080" if version == "1.2" else "*")
    world = World(pod_ips=("192.0.2.10",), peer_ips=("198.51.100.7",),
                  apps=(App("app", sockets=(Socket("0.0.0.0", 8080),)),),
                  proxy=proxy_behavior(version, cfg), rules=generate(cfg))
    assert world.proxy.outbound_port == 15001


@pytest.mark.parametrize(("version", "dispatch", "original_src", "mark", "endpoint"), [
    ("1.1", True, False, None, "localhost"),
    ("1.4", True, False, None, "localhost"),
    ("1.5", False, False, None, "localhost"),
    ("1.6", False, True, None, "localhost"),
    ("1.8", False, True, None, "localhost"),
    ("1.9", False, True, 1337, "original_dst"),
    ("1.10", False, True, 1337, "original_dst"),
    ("current", False, True, 1337, "original_dst"),
])
def test_tproxy_eras(version: str, dispatch: bool, original_src: bool, mark: int | None, endpoint: str) -> None:
    """docs/tproxy.md: transparent listeners in every era; dispatch from the 15001 listener while the
    per-port inbound listeners exist; Envoy's original_src from 1.6, with mark 1337 from 1.9."""
    args = ["-m", "TPROXY", "-b", "*" if version != "1.1" else "9001", "-u", "1337"]
    if version not in ("1.1", "1.4", "1.5"):  # -t is a tproxy mark only in the Go tool
        args += ["-t", "77"]
    p = proxy_behavior(version, _cfg(version, *args))
    assert (p.uid, p.gid, p.transparent) == (0, 1337, True)
    assert p.virtual_inbound_dispatch is dispatch
    assert p.inbound_original_source is original_src
    assert p.upstream_mark == mark  # pilot's constant, not istio-init's -t
    assert p.inbound_endpoint == endpoint


@pytest.mark.parametrize("version", ["1.2", "1.9", "current"])
def test_redirect_mode_is_not_transparent(version: str) -> None:
    p = proxy_behavior(version, _cfg(version, "-b", "*" if version != "1.2" else "80"))
    assert (p.transparent, p.inbound_original_source, p.upstream_mark) == (False, False, None)


def test_tproxy_world_has_istio_init_policy_routing() -> None:
    from meshsolve.analysis.worlds import world_from_config

    cfg = _cfg("current", "-m", "TPROXY", "-b", "*", "-t", "1400", "-r", "140")
    w = world_from_config(cfg)
    assert [str(r) for r in w.routing.rules] == ["32765: from all fwmark 0x578/0xffffffff lookup 140"]
    assert [str(r) for r in w.routing.routes] == ["local 0.0.0.0/0 dev lo table 140"]
    assert world_from_config(_cfg("current", "-b", "*")).routing.empty
