"""meshsolve.testing: the assert_* helpers pass on what holds, and fail with the counterexample flow
and its numbered trace on what does not; the pytest plugin parametrizes tests by manifest pods."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import warnings
from importlib import metadata
from pathlib import Path

import pytest

from meshsolve import (
    Bypass,
    Equivalent,
    Flow,
    MeshsolveError,
    Proved,
    Refuted,
    Unknown,
    World,
    parse_text,
    render_save,
    setup_world,
    world_from_dump,
)
from meshsolve.testing import (
    Counterexample,
    Inconclusive,
    MeshsolveAssertWarning,
    assert_bypass,
    assert_captured,
    assert_equivalent,
    assert_flow,
    assert_holds,
    assert_no_exposure,
    assert_no_loops,
    assert_observed,
    assert_reachable,
)

ROOT = Path(__file__).resolve().parent.parent
NUMBERED = re.compile(r"^\s+\d+\. \[\d\] ", re.M)  # a numbered trace hop: "  3. [1] nat::..."


def test_helpers_pass_and_return_the_proofs_when_the_property_holds() -> None:
    e = setup_world("E")
    verdicts = assert_captured(e)
    assert len(verdicts) == 2 and all(isinstance(v, Proved) for v in verdicts)
    assert isinstance(assert_reachable(e, "peer", 9003), Proved)
    assert isinstance(assert_no_loops(e), Proved)
    assert isinstance(assert_bypass(e), Proved)
    assert isinstance(assert_no_exposure(e), Proved)
    assert isinstance(assert_observed(e, "app", "198.51.100.1", 9001, sides=("out", "in")), Proved)
    (eq,) = assert_equivalent(e, e)
    assert isinstance(eq, Equivalent)
    assert assert_flow(e, Flow("peer", "192.0.2.10", 9003), "in, app<-127.0.0.6").summary == "in, app<-127.0.0.6"


def test_a_counterexample_carries_the_flow_and_its_numbered_trace() -> None:
    a = setup_world("A")  # Istio 1.2: the pod-IP listener is unreachable through the proxy
    with pytest.raises(Counterexample) as failure:
        assert_reachable(a, "peer", 9003)
    err = failure.value
    assert isinstance(err, AssertionError) and isinstance(err, MeshsolveError)
    assert isinstance(err.answer, Refuted) and err.flow == err.answer.flow
    assert err.flow.client == "peer" and err.flow.dport == 9003
    (result,) = err.results
    text = str(err)
    assert text.startswith("meshsolve: REFUTED peer reaches port 9003")
    assert f"counterexample: {err.flow}  ->  in, refused" in text
    assert len(NUMBERED.findall(text)) == len(result.trace) > 3
    assert "nat::ISTIO_INBOUND" in text and "nothing listens on 127.0.0.1:9003" in text


def test_assert_observed_checks_the_sides_asked_for() -> None:
    c = setup_world("C")  # rule 1 removed: the self-call is seen on the client side only
    vip = "198.51.100.1"
    assert isinstance(assert_observed(c, "app", vip, 9001, sides=("out",)), Proved)
    with pytest.raises(Counterexample) as failure:
        assert_observed(c, "app", vip, 9001, sides=("out", "in"))
    assert failure.value.flow.dst.exploded == vip
    assert failure.value.results[0].observed == ("out",)
    assert "expected: observed client side and observed server side" in str(failure.value)


def test_assert_captured_directions_and_exclusions() -> None:
    w = setup_world("E")
    with pytest.raises(Counterexample) as failure:  # the status ports are excluded from inbound capture
        assert_captured(w, "inbound", ports=(9001, 15020))
    assert failure.value.flow.dport == 15020
    assert len(assert_captured(w, "inbound", ports=(9001, 15020), exclude_ports=(15020,))) == 1
    assert len(assert_captured(w, "outbound")) == 1


def test_assert_equivalent_shows_both_traces_with_labels() -> None:
    with pytest.raises(Counterexample) as failure:
        assert_equivalent(setup_world("A"), setup_world("B"), labels=("seed", "patched"))
    err = failure.value
    a, b = err.results
    assert a.flow == b.flow == err.flow and a.summary != b.summary
    text = str(err)
    assert text.startswith("meshsolve: seed and patched are not equivalent")
    assert f"counterexample: {err.flow}" in text
    assert "trace in seed:" in text and "trace in patched:" in text
    assert f"seed   : {a.summary}" in text and f"patched: {b.summary}" in text


def _opaque_world() -> World:
    e = setup_world("E")
    text = render_save(e.rules).replace(
        "-A OUTPUT -j ISTIO_OUTPUT", "-A OUTPUT -p tcp -m length --length 100:200 -j RETURN\n"
                                     "-A OUTPUT -j ISTIO_OUTPUT")
    return world_from_dump(parse_text(text), apps=e.apps, services=e.services, pod_ips=e.pod_ips)


def test_unknown_fails_as_inconclusive_unless_allowed() -> None:
    w = _opaque_world()
    with pytest.raises(Inconclusive) as failure:
        assert_captured(w, "outbound")
    assert "nat::OUTPUT#1" in failure.value.reason and isinstance(failure.value.answer, Unknown)
    (verdict,) = assert_captured(w, "outbound", allow_unknown=True)
    assert isinstance(verdict, Unknown)
    proved = assert_holds(w, Bypass())
    assert isinstance(proved, Proved) and proved.assumes


def test_soft_failures_warn_and_return_the_verdict() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        verdict = assert_no_loops(setup_world("A"), soft=True)
    assert isinstance(verdict, Refuted)
    (w,) = caught
    assert issubclass(w.category, MeshsolveAssertWarning)
    assert str(verdict.flow) in str(w.message)


def test_assert_flow_fails_with_the_trace() -> None:
    with pytest.raises(Counterexample) as failure:
        assert_flow(setup_world("A"), Flow("peer", "192.0.2.10", 9003), "in, app<-127.0.0.1")
    text = str(failure.value)
    assert "ends as 'in, refused', expected 'in, app<-127.0.0.1'" in text
    assert NUMBERED.search(text)


# --- the pytest plugin ---------------------------------------------------------------------------

PLUGIN_TEST = '''
from meshsolve.testing import assert_bypass, assert_no_loops

def test_pod(meshsolve_pod):
    assert_bypass(meshsolve_pod)

def test_loops(meshsolve_pod):
    assert_no_loops(meshsolve_pod)
'''


def _plugin_args() -> list[str]:
    """Load the plugin explicitly only when its entry point is not installed (a stale venv)."""
    names = {ep.value for ep in metadata.entry_points(group="pytest11")}
    return [] if "meshsolve.testing" in names else ["-p", "meshsolve.testing"]


def test_entry_point_is_declared() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert '[project.entry-points.pytest11]\nmeshsolve = "meshsolve.testing"' in text


def _pytest(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", "-v",
                           *_plugin_args(), *args], capture_output=True, text=True, cwd=tmp_path, timeout=600)


def test_plugin_parametrizes_by_manifest_pods(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text(textwrap.dedent(PLUGIN_TEST))
    (tmp_path / "pytest.ini").write_text("[pytest]\nmeshsolve_manifests = pods.yaml\n")
    (tmp_path / "pods.yaml").write_text((ROOT / "examples" / "pods.yaml").read_text())
    proc = _pytest(tmp_path)
    out = proc.stdout
    assert "test_pod[shop/checkout] PASSED" in out and "test_pod[shop/ledger-7d9f8] PASSED" in out, out
    # the Istio 1.2 pod loops (the seed's rule 1); the failure shows the counterexample's trace
    assert "test_loops[shop/checkout] PASSED" in out
    assert "test_loops[shop/ledger-7d9f8] FAILED" in out
    assert "Counterexample: meshsolve: REFUTED no connection loops" in out
    assert re.search(r"^E\s+\d+\. \[\d\] ", out, re.M), out
    assert proc.returncode == 1


def test_plugin_skips_without_manifests_and_takes_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text(textwrap.dedent(PLUGIN_TEST))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    proc = _pytest(tmp_path, "-k", "test_pod")
    assert proc.returncode == 0 and "no manifests: set the ini option meshsolve_manifests" in proc.stdout
    proc = _pytest(tmp_path, "-k", "test_pod", "--meshsolve-manifest", str(ROOT / "examples" / "pods.yaml"),
                   "--meshsolve-istio", "1.2")
    assert proc.returncode == 0, proc.stdout
    assert "test_pod[shop/checkout] PASSED" in proc.stdout
