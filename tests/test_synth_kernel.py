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

pytestmark = pytest.mark.kernel

SPECS = Path(__file__).resolve().parent.parent / "specs"
SYNTHESIZED = ["istio-later-knobs.yaml", "istio-later-knobs-ipv6.yaml", "excluded-ports.yaml",
               "app-with-proxy-uid.yaml", "tproxy.yaml"]


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
