"""The apps' listeners (``--binds``): meshsolve's binds YAML, or what ``ss``/``netstat`` print.

* The YAML (``apps`` with uid/gid, socket mark and listen addresses, ``services``, ``pod_ips``): see
  :func:`load_binds`; every part is *given* with its line.
* A socket listing: ``ss -ltnp`` / ``ss -tanp`` (``LISTEN`` rows, ``users:(("nginx",pid=..))``,
  ``uid:N`` with ``-e``) or ``netstat -ntlp`` / ``-pln`` / ``-a`` (``PID/Program``, ``-`` for another
  user's process, ``tcp6`` rows, names such as ``localhost`` and ``[::]``). Listening TCP sockets
  become apps, one per program (``-``: one app for those). The sidecar's own listeners (``envoy``,
  ``pilot-agent``, ``ztunnel``, or without a program name one of its ports 15000–15090) are not
  apps and are left out with a note. Addresses and ports are *given*; a uid ``ss -e`` does not show
  is *assumed* (1000). ``0.0.0.0:P`` and ``[::]:P`` both listening means the ``::`` socket is
  IPv6-only (*inferred*: otherwise the second bind fails). Listeners 15001/15006/15008 with 15053 and
  no Envoy admin port are ztunnel's in-pod listeners (Istio ambient), said in a note.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs
import yaml

import meshsolve.defaults as defaults
from meshsolve.errors import SpecError, WorldError
from meshsolve.iptables import unwrap_text
from meshsolve.model.net import IPAddress, to_address
from meshsolve.model.provenance import Assumed, Given, Inferred, Part
from meshsolve.model.world import App, Endpoint, Service, Socket
from meshsolve.yamllines import yaml_lines, yaml_value

__all__ = ["Binds", "load_binds", "read_binds"]

DEFAULT_POD4 = to_address(defaults.POD_IP["ipv4"])
DEFAULT_POD6 = to_address(defaults.POD_IP["ipv6"])


@attrs.frozen
class Binds:
    """What ``--binds`` says (``None`` = it does not say), with parts and notes."""

    apps: tuple[App, ...] | None = None
    services: tuple[Service, ...] | None = None
    pod_ips: tuple[IPAddress, ...] | None = None
    parts: tuple[Part, ...] = ()
    notes: tuple[str, ...] = ()
    form: str = "binds YAML"


# -- meshsolve's YAML -------------------------------------------------------------------------------

def _hostport(text: str, pod_ips: Sequence[IPAddress], what: str, source: str,
              lineno: int | None) -> tuple[IPAddress, int]:
    """``0.0.0.0:9001``, ``[::1]:9002``, ``pod:9003`` (the pod IP of the first family)."""
    m = re.fullmatch(r"\s*(?:\[([^\]]+)\]|([^:\s]+)):(\d+)\s*", str(text))
    if not m:
        raise SpecError(f"{what}: {text!r} is not ADDRESS:PORT (IPv6 as [ADDR]:PORT, 'pod' for the pod IP)",
                        source=source, lineno=lineno)
    host = m.group(1) or m.group(2)
    try:
        if host == "pod":
            addr = pod_ips[0] if pod_ips else DEFAULT_POD4
        elif host == "pod6":
            addr = next((a for a in pod_ips if a.version == 6), DEFAULT_POD6)
        else:
            addr = to_address(host)
    except WorldError as exc:
        raise SpecError(f"{what}: {exc}", source=source, lineno=lineno) from None
    return addr, int(m.group(3))


def load_binds(path: str | Path) -> Binds:
    """Read a binds file: the YAML below, or an ``ss``/``netstat`` listing (see the module notes)::

        pod_ips: [192.0.2.10]             # optional
        apps:
          - name: reviews
            uid: 1000                     # default 1000
            gid: 1000                     # default = uid
            mark: 0x539                   # optional: SO_MARK on its sockets (needs CAP_NET_ADMIN)
            listen: ["0.0.0.0:9080", "127.0.0.1:9081", "pod:9082"]   # pod = the pod IP
        services:
          - name: reviews
            vip: 198.51.100.1
            port: 9080
            endpoints: ["pod:9080"]
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"cannot read binds file: {exc.strerror}", source=source) from None
    return read_binds(text, source)


