"""``meshsolve oracle`` and ``python -m meshsolve.oracle replay``."""

from __future__ import annotations

import json

import pytest

from meshsolve.cli import EXIT_OK, EXIT_USAGE, main
from meshsolve.oracle.__main__ import main as oracle_main
from meshsolve.oracle.worldio import dump_world
from meshsolve.semantics.setups import setup_world


@pytest.mark.parametrize("argv", [
    ["oracle"],
    ["oracle", "--setup", "A", "--world", __file__],
    ["oracle", "--setup", "A", "--client", "peer"],
])
def test_usage_errors(argv: list[str]) -> None:
    assert main(argv) == EXIT_USAGE


@pytest.mark.kernel
def test_oracle_runs_the_bind_matrix(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["oracle", "--setup", "B", "-o", "json"]) == EXIT_OK
    out = json.loads(capsys.readouterr().out)
    assert out["disagreements"] == 0
    cells = {row["flow"]: row["kernel"] for row in out["flows"]}
    assert len(cells) == 12
    # set-up B loops on every flow that reaches the inbound side, app -> loopback bypasses
    assert cells["peer -> 192.0.2.10:9001/tcp"] == "in, loop"
    assert cells["app -> 127.0.0.1:9001/tcp"] == "app<-127.0.0.1"
    assert all(row["kernel"] == row["interpreter"] for row in out["flows"])


@pytest.mark.kernel
def test_oracle_one_flow_from_a_world_file(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    path = f"{tmp_path}/world.json"
    with open(path, "w") as f:
        f.write(dump_world(setup_world("E", "ipv6")))
    argv = ["oracle", "--world", path, "--client", "app", "--dst", "2001:db8:100::1", "--port", "9003"]
    assert main(argv) == EXIT_OK
    assert "kernel: out, in, app<-::6" in capsys.readouterr().out


@pytest.mark.kernel
def test_replay_module(capsys: pytest.CaptureFixture[str]) -> None:
    rc = oracle_main(["replay", "--setup", "A", "--client", "peer", "--dst", "192.0.2.10", "--port", "9003"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "--- kernel: in, refused" in out and "agree" in out
