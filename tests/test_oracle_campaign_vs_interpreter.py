"""Differential tests: the concrete interpreter and the real kernel agree, flow by flow.

* the built-in set-ups A–E (IPv4 and IPv6), every flow of the bind matrix;
* random worlds (Hypothesis): random binds, ISTIO_OUTPUT-like rule lists, proxy knobs, v4 and v6.

On a disagreement the failure message carries the world, the flow, both results and a one-line
command that replays it.
"""

from __future__ import annotations

import os
import tempfile
import time

import pytest
from conftest import campaign_examples
from hypothesis import HealthCheck, given, settings

from meshsolve.model.rules import (
    Chain,
    Jump,
    OutInterface,
    OwnerMatch,
    PortMatch,
    Protocol,
    Redirect,
    Reject,
    Rule,
    RuleRef,
    Ruleset,
    Rulesets,
    Source,
    Table,
)
from meshsolve.model.world import App, Flow, ProxyBehavior, World
from meshsolve.oracle.compare import differences, explain, replay_command
from meshsolve.oracle.run import NO_ERRNO, KernelWorld, OracleConfig
from meshsolve.semantics.interpret import interpret
from meshsolve.semantics.setups import APP_PORTS, SETUPS, setup_addresses, setup_world
from meshsolve.semantics.trace import Egress, Failed, Rejected
from meshsolve.strategies import worlds_and_flows

pytestmark = pytest.mark.kernel

RANDOM_WORLDS = campaign_examples("MESHSOLVE_ORACLE_WORLDS", ci=30, full=200)
# a SYN inside one host is answered in microseconds: short bounds keep DROP rules cheap (the harness
# re-runs a timeout no DROP rule counted with generous bounds, so a loaded machine does not flake)
RANDOM_CONFIG = OracleConfig(connect_timeout=0.3, upstream_timeout=0.3)


def bind_matrix(world: World, family: str) -> tuple[Flow, ...]:
    """peer → pod IP, app → loopback, app → pod IP, app → service VIP, on every app port."""
    a = setup_addresses(family)  # type: ignore[arg-type]
    app = world.apps[0].name
    flows = []
    for port in APP_PORTS:
        flows += [Flow("peer", a["pod"], port), Flow(app, a["lo"], port), Flow(app, a["pod"], port),
                  Flow(app, a["vip"], port)]
    return tuple(flows)


def _disagreements(world: World, flows: tuple[Flow, ...], replay: object) -> list[str]:
    out = []
    with KernelWorld(world) as kw:
        for flow in flows:
            expected = interpret(world, flow)
            actual = kw.run(flow)
            if differences(expected, actual, hits=True):
                out.append(explain(world, flow, expected, actual, replay(flow)))  # type: ignore[operator]
    return out


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
@pytest.mark.parametrize("setup", SETUPS)
def test_builtin_setup_agrees_with_the_kernel(setup: str, family: str) -> None:
    world = setup_world(setup, family)  # type: ignore[arg-type]
    flows = bind_matrix(world, family)
    bad = _disagreements(world, flows,
                         lambda f: replay_command(f, setup=setup, family=family))
    assert not bad, f"{len(bad)} of {len(flows)} flows disagree\n\n" + "\n\n".join(bad)


_stats = {"worlds": 0, "flows": 0, "seconds": 0.0, "known": 0}


