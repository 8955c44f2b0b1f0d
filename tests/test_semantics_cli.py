"""``meshsolve matrix`` and ``meshsolve explain``."""

from __future__ import annotations

import json

import pytest

from meshsolve.cli import EXIT_DATAERR, EXIT_OK, EXIT_USAGE, main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_matrix_text(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "matrix", "--setup", "a")
    assert code == EXIT_OK
    lines = out.splitlines()
    assert lines[0] == "setup-A-ipv4 (ipv4, client app 'app')"
    assert [c.strip() for c in lines[1].split("|")] == [
        "client -> destination", "9001 (0.0.0.0)", "9002 (127.0.0.1)", "9003 (192.0.2.10)"]
    assert [c.strip() for c in lines[3].split("|")] == [
        "peer -> pod IP", "in, app<-127.0.0.1", "in, app<-127.0.0.1", "in, refused"]
    assert [c.strip() for c in lines[6].split("|")] == [
        "app -> VIP", "out, in, app<-127.0.0.1", "out, in, app<-127.0.0.1", "out, in, refused"]


def test_matrix_json_ipv6(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "matrix", "--setup", "E", "--family", "ipv6", "-o", "json")
    assert code == EXIT_OK
    doc = json.loads(out)
    assert doc["schemaVersion"] == 1 and doc["family"] == "ipv6"
    assert [c["bind"] for c in doc["columns"]] == ["::", "::1", "2001:db8::10"]
    assert [c["summary"] for c in doc["cells"][0]] == ["in, app<-::6", "in, refused", "in, app<-::6"]
    assert doc["cells"][3][1]["outcome"] == "Refused"


def test_explain_text_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "explain", "--setup", "E", "--client", "app", "--dst", "198.51.100.1",
                       "--port", "9001")
    assert code == EXIT_OK
    assert out.splitlines()[0] == "flow app -> 198.51.100.1:9001/tcp"
    assert "dst 198.51.100.1:9001 -> 127.0.0.1:15001" in out
    assert out.rstrip().endswith("summary: out, in, app<-127.0.0.6")
    code, out, _ = run(capsys, "explain", "--setup", "B", "--client", "peer", "--dst", "pod",
                       "--port", "9003", "-o", "json")
    doc = json.loads(out)
    assert code == EXIT_OK and doc["summary"] == "in, loop" and doc["outcome"]["kind"] == "Loop"
    assert doc["rule_hits"][:3] == ["nat::PREROUTING#1", "nat::ISTIO_INBOUND#3", "nat::ISTIO_IN_REDIRECT#1"]


def test_explain_errors(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "explain", "--setup", "E", "--client", "ghost", "--dst", "pod", "--port", "1")
    assert code == EXIT_DATAERR and "flow client 'ghost'" in err
    code, _, err = run(capsys, "explain", "--setup", "E", "--dst", "pod", "--port", "1", "--family", "ipv5")
    assert code == EXIT_USAGE
    code, _, err = run(capsys, "explain", "--setup", "E", "--dst", "192.0.2.10", "--port", "1",
                       "--family", "ipv6")
    assert code == EXIT_USAGE and "not an ipv6 address" in err
