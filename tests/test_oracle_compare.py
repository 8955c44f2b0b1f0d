"""The oracle's pure parts (no kernel needed): result comparison, replay commands, world JSON."""

from __future__ import annotations

import shlex

import pytest
from hypothesis import HealthCheck, given, settings

from meshsolve.model.net import to_address
from meshsolve.model.rules import RuleRef
from meshsolve.model.world import Flow, Socket, World
from meshsolve.oracle.compare import differences, explain, replay_command
from meshsolve.oracle.worldio import dump_world, world_from_json
from meshsolve.semantics.setups import SETUPS, setup_world
from meshsolve.semantics.trace import Delivered, Dropped, Egress, Loop, Refused, Result
from meshsolve.strategies import world_flows, worlds

FLOW = Flow("peer", "192.0.2.10", 9001)
SOCK = Socket("0.0.0.0", 9001)


def _r(outcome: object, observed: tuple[str, ...] = ()) -> Result:
    return Result(FLOW, outcome, observed)  # type: ignore[arg-type]


def test_equal_results_agree_even_with_other_reasons() -> None:
    assert differences(_r(Loop("a"), ("in",)), _r(Loop("b"), ("in",))) == ()
    assert differences(_r(Dropped(RuleRef("nat", "X", 1))), _r(Dropped(RuleRef("kernel", "?", 0)))) == ()


@pytest.mark.parametrize(("a", "b", "what"), [
    (_r(Refused()), _r(Loop("x")), "outcome"),
    (_r(Delivered("app", SOCK, "127.0.0.1")), _r(Delivered("other", SOCK, "127.0.0.1")), "app"),
    (_r(Delivered("app", SOCK, "127.0.0.1")), _r(Delivered("app", Socket("127.0.0.1", 9001), "127.0.0.1")),
     "socket"),
    (_r(Delivered("app", SOCK, "127.0.0.1")), _r(Delivered("app", SOCK, "127.0.0.6")), "source"),
    (_r(Egress(to_address("203.0.113.9"), 80)), _r(Egress(to_address("203.0.113.9"), 81)), "egress"),
    (_r(Refused(), ("out", "in")), _r(Refused(), ("out",)), "observed"),
    (_r(Refused(), ("in", "out")), _r(Refused(), ("out", "in")), "observed"),
])
def test_every_compared_field_can_differ(a: Result, b: Result, what: str) -> None:
    diffs = differences(a, b)
    assert len(diffs) == 1 and what in diffs[0]
    text = explain(World(pod_ips=("192.0.2.10",), peer_ips=("192.0.2.20",)), FLOW, a, b, "replay-cmd")
    assert what in text and "replay-cmd" in text and str(FLOW) in text


def test_replay_command_is_one_parseable_line() -> None:
    flow = Flow("app", "2001:db8:100::1", 9002, endpoint=1)
    cmd = replay_command(flow, setup="C", family="ipv6")
    assert "\n" not in cmd
    argv = shlex.split(cmd)
    assert argv[:4] == ["python", "-m", "meshsolve.oracle", "replay"]
    opts = dict(zip(argv[4::2], argv[5::2], strict=True))
    assert opts == {"--setup": "C", "--family": "ipv6", "--client": "app", "--dst": "2001:db8:100::1",
                    "--port": "9002", "--endpoint": "1"}


@pytest.mark.parametrize("setup", SETUPS)
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_builtin_worlds_round_trip_through_json(setup: str, family: str) -> None:
    world = setup_world(setup, family)  # type: ignore[arg-type]
    assert world_from_json(dump_world(world)) == world


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds())
def test_random_worlds_round_trip_and_have_flows(world: World) -> None:
    assert world_from_json(dump_world(world)) == world
    flows = world_flows(world)
    assert {f.client for f in flows} == {"peer", "proxy", *(a.name for a in world.apps)}
    assert {f.family for f in flows} == set(world.families)
