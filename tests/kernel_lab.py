"""A small lab for the kernel-fact tests: a pod and a peer namespace, rules, sockets and counters.

The pod (``eth0``: 192.0.2.10/24, 2001:db8::10/64) and the peer (``vpeer``: 192.0.2.20/24,
2001:db8::20/64) are joined by a veth pair (:func:`meshsolve.oracle.netns.netns_pair`, which always
deletes both namespaces). Sockets are made *in this process*: the calling thread enters a namespace
with ``setns(2)`` while it creates a socket and leaves again; a socket stays in the namespace it was
made in. A socket's owner (what ``-m owner`` and ``SO_REUSEPORT`` compare) is the creating thread's
file-system uid/gid, so :meth:`Lab.socket` sets those with ``setfsuid``/``setfsgid`` around
``socket()`` instead of starting a process per uid. Rules are loaded with the real
``iptables-restore``/``ip6tables-restore``; counters are read back from ``iptables-save -c`` and
named by the rule's ``-m comment``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import select
import shlex
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import attrs

from meshsolve.oracle.netns import NamespacePair, ip_batch, netns_pair

__all__ = ["PEER4", "PEER6", "POD4", "POD6", "Attempt", "Completion", "Lab", "family_of", "lab", "original_dst"]

POD4, PEER4 = "192.0.2.10", "192.0.2.20"
POD6, PEER6 = "2001:db8::10", "2001:db8::20"

CONNECT_TIMEOUT = 1.0  # a SYN on a veth is answered in well under a millisecond
IP_TRANSPARENT = 19
IPV6_TRANSPARENT = 75
SO_ORIGINAL_DST = 80
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
T = TypeVar("T")


def family_of(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


@attrs.frozen
class Attempt:
    """How one ``connect()`` ended: ``outcome`` is ``connected``, ``timeout`` or an errno name."""

    outcome: str
    seconds: float
    sock: socket.socket | None = attrs.field(eq=False, repr=False)
    local: tuple[str, int] | None = None
    remote: tuple[str, int] | None = None

    @property
    def connected(self) -> bool:
        return self.outcome == "connected"


@attrs.frozen
class Completion:
    """How far a connection got: the client's connect, the server's accept, one round trip."""

    connected: bool
    accepted: bool
    exchanged: bool
    server: socket.socket | None = attrs.field(eq=False, repr=False)

    @property
    def completes(self) -> bool:
        return self.connected and self.accepted and self.exchanged

    @property
    def steps(self) -> tuple[bool, bool, bool]:
        return self.connected, self.accepted, self.exchanged


@contextlib.contextmanager
def _entered(ns: str) -> Iterator[None]:
    """Run the body with the calling thread in network namespace ``ns``."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if _libc.setns(target, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {ns}: {os.strerror(err)}")
        try:
            yield
        finally:
            if _libc.setns(home, _CLONE_NEWNET) != 0:  # pragma: no cover - would leave the thread astray
                raise OSError(ctypes.get_errno(), "setns back to the test's own namespace")
    finally:
        os.close(target)
        os.close(home)


@contextlib.contextmanager
def _owner(uid: int | None, gid: int | None) -> Iterator[None]:
    """Run the body with this thread's fsuid/fsgid set (what a socket made there is owned by)."""
    if gid is not None:
        _libc.setfsgid(gid)
    if uid is not None:
        _libc.setfsuid(uid)
    try:
        yield
    finally:
        _libc.setfsuid(os.geteuid())
        _libc.setfsgid(os.getegid())


