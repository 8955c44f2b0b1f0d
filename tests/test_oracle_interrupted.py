"""The kernel oracle never leaks namespaces or processes when it is interrupted.

A driver process materialises set-up E with ``KernelWorld`` and runs flows in a loop; the test
kills it mid-run and then looks for what it left:

- SIGINT (Ctrl-C) and SIGTERM (``kill``, a CI job's cancel, ``timeout``): the driver unwinds, the
  workers are killed by pid and both namespaces deleted before it exits;
- SIGKILL cannot be handled: the namespaces stay until the next oracle run, which sweeps every
  ``msor<pid>x*`` namespace whose process is gone (``netns.sweep_stale`` at pair creation); the
  workers exit by themselves on end-of-file on their stdin.

The interpreter's own in-process failures (exceptions, a dying worker) are covered by
``tests/test_oracle_netns.py``.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meshsolve.oracle import netns

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parent.parent

DRIVER = """
import os, sys
from meshsolve.model.world import Flow
from meshsolve.oracle.run import KernelWorld
from meshsolve.semantics.setups import setup_world

with KernelWorld(setup_world("E")) as kw:
    print("READY", " ".join(kw.namespaces), " ".join(map(str, kw.pids)), flush=True)
    n = 0
    while True:
        kw.run(Flow("peer", "192.0.2.10", 9001))
        n += 1
        print("FLOW", n, flush=True)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _start(tmp_path: Path) -> tuple[subprocess.Popen[str], list[str], list[int]]:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER, encoding="utf-8")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)
    assert proc.stdout is not None
    names: list[str] = []
    pids: list[int] = []
    deadline = time.monotonic() + 60
    flows = 0
    while flows < 2:  # mid-run: set up, and flows going through it
        left = deadline - time.monotonic()
        ready, _, _ = select.select([proc.stdout], [], [], max(left, 0))
        line = proc.stdout.readline() if ready else ""
        if not line:
            proc.kill()
            proc.wait()
            pytest.fail(f"driver did not start: {proc.stderr.read() if proc.stderr else ''}")
        words = line.split()
        if words[0] == "READY":
            names = words[1:3]
            pids = [int(w) for w in words[3:]]
        elif words[0] == "FLOW":
            flows += 1
    assert names and pids and set(names) <= set(netns.list_namespaces())
    assert all(_alive(p) for p in pids)
    return proc, names, pids


def _wait_gone(names: list[str], pids: list[int], timeout: float = 10) -> tuple[set[str], list[int]]:
    deadline = time.monotonic() + timeout
    while True:
        left = set(names) & set(netns.list_namespaces())
        alive = [p for p in pids if _alive(p)]
        if (not left and not alive) or time.monotonic() > deadline:
            return left, alive
        time.sleep(0.1)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_oracle_cleans_up(sig: signal.Signals, tmp_path: Path) -> None:
    proc, names, pids = _start(tmp_path)
    try:
        proc.send_signal(sig)
        rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # the driver must not have died before cleaning up: check right away, then allow a moment
    left = set(names) & set(netns.list_namespaces())
    assert not left, f"namespaces left behind after {sig.name} (exit {rc}): {sorted(left)}"
    left, alive = _wait_gone(names, pids, timeout=5)
    assert not alive, f"worker processes left behind after {sig.name}: {alive}"


def test_killed_oracle_is_swept_by_the_next_run(tmp_path: Path) -> None:
    proc, names, pids = _start(tmp_path)
    proc.kill()  # SIGKILL: nothing can run in the driver
    proc.wait(timeout=30)
    try:
        # workers see end-of-file on stdin and exit
        _left, alive = _wait_gone([], pids, timeout=10)
        assert not alive, f"workers outlived a SIGKILLed harness: {alive}"
        # SIGKILL cannot clean up: the namespaces stay until a run sweeps them. Under pytest-xdist another
        # worker's oracle run (a docs command, the demo) may be that run and sweep them first; either way
        # none may be left once the next run has started
        left = set(names) & set(netns.list_namespaces())
        assert names, "the harness made no namespaces"
        with netns.netns_pair():  # the next oracle run
            assert not set(names) & set(netns.list_namespaces()), f"the next run did not sweep {sorted(left)}"
    finally:
        for n in names:
            subprocess.run(["ip", "netns", "delete", n], capture_output=True, check=False)
    assert not set(names) & set(netns.list_namespaces())


def test_sweep_leaves_namespaces_of_live_processes_alone() -> None:
    """The sweep must never delete another live run's namespaces (a parallel test, a colleague)."""
    live = f"{netns.PREFIX}{os.getpid()}x999p"
    subprocess.run(["ip", "netns", "add", live], check=True, capture_output=True)
    try:
        netns.sweep_stale()
        assert live in netns.list_namespaces()
    finally:
        subprocess.run(["ip", "netns", "delete", live], capture_output=True, check=False)


def test_oracle_timeout_during_start_cleans_up() -> None:
    """Workers that do not report ready in time (a 1 µs start timeout): an OracleError, and nothing
    left behind — no namespaces of this process, no new user or group."""
    from meshsolve.errors import OracleError
    from meshsolve.oracle.run import KernelWorld, OracleConfig
    from meshsolve.semantics.setups import setup_world

    accounts = (Path("/etc/passwd").read_bytes(), Path("/etc/group").read_bytes())
    mine = f"{netns.PREFIX}{os.getpid()}x"
    before = {n for n in netns.list_namespaces() if n.startswith(mine)}
    kw = KernelWorld(setup_world("E"), OracleConfig(start_timeout=1e-6))
    pids: list[int] = []
    spawn = kw._spawn

    def spy(*args: object) -> None:
        spawn(*args)  # type: ignore[arg-type]
        pids.extend(w.pid for w in kw.workers.values() if w.pid not in pids)

    kw._spawn = spy  # type: ignore[method-assign]
    with pytest.raises(OracleError, match=r"silent|exited"), kw:
        pass  # pragma: no cover
    assert pids, "the workers should have been started"
    _left, alive = _wait_gone([], pids, timeout=5)
    assert not alive, f"workers left behind after a start timeout: {alive}"
    assert {n for n in netns.list_namespaces() if n.startswith(mine)} == before
    assert (Path("/etc/passwd").read_bytes(), Path("/etc/group").read_bytes()) == accounts
