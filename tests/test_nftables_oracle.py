"""Native nftables against the real kernel: the interpreter (and, on samples, the solver) agree with what
``nft -f``-loaded rules do in network namespaces — on random nft capture worlds, on nft's own meanings,
and on every Istio sidecar nft golden that loads."""

from __future__ import annotations

import ipaddress
import os
import tempfile
import time
from typing import Any

import attrs
import pytest
from conftest import REFERENCE, campaign_examples
from hypothesis import HealthCheck, given, settings
from istio_vectors import BASE, MASTER
from nft_kernel import nft_unavailable_reason
from nft_worlds import nft_worlds_and_flows

from meshsolve.analysis.worlds import world_from_config, world_from_rules
from meshsolve.istio.config import from_go_fields
from meshsolve.model.routing import Routing
from meshsolve.model.rules import RuleRef
from meshsolve.model.world import App, Flow, ProxyBehavior, Socket, World
from meshsolve.nftables.loadcheck import load_rulesets
from meshsolve.oracle.compare import differences, explain, nft_nat_chains, replay_command
from meshsolve.oracle.run import KernelWorld, OracleConfig
from meshsolve.semantics.interpret import interpret
from meshsolve.semantics.trace import Delivered, Dropped, Egress, Rejected

_reason = nft_unavailable_reason()
pytestmark = [pytest.mark.kernel, pytest.mark.skipif(_reason is not None, reason=f"kernel test skipped: {_reason}")]

RANDOM_WORLDS = campaign_examples("MESHSOLVE_NFT_ORACLE_WORLDS", ci=10, full=200)
RANDOM_CONFIG = OracleConfig(connect_timeout=0.3, upstream_timeout=0.3)
POD = (ipaddress.ip_address("192.0.2.10"), ipaddress.ip_address("2001:db8::10"))


