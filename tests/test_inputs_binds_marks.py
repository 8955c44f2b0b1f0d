"""An app's socket mark in a binds file (``mark:``): read as ``App.mark`` with its line, refused with
the file and line when it is not a 32-bit number, and what ``check`` proves about that app."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshsolve.cli import main
from meshsolve.errors import SpecError
from meshsolve.inputs import load_binds, read_binds

MARK_RETURN = Path(__file__).resolve().parent.parent / "docs" / "examples" / "cohabit" / "mark-return.iptables-nft-save"


def test_a_mark_is_read_with_its_line() -> None:
    b = read_binds("apps:\n  - name: plain\n    uid: 1000\n  - name: marked\n    uid: 1001\n    mark: 0x539\n"
                   "  - name: text\n    mark: '0x10'\n", "b.yaml")
    assert b.apps is not None and [a.mark for a in b.apps] == [None, 0x539, 0x10]
    (part,) = [p for p in b.parts if "socket mark 0x539" in p.what]
    assert "b.yaml:6" in str(part.provenance)
    assert not any("socket mark" in p.what and "plain" in p.what for p in b.parts)


@pytest.mark.parametrize("bad", ["0x1ffffffff", "-1", "'spoof'"])
def test_a_bad_mark_names_the_file_and_line(bad: str) -> None:
    with pytest.raises(SpecError) as e:
        read_binds(f"apps:\n  - name: a\n    uid: 7\n  - name: m\n    mark: {bad}\n", "b.yaml")
    assert str(e.value).startswith("b.yaml:5:") and "apps[1].mark" in str(e.value) and "0x539" in str(e.value)


def test_check_sees_the_marked_app(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With Istio's rules and a third party's ``-m mark --mark 0x10 -j RETURN``, ``capture-out`` is
    refuted for the app the binds file says sets that mark, and proved without the mark."""
    binds = tmp_path / "binds.yaml"
    binds.write_text("apps:\n  - name: agent\n    uid: 1000\n    mark: 0x10\n    listen: ['0.0.0.0:8080']\n")
    assert load_binds(binds).apps is not None
    assert main(["check", "--rules", str(MARK_RETURN), "--binds", str(binds), "-p", "capture-out"]) != 0
    out = capsys.readouterr().out
    assert "[MSH0102]" in out and "agent -> " in out and "--mark 0x10 -j RETURN" in out
    binds.write_text("apps:\n  - name: agent\n    uid: 1000\n    listen: ['0.0.0.0:8080']\n")
    assert main(["check", "--rules", str(MARK_RETURN), "--binds", str(binds), "-p", "capture-out"]) == 0
