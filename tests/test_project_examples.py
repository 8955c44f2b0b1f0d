"""Every script under examples/ runs, and says what it should."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
HOP = re.compile(r"^\s+\d+\. \[\d\] ", re.M)  # a numbered trace hop


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def test_every_example_is_run_by_this_module() -> None:
    tested = {"audit_manifest.py", "compare_versions.py", "ci_gate.py", "test_mesh_policy.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_audit_manifest() -> None:
    proc = run(str(EXAMPLES / "audit_manifest.py"))
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr  # findings
    checkout, ledger = out.split("== pod ")[1:]
    assert checkout.startswith("shop/checkout  (Istio current, from annotations)")
    assert checkout.count("PROVED") == 6 and "REFUTED" not in checkout
    assert ledger.startswith("shop/ledger-7d9f8  (Istio 1.2, from istio-init)")
    lines = [line.strip() for line in ledger.splitlines()]
    refuted = [line for line in lines if line.startswith("REFUTED")]
    assert refuted == ["REFUTED  no connection loops through the proxy",
                       "REFUTED  log-shipper's outbound calls are seen by the sidecar"]
    # the 1.2 loop: rule 1 (-o lo ! -d 127.0.0.1/32 -j ISTIO_REDIRECT) sends the proxy back to itself
    assert "nat::ISTIO_OUTPUT#1 ! -d 127.0.0.1/32 -o lo -j ISTIO_REDIRECT" in ledger
    assert re.search(r"counterexample: \S+ -> \S+/tcp  ->  out, loop", ledger)
    # the container running as uid 1337 leaves the pod unseen (cf. istioctl's IST0144)
    assert ("counterexample: log-shipper -> 198.51.100.7:443/tcp  ->  egress 198.51.100.7:443" in ledger)
    assert "nat::ISTIO_OUTPUT#2 -m owner --uid-owner 1337 -j RETURN" in ledger
    assert len(HOP.findall(ledger)) >= 10 + 5  # both counterexamples come with their traces
    assert out.rstrip().endswith("2 pod(s), 2 finding(s)")


def test_audit_manifest_under_another_version() -> None:
    """The whole manifest as current Istio would inject it: the loop is gone, the uid-1337 container is not."""
    proc = run(str(EXAMPLES / "audit_manifest.py"), "--istio", "current")
    assert proc.returncode == 1
    assert "(Istio current, from istio-init)" in proc.stdout
    assert "REFUTED  no connection loops" not in proc.stdout
    assert "REFUTED  log-shipper's outbound calls are seen by the sidecar" in proc.stdout


def test_compare_versions() -> None:
    proc = run(str(EXAMPLES / "compare_versions.py"))
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert re.search(r"^Istio 1\.2: \d+ rules, inbound ports \(8080, 9090\)$", out, re.M)
    assert re.search(r"^Istio current: \d+ rules, inbound ports \*$", out, re.M)
    diffs = re.findall(r"^DIFFERENT +(.+?): (.+)  vs  (.+)$", out, re.M)
    assert diffs, out
    for _flow, old, new in diffs:
        assert old != new
    # the Istio 1.10 change, concretely: the app now sees 127.0.0.6 instead of 127.0.0.1
    rows = {line.split("  ")[0].strip(): line for line in out.split("-- named connections")[1].splitlines()
            if line.strip()}
    peer = rows["peer -> 192.0.2.10:8080/tcp"]
    assert "1.2: in, checkout<-127.0.0.1" in peer and "current: in, checkout<-127.0.0.6" in peer
    assert peer.endswith("CHANGED")
    assert rows["checkout -> 127.0.0.1:8080/tcp"].endswith("same")


def test_ci_gate_fails_on_the_1_2_pod_with_the_trace(tmp_path: Path) -> None:
    proc = run(str(EXAMPLES / "ci_gate.py"), str(EXAMPLES / "pods.yaml"))
    out = proc.stdout
    assert proc.returncode == 79, out + proc.stderr
    fails = re.findall(r"^FAIL  (\S+): (.+)$", out, re.M)
    assert fails == [("shop/ledger-7d9f8", "no loops")]
    assert "ok    shop/checkout: outbound captured" in out  # its excluded CIDR is the pod's own setting
    assert "ok    shop/ledger-7d9f8: peer reaches ledger:8080" in out
    assert "meshsolve: REFUTED no connection loops through the proxy" in out
    assert HOP.search(out)
    assert out.rstrip().endswith("10 passed, 1 violated, 0 inconclusive")


def test_ci_gate_passes_a_healthy_manifest_and_rejects_a_broken_one(tmp_path: Path) -> None:
    healthy = (EXAMPLES / "pods.yaml").read_text().split("\n---\n")[0]
    (tmp_path / "ok.yaml").write_text(healthy)
    proc = run(str(EXAMPLES / "ci_gate.py"), str(tmp_path / "ok.yaml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.rstrip().endswith("6 passed, 0 violated, 0 inconclusive")
    (tmp_path / "bad.yaml").write_text("kind: Pod\nmetadata: {annotations: {traffic.sidecar.istio.io/"
                                       "includeInboundPorts: '80;reboot'}}\n")
    proc = run(str(EXAMPLES / "ci_gate.py"), str(tmp_path / "bad.yaml"))
    assert proc.returncode == 65 and "metacharacter" in proc.stderr


def test_user_property_tests_run_under_pytest(tmp_path: Path) -> None:
    """The user's own pytest file: Hypothesis strategies, assert helpers and the plugin's pods."""
    names = {ep.value for ep in metadata.entry_points(group="pytest11")}
    plugin = [] if "meshsolve.testing" in names else ["-p", "meshsolve.testing"]
    proc = run("-m", "pytest", "-p", "no:cacheprovider", "-v", *plugin, str(EXAMPLES / "test_mesh_policy.py"),
               "--meshsolve-manifest", str(EXAMPLES / "pods.yaml"), cwd=tmp_path)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    for name in ("test_an_app_is_reachable_unless_it_binds_loopback", "test_no_connection_loops",
                 "test_istio_1_2_could_not_serve_a_pod_ip_listener",
                 "test_every_pod_of_our_manifests[shop/checkout]",
                 "test_every_pod_of_our_manifests[shop/ledger-7d9f8]"):
        assert re.search(rf"::{re.escape(name)} PASSED", out), name
    assert re.search(r"\b5 passed\b", out)


def test_readme_python_api_snippet_runs(tmp_path: Path) -> None:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    (tmp_path / "snippet.py").write_text(code.group(1))
    (tmp_path / "examples").symlink_to(EXAMPLES)
    proc = run("snippet.py", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "PROVED   peer reaches port 8080 via the pod IP"
    assert any(line.startswith("DIFFERENT   peer -> 192.0.2.10:") for line in lines[1:]), lines
