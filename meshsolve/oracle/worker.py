"""The processes that run inside the oracle's namespaces: app listeners, the proxy stand-in, the peer.

This file is executed as a script (``python -I -S worker.py ROLE CONFIG_JSON``) inside a namespace via
``ip netns exec``; it uses the standard library only and must not import meshsolve, because it drops to
the configured uid/gid right after start-up and the interpreter's installation (under root's home) is
then unreadable. Everything it needs is imported at the top, before the privilege drop.

Protocol: the harness writes one JSON command per line on stdin and reads one JSON reply per line on
stdout. The worker exits on end-of-file on stdin (so it dies with the harness).

Every connection carries one request/response: the client sends one line (the flow's token), the
server that finally takes the connection reads it and answers with one JSON line naming itself, what
it saw and the request, then closes. A connection *completes* only when that answer came back. The
stand-in forwards the request with `` +proxy`` appended, so it can tell the client's own connection
from its own upstream ones (a NATed connection's source port may be remapped by conntrack).

Roles
-----
``app``   listens on the app's sockets (``SO_REUSEPORT`` where the socket asks for it, ``SO_MARK`` when
          the app has a ``mark``: it keeps ``CAP_NET_ADMIN`` for it); answers
          ``{"kind": "app", "app": NAME, "sock": INDEX, "peer": ADDR, "local": ADDR, "token": T}``.
``proxy`` the sidecar stand-in: listens on the outbound/inbound ports (``IP_TRANSPARENT`` when the
          proxy is transparent), reads the original destination (the local address of a connection
          TPROXY handed over, ``SO_ORIGINAL_DST`` of a REDIRECTed one), decides the side as
          ``ProxyBehavior`` says, connects upstream (from the client's own address with
          ``IP_TRANSPARENT`` when ``inbound_original_source``; ``SO_MARK`` on the inbound side's
          upstream socket when ``upstream_mark``) and relays the request and the answer; records
          every (side, original destination) it saw for the current flow. When the upstream does
          not complete it answers ``{"kind": "proxy-error", "error": STATUS, "errno": E, ...}``.
          When the pod puts connections in conntrack zones (``zones``) and ``SO_ORIGINAL_DST``
          finds nothing, the connection lives outside the default zone, the only one that option
          reads: the stand-in closes it (``no-original-dst``) rather than forward it to itself.
          On its own listeners (``own_listeners``) it answers for itself (``{"kind": "own", ...}``),
          except on its tunnel listener (``tunnel_port``) for a request ``TOKEN CONNECT PORT``
          (HBONE's CONNECT, in short): that is its inbound side for the address the client
          connected to at PORT (``listener`` ``tunnel`` in its record).
``peer``  the remote host and "the outside world": answers every connection to an address it owns
          (its own, and every remote address the world names: local routes on its ``lo``) with
          ``{"kind": "egress", "dst": ADDR, "port": P, "peer": SOURCE, "token": T}`` and logs it
          (``seen`` returns the log).

Every role also answers ``connect`` (open a client connection with this process's ids, from ``src``
when given, with ``SO_MARK`` ``mark`` when given: an app allowed ``CAP_NET_ADMIN``, or the proxy's
``socket_mark``: a proxy that marks every socket marks the connections it opens itself too) and ``ping``.
"""

from __future__ import annotations

import contextlib
import ctypes
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
SO_MARK = 36
IP_TRANSPARENT = 19
IPV6_TRANSPARENT = 75
SOL_IPV6 = socket.IPPROTO_IPV6
PR_SET_KEEPCAPS = 8
CAP_NET_ADMIN, CAP_NET_RAW = 12, 13
_CAP_VERSION_3 = 0x20080522
REQUEST_LIMIT = 4096
TUNNEL = "CONNECT"  # a request "TOKEN CONNECT PORT" to the tunnel listener names the tunnel's inner target
PROXIED = " +proxy"  # the stand-in appends this to a request it forwards: which legs are the client's own

_out_lock = threading.Lock()
_libc = ctypes.CDLL(None, use_errno=True)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


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


