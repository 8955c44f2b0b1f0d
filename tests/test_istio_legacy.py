"""Per-era vectors (script era 1.0–1.3, 1.4, 1.6, 1.10, 1.12, current) regenerated from their flags
and compared with the listings quoted in istio-capture-facts.md (data in tests/data/istio-legacy/)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from meshsolve.errors import UnsupportedError
from meshsolve.iptables import parse_text, render_save
from meshsolve.istio.flags import parse_flags
from meshsolve.istio.generate import generate
from meshsolve.model import InInterface, Jump, Redirect

DATA = Path(__file__).parent / "data" / "istio-legacy"
VECTORS = sorted(DATA.glob("*.yaml"))


def _load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return loaded


@pytest.mark.parametrize("path", VECTORS, ids=[p.stem for p in VECTORS])
def test_vector(path: Path) -> None:
    vec = _load(path)
    config = parse_flags(vec["args"], vec.get("env") or {}, version=vec["version"], source=path.name)
    want = parse_text(vec["rules"], source=path.name)
    got = generate(config)
    assert got == want, f"generated:\n{render_save(got.ipv4)}\n{render_save(got.ipv6)}\n" \
                        f"listing:\n{render_save(want.ipv4)}\n{render_save(want.ipv6)}"


def test_vectors_are_all_there() -> None:
    names = {p.stem for p in VECTORS}
    assert {"v1.0", "v1.1", "v1.1-disable-loopback", "v1.2", "v1.2-disable-loopback", "v1.3",
            "mode_redirect", "v1.10-default", "current-default"} <= names


def test_k_inserts_reverse_order() -> None:
    """-I PREROUTING 1 per interface: the last one issued ends up first."""
    vec = _load(DATA / "mode_redirect.yaml")
    pre = generate(parse_flags(vec["args"], version="1.3")).ipv4.chain("nat", "PREROUTING")
    assert pre is not None
    names = [next(m.name for m in r.matches if isinstance(m, InInterface)) for r in pre.rules[:4]]
    assert names == ["eth2", "eth1", "eth2", "eth1"]
    assert pre.rules[-1].target == Jump("ISTIO_INBOUND")


def test_disable_loopback_removes_exactly_one_rule() -> None:
    args = ["-p", "15001", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-b", "80", "-d", "15020"]
    for version in ("1.1", "1.2", "1.3"):
        on = generate(parse_flags(args, version=version)).ipv4
        env = {"DISABLE_REDIRECTION_ON_LOCAL_LOOPBACK": "1"}
        off = generate(parse_flags(args, env, version=version)).ipv4
        assert on.rule_count() - off.rule_count() == 1
    # 1.0 has no guard
    assert generate(parse_flags(args, {"DISABLE_REDIRECTION_ON_LOCAL_LOOPBACK": "1"}, version="1.0")) == \
        generate(parse_flags(args, version="1.0"))


def test_script_defaults_without_u_add_root() -> None:
    cfg = parse_flags(["-p", "15001", "-i", "*", "-b", "80"], version="1.2")
    assert cfg.proxy_uids == ("1337", "0") and cfg.proxy_gids == ("1337", "0")
    modern = parse_flags(["-p", "15001"], version="1.10")
    assert modern.proxy_uids == ("1337",) and modern.proxy_gids == ("1337",)


def test_script_era_inbound_capture_port() -> None:
    star = ["-p", "15001", "-u", "1337", "-i", "*", "-b", "*"]
    one = ["-p", "15001", "-u", "1337", "-i", "*", "-b", "80"]

    def in_redirect(args: list[str], version: str, env: dict[str, str] | None = None) -> object:
        chain = generate(parse_flags(args, env, version=version)).ipv4.chain("nat", "ISTIO_IN_REDIRECT")
        assert chain is not None
        return chain.rules[0].target

    assert in_redirect(star, "1.2") == Redirect(15001)
    assert in_redirect(star, "1.2", {"INBOUND_CAPTURE_PORT": "15006"}) == Redirect(15006)
    assert in_redirect(star, "1.3") == Redirect(15006)
    assert in_redirect(one, "1.3") == Redirect(15001)
    assert in_redirect(one, "1.5") == Redirect(15001)
    assert in_redirect(one, "1.6") == Redirect(15006)


def test_script_tproxy_uses_socket_and_proxy_port() -> None:
    rs = generate(parse_flags(["-p", "15001", "-u", "1337", "-m", "TPROXY", "-b", "80", "-i", "*"],
                              version="1.2")).ipv4
    inbound = rs.chain("mangle", "ISTIO_INBOUND")
    tp = rs.chain("mangle", "ISTIO_TPROXY")
    assert inbound is not None and tp is not None
    assert len(inbound.rules) == 3  # the duplicated -m socket line, then TPROXY
    assert inbound.rules[0] == inbound.rules[1]
    assert "15001" in str(tp.rules[0].target)
    assert rs.chain("nat", "ISTIO_INBOUND") is None


def test_unmodelled_script_ipv6_is_refused() -> None:
    with pytest.raises(UnsupportedError):
        generate(parse_flags(["-b", "80"], {"ENABLE_INBOUND_IPV6": "1"}, version="1.2"))
    # 1.0 leaves ip6tables alone when ENABLE_INBOUND_IPV6 is set
    assert generate(parse_flags(["-b", "80"], {"ENABLE_INBOUND_IPV6": "1"}, version="1.0")).ipv6.empty
