"""Synthesized set-ups on the real kernel: the emitted files load, the script is idempotent, and the
kernel oracle replays the spec's flows against the synthesized world with zero disagreements."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from meshsolve.analysis.emit import emit
from meshsolve.analysis.synth import Synthesized
from meshsolve.iptables import parse_text
from meshsolve.oracle.compare import differences
from meshsolve.oracle.run import run_flows
from meshsolve.semantics.interpret import interpret
from tests.test_analysis_synth import SHIPPED

pytestmark = pytest.mark.kernel

SPECS = Path(__file__).resolve().parent.parent / "specs"
# Every shipped spec but those pinned as conflicts (``SHIPPED``, itself checked against specs/): a spec
# added to specs/ runs here unless it is pinned as a conflict, and fails here if it does not synthesize.
SYNTHESIZED = [p.name for p in sorted(SPECS.glob("*.yaml")) if SHIPPED.get(p.name, ("synthesized",))[0] != "conflict"]


def test_every_shipped_spec_that_synthesizes_runs_on_the_kernel() -> None:
    """The list above is specs/ less the declared conflicts, and no conflict is declared for a spec
    that is not shipped (the synthesizing ones pinned in ``SHIPPED`` are all here)."""
    shipped = {p.name for p in SPECS.glob("*.yaml")}
    conflicts = {n for n, (kind, _) in SHIPPED.items() if kind == "conflict"}
    assert conflicts <= shipped
    assert set(SYNTHESIZED) == shipped - conflicts
    assert {n for n, (kind, _) in SHIPPED.items() if kind == "synthesized"} <= set(SYNTHESIZED)
    assert "linkerd-self-call-passthrough.yaml" in SYNTHESIZED


@pytest.fixture
def synth(synthesized_spec: Callable[[str], object]) -> Callable[[str], Synthesized]:
    def get(name: str) -> Synthesized:
        res = synthesized_spec(name)
        assert isinstance(res, Synthesized), str(res)
        return res

    return get


def _netns(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["unshare", "-n", "sh", "-c", script], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("name", SYNTHESIZED)
def test_restore_form_passes_iptables_restore_test(name: str, tmp_path: Path, synth: Callable[[str], Synthesized]) -> None:
    res = synth(name)
    f = tmp_path / "rules.restore"
    f.write_text(emit(res, "restore"))
    prog = "ip6tables-restore" if res.spec.family == "ipv6" else "iptables-restore"
    # the restore file holds both families' blocks only when both exist; test the one in use
    rules = res.world.rules.for_family(res.spec.family)
    from meshsolve.iptables import render_restore

    single = tmp_path / "one.restore"
    single.write_text(render_restore(rules))
    p = _netns(f"{prog} --test < {single}")
    assert p.returncode == 0, p.stderr
    assert "COMMIT" in f.read_text()


@pytest.mark.parametrize("name", SYNTHESIZED)
def test_script_is_idempotent_and_installs_the_synthesized_rules(name: str, tmp_path: Path, synth: Callable[[str], Synthesized]) -> None:
    res = synth(name)
    script = tmp_path / "istio-init.sh"
    script.write_text(emit(res, "script"))
    save = "ip6tables-save" if res.spec.family == "ipv6" else "iptables-save"
    p = _netns(f"sh {script} && {save} > {tmp_path}/once && sh {script} && {save} > {tmp_path}/twice")
    assert p.returncode == 0, p.stderr
    once, twice = (tmp_path / "once").read_text(), (tmp_path / "twice").read_text()
    strip = lambda t: "\n".join(x for x in t.splitlines() if not x.startswith("#"))  # noqa: E731
    assert strip(once) == strip(twice)
    loaded = parse_text(once, source="iptables-save")
    assert loaded.for_family(res.spec.family) == res.world.rules.for_family(res.spec.family)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
@pytest.mark.parametrize("name", SYNTHESIZED)
def test_oracle_replays_the_spec_flows_without_disagreement(name: str, synth: Callable[[str], Synthesized]) -> None:
    res = synth(name)
    flows = res.spec.flows
    assert flows
    kernel = run_flows(res.world, flows)
    problems = []
    for flow, actual in zip(flows, kernel, strict=True):
        expected = interpret(res.world, flow)
        diff = differences(expected, actual)
        if diff:
            problems.append(f"{flow}: " + "; ".join(diff))
    assert not problems, "\n".join(problems)


# --- every class of first connection on the kernel (synth --verify-kernel) -------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
@pytest.mark.parametrize("name", SYNTHESIZED)
def test_flow_space_on_the_kernel_agrees_and_meets_every_goal(name: str, synth: Callable[[str], Synthesized]) -> None:
    """The synthesized set-up over its class-complete flow space: 0 disagreements with the model,
    0 goals that hold in the model but fail on the kernel."""
    from meshsolve.analysis.verify import verify_on_kernel
    from meshsolve.oracle.flowspace import flow_space

    res = synth(name)
    flows = flow_space(res.world)
    v = verify_on_kernel(res.world, [(g.name, g.prop) for g in res.spec.goals], flows=flows)
    assert v.flows == len(flows) and v.compared > len(flows) // 2
    assert not v.disagreements, "\n".join(map(str, v.disagreements))
    assert not v.goal_failures, "\n".join(map(str, v.goal_failures))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_flow_space_run_reports_disagreements_and_kernel_goal_failures(synth: Callable[[str], Synthesized]) -> None:
    """The same check can fail: the TPROXY set-up with listeners that are not IP_TRANSPARENT. The
    kernel's TPROXY drops every inbound connection, so the reachability goals fail on it — and the
    model, which knows TPROXY needs a transparent listener, says the same (no disagreement)."""
    import attrs

    from meshsolve.analysis.verify import verify_on_kernel
    from meshsolve.model.world import Flow

    res = synth("tproxy.yaml")
    world = attrs.evolve(res.world, proxy=attrs.evolve(res.world.proxy, transparent=False))
    flows = (Flow("peer", "192.0.2.10", 9001), Flow("peer", "192.0.2.10", 9003))
    v = verify_on_kernel(world, [(g.name, g.prop) for g in res.spec.goals], flows=flows)
    assert not v.ok
    assert v.disagreements == ()
    failed = {g.goal for g in v.goal_failures}
    assert {"pod-IP listener reachable", "wildcard listener reachable"} <= failed


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_synth_verify_kernel_cli(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from meshsolve.cli import EXIT_OK, main

    assert main(["synth", "--verify-kernel", "--quiet", "-o", "json", str(SPECS / "istio-later-knobs.yaml")]) == EXIT_OK
    data = json.loads(capsys.readouterr().out)
    assert data["kernel"]["flows"] > 50
    assert data["kernel"]["disagreements"] == [] and data["kernel"]["goalFailures"] == []


def test_synth_verify_kernel_needs_root(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from meshsolve.cli import EXIT_USAGE, main

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert main(["synth", "--verify-kernel", str(SPECS / "istio-later-knobs.yaml")]) == EXIT_USAGE
    assert "needs root" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
@pytest.mark.parametrize("ids", ["same", "split"])
@pytest.mark.parametrize("name", ["istio-modern-goals.yaml", "istio-modern-goals-ipv6.yaml"])
def test_a_renumbered_world_runs_on_the_kernel_as_proved(name: str, ids: str) -> None:
    """No Istio numbers built in: the renumbered modern-goals world (proxy uid 2102, listeners
    4140/4143, tunnel 4444, other addresses and chain names) synthesizes, and the result meets every
    goal on the kernel over its class-complete flow space — also when the proxy's uid and gid differ
    (2102 and 3103) and so do each app's (``split``: the kernel's owner match sees both ids)."""
    from meshsolve.analysis.spec import parse_spec
    from meshsolve.analysis.synth import synthesize
    from meshsolve.analysis.verify import verify_on_kernel
    from meshsolve.oracle.flowspace import flow_space
    from tests.test_analysis_synth_goals import PROXY_GID, _renumbered, split_ids

    text = (SPECS / name).read_text()
    if ids == "split":
        text = split_ids(text)
    else:
        text = _renumbered(text).replace("2001:db8::10", "2001:db8::70").replace("2001:db8::20", "2001:db8::80")
    res = synthesize(parse_spec(text, f"renumbered {name}"))
    assert isinstance(res, Synthesized), str(res)
    if ids == "split":
        assert res.world.proxy.gid == PROXY_GID and res.world.proxy.uid != PROXY_GID
    flows = flow_space(res.world)
    v = verify_on_kernel(res.world, [(g.name, g.prop) for g in res.spec.goals], flows=flows)
    assert not v.disagreements, "\n".join(map(str, v.disagreements))
    assert not v.goal_failures, "\n".join(map(str, v.goal_failures))