def _errno_name(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, str(exc.errno))


def so_original_dst(conn: socket.socket) -> tuple[str, int] | None:
    """``SO_ORIGINAL_DST`` (``IP6T_SO_ORIGINAL_DST`` for IPv6), or None when conntrack has no entry."""
    try:
        if conn.family == socket.AF_INET:
            raw = conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
            return str(ipaddress.IPv4Address(raw[4:8])), struct.unpack("!H", raw[2:4])[0]
        raw = conn.getsockopt(SOL_IPV6, SO_ORIGINAL_DST, 28)
        return _norm(str(ipaddress.IPv6Address(raw[8:24]))), struct.unpack("!H", raw[2:4])[0]
    except OSError:
        return None


def original_dst(conn: socket.socket, listener_port: int) -> tuple[str, int, str]:
    """Where the client meant to go, and how it was read: a connection TPROXY handed over keeps its
    destination, so its local address is the original one (``"local"``); a REDIRECTed connection's
    local address is the listener's, and conntrack knows the original (``"so_original_dst"``); when
    conntrack does not (``"no so_original_dst"``) the local address is all there is."""
    host, port = conn.getsockname()[:2]
    if port != listener_port:
        return _norm(host), int(port), "local"
    orig = so_original_dst(conn)
    if orig is None:
        return _norm(host), int(port), "no so_original_dst"
    return orig[0], orig[1], "so_original_dst"


def _transparent(s: socket.socket) -> None:
    if s.family == socket.AF_INET:
        s.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
    else:
        s.setsockopt(SOL_IPV6, IPV6_TRANSPARENT, 1)


def _listener(family: int, bind: str, port: int, *, v6only: bool = True, transparent: bool = False,
              reuseport: bool = False, mark: int | None = None) -> socket.socket:
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if mark:
        s.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
    if reuseport:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        s.setsockopt(SOL_IPV6, socket.IPV6_V6ONLY, 1 if v6only else 0)
    if transparent:
        _transparent(s)
    s.bind((bind, port))
    s.listen(128)
    return s


