"""The seed's trade-off under each mesh: a pod calling its own service through a ClusterIP.

Linkerd's proxy-init and Consul's redirect-traffic let the proxy's connection to the endpoint (its
own uid) return, so the server side never sees the call; Kuma and Istio ≥1.10 send it to the inbound
side. The refutations are replayed on the kernel, and the Linkerd spec proves that no rewrite of
PROXY_INIT_OUTPUT can do better with Linkerd's proxy as modelled."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from meshsolve.analysis.check import Proved, Refuted, check
from meshsolve.analysis.properties import Observation, Reachable
from meshsolve.analysis.synth import Conflict, Synthesized
from meshsolve.analysis.worlds import world_from_rules
from meshsolve.cli import main
from meshsolve.meshes import default_setup, linkerd
from meshsolve.model import App, Endpoint, Flow, Service, Socket, World
from meshsolve.model.net import to_address
from meshsolve.semantics import interpret

POD, VIP = "192.0.2.10", "198.51.100.1"
ROOT = Path(__file__).resolve().parent.parent


def seed_world(mesh: str, version: str | None = None) -> World:
    """The seed's pod (9001 wildcard, 9002 loopback, 9003 pod IP) with a service whose one endpoint
    is the pod's own 9001, under ``mesh``'s default set-up."""
    s = default_setup(mesh, version)
    app = App("app", sockets=(Socket("0.0.0.0", 9001), Socket("127.0.0.1", 9002), Socket(POD, 9003)))
    return world_from_rules(s.rules, s.proxy, apps=(app,), pod_ips=(to_address(POD),),
                            services=(Service("self", VIP, 9001, (Endpoint(POD, 9001),)),), name=mesh)


SELF_CALL = Observation("app", VIP, 9001, sides=("out", "in"))


@pytest.mark.parametrize(("mesh", "rule"), [("linkerd", "nat::PROXY_INIT_OUTPUT#1"),
                                            ("consul", "nat::CONSUL_PROXY_OUTPUT#1")])
def test_the_server_side_of_a_self_call_is_lost(mesh: str, rule: str) -> None:
    v = check(seed_world(mesh), SELF_CALL)
    assert isinstance(v, Refuted)
    assert v.flow == Flow("app", VIP, 9001)
    assert v.result.observed == ("out",) and v.result.summary == f"out, app<-{POD}"
    # the proxy's connection to the endpoint returns at its own uid
    assert rule in [str(r) for r in v.result.rule_hits]


@pytest.mark.parametrize("mesh", ["kuma", "istio"])
def test_kuma_and_istio_send_the_self_call_to_the_inbound_side(mesh: str) -> None:
    assert isinstance(check(seed_world(mesh), SELF_CALL), Proved)
    r = interpret(seed_world(mesh), Flow("app", VIP, 9001))
    assert r.summary == "out, in, app<-127.0.0.6"


def test_linkerd_before_2_11_forwarded_inbound_to_localhost() -> None:
    """A pod-IP-only listener is unreachable through Linkerd 2.10's inbound side, as in Istio < 1.10."""
    old, new = seed_world("linkerd", "stable-2.10.2"), seed_world("linkerd", "stable-2.11.0")
    v = check(old, Reachable("peer", 9003))
    assert isinstance(v, Refuted) and v.result.summary == "in, refused"
    assert isinstance(check(new, Reachable("peer", 9003)), Proved)
    # the inbound side connects to the pod IP from the kernel's choice of source: the pod IP itself
    assert interpret(new, Flow("peer", POD, 9003)).summary == f"in, app<-{POD}"


def test_consul_forwards_inbound_to_localhost() -> None:
    w = seed_world("consul")
    assert interpret(w, Flow("peer", POD, 9003)).summary == "in, refused"
    assert interpret(w, Flow("peer", POD, 9002)).summary == "in, app<-127.0.0.1"