def read_binds(text: str, source: str = "<binds>") -> Binds:
    """:func:`load_binds` of a text."""
    listing = _listing(text, source)
    if listing is not None:
        return listing
    try:
        doc = yaml_value(text) or {}
    except (yaml.YAMLError, ValueError, OverflowError, RecursionError) as exc:
        mark = getattr(exc, "problem_mark", None)
        raise SpecError(f"not valid YAML: {getattr(exc, 'problem', exc)} (and not an `ss`/`netstat` listing)",
                        source=source, lineno=None if mark is None else mark.line + 1) from None
    if not isinstance(doc, Mapping):
        raise SpecError("expected a mapping with apps / services / pod_ips, or an `ss -ltnp` / `netstat -ntlp` "
                        "listing", source=source)
    unknown = set(doc) - {"apps", "services", "pod_ips"}
    if unknown:
        raise SpecError(f"unknown key(s): {', '.join(sorted(map(str, unknown)))}", source=source)
    lines = yaml_lines(text)
    parts: list[Part] = []
    pod_ips: tuple[IPAddress, ...] | None = None
    if doc.get("pod_ips") is not None:
        try:
            pod_ips = tuple(to_address(str(a)) for a in doc["pod_ips"])
        except WorldError as exc:
            raise SpecError(f"pod_ips: {exc}", source=source, lineno=lines.key_line("pod_ips")) from None
        parts.extend(Part("pod-ip", f"the pod IP {a}", Given(source, lines.key_line("pod_ips")), (str(a),))
                     for a in pod_ips)
    known = pod_ips or ()
    apps: tuple[App, ...] | None = None
    if doc.get("apps") is not None:
        out = []
        after = lines.key_line("apps") or 0
        for i, a in enumerate(doc["apps"]):
            if not isinstance(a, Mapping) or "name" not in a:
                raise SpecError(f"apps[{i}]: expected a mapping with a name", source=source, lineno=after or None)
            at = lines.pair_line("name", str(a["name"]), after) or after or None
            after = at or after
            uid = int(a.get("uid", defaults.APP_UID))
            socks = tuple(Socket(*_hostport(t, known, f"apps[{i}].listen", source, at))
                          for t in a.get("listen") or ())
            mark_at = (lines.key_line("mark", at) if at and "mark" in a else None) or at
            try:
                app = App(str(a["name"]), uid=uid, gid=int(a.get("gid", uid)), sockets=socks, mark=a.get("mark"))
            except WorldError as exc:
                raise SpecError(f"apps[{i}].mark: {exc} (expected SO_MARK as a number, e.g. 0x539)", source=source,
                                lineno=mark_at) from None
            out.append(app)
            parts.append(Part("app", f"app {app.name} runs as uid {app.uid}, gid {app.gid}",
                              Given(source, at) if "uid" in a else
                              Assumed(f"{source} gives no uid for {app.name}", "add uid/gid"),
                              (f"uid {app.uid}",)))
            parts.extend(Part("listener", f"app {app.name} listens on {s}", Given(source, at), (str(s),))
                         for s in socks)
            if app.mark is not None:
                parts.append(Part("app", f"app {app.name} sets socket mark {app.mark:#x} (SO_MARK)",
                                  Given(source, mark_at),
                                  (f"mark {app.mark:#x}",)))
        apps = tuple(out)
    services: tuple[Service, ...] | None = None
    if doc.get("services") is not None:
        svcs = []
        for i, s in enumerate(doc["services"]):
            if not isinstance(s, Mapping) or not {"vip", "port", "endpoints"} <= set(s):
                raise SpecError(f"services[{i}]: expected name, vip, port and endpoints", source=source,
                                lineno=lines.key_line("services"))
            eps = tuple(Endpoint(*_hostport(t, known, f"services[{i}].endpoints", source, None))
                        for t in s["endpoints"])
            svc = Service(str(s.get("name", f"svc-{i}")), to_address(str(s["vip"])), int(s["port"]), eps)
            svcs.append(svc)
            parts.append(Part("services", f"service {svc.name} at {svc.vip}:{svc.port}",
                              Given(source, lines.pair_line("vip", str(s["vip"]))), (str(svc.vip),)))
        services = tuple(svcs)
    return Binds(apps, services, pod_ips, tuple(parts))


# -- ss / netstat -----------------------------------------------------------------------------------

_HEADERS = re.compile(r"^(?:State\s+Recv-Q|Netid\s+State|Proto\s+Recv-Q|Active (?:Internet|UNIX))")
_SS_ROW = re.compile(r"^(?:(?:tcp|tcp6)\s+)?(LISTEN)\s+\d+\s+\d+\s+(\S+)\s+(\S+)(?:\s+(.*))?$")
_NETSTAT_ROW = re.compile(r"^(tcp6?)\s+\d+\s+\d+\s+(\S+)\s+(\S+)\s+LISTEN(?:\s+(\S+))?")
_PROXY_PROGRAMS = frozenset({"envoy", "pilot-agent", "ztunnel", "istio-proxy"})
_PROXY_PORTS = frozenset({15000, 15001, 15004, 15006, 15008, 15020, 15021, 15053, 15090})


def _address(host: str, v6: bool) -> IPAddress | None:
    host = host.strip("[]")
    if host in ("*", ""):
        return to_address("::" if v6 else "0.0.0.0")
    if host == "localhost":
        return to_address("::1" if v6 else "127.0.0.1")
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    try:
        return to_address(host.split("%", 1)[0])
    except (WorldError, ValueError):
        return None