def _family(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def read_line(conn: socket.socket, timeout: float) -> str | None:
    """One request line (up to ``REQUEST_LIMIT`` bytes), or None when none came in time."""
    conn.settimeout(timeout)
    buf = b""
    try:
        while b"\n" not in buf and len(buf) < REQUEST_LIMIT:
            chunk = conn.recv(REQUEST_LIMIT)
            if not chunk:
                break
            buf += chunk
    except OSError:
        return None
    return buf.split(b"\n", 1)[0].decode("utf-8", "replace") if buf else None


def _source_for(fam: int, dst: str, port: int) -> str:
    """The address the kernel would give a client socket connecting to ``dst`` (learnt from a UDP
    socket's ``connect()``, which makes the same route lookup and sends nothing), or the wildcard.

    A client with a fixed source port binds it on this address, not on the wildcard: a wildcard bind
    of port P collides with any listener on P (EADDRINUSE), while the connection itself only needs
    its own source address and port to be free."""
    wild = "::" if fam == socket.AF_INET6 else "0.0.0.0"
    probe = socket.socket(fam, socket.SOCK_DGRAM)
    try:
        probe.connect((dst, port))
        return str(probe.getsockname()[0])
    except OSError:
        return wild
    finally:
        probe.close()


def client_connect(dst: str, port: int, *, timeout: float, request: str = "", src: str | None = None,
                   sport: int = 0, read_timeout: float | None = None, transparent: bool = False,
                   mark: int | None = None) -> dict[str, Any]:
    """Open one TCP connection, send ``request`` (one line) and read the answer until EOF.

    ``status`` is ``data`` (an answer came back; ``data`` holds it), ``eof`` (connected, closed without
    data), ``reset`` (connected, then RST), ``refused`` (RST to the SYN, or an ICMP port unreachable:
    ECONNREFUSED), ``timeout`` (no answer to the SYN), ``read-timeout`` (connected, nothing came back
    in time) or ``error`` (``connect()`` or ``bind()`` failed with ``errno``: ``EINVAL``,
    ``ENETUNREACH``, ``EHOSTUNREACH``, ``EACCES``, ...).
    """
    fam = _family(dst)
    s = socket.socket(fam, socket.SOCK_STREAM)
    t0 = time.monotonic()
    try:
        try:
            if mark:
                s.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
            if transparent:
                _transparent(s)
            if src is not None or sport:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((src or _source_for(fam, dst, port), sport))
        except OSError as exc:
            return {"status": "error", "errno": _errno_name(exc), "stage": "bind",
                    "elapsed": time.monotonic() - t0}
        s.settimeout(timeout)
        try:
            s.connect((dst, port))
        except ConnectionRefusedError:
            return {"status": "refused", "errno": "ECONNREFUSED", "elapsed": time.monotonic() - t0}
        except TimeoutError:
            return {"status": "timeout", "elapsed": time.monotonic() - t0}
        except OSError as exc:
            return {"status": "error", "errno": _errno_name(exc), "stage": "connect",
                    "elapsed": time.monotonic() - t0}
        local = s.getsockname()
        s.settimeout(read_timeout if read_timeout is not None else timeout)
        chunks: list[bytes] = []
        try:
            s.sendall((request + "\n").encode())
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
        except TimeoutError:
            status = "read-timeout"
        except (ConnectionResetError, BrokenPipeError):
            status = "reset"
        except OSError as exc:
            return {"status": "error", "errno": _errno_name(exc), "stage": "read",
                    "local": _norm(local[0]), "local_port": local[1], "elapsed": time.monotonic() - t0}
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


def drop_privileges(uid: int, gid: int, *, keep_net_admin: bool = False) -> None:
    """Become ``uid``/``gid`` (no supplementary groups). With ``keep_net_admin`` a non-root uid keeps
    CAP_NET_ADMIN and CAP_NET_RAW (``IP_TRANSPARENT``, ``SO_MARK``), as a proxy given NET_ADMIN does.
    Capabilities are per thread: call this before starting any thread that needs them."""
    if keep_net_admin and uid != 0:
        _libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0)
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    if keep_net_admin and uid != 0:
        hdr = _CapHeader(_CAP_VERSION_3, 0)
        data = (_CapData * 2)()
        bits = (1 << CAP_NET_ADMIN) | (1 << CAP_NET_RAW)
        data[0].effective = data[0].permitted = bits
        if _libc.capset(ctypes.byref(hdr), data) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"capset: {os.strerror(err)}")


# ----------------------------------------------------------------------------------------------- app


