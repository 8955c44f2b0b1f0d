"""Network namespaces for the kernel oracle: a pod and a peer joined by a veth pair, always cleaned up.

Names are ``msor<pid>x<n>`` + ``p`` (pod) / ``q`` (peer), so parallel engineers and parallel test
processes never collide and a leftover can be traced to the process that made it
(:func:`sweep_stale` deletes those whose process is gone). Only documentation addresses and loopback
are configured; the namespaces have no link to the host's network.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence

from meshsolve.errors import OracleError

__all__ = ["PREFIX", "NamespacePair", "list_namespaces", "netns_pair", "run", "sweep_stale"]

PREFIX = "msor"
_counter = itertools.count()
_NAME_RE = re.compile(rf"^{PREFIX}(\d+)x\d+[pq]$")


def run(argv: Sequence[str], *, input_text: str | None = None, what: str | None = None) -> str:
    """Run a command; an ``OracleError`` naming the step (and the command's stderr) if it fails."""
    proc = subprocess.run(list(argv), input=input_text, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        step = what or " ".join(argv)
        detail = (proc.stderr or proc.stdout).strip()
        raise OracleError(f"{step}: exit {proc.returncode}: {detail}")
    return proc.stdout


def ip_batch(ns: str, commands: Sequence[str], *, what: str, options: Sequence[str] = ()) -> None:
    """Run several ``ip`` commands in one process inside namespace ``ns`` (``ip -n NS -batch -``)."""
    if commands:
        run(["ip", *options, "-n", ns, "-batch", "-"], input_text="\n".join(commands) + "\n", what=what)


def list_namespaces() -> tuple[str, ...]:
    """Names of all named network namespaces (``ip netns list``)."""
    out = run(["ip", "netns", "list"], what="ip netns list")
    return tuple(line.split()[0] for line in out.splitlines() if line.strip())


def _delete(ns: str) -> None:
    subprocess.run(["ip", "netns", "delete", ns], capture_output=True, check=False)


def sweep_stale() -> tuple[str, ...]:
    """Delete ``msor*`` namespaces left by processes that no longer exist; return their names."""
    gone = []
    for ns in list_namespaces():
        m = _NAME_RE.match(ns)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            _delete(ns)
            gone.append(ns)
    return tuple(gone)


class NamespacePair:
    """A pod namespace and a peer namespace joined by a veth pair.

    The pod end is called ``interface`` (the world's, e.g. ``eth0``), the peer end ``vpeer``. Both
    namespaces have ``lo`` up, IPv6 duplicate-address detection off and unprivileged ports from 0.
    """

    def __init__(self, interface: str = "eth0") -> None:
        tag = f"{PREFIX}{os.getpid()}x{next(_counter)}"
        self.pod = tag + "p"
        self.peer = tag + "q"
        self.interface = interface
        self.peer_interface = "vpeer"
        self._created: list[str] = []

    def create(self) -> None:
        if shutil.which("ip") is None:
            raise OracleError("iproute2 (`ip`) is not installed")
        sweep_stale()  # namespaces of oracle runs that were killed before they could clean up
        sysctls = ("echo 0 > /proc/sys/net/ipv6/conf/all/accept_dad; "
                   "echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad; "
                   "echo 0 > /proc/sys/net/ipv4/ip_unprivileged_port_start")
        for ns in (self.pod, self.peer):
            run(["ip", "netns", "add", ns], what=f"create namespace {ns}")
            self._created.append(ns)
            run(["ip", "netns", "exec", ns, "sh", "-c", sysctls], what=f"sysctls in {ns}")
        ip_batch(self.pod, [
            "link set lo up",
            f"link add {self.interface} type veth peer name {self.peer_interface} netns {self.peer}",
            f"link set {self.interface} up",
        ], what="create the veth pair")
        ip_batch(self.peer, ["link set lo up", f"link set {self.peer_interface} up"],
                 what="bring the peer up")

    def delete(self) -> None:
        """Delete both namespaces (idempotent; errors are ignored so that clean-up always finishes)."""
        while self._created:
            _delete(self._created.pop())

    def exec_argv(self, ns: str, argv: Sequence[str]) -> list[str]:
        """The command line that runs ``argv`` inside namespace ``ns``."""
        return ["ip", "netns", "exec", ns, *argv]


@contextlib.contextmanager
def netns_pair(interface: str = "eth0") -> Iterator[NamespacePair]:
    """Create a :class:`NamespacePair`; both namespaces are deleted on exit, whatever happens."""
    pair = NamespacePair(interface)
    try:
        pair.create()
        yield pair
    finally:
        pair.delete()
