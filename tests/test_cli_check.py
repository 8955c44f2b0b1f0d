"""Golden tests of `meshsolve check`, `diff` and `audit`: text and JSON output and exit codes.

Each command runs in a fresh process (the solver's witness for a property may depend on what the
process asked before). The expected outputs live in tests/data/cli/; after an intended change,
refresh them with ``MESHSOLVE_UPDATE_GOLDENS=1 .venv/bin/python -m pytest tests/test_cli_check.py``
and read the diff. Commands are chosen so that the witness is pinned by the property itself
(a reach/observe/exposure property names the port), not left to the solver's choice.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "data" / "cli"
UPDATE = os.environ.get("MESHSOLVE_UPDATE_GOLDENS") == "1"
EX = "docs/examples"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    e = dict(os.environ)
    e.update(NO_COLOR="1", TERM="dumb")
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "meshsolve.cli", *args], cwd=ROOT, env=e,
                          capture_output=True, text=True, timeout=300)


CASES: list[tuple[str, list[str], int]] = [
    ("check-A-reach-exposure.txt", ["check", "--setup", "A", "-p", "reach:peer:9003", "-p", "no-exposure"], 79),
    ("check-A-reach-exposure.json", ["check", "--setup", "A", "-p", "reach:peer:9003", "-p", "no-exposure",
                                     "-o", "json"], 79),
    ("check-A-reach-explain.txt", ["check", "--setup", "A", "-p", "reach:peer:9003", "--explain"], 79),
    ("check-C-observe.txt", ["check", "--setup", "C", "-p", "observe:app:198.51.100.1:9001"], 79),
    ("check-C-observe-error-threshold.txt", ["check", "--setup", "C", "-p", "observe:app:198.51.100.1:9001",
                                             "--failure-threshold", "Error"], 0),
    ("check-E-default.txt", ["check", "--setup", "E"], 0),
    ("check-E-default.json", ["check", "--setup", "E", "-o", "json"], 0),
    ("check-E6-observe.txt", ["check", "--setup", "E", "--family", "ipv6",
                              "-p", "observe:app:[2001:db8:100::1]:9003"], 0),
    ("check-rules-file.txt", ["check", "--pod", f"{EX}/reviews-v1.yaml", "--rules", f"{EX}/reviews-v1-iptables.txt",
                              "--binds", f"{EX}/reviews-v1-binds.yaml", "-p", "reach:peer:9080"], 79),
    ("check-rules-file.json", ["check", "--pod", f"{EX}/reviews-v1.yaml", "--rules",
                               f"{EX}/reviews-v1-iptables.txt", "--binds", f"{EX}/reviews-v1-binds.yaml",
                               "-p", "reach:peer:9080", "-o", "json"], 79),
    ("check-istio-flags.txt", ["check", "--istio", "1.10", "-p", "capture-in:9080", "-p", "reach:peer:9080",
                               "--", "-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*",
                               "-b", "9080,9090"], 0),
    ("check-A-suppress.txt", ["check", "--setup", "A", "-p", "reach:peer:9003", "-p", "no-exposure",
                              "-S", "MSH0145", "-S", "MSH0143=Pod default/*"], 0),
    ("audit-fleet-suppress.json", ["audit", f"{EX}/fleet.yaml", "-p", "no-exposure", "-S", "MSH0144=Pod jobs/*",
                                   "-o", "json"], 0),
    ("diff-C-C.txt", ["diff", "C", "C"], 0),
    ("diff-C-C.json", ["diff", "C", "C", "-o", "json"], 0),
    ("audit-fleet.txt", ["audit", f"{EX}/fleet.yaml", "-p", "no-exposure", "-p", "capture-in:9080", "-j", "1"], 79),
    ("audit-fleet.json", ["audit", f"{EX}/fleet.yaml", "-p", "no-exposure", "-p", "capture-in:9080", "-j", "1",
                          "-o", "json"], 79),
    ("audit-fleet-error-threshold.txt", ["audit", f"{EX}/fleet.yaml", "-p", "no-exposure", "-j", "1",
                                         "--failure-threshold", "Error", "-q"], 0),
]


@pytest.mark.parametrize(("name", "argv", "code"), CASES, ids=[c[0] for c in CASES])
def test_cli_golden(name: str, argv: list[str], code: int) -> None:
    proc = run(*argv)
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(proc.stdout, encoding="utf-8")
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert proc.stdout == path.read_text(encoding="utf-8"), f"output of {argv} changed:\n{proc.stdout}"
    if name.endswith(".json"):
        doc = json.loads(proc.stdout)
        assert doc["schemaVersion"] == 1
        if "findings" in doc:  # check/audit carry the exit code in their summary, diff at the top
            assert doc.get("summary", doc)["exitCode"] == code
            for f in doc["findings"]:
                assert list(f)[:6] == ["code", "level", "message", "origin", "reference", "documentationUrl"]


def test_json_finding_keys_and_reference() -> None:
    doc = json.loads(run("check", "--pod", f"{EX}/reviews-v1.yaml", "--rules", f"{EX}/reviews-v1-iptables.txt",
                         "--binds", f"{EX}/reviews-v1-binds.yaml", "-p", "reach:peer:9080", "-o", "json").stdout)
    (f,) = doc["findings"]
    assert f["code"] == "MSH0145" and f["level"] == "Error" and f["related"] == "IST0143"
    assert f["reference"] == f"{EX}/reviews-v1-iptables.txt:13"
    assert f["origin"] == f"Pod default/reviews-v1 {EX}/reviews-v1-iptables.txt:13"
    assert f["rule"] == "nat::ISTIO_INBOUND#1"
    assert f["witness"] == {"flow": "peer -> 192.0.2.10:9080/tcp", "outcome": "in, refused"}
    assert [h["rule"] for h in f["trace"] if h["kind"] == "rule"][:2] == ["nat::PREROUTING#1", "nat::ISTIO_INBOUND#1"]


def test_diff_of_different_setups_exits_79_and_names_both_outcomes() -> None:
    proc = run("diff", "A", "E")
    assert proc.returncode == 79
    assert "DIFFERENT" in proc.stdout
    assert "peer -> 192.0.2.10:9003/tcp   A: in, refused" in proc.stdout
    doc = json.loads(run("diff", "A", "E", "-o", "json").stdout)
    assert doc["exitCode"] == 79
    assert any(r["verdict"] == "different" and r["a"]["summary"] != r["b"]["summary"] for r in doc["results"])


def test_bad_inputs_exit_65_and_usage_64(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("*nat\n-A OUTPUT -j NOSUCHCHAIN\nCOMMIT\n")
    proc = run("check", "--rules", str(bad))
    assert proc.returncode == 65 and "Error:" in proc.stderr
    assert run("check", "--setup", "A", "-p", "reach:nobody:1").returncode == 65
    assert run("check", "--setup", "A", "-p", "frobnicate").returncode == 65
    assert run("check").returncode == 65
    assert run("check", "--setup", "Z").returncode == 64
    assert run("check", "--setup", "A", "--istio", "1.2").returncode == 65
    assert run("check", "--", "-p", "15001").returncode == 64
    assert run("diff", "A").returncode == 64
    assert run("diff", "A", "no-such-thing").returncode == 65
    assert run("audit", str(tmp_path / "missing.yaml")).returncode == 65


def test_colour_only_on_the_level_word_and_never_with_no_color() -> None:
    # a pipe is not a terminal: no colour even without NO_COLOR
    proc = subprocess.run([sys.executable, "-m", "meshsolve.cli", "check", "--setup", "A", "-p", "no-exposure"],
                          cwd=ROOT, capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TERM")})
    assert "\x1b[" not in proc.stdout


def test_audit_progress_goes_to_stderr_only_when_asked() -> None:
    """A pipe is not a terminal: no progress unless ``--progress``, and then only on stderr (the JSON
    on stdout is the golden's, byte for byte)."""
    args = ["audit", f"{EX}/fleet.yaml", "-p", "no-exposure", "-p", "capture-in:9080", "-j", "1", "-o", "json"]
    quiet = run(*args)
    shown = run(*args, "--progress")
    assert quiet.stderr == "" and quiet.stdout == shown.stdout == (GOLDEN / "audit-fleet.json").read_text()
    drawn = shown.stderr.splitlines()  # "\r" redraws; text mode reads them as line ends
    assert drawn[-1].startswith("read 4 pods, 3 capture set-ups; proved 3/3 (") and shown.stderr.endswith("\n")
    assert any("proved 0/" in d for d in drawn)
    assert run(*args, "--no-progress").stderr == ""