def run_app(cfg: dict[str, Any]) -> Server:
    name = cfg["name"]
    server = Server()
    for sk in cfg["sockets"]:
        server.add(_listener(_family(sk["bind"]), sk["bind"], sk["port"], v6only=sk["v6only"],
                             reuseport=sk.get("reuseport", False), mark=cfg.get("mark")), sk["index"])

    def handle(conn: socket.socket, peer: Any, index: int) -> None:
        token = read_line(conn, cfg.get("request_timeout", 5.0))
        local = conn.getsockname()
        _send_close(conn, {"kind": "app", "app": name, "sock": index, "peer": _norm(peer[0]),
                           "peer_port": peer[1], "local": _norm(local[0]), "local_port": local[1],
                           "token": token})

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

    def handle(self, conn: socket.socket, peer: Any, tag: tuple[str, int]) -> None:
        listener, listener_port = tag
        if listener == "own":
            token = read_line(conn, self.cfg["read_timeout"])
            words = (token or "").split(" ")
            if listener_port == self.cfg.get("tunnel_port") and len(words) == 3 and words[1] == TUNNEL:
                # the tunnel's inner target: this address (the one the client connected to) at the port named
                self.relay(conn, peer, "tunnel", _norm(conn.getsockname()[0]), int(words[2]), "in", "tunnel",
                           words[0])
                return
            _send_close(conn, {"kind": "own", "port": listener_port, "peer": _norm(peer[0]), "peer_port": peer[1],
                               "token": token})
            return
        try:
            dst, port, how = original_dst(conn, listener_port)
            self.relay(conn, peer, listener, dst, port, self.side_of(listener, dst, port), how, None)
        except Exception as exc:  # keep serving; report the failure to the client
            _send_close(conn, {"kind": "proxy-error", "error": "internal", "detail": repr(exc)})

    def relay(self, conn: socket.socket, peer: Any, listener: str, dst: str, port: int, side: str, how: str,
              request: str | None) -> None:
        """The proxy's side ``side`` took ``conn`` for the original destination ``dst:port``: connect
        there (or to the service's endpoint) and relay ``request`` (None: read it from ``conn``)."""
        try:
            with self.lock:
                key = (side, dst, port)
                self.counts[key] = self.counts.get(key, 0) + 1
                repeats = self.counts[key]
                event: dict[str, Any] = {"flow": self.flow, "side": side, "dst": dst, "port": port,
                                         "peer": _norm(peer[0]), "peer_port": peer[1], "listener": listener,
                                         "how": how, "direct": None}
                self.events.append(event)
                endpoint = self.endpoint
                timeout = self.timeout
            if repeats > self.cfg["loop_limit"]:
                _send_close(conn, {"kind": "proxy-error", "error": "loop", "side": side})
                return
            if request is None and how == "no so_original_dst" and self.cfg.get("zones"):
                # the pod tracks connections (a CT --zone rule), so the entry exists, in another zone
                # than the default one SO_ORIGINAL_DST looks in: the proxy cannot learn the
                # destination and closes the connection (it does not forward to its own listener)
                _send_close(conn, {"kind": "proxy-error", "error": "no-original-dst", "side": side})
                return
            if request is None:
                request = read_line(conn, self.cfg["read_timeout"])
            with self.lock:
                event["direct"] = request is not None and not request.endswith(PROXIED)
            if request is None:
                _send_close(conn, {"kind": "proxy-error", "error": "no-request", "side": side})
                return
            src: str | None = None
            transparent = False
            mark: int | None = None
            if side == "out":
                eps = self.services.get((dst, port))
                if eps is not None:
                    if not 0 <= endpoint < len(eps):
                        _send_close(conn, {"kind": "proxy-error", "error": "no-endpoint", "side": side})
                        return
                    target = (_norm(eps[endpoint][0]), int(eps[endpoint][1]))
                elif self.cfg["outbound"] == "blackhole":
                    _send_close(conn, {"kind": "proxy-error", "error": "blackhole", "side": side})
                    return
                else:
                    target = (dst, port)
            else:
                fam = "ipv6" if ":" in dst else "ipv4"
                if self.cfg["inbound_endpoint"] == "localhost":
                    target = ("::1" if fam == "ipv6" else "127.0.0.1", port)
                else:
                    target = (dst, port)
                if self.cfg["inbound_original_source"]:
                    src, transparent = _norm(peer[0]), True
                else:
                    src = self.cfg["inbound_source"].get(fam)
                mark = self.cfg["upstream_mark"]
            if mark is None:
                mark = self.cfg.get("socket_mark")  # a proxy that marks every socket
            res = client_connect(target[0], target[1], timeout=timeout, request=request + PROXIED, src=src,
                                 transparent=transparent, mark=mark, read_timeout=self.cfg["read_timeout"])
            if res["status"] == "data":
                with contextlib.suppress(OSError):
                    conn.sendall(res["data"].encode())
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
                return
            _send_close(conn, {"kind": "proxy-error", "error": res["status"], "errno": res.get("errno"),
                               "stage": res.get("stage"), "side": side,
                               "upstream": [target[0], target[1]], "source": src})
        except Exception as exc:  # keep serving; report the failure to the client
            _send_close(conn, {"kind": "proxy-error", "error": "internal", "detail": repr(exc)})