def _split(local: str) -> tuple[str, str]:
    host, _, port = local.rpartition(":")
    return host, port


def _listing(text: str, source: str) -> Binds | None:
    u = unwrap_text(text, source)
    body = [ln for ln in u.lines if ln.text.strip()]
    if not body or not any(_HEADERS.match(ln.text.strip()) for ln in body[:3]):
        return None
    form = "`ss` listing" if any(ln.text.strip().startswith(("State", "Netid")) for ln in body[:3]) else \
        "`netstat` listing"
    notes: list[str] = [*u.notes, f"read the listening TCP sockets of a {form}"]
    parts: list[Part] = []
    by_program: dict[str, list[tuple[Socket, int, int | None]]] = {}
    proxy: list[str] = []
    seen: set[tuple[str, int]] = set()
    for ln in body:
        s = ln.text.strip()
        m = _SS_ROW.match(s)
        program: str | None = None
        shown = True  # the listing has a program column
        uid: int | None = None
        if m:
            local, extra = m.group(2), m.group(4) or ""
            v6 = local.startswith("[") or local.count(":") > 1 or local.startswith("*")
            pm = re.search(r'users:\(\("([^"]+)"', extra)
            program = pm.group(1) if pm else None
            shown = "users:" in extra
            um = re.search(r"\buid:(\d+)", extra)
            uid = int(um.group(1)) if um else None
        else:
            m = _NETSTAT_ROW.match(s)
            if not m:
                continue
            local, prog = m.group(2), m.group(4)
            v6 = m.group(1) == "tcp6"
            program = None if prog in (None, "-") else prog.split("/", 1)[-1]
            shown = prog is not None
        host, port_text = _split(local)
        if not port_text.isdigit():
            notes.append(f"line {ln.lineno}: port {port_text!r} is a service name, not a number (run with -n); "
                         "left out")
            continue
        port = int(port_text)
        addr = _address(host, v6)
        if addr is None:
            notes.append(f"line {ln.lineno}: address {host!r} is not an IP address (run with -n); left out")
            continue
        if (program or "") in _PROXY_PROGRAMS or (program is None and port in _PROXY_PORTS):
            host = str(addr) if addr.version == 4 else f"[{addr}]"
            proxy.append(f"{program} {host}:{port}" if program else f"{host}:{port}")
            continue
        key = (str(addr), port)
        if key in seen:
            continue  # one socket per worker (SO_REUSEPORT), or the same row twice
        seen.add(key)
        by_program.setdefault(program or ("-" if shown else ""), []).append((Socket(addr, port), ln.lineno, uid))
    if proxy:
        notes.append("the sidecar's own listeners are not apps: " + ", ".join(dict.fromkeys(proxy)))
        ports = {int(p.rsplit(":", 1)[1]) for p in proxy}
        if {15001, 15006, 15008, 15053} <= ports and not ports & {15000, 15090}:
            notes.append("listeners 15001/15006/15008 with DNS on 15053 and no Envoy admin port are ztunnel's "
                         "in-pod listeners: this pod is in Istio's ambient mode, not a sidecar set-up")
    apps: list[App] = []
    wild = {s.port for socks in by_program.values() for s, _, _ in socks if str(s.bind) == "0.0.0.0"}
    for program, socks in by_program.items():
        name = "app" if program in ("-", "") else re.sub(r"[^A-Za-z0-9_.-]", "-", program)
        if name in ("peer", "proxy"):
            name += "-process"
        uids = {u for _, _, u in socks if u is not None}
        uid = next(iter(uids)) if len(uids) == 1 else defaults.APP_UID
        fixed: list[Socket] = []
        for sock, lineno, _ in socks:
            if str(sock.bind) == "::" and sock.port in wild:
                sock = attrs.evolve(sock, v6only=True)
                parts.append(Part("listener", f"app {name}'s socket [::]:{sock.port} is IPv6-only",
                                  Inferred(f"0.0.0.0:{sock.port} also listens ({source}:{lineno})")))
            fixed.append(sock)
            parts.append(Part("listener", f"app {name} listens on {sock}", Given(source, lineno), (str(sock),)))
        apps.append(App(name, uid=uid, gid=uid, sockets=tuple(fixed)))
        who = ("another user's process (netstat prints '-')" if program == "-" else
               "the listing has no program column" if program == "" else f"program {program}")
        if len(uids) == 1:
            parts.append(Part("app", f"app {name} runs as uid {uid}", Given(source, socks[0][1]), (f"uid {uid}",)))
        else:
            parts.append(Part("app", f"app {name} runs as uid {uid}, gid {uid}",
                              Assumed(f"the listing shows no uid ({who})", "run `ss -ltnpe` or give the binds YAML"),
                              (f"uid {uid}",)))
    if not apps:
        notes.append("no app listens in this listing (only the sidecar's listeners, or none)")
    return Binds(tuple(apps), None, None, tuple(parts), tuple(notes), form)
