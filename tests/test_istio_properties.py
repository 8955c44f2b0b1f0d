"""Properties of the generator over random configurations (Hypothesis): the rules are well formed
for the kernel, keep Istio's structural invariants, and flags round-trip."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshsolve.errors import UnsupportedError
from meshsolve.istio import CaptureConfig, generate, parse_flags
from meshsolve.istio.flags import to_flags
from meshsolve.model import Jump, MarkMatch, OwnerMatch, PortMatch, Redirect, Return, Tproxy
from meshsolve.model.world import validate_rulesets

VERSIONS = ["1.0", "1.1", "1.2", "1.3", "1.4", "1.5", "1.6", "1.7", "1.9", "1.10", "1.11", "1.12", "1.13",
            "1.14", "1.18", "1.21", "1.23", "1.24", "1.25", "current"]
ports = st.integers(1, 65535)
port_lists = st.lists(ports, max_size=3).map(tuple)
ids = st.lists(st.integers(0, 70000).map(str), min_size=1, max_size=2).map(tuple)
v4 = st.builds(lambda a, p: ipaddress.ip_network(f"{a}/{p}", strict=False),
               st.sampled_from(["192.0.2.0", "198.51.100.64", "203.0.113.9", "127.1.2.3"]),
               st.integers(8, 32))
v6 = st.builds(lambda p: ipaddress.ip_network(f"2001:db8::/{p}"), st.integers(32, 128))
cidrs = st.lists(st.one_of(v4, v6), max_size=3).map(tuple)
nics = st.lists(st.sampled_from(["eth1", "eth2", "net1", "veth0"]), max_size=2, unique=True).map(tuple)
NAMED_GROUPS = ["java", "202", "888", "ftp"]


@st.composite
def configs(draw: st.DrawFn, *, group_names: bool = True) -> CaptureConfig:
    """Random configurations that every era's generator accepts; ``group_names=False`` keeps owner
    groups numeric (a kernel only resolves names its /etc/group knows)."""
    groups = st.lists(st.sampled_from(NAMED_GROUPS if group_names else ["202", "888", "4000"]),
                      min_size=1, max_size=2, unique=True).map(tuple)
    version = draw(st.sampled_from(VERSIONS))
    c = CaptureConfig(version=version)
    m = c.minor
    dns = m >= 25 and draw(st.booleans())
    return c.evolve(
        proxy_port=draw(ports),
        inbound_capture_port=draw(st.none() | ports),
        proxy_uids=draw(ids), proxy_gids=draw(ids),
        mode=draw(st.sampled_from(["REDIRECT", "TPROXY"])),
        inbound_ports=draw(st.just("*") | port_lists),
        inbound_ports_exclude=draw(port_lists),
        outbound_cidrs=draw(st.just("*") | cidrs),
        outbound_cidrs_exclude=draw(cidrs),
        outbound_ports=draw(port_lists) if m >= 7 else (),
        outbound_ports_exclude=draw(port_lists) if m >= 2 else (),
        reroute_interfaces=draw(nics) if m >= 1 else (),
        exclude_interfaces=draw(nics) if m >= 12 else (),
        tproxy_mark=draw(st.integers(1, 2**31)),
        redirect_dns=dns, capture_all_dns=dns and draw(st.booleans()),
        dns_servers_v4=draw(st.lists(st.sampled_from(["192.0.2.53", "127.0.0.53"]), max_size=1))
        if dns else (),
        dns_servers_v6=draw(st.lists(st.just("2001:db8::53"), max_size=1)) if dns else (),
        drop_invalid=m >= 24 and draw(st.booleans()),
        enable_ipv6=(m == 0 or m >= 5) and draw(st.booleans()),
        owner_groups_include=draw(groups) if m >= 14 and draw(st.booleans()) else "*",
        owner_groups_exclude=draw(groups) if m >= 14 and draw(st.booleans()) else (),
        host_ipv4_loopback_cidr="127.0.0.1/8" if m >= 21 and draw(st.booleans()) else "127.0.0.1/32",
        disable_redirection_on_local_loopback=1 <= m <= 4 and draw(st.booleans()),
    )


FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(configs())
def test_rules_are_loadable_and_keep_istio_invariants(c: CaptureConfig) -> None:
    rules = generate(c)
    validate_rulesets(rules)  # jumps resolve, no cycles, owner/REDIRECT/TPROXY only where allowed
    for rs in (rules.ipv4, rules.ipv6) if c.enable_ipv6 and not c.script_era else (rules.ipv4,):
        redirect = rs.chain("nat", "ISTIO_REDIRECT")
        assert redirect is not None and redirect.rules[0].target == Redirect(c.proxy_port)
        in_redirect = rs.chain("nat", "ISTIO_IN_REDIRECT")
        assert in_redirect is not None
        assert in_redirect.rules[0].target == Redirect(c.effective_inbound_capture_port())
        pre = rs.chain("nat", "PREROUTING")
        assert pre is not None
        jumps_inbound = any(r.target == Jump("ISTIO_INBOUND") for r in pre.rules)
        assert jumps_inbound == (bool(c.inbound_ports) and c.mode != "TPROXY")
        tproxy = [r for t in rs.tables for ch in t.chains for r in ch.rules if isinstance(r.target, Tproxy)]
        assert bool(tproxy) == (c.mode == "TPROXY" and bool(c.inbound_ports))
        if c.minor >= 7:
            inbound = rs.chain("nat", "ISTIO_INBOUND")
            assert inbound is not None and inbound.rules[0].target == Return()
            first = inbound.rules[0].find(PortMatch)
            assert isinstance(first, PortMatch) and first.dport is not None
            assert first.dport.lo == c.inbound_tunnel_port
        owners = [m for ch in rs.table("nat").chains for r in ch.rules  # type: ignore[union-attr]
                  for m in r.matches if isinstance(m, OwnerMatch)]
        assert {u for u in c.proxy_uids} <= {m.uid for m in owners if not m.uid_negated}
        assert {g for g in c.proxy_gids} <= {m.gid for m in owners if not m.gid_negated}
        assert (rs.chain("mangle", "ISTIO_DROP") is not None) == c.drop_invalid
        assert (rs.chain("nat", "ISTIO_OUTPUT_DNS") is not None) == (
            c.dns_enabled() and (c.capture_all_dns or bool(c.dns_servers_v4 if rs.family == "ipv4"
                                                             else c.dns_servers_v6)))
        if c.mode == "TPROXY" and c.minor >= 9:
            mangle_in = rs.chain("mangle", "ISTIO_INBOUND")
            assert mangle_in is not None and mangle_in.rules[0].find(MarkMatch) == MarkMatch(c.tproxy_mark)


@FAST
@given(configs())
def test_flags_round_trip(c: CaptureConfig) -> None:
    argv, env = to_flags(c)
    back = parse_flags(argv, env, version=c.version)
    assert back == c.evolve(dns_servers_v4=(), dns_servers_v6=(),
                            inbound_capture_port=back.inbound_capture_port
                            if c.inbound_capture_port is None else c.inbound_capture_port)


@FAST
@given(configs())
def test_generation_is_deterministic_and_versioned(c: CaptureConfig) -> None:
    assert generate(c) == generate(c.evolve())
    if c.minor >= 25:
        # the current generator's OUTPUT jump has no -p tcp; every older modern era's has
        out = generate(c).ipv4.chain("nat", "OUTPUT")
        assert out is not None
        assert any(r.matches == () and r.target == Jump("ISTIO_OUTPUT") for r in out.rules)


def test_era_gates() -> None:
    with pytest.raises(UnsupportedError, match=r"added in 1\.12"):
        generate(CaptureConfig(version="1.11", exclude_interfaces=("eth1",)))
    with pytest.raises(UnsupportedError, match="DNS"):
        generate(CaptureConfig(version="1.20", redirect_dns=True, dns_servers_v4=("192.0.2.53",)))
    with pytest.raises(UnsupportedError, match=r"removed in Istio 1\.5"):
        generate(CaptureConfig(version="1.6", disable_redirection_on_local_loopback=True))