def proxy_listeners(cfg: dict[str, Any]) -> Server:
    """The stand-in's listening sockets (made before any privilege drop: IP_TRANSPARENT needs it)."""
    server = Server()
    transparent = bool(cfg["transparent"])
    mark = cfg.get("socket_mark")
    ports = [("outbound", cfg["outbound_port"])]
    if cfg["inbound_port"] is not None and cfg["inbound_port"] != cfg["outbound_port"]:
        ports.append(("inbound", cfg["inbound_port"]))
    ports += [("own", p) for p in cfg.get("own_listeners", ())]
    for fam in cfg["families"]:
        af = socket.AF_INET6 if fam == "ipv6" else socket.AF_INET
        wild = "::" if fam == "ipv6" else "0.0.0.0"
        for kind, port in ports:
            server.add(_listener(af, wild, port, transparent=transparent, mark=mark), (kind, port))
    return server


# ---------------------------------------------------------------------------------------------- peer


class Peer:
    """The outside world's server: answers and logs every connection that reaches it."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.lock = threading.Lock()
        self.seen: list[dict[str, Any]] = []

    def handle(self, conn: socket.socket, peer: Any, port_tag: int) -> None:
        orig = so_original_dst(conn)
        dst, port = orig if orig is not None else (_norm(conn.getsockname()[0]), conn.getsockname()[1])
        token = read_line(conn, self.cfg.get("request_timeout", 5.0))
        entry = {"kind": "egress", "dst": dst, "port": port, "peer": _norm(peer[0]), "peer_port": peer[1],
                 "token": token}
        with self.lock:
            self.seen.append(entry)
        _send_close(conn, entry)


def run_peer(cfg: dict[str, Any]) -> tuple[Server, Peer]:
    server = Server()
    peer = Peer(cfg)
    for fam in cfg["families"]:
        af = socket.AF_INET6 if fam == "ipv6" else socket.AF_INET
        server.add(_listener(af, "::" if fam == "ipv6" else "0.0.0.0", cfg["egress_port"]), cfg["egress_port"])
    server.start(peer.handle)
    return server, peer


# ---------------------------------------------------------------------------------------------- main


def main(argv: list[str]) -> int:
    role, cfg = argv[1], json.loads(argv[2])
    proxy: Proxy | None = None
    peer: Peer | None = None
    if role == "proxy":
        # listeners first (IP_TRANSPARENT needs privileges), then the drop, then the threads, so
        # that every thread (and every upstream socket) carries the proxy's ids and capabilities
        server = proxy_listeners(cfg)
        drop_privileges(cfg["uid"], cfg["gid"], keep_net_admin=bool(cfg["needs_net_admin"]))
        proxy = Proxy(cfg)
        server.start(proxy.handle)
    elif role == "app":
        drop_privileges(cfg["uid"], cfg["gid"], keep_net_admin=bool(cfg.get("net_admin")))
        run_app(cfg)
    elif role == "peer":
        _, peer = run_peer(cfg)
    else:
        raise SystemExit(f"unknown role {role!r}")
    _reply({"ready": True, "pid": os.getpid(), "uid": os.getuid(), "gid": os.getgid()})
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        if op == "ping":
            _reply({"ok": True})
        elif op == "connect":
            _reply(client_connect(cmd["dst"], cmd["port"], timeout=cmd["timeout"], request=cmd.get("token", ""),
                                  src=cmd.get("src"), sport=cmd.get("sport") or 0,
                                  read_timeout=cmd.get("read_timeout"),
                                  mark=cmd.get("mark") or cfg.get("mark") or cfg.get("socket_mark")))
        elif op == "reset" and proxy is not None:
            proxy.reset(cmd["flow"], cmd["endpoint"], cmd.get("timeout"))
            _reply({"ok": True})
        elif op == "events" and proxy is not None:
            with proxy.lock:
                _reply({"events": list(proxy.events)})
        elif op == "seen" and peer is not None:
            with peer.lock:
                seen, peer.seen = list(peer.seen), []
            _reply({"seen": seen})
        else:
            _reply({"error": f"unknown op {op!r} for role {role}"})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