@pytest.mark.kernel
@pytest.mark.parametrize("mesh", ["linkerd", "consul", "kuma"])
def test_the_self_call_on_the_kernel(mesh: str) -> None:
    from meshsolve.oracle.compare import differences
    from meshsolve.oracle.run import KernelWorld

    w = seed_world(mesh)
    v = check(w, SELF_CALL)
    flow = v.flow if isinstance(v, Refuted) else Flow("app", VIP, 9001)
    model = interpret(w, flow)
    with KernelWorld(w) as kw:
        kernel = kw.run(flow)
    assert differences(model, kernel) == (), (model, kernel)
    assert kernel.observed == (("out",) if mesh != "kuma" else ("out", "in"))


def test_check_cli_on_a_linkerd_pod(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    binds = tmp_path / "binds.yaml"
    binds.write_text('services:\n  - {name: books, vip: 198.51.100.1, port: 7002, endpoints: ["pod:7002"]}\n')
    pod = str(ROOT / "docs/examples/meshes/linkerd.yaml")
    code = main(["check", "--pod", pod, "--binds", str(binds), "-p", "observe:books:198.51.100.1:7002"])
    out = capsys.readouterr().out
    assert code == 79 and "[MSH0105]" in out and "observed only client side" in out
    assert main(["check", "--pod", pod, "--mesh", "kuma", "--binds", str(binds),
                 "-p", "observe:books:198.51.100.1:7002"]) == 0


def test_linkerd_spec_conflicts_with_linkerd_s_proxy(synthesized_spec: Callable[[str], object]) -> None:
    res = synthesized_spec("linkerd-self-call.yaml")
    assert isinstance(res, Conflict), str(res)
    assert [g.name for g in res.goals] == ["self-call through the service observed on both sides"]
    # the spec's fixed rules are proxy-init's defaults, the searched chain is the one it writes
    spec_chain = res.spec.world.rules.ipv4.chain("nat", "PROXY_INIT_REDIRECT")
    ours = linkerd.generate(linkerd.LinkerdConfig()).ipv4.chain("nat", "PROXY_INIT_REDIRECT")
    assert spec_chain is not None and ours is not None
    assert [r.target for r in spec_chain.rules] == [r.target for r in ours.rules]


def test_with_a_passthrough_source_three_rules_do_it(synthesized_spec: Callable[[str], object]) -> None:
    from meshsolve.iptables import rule_text

    res = synthesized_spec("linkerd-self-call-passthrough.yaml")
    assert isinstance(res, Synthesized), str(res)
    assert dict(res.knobs) == {"inbound_source": "passthrough"}
    texts = [rule_text(r) for r in res.rules]
    assert any("-o lo" in t and "--uid-owner 2102" in t and "PROXY_INIT_REDIRECT" in t for t in texts), texts
    assert all(isinstance(v, Proved) for v in res.proofs)


@pytest.mark.kernel
@pytest.mark.parametrize("mesh", ["linkerd", "kuma", "consul"])
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_the_seed_pod_under_each_mesh_agrees_with_the_kernel(mesh: str, family: str) -> None:
    """Every cell of the tour's table (docs/tutorial.md §8), replayed on the kernel."""
    from meshsolve.analysis.worlds import seed_pod_under
    from meshsolve.oracle.compare import differences, matrix_flows
    from meshsolve.oracle.run import run_flows

    world = seed_pod_under(mesh, family)  # type: ignore[arg-type]
    flows = matrix_flows(world)
    assert len(flows) == 12
    kernel = run_flows(world, flows)
    bad = [(str(f), d) for f, k in zip(flows, kernel, strict=True) if (d := differences(interpret(world, f), k))]
    assert bad == []


def test_the_tour_table_is_what_the_matrices_say() -> None:
    """docs/tutorial.md's side-by-side table is computed, not written by hand."""
    from meshsolve.analysis.worlds import seed_pod_under
    from meshsolve.semantics import matrix

    text = (ROOT / "docs" / "tutorial.md").read_text(encoding="utf-8")
    meshes = ("istio", "linkerd", "kuma", "consul")
    tables = {m: matrix(seed_pod_under(m)) for m in meshes}
    first = tables["istio"]
    for r, row in enumerate(first.rows):
        for c, label in enumerate(first.column_labels()):
            cells = " | ".join(f"`{tables[m].summaries()[r][c]}`" for m in meshes)
            assert f"| {row} | {label} | {cells} |" in text, (row, label, cells)
