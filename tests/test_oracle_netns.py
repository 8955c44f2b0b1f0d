"""The oracle's namespaces and processes: always cleaned up, also when something fails inside."""

from __future__ import annotations

import os
import subprocess

import pytest

from meshsolve.errors import OracleError
from meshsolve.model.world import App, Flow, Socket, World
from meshsolve.oracle import netns
from meshsolve.oracle.run import KernelWorld

pytestmark = pytest.mark.kernel


def _world() -> World:
    return World(pod_ips=("192.0.2.10", "2001:db8::10"), peer_ips=("192.0.2.20", "2001:db8::20"),
                 apps=(App("web", sockets=(Socket("0.0.0.0", 9001),)),))


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _assert_gone(names: tuple[str, ...], pids: tuple[int, ...]) -> None:
    left = set(names) & set(netns.list_namespaces())
    assert not left, f"namespaces left behind: {sorted(left)}"
    assert pids, "the harness should have started processes"
    alive = [p for p in pids if _alive(p)]
    assert not alive, f"processes left behind: {alive}"


def test_pair_is_created_and_deleted() -> None:
    with netns.netns_pair("eth0") as pair:
        names = (pair.pod, pair.peer)
        assert set(names) <= set(netns.list_namespaces())
        out = netns.run(pair.exec_argv(pair.pod, ["ip", "-o", "link", "show", "eth0"]))
        assert "eth0" in out
    assert not set(names) & set(netns.list_namespaces())


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_no_leftovers_after_a_failure_inside_the_context(exc: BaseException) -> None:
    seen: dict[str, tuple] = {}
    with pytest.raises(type(exc)), KernelWorld(_world()) as kw:
        seen["names"] = kw.namespaces
        seen["pids"] = kw.pids
        assert set(kw.namespaces) <= set(netns.list_namespaces())
        assert all(_alive(p) for p in kw.pids)
        # the world works before the failure
        assert kw.run(Flow("peer", "192.0.2.10", 9001)).outcome.token == "web<-192.0.2.20"
        raise exc
    _assert_gone(seen["names"], seen["pids"])


def test_no_leftovers_when_set_up_fails() -> None:
    before = set(netns.list_namespaces())
    bad = "*nat\n-A OUTPUT -j NO_SUCH_CHAIN\nCOMMIT\n"
    with pytest.raises(OracleError, match="iptables-restore"), \
            KernelWorld(_world(), restore_text={"ipv4": bad}):
        pass  # pragma: no cover
    mine = f"{netns.PREFIX}{os.getpid()}x"  # other processes (a parallel run) make their own
    assert not {n for n in set(netns.list_namespaces()) - before if n.startswith(mine)}


def test_no_leftovers_when_a_worker_dies() -> None:
    with pytest.raises(OracleError, match="worker"), KernelWorld(_world()) as kw:
        names, pids = kw.namespaces, kw.pids
        proxy = kw.workers["proxy"]
        proxy.proc.kill()
        proxy.proc.wait()
        kw.run(Flow("peer", "192.0.2.10", 9001))
    _assert_gone(names, pids)


def _stale_name() -> str:
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert not os.path.exists(f"/proc/{dead.pid}")
    return f"{netns.PREFIX}{dead.pid}x0p"


def test_sweep_removes_namespaces_of_dead_processes() -> None:
    stale = _stale_name()
    netns.run(["ip", "netns", "add", stale])
    try:
        with netns.netns_pair() as pair:
            assert stale not in netns.list_namespaces(), "creating a pair sweeps stale namespaces"
            netns.run(["ip", "netns", "add", stale])
            assert stale in netns.sweep_stale()
            assert {pair.pod, pair.peer} <= set(netns.list_namespaces()), "a live process's stay"
    finally:
        subprocess.run(["ip", "netns", "delete", stale], capture_output=True, check=False)
    assert stale not in netns.list_namespaces()
