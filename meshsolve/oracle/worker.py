"""The processes that run inside the oracle's namespaces: app listeners, the proxy stand-in, the peer.

This file is executed as a script (``python -I -S worker.py ROLE CONFIG_JSON``) inside a namespace via
``ip netns exec``; it uses the standard library only and must not import meshsolve, because it drops to
the configured uid/gid right after start-up and the interpreter's installation (under root's home) is
then unreadable. Everything it needs is imported at the top, before the privilege drop.

Protocol: the harness writes one JSON command per line on stdin and reads one JSON reply per line on
stdout. The worker exits on end-of-file on stdin (so it dies with the harness).

Roles
-----
``app``   listens on the app's sockets; each accepted connection gets one JSON line
          ``{"kind": "app", "app": NAME, "sock": INDEX, "peer": ADDR, "local": ADDR}`` and is closed.
``proxy`` the sidecar stand-in: listens on the outbound/inbound ports, reads the original destination,
          decides the side as ``ProxyBehavior`` says, connects upstream and relays the answer back;
          records every (side, original destination) it saw for the current flow.
``peer``  the remote host and "the outside world": answers every connection that arrives on its veth
          (iptables REDIRECT to one responder port) with ``{"kind": "egress", "dst": ADDR, ...}``.

Every role also answers ``connect`` (open a client connection with this process's ids) and ``ping``.
"""

from __future__ import annotations

import contextlib
import encodings.idna  # noqa: F401  (socket.create_connection may need it after the privilege drop)
import errno
import ipaddress
import json
import os
import select
import socket
import struct
import sys
import threading
import time
from typing import Any

SO_ORIGINAL_DST = 80
IP_TRANSPARENT = 19
IPV6_TRANSPARENT = 75
SOL_IPV6 = socket.IPPROTO_IPV6

_out_lock = threading.Lock()


