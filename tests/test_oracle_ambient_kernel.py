"""The kernel oracle on ambient pods: every mode's flows, in both backends, (and the worlds the properties ask about)
agree with the interpreter; the refutations' witnesses replay on the kernel, Istio's #58546 among
them; the ``SO_MARK`` spoofer (an app with ztunnel's mark) ends as the interpreter says; random
ambient worlds agree.

Addresses are documentation addresses; the node's probe SNAT address is set to one too
(``HOST_PROBE_SNAT_ADDRESS`` is a setting)."""

from __future__ import annotations

import os
import tempfile
import time

import attrs
import pytest
from ambient_vectors import LOCAL, POD_GOLDENS, pod_config, read_golden
from ambient_worlds import NEAR, PEER, POD, PROBE_V4, PROBE_V6, REMOTE, ambient_cases
from hypothesis import HealthCheck, given, settings

from meshsolve.analysis.ambient import check_ambient
from meshsolve.analysis.ambient_properties import SPOOFER, hbone_inner, property_world, with_spoofer
from meshsolve.analysis.check import Refuted
from meshsolve.iptables import parse_text
from meshsolve.istio.ambient import AmbientConfig
from meshsolve.istio.ambient.profile import ambient_world
from meshsolve.model.world import App, Flow, Socket, World
from meshsolve.oracle.compare import differences, explain, nat_hits, replay_command
from meshsolve.oracle.run import KernelWorld, OracleConfig
from meshsolve.semantics.interpret import interpret
from meshsolve.semantics.trace import Delivered, Dropped, Egress, Failed, Refused, Result

pytestmark = pytest.mark.kernel

WORLDS = int(os.environ.get("MESHSOLVE_AMBIENT_WORLDS", "100"))
NFT_WORLDS = int(os.environ.get("MESHSOLVE_AMBIENT_NFT_WORLDS", "30"))  # the nftables backend's campaign
CONFIG = OracleConfig(connect_timeout=0.3, upstream_timeout=0.3)


def _documented(c: AmbientConfig) -> AmbientConfig:
    return c.evolve(probe_snat_v4=PROBE_V4, probe_snat_v6=PROBE_V6)


def _differences(expected: Result, actual: Result) -> tuple[str, ...]:
    """As ``oracle.compare.differences``; a handshake that never completes is compared without the
    number of nat hits (the client's retransmitted SYN finds its conntrack entry gone when the
    peer answered the stray SYN-ACK with a RST: a new entry, nat again), but with the rules hit."""
    if isinstance(expected.outcome, Failed):
        out = differences(expected, actual, hits=False)
        if set(nat_hits(expected)) != set(nat_hits(actual)):
            out += (f"nat rules hit: interpreter {sorted(map(str, nat_hits(expected)))}, kernel "
                    f"{sorted(map(str, nat_hits(actual)))}",)
        return out
    return differences(expected, actual, hits=True)


