"""The command line's exit codes: each error class maps to its sysexits code, every code is one
constant of meshsolve.exits, and docs/cli.md lists every code the command line can return."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import meshsolve.cli as cli
from meshsolve.errors import InternalError, OracleError

ROOT = Path(__file__).resolve().parent.parent


def test_an_internal_error_is_a_software_error_not_bad_input(monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    import meshsolve.report.run

    def broken(*args: object, **kwargs: object) -> None:
        raise InternalError("witness peer -> 192.0.2.10:9001/tcp does not replay")

    monkeypatch.setattr(meshsolve.report.run, "check_world", broken)
    assert cli.main(["check", "--setup", "A"]) == cli.EXIT_SOFTWARE == 70
    err = capsys.readouterr().err
    assert "Traceback" in err and "a bug in meshsolve" in err and "does not replay" in err


def test_bad_input_and_usage_keep_their_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check"]) == cli.EXIT_DATAERR == 65  # nothing to check: the message says what to give
    assert "give --setup" in capsys.readouterr().err
    bad = tmp_path / "dump.txt"
    bad.write_text("*nat\n-A OUTPUT --bogus\nCOMMIT\n")
    assert cli.main(["parse", str(bad)]) == cli.EXIT_DATAERR
    assert f"{bad}:2" in capsys.readouterr().err
    assert cli.main(["check", "--no-such-option"]) == cli.EXIT_USAGE == 64


def test_an_oracle_that_cannot_run_is_unavailable(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import meshsolve.oracle.run

    class NoKernel:
        def __init__(self, *args: object, **kwargs: object) -> None:
            raise OracleError("iproute2 (`ip`) is not installed")

    monkeypatch.setattr(meshsolve.oracle.run, "KernelWorld", NoKernel)
    assert cli.main(["oracle", "--setup", "A"]) == cli.EXIT_UNAVAILABLE == 69
    assert "iproute2" in capsys.readouterr().err


def _exit_constants() -> dict[str, int]:
    tree = ast.parse((ROOT / "meshsolve" / "exits.py").read_text(encoding="utf-8"))
    return {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
            for t in n.targets if isinstance(t, ast.Name) and t.id.startswith("EXIT_")
            and isinstance(n.value, ast.Constant) and isinstance(n.value.value, int)}


def test_the_command_line_returns_only_named_exit_codes() -> None:
    """No ``return 2`` or ``ctx.exit(3)`` hides a code the documentation does not know."""
    tree = ast.parse((ROOT / "meshsolve" / "cli.py").read_text(encoding="utf-8"))
    literal = []
    for node in ast.walk(tree):
        value = None
        if isinstance(node, ast.Return):
            value = node.value
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "exit":
            value = node.args[0] if node.args else None
        if isinstance(value, ast.Constant) and isinstance(value.value, int):
            literal.append(node.lineno)
    assert not literal, f"meshsolve/cli.py returns an exit code written as a number on line(s) {literal}"
    assert len(_exit_constants()) >= 8
    import meshsolve.exits
    import meshsolve.report

    assert all(getattr(cli, name) == code for name, code in _exit_constants().items())
    assert (meshsolve.report.EXIT_OK, meshsolve.report.EXIT_FINDINGS, meshsolve.report.EXIT_UNKNOWN) == (
        meshsolve.exits.EXIT_OK, meshsolve.exits.EXIT_FINDINGS, meshsolve.exits.EXIT_UNKNOWN)


def test_docs_list_every_exit_code() -> None:
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    section = text.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = {int(m.group(1)): m.group(2) for m in re.finditer(r"^\| (\d+) \| [^|]+ \| ([^|]+) \|$", section, re.M)}
    assert set(rows) == set(_exit_constants().values()), (sorted(rows), _exit_constants())
    assert all(len(meaning.split()) >= 2 for meaning in rows.values())
