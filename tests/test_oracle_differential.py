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
from hypothesis import HealthCheck, given, settings

from meshsolve.model.world import Flow, World
from meshsolve.oracle.compare import differences, explain, replay_command
from meshsolve.oracle.run import KernelWorld
from meshsolve.oracle.strategies import worlds_and_flows
from meshsolve.semantics.interpret import interpret
from meshsolve.semantics.setups import APP_PORTS, SETUPS, setup_addresses, setup_world

pytestmark = pytest.mark.kernel

RANDOM_WORLDS = int(os.environ.get("MESHSOLVE_ORACLE_WORLDS", "200"))


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
            if differences(expected, actual):
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


_stats = {"worlds": 0, "flows": 0, "seconds": 0.0}


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
    with KernelWorld(world) as kw:
        for flow in flows:
            expected = interpret(world, flow)
            actual = kw.run(flow)
            if differences(expected, actual):
                out.append((flow, expected, actual))
    _stats["worlds"] += 1
    _stats["flows"] += len(flows)
    _stats["seconds"] += time.monotonic() - t0
    if out:
        path = _save_world(world)
        msgs = [explain(world, f, e, a, replay_command(f, world_file=path)) for f, e, a in out]
        raise AssertionError(f"{len(out)} of {len(flows)} flows disagree\n\n" + "\n\n".join(msgs))
