"""A platform team's own property tests of its capture set-up, with meshsolve's strategies.

    pytest examples/test_mesh_policy.py --meshsolve-manifest examples/pods.yaml

Hypothesis draws the app's listening sockets (wildcard, loopback or pod IP, on a few ports) and
the connections; meshsolve proves or refutes each property for the drawn set-up, and a failure
shows the counterexample connection with its trace.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshsolve import App, Loop, Socket, World, interpret, world_from_flags
from meshsolve.strategies import flows, sockets
from meshsolve.testing import (
    Counterexample,
    assert_bypass,
    assert_captured,
    assert_no_exposure,
    assert_reachable,
)

# what our istio-init runs (current Istio): capture everything, keep the agent's ports out
FLAGS = ["-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-x", "",
         "-b", "*", "-d", "15090,15021,15020"]
PORTS = (8080, 8081, 9000)


def mesh_world(socks: tuple[Socket, ...], version: str = "current", flags: list[str] = FLAGS) -> World:
    return world_from_flags(flags, version=version, apps=(App("web", sockets=socks),), name="web")


@settings(max_examples=20, deadline=None)
@given(sockets("ipv4", ports=PORTS))
def test_an_app_is_reachable_unless_it_binds_loopback(sock: Socket) -> None:
    world = mesh_world((sock,))
    if sock.bind.is_loopback:
        assert_no_exposure(world)
    else:
        assert_reachable(world, "peer", sock.port)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_no_connection_loops(data: st.DataObject) -> None:
    socks = data.draw(st.lists(sockets("ipv4", ports=PORTS), max_size=2, unique_by=lambda s: s.port))
    world = mesh_world(tuple(socks))
    flow = data.draw(flows(world))
    result = interpret(world, flow)
    if flow.dport not in (15001, 15006):  # Envoy refuses connections to its own listeners itself
        assert not isinstance(result.outcome, Loop), str(result)


def test_istio_1_2_could_not_serve_a_pod_ip_listener() -> None:
    """The seed's report, as a test: under Istio 1.2 a pod-IP listener is unreachable through the mesh."""
    world = mesh_world((Socket("192.0.2.10", 8080),), version="1.2",
                       flags=["-p", "15001", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-b", "8080"])
    with pytest.raises(Counterexample) as failure:
        assert_reachable(world, "peer", 8080)
    assert failure.value.flow.client == "peer"
    assert "127.0.0.1:8080" in str(failure.value)  # the proxy forwarded to localhost, where nothing listens


def test_every_pod_of_our_manifests(meshsolve_pod: World) -> None:
    """Runs once per pod of the manifests given with --meshsolve-manifest (the pytest plugin)."""
    assert_captured(meshsolve_pod, "inbound")
    assert_bypass(meshsolve_pod)