class Lab:
    """The pod/peer pair plus everything a fact test needs; :func:`lab` makes and removes it."""

    def __init__(self, pair: NamespacePair) -> None:
        self.pod = pair.pod
        self.peer = pair.peer
        self._sockets: list[socket.socket] = []

    # ---------------------------------------------------------------- commands in a namespace
    def sh(self, ns: str, argv: Sequence[str], *, input_text: str | None = None,
           check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["ip", "netns", "exec", ns, *argv], input=input_text, capture_output=True,
                              text=True, timeout=30, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} in {ns}: exit {proc.returncode}: {proc.stderr.strip()}")
        return proc

    def ip(self, ns: str, *commands: str, v6: bool = False) -> None:
        """Run ``ip`` commands (one batch) in ``ns``; ``v6`` runs them as ``ip -6``."""
        ip_batch(ns, commands, what=f"ip in {ns}", options=("-6",) if v6 else ())

    def sysctl(self, ns: str, key: str, value: str) -> None:
        path = "/proc/sys/" + key.replace(".", "/")
        self.sh(ns, ["sh", "-c", f"echo {value} > {path}"])

    def restore(self, ns: str, text: str, *, v6: bool = False) -> None:
        """Load ``text`` with (ip6)tables-restore in ``ns``; an AssertionError with its message if refused."""
        tool = "ip6tables-restore" if v6 else "iptables-restore"
        self.sh(ns, [tool], input_text=text)

    def try_restore(self, ns: str, text: str, *, v6: bool = False) -> subprocess.CompletedProcess[str]:
        tool = "ip6tables-restore" if v6 else "iptables-restore"
        return self.sh(ns, [tool], input_text=text, check=False)

    def save(self, ns: str, *, v6: bool = False) -> str:
        return self.sh(ns, ["ip6tables-save" if v6 else "iptables-save", "-c"]).stdout

    def counters(self, ns: str, *, v6: bool = False) -> dict[str, int]:
        """Packets counted by each commented rule in ``ns`` (``{comment: packets}``, all tables)."""
        found: dict[str, int] = {}
        for line in self.save(ns, v6=v6).splitlines():
            if not line.startswith("["):
                continue
            head, _, rule = line.partition(" ")
            words = shlex.split(rule)
            if "--comment" in words:
                name = words[words.index("--comment") + 1]
                assert name not in found, f"two rules carry the comment {name!r}"
                found[name] = int(head[1:].split(":")[0])
        return found

    def snmp(self, ns: str) -> dict[str, int]:
        """The namespace's protocol counters (``/proc/net/snmp``, ``netstat``, ``snmp6``) by name."""
        out = self.sh(ns, ["cat", "/proc/net/snmp", "/proc/net/netstat", "/proc/net/snmp6"]).stdout
        lines = out.splitlines()
        found: dict[str, int] = {}
        i = 0
        while i < len(lines):
            words = lines[i].split()
            nxt = lines[i + 1].split() if i + 1 < len(lines) else []
            if words and words[0].endswith(":") and nxt and nxt[0] == words[0]:
                found.update({words[0][:-1] + "." + k: int(v) for k, v in zip(words[1:], nxt[1:], strict=True)})
                i += 2
            else:
                if len(words) == 2 and words[1].lstrip("-").isdigit():
                    found[words[0]] = int(words[1])
                i += 1
        return found

    def ifindex(self, ns: str, dev: str) -> int:
        return int(json.loads(self.sh(ns, ["ip", "-j", "link", "show", "dev", dev]).stdout)[0]["ifindex"])

    def link_local(self, ns: str, dev: str) -> str:
        data = json.loads(self.sh(ns, ["ip", "-j", "-6", "addr", "show", "dev", dev, "scope", "link"]).stdout)
        return next(str(a["local"]) for a in data[0]["addr_info"] if "local" in a)

    @staticmethod
    def concurrently(*thunks: Callable[[], T]) -> list[T]:
        """Run the thunks in parallel threads (so that several timeouts cost one); results in order."""
        with ThreadPoolExecutor(max_workers=len(thunks)) as pool:
            return list(pool.map(lambda f: f(), thunks))

    # ---------------------------------------------------------------- sockets
    def socket(self, ns: str, family: int, *, uid: int | None = None, gid: int | None = None,
               v6only: bool | None = None, reuseaddr: bool = False, reuseport: bool = False,
               transparent: bool = False, mark: int | None = None) -> socket.socket:
        """A TCP socket made in ``ns`` (owned by uid/gid when given), closed when the lab ends."""
        with _entered(ns), _owner(uid, gid):
            s = socket.socket(family, socket.SOCK_STREAM)
        self._sockets.append(s)
        if reuseaddr:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if v6only is not None:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
        if transparent:
            if family == socket.AF_INET:
                s.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
            else:
                s.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
        if mark is not None:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
        return s

    def listen(self, ns: str, addr: str, port: int, **opts: object) -> socket.socket:
        """A listener on ``addr:port`` in ``ns`` (``v6only`` defaults to True for IPv6)."""
        fam = family_of(addr)
        if fam == socket.AF_INET6:
            opts.setdefault("v6only", True)
        s = self.socket(ns, fam, **opts)  # type: ignore[arg-type]
        s.bind((addr, port))
        s.listen(64)
        return s

    def connect(self, ns: str, dst: str, port: int, *, family: int | None = None, src: str | None = None,
                scope_id: int = 0, timeout: float = CONNECT_TIMEOUT, **opts: object) -> Attempt:
        """One blocking ``connect()`` from ``ns``; never raises for the kernel's answer."""
        fam = family or family_of(dst)
        s = self.socket(ns, fam, **opts)  # type: ignore[arg-type]
        if src is not None:
            s.bind((src, 0))
        s.settimeout(timeout)
        t0 = time.monotonic()
        try:
            s.connect((dst, port, 0, scope_id) if fam == socket.AF_INET6 else (dst, port))
        except TimeoutError:
            s.close()  # a socket left in SYN-SENT would go on retransmitting into the next step
            return Attempt("timeout", time.monotonic() - t0, None)
        except OSError as exc:
            s.close()
            return Attempt(errno.errorcode.get(exc.errno or 0, str(exc)), time.monotonic() - t0, None)
        seconds = time.monotonic() - t0
        return Attempt("connected", seconds, s, _hostport(s.getsockname()), _hostport(s.getpeername()))

    def accept(self, listener: socket.socket, timeout: float = 0.5) -> socket.socket | None:
        """The next connection the kernel completed on ``listener``, or None within ``timeout``."""
        listener.settimeout(timeout)
        try:
            conn, _ = listener.accept()
        except (TimeoutError, BlockingIOError):
            return None
        self._sockets.append(conn)
        conn.settimeout(0.5)
        return conn

    def accept_any(self, listeners: Sequence[socket.socket], timeout: float = 0.5
                   ) -> tuple[int, socket.socket] | None:
        """(index, connection) from whichever listener has a completed connection first, or None."""
        ready, _, _ = select.select(list(listeners), [], [], timeout)
        if not ready:
            return None
        index = list(listeners).index(ready[0])
        conn = self.accept(listeners[index], 0.0)
        return None if conn is None else (index, conn)

    @staticmethod
    def round_trip(client: socket.socket, server: socket.socket | None, timeout: float = 0.5) -> bool:
        """One request/response: client sends, the server reads and answers, the client reads it.
        Without an accepted server socket the client still sends and waits for an answer (none comes)."""
        client.settimeout(timeout)
        try:
            client.sendall(b"request")
            if server is None:
                client.recv(64)  # nobody accepted: this ends in a timeout, a reset or EOF
                return False
            server.settimeout(timeout)
            if server.recv(64) != b"request":
                return False
            server.sendall(b"response")
            return client.recv(64) == b"response"
        except OSError:
            return False

    def completion(self, attempt: Attempt, listener: socket.socket) -> Completion:
        """Whether the connection *completes*: connect() succeeded, the server accepted, and one
        request/response round trip worked."""
        conn = self.accept(listener)
        ok_rt = attempt.sock is not None and self.round_trip(attempt.sock, conn)
        return Completion(attempt.connected, conn is not None, ok_rt, conn)

    def close_all(self) -> None:
        while self._sockets:
            with contextlib.suppress(OSError):
                self._sockets.pop().close()