def _save(world: World) -> str:
    from meshsolve.oracle.worldio import dump_world

    fd, path = tempfile.mkstemp(prefix="msor-ambient-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        f.write(dump_world(world))
    return path


def _run(world: World, flows: tuple[Flow, ...], **kw: object) -> list[str]:
    bad: list[tuple[Flow, Result, Result]] = []
    with KernelWorld(world, CONFIG, **kw) as k:  # type: ignore[arg-type]
        for flow in flows:
            expected, actual = interpret(world, flow), k.run(flow)
            if _differences(expected, actual):
                bad.append((flow, expected, actual))
    if not bad:
        return []
    path = _save(world)
    return [explain(world, f, e, a, replay_command(f, world_file=path)) for f, e, a in bad]


def _matrix(world: World) -> tuple[Flow, ...]:
    """Per family: the peer to each app port, HBONE's port, ztunnel's inbound port and a port nobody
    listens on, and through HBONE's tunnel to each app port and to that port; from the probe address and its neighbour; an app to remote addresses (a web port,
    DNS, HBONE's port), to its own pod address, to loopback and to the probe address; ztunnel's own
    connections to a remote address and to the app."""
    flows: list[Flow] = []
    app = world.apps[0].name
    ports = sorted({s.port for s in world.apps[0].sockets})
    for fam in world.families:
        pod, lo = POD[fam], "127.0.0.1" if fam == "ipv4" else "::1"
        probe = PROBE_V4 if fam == "ipv4" else PROBE_V6
        flows += [Flow("peer", pod, p) for p in (*ports, 15008, 15006, 12345)]
        flows += [Flow("peer", pod, 15008, inner=p) for p in (*ports, 12345)]  # HBONE to each port
        flows += [Flow("peer", pod, ports[0], src=probe), Flow("peer", pod, ports[0], src=NEAR[fam])]
        flows += [Flow(app, REMOTE[fam], p) for p in (80, 53, 15008)]
        flows += [Flow(app, pod, ports[0]), Flow(app, lo, ports[0]), Flow(app, probe, 80)]
        flows += [Flow("proxy", REMOTE[fam], 80), Flow("proxy", pod, ports[0])]
    return tuple(flows)


def _world(c: AmbientConfig, interface: str = "eth0") -> World:
    fams = c.families
    return ambient_world(c, pod_ips=tuple(POD[f] for f in fams), peer_ips=tuple(PEER[f] for f in fams),
                         interface=interface)


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
@pytest.mark.parametrize("name", sorted(POD_GOLDENS))
def test_every_mode_agrees_with_the_kernel(name: str, backend: str) -> None:
    """Every pod mode, with its iptables rules and with its native nftables rules (``nft -f``)."""
    c = _documented(pod_config(name, backend))
    w = _world(c)
    bad = _run(w, _matrix(w))
    bad += _run(hbone_inner(w), tuple(f for f in _matrix(w) if f.client == "peer" and f.src is None and f.inner is None))
    for nic in c.virtual_interfaces[:1]:  # a peer arriving on a virtual interface
        v = _world(c, nic)
        bad += _run(v, tuple(f for f in _matrix(v) if f.client == "peer"))
    assert not bad, "\n\n".join(bad)


@pytest.mark.parametrize("version", ["1.21", "1.24"])
def test_tproxy_eras_agree_with_the_kernel(version: str) -> None:
    c = _documented(AmbientConfig(version=version, tproxy=version == "1.24" or None, redirect_dns=True))
    w = _world(c)
    assert not (bad := _run(w, _matrix(w))), "\n\n".join(bad)


@pytest.mark.parametrize("version", ["1.21", "1.24"])
def test_tproxy_era_hbone_reaches_ztunnel(version: str) -> None:
    """In the TPROXY eras the kernel hands HBONE (TPROXY --on-port 15008) to ztunnel's own transparent
    listener on 15008 (kernel-facts.md, fact 13c), and so does the interpreter; with listeners that
    are not transparent the same rule drops it, on both."""
    c = _documented(AmbientConfig(version=version, tproxy=version == "1.24" or None, enable_ipv6=True))
    w = _world(c)
    flows = tuple(Flow("peer", POD[fam], 15008) for fam in w.families)
    for f in flows:
        assert isinstance(interpret(w, f).outcome, Delivered)
    opaque = attrs.evolve(w, proxy=attrs.evolve(w.proxy, transparent=False))
    for f in flows:
        assert isinstance(interpret(opaque, f).outcome, Dropped)
    assert not (bad := _run(w, flows) + _run(opaque, flows)), "\n\n".join(bad)


def test_ztunnels_own_connections_carry_its_mark() -> None:
    """A connection ztunnel opens on its own (client ``proxy``) carries its ``SO_MARK`` 0x539 from
    the first packet: capture leaves it alone and it leaves the pod. The same process without the
    mark is REDIRECTed to 15001 like any other. The kernel and the interpreter agree on both."""
    w = _world(_documented(pod_config("default", enable_ipv6=True)))
    unmarked = attrs.evolve(w, proxy=attrs.evolve(w.proxy, socket_mark=None))
    flows = tuple(Flow("proxy", addr[fam], port) for fam in w.families
                  for addr, port in ((REMOTE, 80), (REMOTE, 15008), (POD, 8080)))
    for f in flows[:2]:
        marked = interpret(w, f)
        assert isinstance(marked.outcome, Egress) and marked.observed == (), str(marked)
        assert interpret(unmarked, f).observed[:1] == ("out",)
    assert not (bad := _run(w, flows) + _run(unmarked, flows)), "\n\n".join(bad)


def test_a_refused_inner_connection_whose_reset_leaves_the_pod() -> None:
    """HBONE's inner connection to a port nobody listens on: the pod's RST goes to the client's
    address ztunnel connected from. In ingress mode before the connmark fix nothing marks it for
    the local table, so it leaves the pod and ztunnel's upstream times out (failed); with the fix
    it comes back to ztunnel (refused). Kernel-facts.md, fact 17."""
    flow = Flow("peer", POD["ipv4"], 15008, inner=12345)
    for version, ends in (("1.28", Failed), ("1.29", Refused)):
        c = _documented(pod_config("ingress", version=version))
        w = _world(c)
        assert c.ingress_connmark == (version == "1.29")
        got = interpret(w, flow)
        assert isinstance(got.outcome, ends) and got.observed == ("in",), str(got)
        assert not (bad := _run(w, (flow,))), "\n\n".join(bad)


def test_refused_upstream_s_reset_follows_the_return_path() -> None:
    """HBONE's inner connection to an app that listens on loopback only, in ingress mode: ztunnel
    connects from the peer's address to the pod's, nothing listens there, and in 1.24 the kernel's
    RST has no mark to bring it back to ztunnel (failed); 1.29's connmark rule restores it (refused).
    Found by the random campaign."""
    app = App("app", uid=1000, gid=1000, sockets=(Socket("127.0.0.1", 8080),))
    flow = Flow("peer", POD["ipv4"], 8080)
    for version, ends in (("1.24", Failed), ("1.29", Refused)):
        c = _documented(AmbientConfig(version=version, ingress=True, redirect_dns=False))
        w = hbone_inner(ambient_world(c, apps=(app,), pod_ips=(POD["ipv4"],), peer_ips=(PEER["ipv4"],)))
        got = interpret(w, flow)
        assert isinstance(got.outcome, ends) and got.observed == ("in",), str(got)
        assert not (bad := _run(w, (flow,))), "\n\n".join(bad)


def test_58546_witness_replays_on_the_kernel() -> None:
    """The refutation of A3 on ingress mode before the fix, an HBONE connection to ztunnel's tunnel
    listener naming the app's port: the kernel loses it the same way (ztunnel's connection to the
    app never completes), and the fixed rules deliver it, on both."""
    text = read_golden(LOCAL / "ingress-before-1.29.iptables.golden").replace("169.254.7.127", PROBE_V4)
    c = _documented(pod_config("ingress", version="1.28"))
    before = attrs.evolve(_world(c), rules=parse_text(text))
    rows = check_ambient(c, before)
    (a3,) = [r.verdict for r in rows if r.key == "A3"]
    assert isinstance(a3, Refuted)
    assert a3.flow.dport == 15008 and a3.flow.inner == 8080  # HBONE itself, through the tunnel listener
    assert property_world(a3.prop, before) is before
    with KernelWorld(before, CONFIG) as k:
        actual = k.run(a3.flow)
    assert isinstance(actual.outcome, Failed) and actual.observed == ("in",)
    assert not _differences(a3.result, actual)
    fixed = _world(_documented(pod_config("ingress")))
    with KernelWorld(fixed, CONFIG) as k:
        ok = k.run(a3.flow)
    assert isinstance(ok.outcome, Delivered) and str(ok.outcome.source) == PEER["ipv4"] and ok.observed == ("in",)
    assert not _differences(interpret(fixed, a3.flow), ok)


@pytest.mark.parametrize("name", ["default", "ingress_and_virtual_interfaces_ipv6"])
def test_every_witness_replays_on_the_kernel(name: str) -> None:
    c = _documented(pod_config(name))
    w = _world(c)
    refuted = [r.verdict for r in check_ambient(c, w) if isinstance(r.verdict, Refuted)]
    assert refuted  # the mark spoofer, at least
    for v in refuted:
        world = property_world(v.prop, w)
        with KernelWorld(world, CONFIG) as k:
            actual = k.run(v.flow)
        assert not _differences(v.result, actual), explain(world, v.flow, v.result, actual, replay_command(v.flow))


def test_the_so_mark_spoofer_ends_as_the_interpreter_says() -> None:
    """The mark spoofer for real: an app with CAP_NET_ADMIN that sets SO_MARK 0x539 on its sockets
    (``with_spoofer``) ends on the kernel as the interpreter says; the same process without the
    mark is captured."""
    c = _documented(pod_config("default", enable_ipv6=True))
    w = _world(c)
    name, uid = SPOOFER
    spoofer = with_spoofer(w, 0x539)
    unmarked = attrs.evolve(w, apps=(*w.apps, App(name, uid=uid, gid=uid)))
    for fam in ("ipv4", "ipv6"):
        flows = (Flow(name, REMOTE[fam], 80), Flow(name, REMOTE[fam], 53), Flow(name, POD[fam], 8080))
        for world in (spoofer, unmarked):
            with KernelWorld(world, CONFIG) as k:
                for flow in flows:
                    expected, actual = interpret(world, flow), k.run(flow)
                    assert actual.observed == expected.observed
                    assert not differences(expected, actual), explain(world, flow, expected, actual,
                                                                      replay_command(flow))
        assert interpret(unmarked, flows[0]).observed == ("out",) and not interpret(spoofer, flows[0]).observed
    assert isinstance(interpret(spoofer, Flow(name, REMOTE["ipv4"], 80)).outcome, Egress)


_stats = {"worlds": 0, "flows": 0, "seconds": 0.0}


@settings(max_examples=WORLDS, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(ambient_cases())
def test_random_ambient_worlds_agree_with_the_kernel(case: tuple[AmbientConfig, World, tuple[Flow, ...]]) -> None:
    _c, world, flows = case
    _one_world(_stats, world, flows)


def _one_world(stats: dict[str, float], world: World, flows: tuple[Flow, ...]) -> None:
    """One campaign world on the kernel, counted in ``stats``; every flow must agree."""
    t0 = time.monotonic()
    bad = _run(world, flows)
    stats["worlds"] += 1
    stats["flows"] += len(flows)
    stats["seconds"] += time.monotonic() - t0
    assert not bad, f"{len(bad)} of {len(flows)} flows disagree\n\n" + "\n\n".join(bad)


_nft_stats = {"worlds": 0, "flows": 0, "seconds": 0.0}


@settings(max_examples=NFT_WORLDS, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(ambient_cases("nftables"))
def test_random_nft_ambient_worlds_agree_with_the_kernel(case: tuple[AmbientConfig, World, tuple[Flow, ...]]) -> None:
    """The same campaign with istio-cni's native nftables rules (1.28 and current, loaded with ``nft -f``)."""
    _c, world, flows = case
    # istio-cni's rules are native nft; only the hbone variant's stand-in rule (nat PREROUTING) is iptables'
    assert world.rules.ipv4.nft and all(t.name == "nat" for t in world.rules.ipv4.tables)
    _one_world(_nft_stats, world, flows)


def test_random_campaign_ran() -> None:
    """Runs after the campaigns (file order): they ran the worlds they were asked for."""
    if _stats["worlds"] == 0 and _nft_stats["worlds"] == 0:
        pytest.skip("the random campaigns did not run in this session")
    if _stats["worlds"]:
        assert _stats["worlds"] >= min(WORLDS, 100)
    if _nft_stats["worlds"]:
        assert _nft_stats["worlds"] >= min(NFT_WORLDS, 30)
    print(f"\nambient kernel campaign: {_stats['worlds']} worlds, {_stats['flows']} flows, "
          f"{_stats['seconds']:.0f} s; nft: {_nft_stats['worlds']} worlds, {_nft_stats['flows']} flows, "
          f"{_nft_stats['seconds']:.0f} s")
