"""``meshsolve parse``: canonical output in every format, family selection, bad input → 65."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meshsolve.cli import EXIT_DATAERR, main
from meshsolve.iptables import from_json, parse_file, parse_text, render_save


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_parse_golden_both_families(goldens_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = goldens_dir / "tproxy.golden"
    code, out, err = run(["parse", str(path)], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "# ipv4" and "# ipv6" in lines
    want = parse_file(path)
    assert parse_text(out) == want
    v4 = out.split("# ipv6\n")[0].removeprefix("# ipv4\n")
    assert v4 == render_save(want.ipv4)
    assert "-A ISTIO_TPROXY ! -d 127.0.0.1/32 -p tcp -j TPROXY --on-port 15006 --on-ip 0.0.0.0 " \
           "--tproxy-mark 0x539/0xffffffff" in lines


def test_parse_ipv4_only_has_no_ipv6_part(goldens_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["parse", str(goldens_dir / "empty.golden")], capsys)
    assert code == 0
    assert out.startswith("# ipv4\n*nat\n") and "# ipv6" not in out


def test_parse_family_and_formats(goldens_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = goldens_dir / "ipv6-inbound-ports.golden"
    want = parse_file(path)
    code, out, _ = run(["parse", "--family", "ipv6", str(path)], capsys)
    assert code == 0 and out == render_save(want.ipv6)
    code, out, _ = run(["parse", "--family", "ipv6", "-o", "restore", str(path)], capsys)
    assert code == 0 and out.startswith("*nat\n:ISTIO_INBOUND - [0:0]\n")
    assert parse_text("# ipv6\n" + out).ipv6 == want.ipv6
    code, out, _ = run(["parse", "-o", "json", str(path)], capsys)
    assert code == 0 and from_json(out) == want
    assert json.loads(out)["type"] == "Rulesets"


def test_parse_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import io
    import sys

    text = "iptables -t nat -A OUTPUT -p tcp --dport 80 -j REDIRECT --to-port 15001\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
    code, out, _ = run(["parse", "-"], capsys)
    assert code == 0
    assert "-A OUTPUT -p tcp -m tcp --dport 80 -j REDIRECT --to-ports 15001\n" in out


@pytest.mark.parametrize("content", [
    "*nat\n-A NOPE -j RETURN\nCOMMIT\n",
    "*nat\n-A OUTPUT -j RETURN\n",
    "\x00\x01binary",
    "*weird\nCOMMIT\n",
    "*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -s nowhere -j RETURN\nCOMMIT\n",
    "table inet x {\n  chain y {\n",
])
def test_parse_bad_input_exits_65_with_one_line(tmp_path: Path, content: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Bad input: exit 65 and one line on stderr naming the file; ``parse --test`` gives the same."""
    p = tmp_path / "bad.rules"
    p.write_text(content, encoding="utf-8")
    code, out, err = run(["parse", str(p)], capsys)
    assert code == EXIT_DATAERR
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"Error: {p}:")
    assert run(["parse", "--test", str(p)], capsys) == (code, out, err)


def test_parse_counters_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "c.rules"
    p.write_text("*filter\n:INPUT ACCEPT [5:6]\n[1:2] -A INPUT -j ACCEPT\nCOMMIT\n", encoding="utf-8")
    code, out, _ = run(["parse", "--family", "ipv4", "--counters", str(p)], capsys)
    assert code == 0
    assert ":INPUT ACCEPT [5:6]" in out and "[1:2] -A INPUT -j ACCEPT" in out


def test_parse_test_reads_and_prints_nothing(goldens_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--test`` is ``iptables-restore --test``'s counterpart: the same reading, no rules printed."""
    from tests.conftest import REFERENCE

    nft = REFERENCE / "frontier" / "istio-nftables-sidecar" / "basic-exclude-nic.golden"
    for path in (goldens_dir / "tproxy.golden", nft):
        code, out, err = run(["parse", str(path)], capsys)
        assert code == 0 and out, err
        assert run(["parse", "--test", str(path)], capsys) == (0, "", err)  # (the notes stay on stderr)


def test_parse_test_keeps_the_notes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "pasted.txt"
    p.write_text("$ iptables-save\n*nat\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n", encoding="utf-8")
    code, out, err = run(["parse", "--test", str(p)], capsys)
    assert code == 0 and out == ""
    assert err.startswith("note: skipped the command line") and "iptables-save" in err