def _hostport(addr: tuple[object, ...]) -> tuple[str, int]:
    return str(addr[0]), int(str(addr[1]))


def original_dst(conn: socket.socket) -> tuple[str, int] | str:
    """``SO_ORIGINAL_DST`` of an accepted connection, or the errno name the kernel gave."""
    try:
        if conn.family == socket.AF_INET:
            raw = conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
            return socket.inet_ntop(socket.AF_INET, raw[4:8]), struct.unpack("!H", raw[2:4])[0]
        raw = conn.getsockopt(socket.IPPROTO_IPV6, SO_ORIGINAL_DST, 28)
        return socket.inet_ntop(socket.AF_INET6, raw[8:24]), struct.unpack("!H", raw[2:4])[0]
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc))


@contextlib.contextmanager
def lab() -> Iterator[Lab]:
    """A fresh pod/peer pair with the usual addresses; sockets closed and namespaces deleted after."""
    with netns_pair("eth0") as pair:
        ip_batch(pair.pod, ["addr add 192.0.2.10/24 dev eth0",
                            "addr add 2001:db8::10/64 dev eth0 nodad"], what="pod addresses")
        ip_batch(pair.peer, ["addr add 192.0.2.20/24 dev vpeer",
                             "addr add 2001:db8::20/64 dev vpeer nodad"], what="peer addresses")
        the_lab = Lab(pair)
        try:
            yield the_lab
        finally:
            the_lab.close_all()