def _save_world(world: World) -> str:
    from meshsolve.oracle.worldio import dump_world

    fd, path = tempfile.mkstemp(prefix="msor-nft-world-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        f.write(dump_world(world))
    return path


def _compare(world: World, flows: tuple[Flow, ...] | list[Flow], config: OracleConfig | None = None
             ) -> tuple[list[str], int]:
    """Every flow on the kernel and in the interpreter: the disagreements (explained) and how many
    flows were compared."""
    nat = nft_nat_chains(world)
    bad, compared = [], 0
    with KernelWorld(world, config) as kw:
        for flow in flows:
            expected = interpret(world, flow)
            actual = kw.run(flow)
            compared += 1
            if differences(expected, actual, hits=True, nat_chains=nat):
                bad.append(explain(world, flow, expected, actual,
                                   replay_command(flow, world_file=_save_world(world))))
    return bad, compared


# --- random nft capture worlds -----------------------------------------------------------------------

_stats = {"worlds": 0, "flows": 0, "seconds": 0.0}


@settings(max_examples=RANDOM_WORLDS, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(nft_worlds_and_flows())
def test_random_nft_worlds_agree_with_the_kernel(case: tuple[World, tuple[Flow, ...]]) -> None:
    world, flows = case
    t0 = time.monotonic()
    bad, compared = _compare(world, flows, RANDOM_CONFIG)
    _stats["worlds"] += 1
    _stats["flows"] += compared
    _stats["seconds"] += time.monotonic() - t0
    assert not bad, f"{len(bad)} of {compared} flows disagree\n\n" + "\n\n".join(bad)


# --- nft's own meanings, on the kernel ---------------------------------------------------------------

APPS = (App("app", uid=1000, gid=1000, sockets=(Socket("0.0.0.0", 8080), Socket("::", 8080, v6only=True),
                                                Socket("0.0.0.0", 9001))),)


def _world(text: str, proxy: ProxyBehavior | None = None, routing: Routing | None = None) -> World:
    w = world_from_rules(load_rulesets(text, "case.nft"), proxy or ProxyBehavior(), apps=APPS, pod_ips=POD)
    return w if routing is None else attrs.evolve(w, routing=routing)


NAT = ("add table inet t\nadd chain inet t out { type nat hook output priority -100 ; }\n"
       "add rule inet t out oifname != \"lo\" ip daddr != 127.0.0.1 tcp dport 80 counter redirect to :15001\n")
CASES: dict[str, tuple[str, list[Flow]]] = {
    "an ip field in an inet table restricts the rule to IPv4": (
        NAT, [Flow("app", "203.0.113.9", 80), Flow("app", "2001:db8:2::9", 80)]),
    "a family-free rule applies to both families": (
        NAT.replace(" ip daddr != 127.0.0.1", ""), [Flow("app", "203.0.113.9", 80), Flow("app", "2001:db8:2::9", 80)]),
    "the port pair holds when either port differs": (
        NAT.replace("tcp dport 80", "tcp dport != 80 tcp sport != 1"), [Flow("app", "203.0.113.9", 80)]),
    "meta skuid does not match a packet without a socket": (
        "add table inet t\nadd chain inet t pre { type filter hook prerouting priority 0 ; }\n"
        "add rule inet t pre meta skuid != 1337 counter drop\n",
        [Flow("peer", "192.0.2.10", 8080), Flow("peer", "2001:db8::10", 8080)]),
    "tproxy without a transparent socket lets the chain go on": (
        "add table inet t\nadd chain inet t pre { type filter hook prerouting priority -150 ; }\n"
        "add rule inet t pre meta l4proto tcp ip daddr 192.0.2.10 tproxy ip to :15006 meta mark set 1337 accept\n"
        "add rule inet t pre tcp dport 8080 counter reject\n", [Flow("peer", "192.0.2.10", 8080)]),
    "accept ends only its base chain": (
        "add table inet t\nadd chain inet t a { type filter hook input priority 0 ; }\n"
        "add chain inet t b { type filter hook input priority 10 ; }\n"
        "add rule inet t a counter accept\nadd rule inet t b tcp dport 8080 counter drop\n",
        [Flow("peer", "192.0.2.10", 8080), Flow("peer", "192.0.2.10", 9001)]),
    "a drop policy drops what no rule accepts": (
        "add table ip t\nadd chain ip t in { type filter hook input priority 0 ; policy drop ; }\n"
        "add rule ip t in tcp dport 9001 counter accept\nadd rule ip t in iifname \"lo\" accept\n",
        [Flow("peer", "192.0.2.10", 8080), Flow("peer", "192.0.2.10", 9001)]),
    "address, interface and mark sets": (
        "add table inet t\nadd chain inet t out { type nat hook output priority -100 ; }\n"
        "add chain inet t marker { type route hook output priority -150 ; }\n"
        "add rule inet t marker meta skuid { 1000, 1001 } meta mark set mark & 0xfffff000 | 0x539\n"
        "add rule inet t out ip daddr { 198.51.100.0/24, 203.0.113.9 } oifname != { \"lo\", \"wg0\" } "
        "meta mark & 0xfff { 0x539, 0x1 } meta l4proto tcp redirect to :15001\n",
        [Flow("app", "203.0.113.9", 80), Flow("app", "203.0.113.10", 80), Flow("app", "198.51.100.7", 80),
         Flow("proxy", "203.0.113.9", 80)]),
    "conntrack zones set in a raw-priority chain": (
        "add table inet t\nadd chain inet t raw { type filter hook output priority -300 ; }\n"
        "add chain inet t out { type nat hook output priority -100 ; }\n"
        "add rule inet t raw tcp dport 80 ct zone set 7\n"
        "add rule inet t out tcp dport 80 redirect to :15001\n",
        [Flow("app", "203.0.113.9", 80), Flow("app", "127.0.0.1", 8080)]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_nft_meaning_agrees_with_the_kernel(name: str) -> None:
    text, flows = CASES[name]
    bad, compared = _compare(_world(text), flows)
    assert compared == len(flows)
    assert not bad, "\n\n".join(bad)


def test_the_kernel_shows_what_the_meanings_say() -> None:
    """The facts above, as the kernel shows them (so the agreement is not agreement on nothing)."""
    with KernelWorld(_world(CASES["an ip field in an inet table restricts the rule to IPv4"][0])) as kw:
        assert kw.run(Flow("app", "203.0.113.9", 80)).observed == ("out",)
        assert kw.run(Flow("app", "2001:db8:2::9", 80)).observed == ()
    with KernelWorld(_world(CASES["meta skuid does not match a packet without a socket"][0])) as kw:
        assert isinstance(kw.run(Flow("peer", "192.0.2.10", 8080)).outcome, Delivered)
    with KernelWorld(_world(CASES["tproxy without a transparent socket lets the chain go on"][0])) as kw:
        assert kw.run(Flow("peer", "192.0.2.10", 8080)).outcome == Rejected(RuleRef("inet t", "pre", 2))
    with KernelWorld(_world(CASES["accept ends only its base chain"][0])) as kw:
        assert kw.run(Flow("peer", "192.0.2.10", 8080)).outcome == Dropped(RuleRef("inet t", "b", 1))
    with KernelWorld(_world(CASES["a drop policy drops what no rule accepts"][0])) as kw:
        assert kw.run(Flow("peer", "192.0.2.10", 8080)).outcome == Dropped(RuleRef("ip t", "in", 0))


# --- Istio's sidecar nft goldens -----------------------------------------------------------------------

NFT = REFERENCE / "frontier" / "istio-nftables-sidecar"
GOLDEN_CASES: dict[str, dict[str, Any]] = {g["name"]: g["set"] for g in MASTER if g["name"] != "logging"}
GOLDEN_CASES["inbound-ports-empty-tproxy"] = {"InboundInterceptionMode": "TPROXY", "InboundPortsInclude": ""}
#: Goldens the kernel refuses (nft resolves the group names java/ftp on the loading host).
REFUSED = {"outbound-owner-groups", "outbound-owner-groups-exclude", "ipv6-dns-outbound-owner-groups",
           "ipv6-dns-outbound-owner-groups-exclude"}


def golden_world(name: str) -> World:
    """The pod of a golden's configuration, dual-stack, with the golden's own nft rules."""
    cfg = from_go_fields({**BASE, **GOLDEN_CASES[name]}, source=f"nft golden {name}")
    rules = load_rulesets((NFT / f"{name}.golden").read_text(encoding="utf-8"), f"{name}.golden")
    return world_from_config(cfg.evolve(native_nftables=True), rules=rules, pod_ips=POD, name=name)


def golden_flows(world: World) -> list[Flow]:
    """Per family: the peer to each app port, an app to loopback, its pod IP and the outside on each
    app port and on 80, DNS to the outside (and to the goldens' DNS server), the proxy to the outside."""
    out: list[Flow] = []
    ports = sorted({s.port for a in world.apps for s in a.sockets})
    outside = {"ipv4": "203.0.113.9", "ipv6": "2001:db8:2::9"}
    for fam in world.families:
        pod, lo = world.pod_ip(fam), ("127.0.0.1" if fam == "ipv4" else "::1")
        for p in ports:
            out += [Flow("peer", pod, p), Flow("app", lo, p), Flow("app", pod, p)]  # type: ignore[arg-type]
        out += [Flow("app", outside[fam], 80), Flow("app", outside[fam], 53), Flow("proxy", outside[fam], 80)]
    if "ipv4" in world.families:  # the goldens' IPv4 DNS server (their IPv6 one, ::127.0.0.53, is not routed)
        out.append(Flow("app", "127.0.0.53", 53))
    return out


@pytest.mark.parametrize("name", sorted(n for n in GOLDEN_CASES if n not in REFUSED))
def test_istio_nft_golden_agrees_with_the_kernel(name: str) -> None:
    world = golden_world(name)
    flows = golden_flows(world)
    bad, compared = _compare(world, flows)
    assert compared == len(flows)
    assert not bad, f"{len(bad)} of {compared} flows disagree\n\n" + "\n\n".join(bad)


def test_the_goldens_are_all_there() -> None:
    assert sorted(p.stem for p in NFT.glob("*.golden")) == sorted(GOLDEN_CASES)


def test_ipv6_off_redirects_ipv6_on_the_kernel_in_nft_only() -> None:
    """The predicted witness, replayed on the kernel in both backends: Istio with IPv6 off on a
    dual-stack pod — the nft tables send an app's IPv6 TCP to the proxy, the iptables rules leave it."""
    cfg = from_go_fields({**BASE, **GOLDEN_CASES["kube-virt-interfaces"]}, source="kube-virt-interfaces")
    flow = Flow("app", "2001:db8:2::9", 80)
    for native, observed in ((False, ()), (True, ("out",))):
        world = world_from_config(cfg.evolve(native_nftables=native), pod_ips=POD)
        with KernelWorld(world) as kw:
            actual = kw.run(flow)
        expected = interpret(world, flow)
        assert actual.observed == expected.observed == observed, (native, actual, expected)
        assert isinstance(actual.outcome, Egress) and not differences(expected, actual, hits=True)


# --- open: found by the random nft worlds ---------------------------------------------------------------

TWO_PORT_PAIRS = ("add table ip t\nadd chain ip t out { type filter hook output priority 0 ; }\n"
                  "add rule ip t out tcp dport != 15008 tcp sport != 9001 tcp dport != 9001 tcp sport != 15008 "
                  "counter drop\n")


def test_the_kernel_stores_two_port_pairs_apart() -> None:
    """nft 1.0.6 stores this rule as ``sport != 9001``, ``dport != 9001`` and the pair
    ``(sport, dport) != (15008, 15008)`` (``nft --debug=netlink``): a connection to 9001 is not dropped."""
    with KernelWorld(_world(TWO_PORT_PAIRS)) as kw:
        assert isinstance(kw.run(Flow("app", "127.0.0.1", 9001)).outcome, Delivered)


@pytest.mark.xfail(strict=True, reason="nftables lowering: the model joins the first two port compares into a pair "
                                       "(either differs), the kernel keeps them apart and joins the last two")
def test_two_port_pairs_in_one_rule() -> None:
    bad, _ = _compare(_world(TWO_PORT_PAIRS), [Flow("app", "127.0.0.1", 9001)])
    assert not bad, "\n\n".join(bad)
