"""`meshsolve generate`: flags or a pod manifest → iptables-save / restore / script / JSON."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pytest

from meshsolve.cli import EXIT_DATAERR, EXIT_USAGE, main
from meshsolve.iptables import from_json, parse_text, split_words
from meshsolve.istio import generate, parse_flags, pods_from_file

PODS = Path(__file__).parent / "data" / "pods"
DEFAULT = ["-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-x", "", "-b", "*",
           "-d", "15090,15021,15020"]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("fmt", ["save", "restore"])
@pytest.mark.parametrize("version", ["1.2", "1.10", "current"])
def test_flags_to_text(fmt: str, version: str, capsys: pytest.CaptureFixture[str]) -> None:
    flags = DEFAULT if version != "1.2" else ["-p", "15001", "-u", "1337", "-i", "*", "-b", "80"]
    code, out, _ = _run(["generate", "--istio", version, "-o", fmt, "--", *flags], capsys)
    assert code == 0
    assert out.startswith(f"# Istio {version} capture rules")
    assert parse_text(out, source="stdout") == generate(parse_flags(flags, version=version))


def test_flags_without_separator(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["generate", "-p", "15001", "-o", "25", "-b", "80", "-i", "*"], capsys)
    assert code == 0
    assert "--dport 25 -j RETURN" in out
    code, _, err = _run(["generate", "-b", "80", "-o", "json"], capsys)
    assert code == EXIT_USAGE and "put meshsolve's -o before the flags" in err


def test_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["generate", "--istio", "1.10", "-o", "json", "--", *DEFAULT], capsys)
    assert code == 0
    data = json.loads(out)
    assert data["schemaVersion"] == 1 and data["istio"] == "1.10"
    assert data["config"]["inbound_ports"] == "*"
    assert data["config"]["inbound_ports_exclude"] == [15090, 15021, 15020]
    assert data["proxy"]["inbound_endpoint"] == "original_dst"
    assert from_json(json.dumps(data["rulesets"])) == generate(parse_flags(DEFAULT, version="1.10"))


def test_script_quotes_every_token(capsys: pytest.CaptureFixture[str]) -> None:
    """The script is valid sh; the rules reach it in quoted here-documents (read back: the configuration's
    rules) or, for the built-in chains' rules it adds only where missing, as quoted words."""
    from script_text import absent_calls, intended_rules

    code, out, _ = _run(["generate", "-o", "script", "--", *DEFAULT], capsys)
    assert code == 0
    assert out.splitlines()[:2] == ["#!/bin/sh", "set -u"]
    assert subprocess.run(["sh", "-n"], input=out, text=True, capture_output=True).returncode == 0
    rules = generate(parse_flags(DEFAULT))
    assert intended_rules(out) == rules
    calls = absent_calls(out)
    assert [(t, words[0], printed) for t, words, printed in calls] == [
        ("nat", "PREROUTING", "-A PREROUTING -p tcp -j ISTIO_INBOUND"), ("nat", "OUTPUT", "-A OUTPUT -j ISTIO_OUTPUT")]
    for _table, words, printed in calls:  # the words -C checks are the line it adds
        assert ["-A", *words] == list(split_words(printed))


def test_env_ipv6_and_dns_options(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["generate", "--env", "ISTIO_META_DNS_CAPTURE=true", "--ipv6", "--dns-server",
                         "192.0.2.53", "--dns-server", "2001:db8::53", "--", *DEFAULT], capsys)
    assert code == 0
    got = parse_text(out, source="stdout")
    assert got.ipv4.chain("nat", "ISTIO_OUTPUT_DNS") is not None
    assert got.ipv6.chain("raw", "ISTIO_INBOUND") is not None
    code, _, err = _run(["generate", "--env", "NOEQUALS"], capsys)
    assert code == EXIT_USAGE and "NAME=VALUE" in err


def test_pod_file(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["generate", "--pod", str(PODS / "list.yaml")], capsys)
    assert code == 0
    assert "# pod default/a: from annotations" in out and "# pod default/b" in out
    a, _ = pods_from_file(PODS / "list.yaml")
    first = out.split("# Istio current capture rules")[1].split("\n", 1)[1]
    assert parse_text(first, source="stdout") == generate(a.config)


def test_pod_stdin(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO((PODS / "injected-1.10.yaml").read_text()))
    code, out, _ = _run(["generate", "--pod", "-", "-o", "json"], capsys)
    assert code == 0
    data = json.loads(out)
    (capture,) = data["captures"]
    assert capture["pod"]["basis"] == "istio-init" and capture["istio"] == "1.10"


def test_errors(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(["generate", "--pod", str(PODS / "bad" / "mode.yaml")], capsys)
    assert code == EXIT_DATAERR
    assert "annotation sidecar.istio.io/interceptionMode: 'FOO'" in err and "mode.yaml:6" in err
    code, _, err = _run(["generate", "--", "-p", "99999"], capsys)
    assert code == EXIT_DATAERR and "-p: '99999'" in err
    code, _, err = _run(["generate", "--pod", str(PODS / "default.yaml"), "--", "-p", "1"], capsys)
    assert code == EXIT_USAGE
    code, _, err = _run(["generate", "--istio", "9.9"], capsys)
    assert code == EXIT_DATAERR and "unknown Istio version" in err
    code, _, err = _run(["generate", "--istio", "1.10", "--", "-q", "80"], capsys)
    assert code == 0  # -q exists in 1.10
    code, _, err = _run(["generate", "--istio", "1.6", "--", "-q", "80"], capsys)
    assert code == EXIT_DATAERR and "added in 1.7" in err


def test_annotations_output(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    flags = [*DEFAULT[:-1], "15090,15021,9000,15020", "-m", "TPROXY", "-o", "25"]
    code, out, _ = _run(["generate", "-o", "annotations", "--", *flags], capsys)
    assert code == 0
    pod = tmp_path / "pod.yaml"
    pod.write_text(out.replace("metadata:", "kind: Pod\nmetadata:\n  name: p", 1)
                   + "spec: {containers: [{name: app, image: x}]}\n", encoding="utf-8")
    (capture,) = pods_from_file(pod)
    assert generate(capture.config) == generate(parse_flags(flags))
    code, _, err = _run(["generate", "-o", "annotations", "--", "-u", "2000"], capsys)
    assert code == EXIT_DATAERR and "proxy uid/gid" in err