def _reply(obj: dict[str, Any]) -> None:
    with _out_lock:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def _norm(addr: str) -> str:
    """An address as text; IPv4-mapped IPv6 (``::ffff:a.b.c.d``) becomes plain IPv4."""
    ip = ipaddress.ip_address(addr.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def original_dst(conn: socket.socket) -> tuple[str, int]:
    """The destination the client originally asked for (before REDIRECT); TPROXY: the local address."""
    try:
        if conn.family == socket.AF_INET:
            raw = conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
            port = struct.unpack("!H", raw[2:4])[0]
            return str(ipaddress.IPv4Address(raw[4:8])), port
        raw = conn.getsockopt(SOL_IPV6, SO_ORIGINAL_DST, 28)
        port = struct.unpack("!H", raw[2:4])[0]
        return _norm(str(ipaddress.IPv6Address(raw[8:24]))), port
    except OSError:
        host, port = conn.getsockname()[:2]
        return _norm(host), int(port)


def _listener(family: int, bind: str, port: int, *, v6only: bool = True, transparent: bool = False,
              reuseport: bool = True) -> socket.socket:
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuseport:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        s.setsockopt(SOL_IPV6, socket.IPV6_V6ONLY, 1 if v6only else 0)
    if transparent:
        if family == socket.AF_INET:
            s.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
        else:
            s.setsockopt(SOL_IPV6, IPV6_TRANSPARENT, 1)
    s.bind((bind, port))
    s.listen(128)
    return s


def _family(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def client_connect(dst: str, port: int, *, timeout: float, src: str | None = None, sport: int = 0,
                   read_timeout: float | None = None) -> dict[str, Any]:
    """Open one TCP connection and read what comes back until EOF.

    ``status`` is ``data`` (something came back; ``data`` holds it), ``eof`` (connected, closed without
    data), ``reset`` (connected, then RST), ``refused`` (RST to the SYN), ``timeout`` (no answer to the
    SYN), ``read-timeout`` (connected, nothing came back in time) or ``error``.
    """
    fam = _family(dst)
    s = socket.socket(fam, socket.SOCK_STREAM)
    t0 = time.monotonic()
    try:
        if src is not None or sport:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((src or ("::" if fam == socket.AF_INET6 else "0.0.0.0"), sport))
        s.settimeout(timeout)
        try:
            s.connect((dst, port))
        except ConnectionRefusedError:
            return {"status": "refused", "elapsed": time.monotonic() - t0}
        except TimeoutError:
            return {"status": "timeout", "elapsed": time.monotonic() - t0}
        except OSError as exc:
            name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            return {"status": "error", "error": name, "elapsed": time.monotonic() - t0}
        local = s.getsockname()
        s.settimeout(read_timeout if read_timeout is not None else timeout)
        chunks: list[bytes] = []
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
        except TimeoutError:
            status = "read-timeout"
        except ConnectionResetError:
            status = "reset"
        else:
            status = "data" if chunks else "eof"
        return {"status": status, "data": b"".join(chunks).decode("utf-8", "replace"),
                "local": _norm(local[0]), "local_port": local[1], "elapsed": time.monotonic() - t0}
    finally:
        s.close()


def _send_close(conn: socket.socket, obj: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):
        conn.sendall((json.dumps(obj) + "\n").encode())
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_RDWR)
    conn.close()


class Server:
    """Accepts on a set of listeners in one thread and hands each connection to a handler thread."""

    def __init__(self) -> None:
        self.listeners: dict[int, tuple[socket.socket, Any]] = {}

    def add(self, sock: socket.socket, tag: Any) -> None:
        self.listeners[sock.fileno()] = (sock, tag)

    def start(self, handler: Any) -> None:
        def loop() -> None:
            fds = list(self.listeners)
            while True:
                ready, _, _ = select.select(fds, [], [])
                for fd in ready:
                    sock, tag = self.listeners[fd]
                    try:
                        conn, peer = sock.accept()
                    except OSError:
                        continue
                    threading.Thread(target=handler, args=(conn, peer, tag), daemon=True).start()

        if self.listeners:
            threading.Thread(target=loop, daemon=True).start()


def drop_privileges(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)


# ----------------------------------------------------------------------------------------------- app


def run_app(cfg: dict[str, Any]) -> Server:
    name = cfg["name"]
    server = Server()
    for sk in cfg["sockets"]:
        server.add(_listener(_family(sk["bind"]), sk["bind"], sk["port"], v6only=sk["v6only"]), sk["index"])

    def handle(conn: socket.socket, peer: Any, index: int) -> None:
        local = conn.getsockname()
        _send_close(conn, {"kind": "app", "app": name, "sock": index, "peer": _norm(peer[0]),
                           "local": _norm(local[0]), "local_port": local[1]})

    server.start(handle)
    return server


# --------------------------------------------------------------------------------------------- proxy


class Proxy:
    """The sidecar stand-in; see the module docstring and ``ProxyBehavior``."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.pod_ips = {_norm(a) for a in cfg["pod_ips"]}
        self.inbound_ports = None if cfg["inbound_ports"] is None else set(cfg["inbound_ports"])
        self.services = {(_norm(s["vip"]), s["port"]): [tuple(e) for e in s["endpoints"]]
                         for s in cfg["services"]}
        self.lock = threading.Lock()
        self.flow = 0
        self.endpoint = 0
        self.events: list[dict[str, Any]] = []
        self.counts: dict[tuple[str, str, int], int] = {}
        self.timeout: float = cfg["timeout"]

    def reset(self, flow: int, endpoint: int, timeout: float | None = None) -> None:
        with self.lock:
            self.flow, self.endpoint = flow, endpoint
            self.events, self.counts = [], {}
            self.timeout = self.cfg["timeout"] if timeout is None else timeout

    def side_of(self, listener: str, dst: str, port: int) -> str:
        if listener == "inbound":
            return "in"
        if (self.cfg["virtual_inbound_dispatch"] and dst in self.pod_ips
                and (self.inbound_ports is None or port in self.inbound_ports)):
            return "in"
        return "out"

    def handle(self, conn: socket.socket, peer: Any, listener: str) -> None:
        try:
            dst, port = original_dst(conn)
            side = self.side_of(listener, dst, port)
            with self.lock:
                key = (side, dst, port)
                self.counts[key] = self.counts.get(key, 0) + 1
                repeats = self.counts[key]
                self.events.append({"flow": self.flow, "side": side, "dst": dst, "port": port,
                                    "peer": _norm(peer[0]), "listener": listener})
                endpoint = self.endpoint
            if repeats > self.cfg["loop_limit"]:
                _send_close(conn, {"kind": "proxy-error", "error": "loop", "side": side})
                return
            src: str | None = None
            if side == "out":
                eps = self.services.get((dst, port))
                if eps is not None:
                    if not 0 <= endpoint < len(eps):
                        _send_close(conn, {"kind": "proxy-error", "error": "no-endpoint"})
                        return
                    target = (_norm(eps[endpoint][0]), int(eps[endpoint][1]))
                elif self.cfg["outbound"] == "blackhole":
                    _send_close(conn, {"kind": "proxy-error", "error": "blackhole"})
                    return
                else:
                    target = (dst, port)
            else:
                fam = "ipv6" if ":" in dst else "ipv4"
                if self.cfg["inbound_endpoint"] == "localhost":
                    target = ("::1" if fam == "ipv6" else "127.0.0.1", port)
                else:
                    target = (dst, port)
                src = self.cfg["inbound_source"].get(fam)
            res = client_connect(target[0], target[1], timeout=self.timeout, src=src,
                                 read_timeout=self.cfg["read_timeout"])
            if res["status"] in ("data", "eof"):
                if res["status"] == "data":
                    with contextlib.suppress(OSError):
                        conn.sendall(res["data"].encode())
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
                return
            _send_close(conn, {"kind": "proxy-error", "error": res["status"], "side": side,
                               "detail": res.get("error")})
        except Exception as exc:  # keep serving; report the failure to the client
            _send_close(conn, {"kind": "proxy-error", "error": "internal", "detail": repr(exc)})


def run_proxy(cfg: dict[str, Any]) -> tuple[Server, Proxy]:
    proxy = Proxy(cfg)
    server = Server()
    transparent = bool(cfg["transparent"])  # TPROXY hands connections to IP_TRANSPARENT listeners
    ports = [("outbound", cfg["outbound_port"], transparent)]
    if cfg["inbound_port"] is not None and cfg["inbound_port"] != cfg["outbound_port"]:
        ports.append(("inbound", cfg["inbound_port"], transparent))
    for fam in cfg["families"]:
        af = socket.AF_INET6 if fam == "ipv6" else socket.AF_INET
        wild = "::" if fam == "ipv6" else "0.0.0.0"
        for kind, port, transparent in ports:
            server.add(_listener(af, wild, port, transparent=transparent, reuseport=False), kind)
    server.start(proxy.handle)
    return server, proxy


# ---------------------------------------------------------------------------------------------- peer


def run_peer(cfg: dict[str, Any]) -> Server:
    server = Server()
    for fam in cfg["families"]:
        af = socket.AF_INET6 if fam == "ipv6" else socket.AF_INET
        server.add(_listener(af, "::" if fam == "ipv6" else "0.0.0.0", cfg["egress_port"],
                             reuseport=False), "egress")

    def handle(conn: socket.socket, peer: Any, _tag: str) -> None:
        dst, port = original_dst(conn)
        _send_close(conn, {"kind": "egress", "dst": dst, "port": port, "peer": _norm(peer[0])})

    server.start(handle)
    return server


# ---------------------------------------------------------------------------------------------- main


def main(argv: list[str]) -> int:
    role, cfg = argv[1], json.loads(argv[2])
    proxy: Proxy | None = None
    # Listeners that need privileges (IP_TRANSPARENT) are made before the drop; others after, so that
    # every socket (and the upstream connections the proxy opens) is owned by the configured ids.
    if role == "proxy" and cfg["transparent"]:
        _, proxy = run_proxy(cfg)
        drop_privileges(cfg["uid"], cfg["gid"])
    else:
        if "uid" in cfg:
            drop_privileges(cfg["uid"], cfg["gid"])
        if role == "app":
            run_app(cfg)
        elif role == "proxy":
            _, proxy = run_proxy(cfg)
        elif role == "peer":
            run_peer(cfg)
        else:
            raise SystemExit(f"unknown role {role!r}")
    _reply({"ready": True, "pid": os.getpid(), "uid": os.getuid(), "gid": os.getgid()})
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        if op == "ping":
            _reply({"ok": True})
        elif op == "connect":
            _reply(client_connect(cmd["dst"], cmd["port"], timeout=cmd["timeout"], src=cmd.get("src"),
                                  sport=cmd.get("sport") or 0, read_timeout=cmd.get("read_timeout")))
        elif op == "reset" and proxy is not None:
            proxy.reset(cmd["flow"], cmd["endpoint"], cmd.get("timeout"))
            _reply({"ok": True})
        elif op == "events" and proxy is not None:
            with proxy.lock:
                _reply({"events": list(proxy.events)})
        else:
            _reply({"error": f"unknown op {op!r} for role {role}"})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