def _save_world(world: World) -> str:
    from meshsolve.oracle.worldio import dump_world

    fd, path = tempfile.mkstemp(prefix="msor-world-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        f.write(dump_world(world))
    return path


@settings(max_examples=RANDOM_WORLDS, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(worlds_and_flows())
def test_random_worlds_agree_with_the_kernel(case: tuple[World, tuple[Flow, ...]]) -> None:
    world, flows = case
    t0 = time.monotonic()
    out = []
    with KernelWorld(world, RANDOM_CONFIG) as kw:
        for flow in flows:
            expected = interpret(world, flow)
            actual = kw.run(flow)
            if differences(expected, actual, hits=True):
                out.append((flow, expected, actual))
    _stats["worlds"] += 1
    _stats["flows"] += len(flows)
    _stats["seconds"] += time.monotonic() - t0
    if out:
        path = _save_world(world)
        msgs = [explain(world, f, e, a, replay_command(f, world_file=path)) for f, e, a in out]
        raise AssertionError(f"{len(out)} of {len(flows)} flows disagree\n\n" + "\n\n".join(msgs))


def _loopback_source_world() -> World:
    """The proxy's inbound side forwards to the original destination from 127.0.0.6, and an app's
    connection to an outside address is redirected to the inbound listener."""
    tcp = Protocol("tcp")
    nat = Table("nat", (
        Chain("OUTPUT", (Rule((tcp, PortMatch("tcp", dport=9001)), Jump("IN")),), "ACCEPT"),
        Chain("IN", (Rule((tcp,), Redirect(15006)),)),
    ))
    return World(pod_ips=("192.0.2.10",), peer_ips=("192.0.2.20",), apps=(App("app"),),
                 proxy=ProxyBehavior(inbound_endpoint="original_dst", inbound_source_v4="127.0.0.6"),
                 rules=Rulesets(ipv4=Ruleset("ipv4", (nat,))))


def test_kernel_refuses_a_loopback_source_towards_the_outside() -> None:
    """Kernel fact: a socket bound to 127.0.0.6 cannot connect() to a non-local address (EINVAL from
    the route lookup, before nat OUTPUT sees a packet): the flow fails, naming the errno."""
    world = _loopback_source_world()
    with KernelWorld(world) as kw:
        res = kw.run(Flow("app", "203.0.113.9", 9001))
    assert res.observed == ("in",)
    assert isinstance(res.outcome, Failed) and "(EINVAL)" in res.outcome.reason
    assert "EINVAL" in res.trace[-1].text


def test_interpreter_agrees_on_a_loopback_source_towards_the_outside() -> None:
    world = _loopback_source_world()
    flow = Flow("app", "203.0.113.9", 9001)
    with KernelWorld(world) as kw:
        actual = kw.run(flow)
    expected = interpret(world, flow)
    diffs = differences(expected, actual, hits=True)
    assert not diffs, explain(world, flow, expected, actual, replay_command(flow))


def _six_world() -> World:
    """IPv6: the proxy's inbound side forwards to the original destination from ::6 (on lo); apps'
    connections to port 9001 are redirected to the inbound listener, the proxy's are not. A filter
    OUTPUT rule counts what leaves through eth0 from ::6."""
    tcp = Protocol("tcp")
    nat = Table("nat", (
        Chain("OUTPUT", (Rule((tcp, PortMatch("tcp", dport=9001), OwnerMatch(uid="1337", uid_negated=True)),
                              Jump("IN")),), "ACCEPT"),
        Chain("IN", (Rule((tcp,), Redirect(15006)),)),
    ))
    filt = Table("filter", (Chain("OUTPUT", (Rule((Source("::6/128"), OutInterface("eth0"), tcp), None),),
                                  "ACCEPT"),))
    return World(pod_ips=("2001:db8::10",), peer_ips=("2001:db8::20",), apps=(App("app"),),
                 proxy=ProxyBehavior(inbound_endpoint="original_dst", inbound_source_v6="::6"),
                 rules=Rulesets(ipv6=Ruleset("ipv6", (nat, filt))))


def test_kernel_leaves_the_ipv6_passthrough_source_unanswered() -> None:
    """Kernel fact: ::6 is an ordinary address put on lo, not loopback: a socket bound to it sends its
    SYN out of eth0 (the counting rule sees it, unlike 127.0.0.6's EINVAL), but the outside world
    has no route back to an address only the pod's lo has, so the connection never completes."""
    with KernelWorld(_six_world()) as kw:
        res = kw.run(Flow("app", "2001:db8:2::9", 9001))
    assert res.observed == ("in",)
    assert isinstance(res.outcome, Failed) and "no answer" in res.outcome.reason
    assert RuleRef("filter", "OUTPUT", 1) in res.rule_hits


def test_interpreter_agrees_on_the_ipv6_passthrough_source_towards_the_outside() -> None:
    """The model's side of the fact above (``Failed``: the source exists only on lo)."""
    world = _six_world()
    flow = Flow("app", "2001:db8:2::9", 9001)
    with KernelWorld(world) as kw:
        actual = kw.run(flow)
    expected = interpret(world, flow)
    assert not differences(expected, actual, hits=True), explain(world, flow, expected, actual,
                                                                 replay_command(flow))


def _oif_world(family: str, oif: str) -> World:
    """nat OUTPUT redirects every non-proxy connection to 15001; filter OUTPUT rejects port 15001
    leaving through ``oif``."""
    tcp = Protocol("tcp")
    pod, peer = ("192.0.2.10", "192.0.2.20") if family == "ipv4" else ("2001:db8::10", "2001:db8::20")
    nat = Table("nat", (Chain("OUTPUT", (
        Rule((tcp, OwnerMatch(uid="1337", uid_negated=True)), Redirect(15001)),), "ACCEPT"),))
    filt = Table("filter", (Chain("OUTPUT", (
        Rule((OutInterface(oif), tcp, PortMatch("tcp", dport=15001)), Reject()),), "ACCEPT"),))
    rs = Ruleset(family, (nat, filt))  # type: ignore[arg-type]
    return World(pod_ips=(pod,), peer_ips=(peer,), apps=(App("app"),),
                 rules=Rulesets(ipv4=rs) if family == "ipv4" else Rulesets(ipv6=rs))


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_kernel_filter_output_sees_the_interface_routed_before_nat(family: str) -> None:
    """Kernel fact: the LOCAL_OUT hook's output device is fixed when the hook starts, so after nat
    OUTPUT redirected a connection bound for eth0 to loopback, filter OUTPUT still sees ``-o eth0``
    (with the new destination port): ``-o lo`` does not match it, ``-o eth0`` does."""
    out = "203.0.113.9" if family == "ipv4" else "2001:db8:2::9"
    with KernelWorld(_oif_world(family, "lo")) as kw:
        via_lo = kw.run(Flow("app", out, 9001))
    with KernelWorld(_oif_world(family, "eth0")) as kw:
        via_eth0 = kw.run(Flow("app", out, 9001))
    assert via_lo.observed == ("out",) and isinstance(via_lo.outcome, Egress)
    assert via_eth0.observed == ()
    assert isinstance(via_eth0.outcome, Rejected) and via_eth0.outcome.rule == RuleRef("filter", "OUTPUT", 1)
    assert via_eth0.outcome.errno in ("ECONNREFUSED", NO_ERRNO)  # IPv6: the errno comes after ~1 s


@pytest.mark.parametrize("oif", ["lo", "eth0"])
def test_interpreter_agrees_on_filter_output_after_nat(oif: str) -> None:
    world = _oif_world("ipv4", oif)
    flow = Flow("app", "203.0.113.9", 9001)
    with KernelWorld(world) as kw:
        actual = kw.run(flow)
    expected = interpret(world, flow)
    assert not differences(expected, actual, hits=True), explain(world, flow, expected, actual,
                                                                 replay_command(flow))


ISTIO_VERSIONS = ("1.0", "1.2", "1.3", "1.5", "1.6", "1.9", "1.10", "1.11", "1.18", "1.25", "current")


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
@pytest.mark.parametrize("mode", ["REDIRECT", "TPROXY"])
@pytest.mark.parametrize("version", ISTIO_VERSIONS)
def test_istio_generated_pod_agrees_with_the_kernel(version: str, mode: str, family: str,
                                                     request: pytest.FixtureRequest) -> None:
    """The rules and proxy behaviour meshsolve.istio derives for a default sidecar of ``version``
    (REDIRECT and TPROXY: policy routing + transparent listeners), with the seed's three binds.
    Flows the interpreter leaves undetermined (e.g. ``-m socket`` before 1.6) are not compared.

    TPROXY from 1.9: the kernel delivers inbound connections from the client's own address (Envoy's
    original_src, SO_MARK 1337, CONNMARK back through the mark's local route, docs/tproxy.md) — and
    so does the model, whose handshake follows the app's SYN-ACK back through that route."""
    import attrs

    from meshsolve.analysis.worlds import istio_routing
    from meshsolve.errors import UnsupportedError
    from meshsolve.istio import CaptureConfig, generate, proxy_behavior

    minor = 99 if version == "current" else int(version.split(".")[1])
    base = setup_world("E", family)  # type: ignore[arg-type]
    try:
        cfg = CaptureConfig(version=version, mode=mode, outbound_cidrs="*",
                            inbound_ports="*" if minor >= 3 else APP_PORTS,
                            inbound_ports_exclude=(15090, 15021, 15020), enable_ipv6=family == "ipv6")
        world = attrs.evolve(base, rules=generate(cfg), proxy=proxy_behavior(version, cfg),
                             routing=istio_routing(cfg, base.families), name=f"istio-{version}-{mode}-{family}")
    except UnsupportedError as exc:
        pytest.skip(f"meshsolve.istio does not model this pod: {exc}")
    flows = bind_matrix(world, family)
    bad, compared = [], 0
    with KernelWorld(world) as kw:
        for flow in flows:
            expected = interpret(world, flow)
            actual = kw.run(flow)
            if type(expected.outcome).__name__ == "Undetermined":
                continue
            compared += 1
            if differences(expected, actual, hits=True):
                bad.append(explain(world, flow, expected, actual,
                                   replay_command(flow, world_file=_save_world(world))))
    assert not bad, f"{len(bad)} of {compared} flows disagree\n\n" + "\n\n".join(bad)
    if compared == 0:
        pytest.skip("the interpreter leaves every flow of this pod undetermined (-m socket)")


@pytest.mark.slow
@settings(max_examples=int(os.environ.get("MESHSOLVE_ORACLE_CAMPAIGN", "1500")), deadline=None,
          database=None, suppress_health_check=list(HealthCheck))
@given(worlds_and_flows())
def test_random_worlds_campaign(case: tuple[World, tuple[Flow, ...]]) -> None:
    """The same property over many more, non-derandomized worlds (opt in with --run-slow)."""
    test_random_worlds_agree_with_the_kernel.hypothesis.inner_test(case)  # type: ignore[attr-defined]
