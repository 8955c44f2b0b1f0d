"""Loading a pod world from what users have, and the small property syntax of ``meshsolve check``.

Five inputs, combinable as noted:

* ``setup="A".."E"`` (+ ``family``): the seed's built-in pods (``meshsolve.semantics.setups``).
* ``istio=VERSION`` (+ istio-iptables ``flags``/``env``): the rules istio-init of that version
  writes for those flags; without flags, the flags the version's injector would pass for a pod
  whose container ports are the app ports (8080 when nothing says otherwise).
* ``pod=PATH``: ``kubectl get pod NAME -o yaml``. The capture set-up is what the injected
  ``istio-init`` ran (or the injector's template for the annotations, ``meshsolve.istio.pod``); each
  container becomes an app with its ``runAsUser``/``runAsGroup`` (default 1000) listening on the
  wildcard address on each TCP ``containerPort``; the pod IPs come from ``status.podIPs``.
* ``rules=PATH``: an ``iptables-save`` dump taken in the pod's network namespace, or the output of
  ``kubectl logs POD -c istio-init``; the proxy's behaviour comes from ``istio`` (default current)
  or from ``pod``. Findings then point at ``PATH:line``.
* ``binds=PATH``: a YAML file that overrides the apps (uid, gid, listen addresses), the services
  (VIP:port → endpoints) and the pod IPs (see ``load_binds``).

Addresses nobody gave are documentation addresses: pod 192.0.2.10 / 2001:db8::10, peer
192.0.2.20 / 2001:db8::20.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import yaml

import meshsolve.defaults as defaults
from meshsolve.analysis.properties import (
    Bypass,
    CaptureInbound,
    CaptureOutbound,
    NoExposure,
    NoLoops,
    Observation,
    Property,
    Reachable,
    default_properties,
)
from meshsolve.analysis.worlds import DEFAULT_POD, world_from_config, world_from_rules
from meshsolve.errors import SpecError, WorldError
from meshsolve.iptables import parse_file
from meshsolve.istio import CaptureConfig, normalise_version, parse_flags, proxy_behavior
from meshsolve.istio.pod import injector_args, load_pods, pod_capture
from meshsolve.model.net import IPAddress, family_of, to_address
from meshsolve.model.world import App, Endpoint, Service, Socket, World
from meshsolve.semantics.setups import setup_world

__all__ = [
    "Binds",
    "Configuration",
    "apps_from_pod",
    "check_defaults",
    "default_config",
    "load_binds",
    "load_configuration",
    "parse_properties",
    "parse_property",
    "parse_side",
]

@attrs.frozen
class Configuration:
    """A world to check and how it was obtained (``label``), with notes and app origins;
    ``defaults``: what ``check`` proves when not told, when the world's kind of capture has its own
    (an ambient pod's A1–A5), else None."""

    world: World
    label: str
    notes: tuple[str, ...] = ()
    app_references: tuple[tuple[str, str], ...] = ()  # (app name, file:line)
    defaults: tuple[Property, ...] | None = None


@attrs.frozen
class Binds:
    """What ``--binds`` overrides (``None`` = keep the default)."""

    apps: tuple[App, ...] | None = None
    services: tuple[Service, ...] | None = None
    pod_ips: tuple[IPAddress, ...] | None = None


# ------------------------------------------------------------------------------------------------
# binds.yaml


def _hostport(text: str, pod_ips: Sequence[IPAddress], what: str, source: str) -> tuple[IPAddress, int]:
    """``0.0.0.0:9001``, ``[::1]:9002``, ``pod:9003`` (the pod IP of the first family)."""
    m = re.fullmatch(r"\s*(?:\[([^\]]+)\]|([^:\s]+)):(\d+)\s*", str(text))
    if not m:
        raise SpecError(f"{what}: {text!r} is not ADDRESS:PORT (IPv6 as [ADDR]:PORT, 'pod' for the pod IP)",
                        source=source)
    host = m.group(1) or m.group(2)
    try:
        if host == "pod":
            addr = pod_ips[0] if pod_ips else DEFAULT_POD["ipv4"]
        elif host == "pod6":
            addr = next((a for a in pod_ips if a.version == 6), DEFAULT_POD["ipv6"])
        else:
            addr = to_address(host)
    except WorldError as exc:
        raise SpecError(f"{what}: {exc}", source=source) from None
    return addr, int(m.group(3))


def load_binds(path: str | Path) -> Binds:
    """Read a binds file::

        pod_ips: [192.0.2.10]             # optional
        apps:
          - name: reviews
            uid: 1000                     # default 1000
            gid: 1000                     # default = uid
            listen: ["0.0.0.0:9080", "127.0.0.1:9081", "pod:9082"]   # pod = the pod IP
        services:
          - name: reviews
            vip: 198.51.100.1
            port: 9080
            endpoints: ["pod:9080"]
    """
    source = str(path)
    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise SpecError(f"cannot read binds file: {exc.strerror}", source=source) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"not valid YAML: {getattr(exc, 'problem', exc)}", source=source) from None
    if not isinstance(doc, Mapping):
        raise SpecError("expected a mapping with apps / services / pod_ips", source=source)
    unknown = set(doc) - {"apps", "services", "pod_ips"}
    if unknown:
        raise SpecError(f"unknown key(s): {', '.join(sorted(map(str, unknown)))}", source=source)
    pod_ips: tuple[IPAddress, ...] | None = None
    if doc.get("pod_ips") is not None:
        try:
            pod_ips = tuple(to_address(str(a)) for a in doc["pod_ips"])
        except WorldError as exc:
            raise SpecError(f"pod_ips: {exc}", source=source) from None
    known = pod_ips or ()
    apps: tuple[App, ...] | None = None
    if doc.get("apps") is not None:
        out = []
        for i, a in enumerate(doc["apps"]):
            if not isinstance(a, Mapping) or "name" not in a:
                raise SpecError(f"apps[{i}]: expected a mapping with a name", source=source)
            uid = int(a.get("uid", defaults.APP_UID))
            socks = tuple(Socket(*_hostport(t, known, f"apps[{i}].listen", source))
                          for t in a.get("listen") or ())
            out.append(App(str(a["name"]), uid=uid, gid=int(a.get("gid", uid)), sockets=socks))
        apps = tuple(out)
    services: tuple[Service, ...] | None = None
    if doc.get("services") is not None:
        svcs = []
        for i, s in enumerate(doc["services"]):
            if not isinstance(s, Mapping) or not {"vip", "port", "endpoints"} <= set(s):
                raise SpecError(f"services[{i}]: expected name, vip, port and endpoints", source=source)
            eps = tuple(Endpoint(*_hostport(t, known, f"services[{i}].endpoints", source))
                        for t in s["endpoints"])
            svcs.append(Service(str(s.get("name", f"svc-{i}")), to_address(str(s["vip"])), int(s["port"]), eps))
        services = tuple(svcs)
    return Binds(apps, services, pod_ips)


# ------------------------------------------------------------------------------------------------
# pod manifests


def _line_of(text: str, pattern: str, start: int = 0) -> int | None:
    rx = re.compile(pattern)
    for n, line in enumerate(text.splitlines()[start:], start + 1):
        if rx.search(line):
            return n
    return None


def apps_from_pod(pod: Mapping[str, Any], *, ipv6: bool = False, proxy_ports: Sequence[int] = (),
                  source: str = "<manifest>", text: str = "") -> tuple[tuple[App, ...], tuple[str, ...],
                                                                      tuple[tuple[str, str], ...]]:
    """One app per container (the sidecar excluded): ids from ``securityContext`` (``runAsUser`` /
    ``runAsGroup``, container over pod, default 1000 each: the image's own user is not in the
    manifest), one wildcard socket per TCP ``containerPort``. Returns ``(apps, notes, app
    references)``."""
    spec = pod.get("spec") or {}
    pod_ctx = spec.get("securityContext") or {}
    bind = "::" if ipv6 else "0.0.0.0"
    apps: list[App] = []
    notes: list[str] = []
    refs: list[tuple[str, str]] = []
    taken: set[int] = set()
    name_line = _line_of(text, rf"^\s*name:\s*['\"]?{re.escape(str((pod.get('metadata') or {}).get('name')))}")
    for c in spec.get("containers") or ():
        if not isinstance(c, Mapping) or c.get("name") == "istio-proxy":
            continue
        ctx = c.get("securityContext") or {}
        uid = int(ctx.get("runAsUser", pod_ctx.get("runAsUser", defaults.APP_UID)))
        gid = int(ctx.get("runAsGroup", pod_ctx.get("runAsGroup", defaults.APP_GID)))
        socks = []
        for p in c.get("ports") or ():
            if not isinstance(p, Mapping) or "containerPort" not in p:
                continue
            if str(p.get("protocol", "TCP")).upper() != "TCP":
                continue
            port = int(p["containerPort"])
            if port in proxy_ports or port in taken:
                notes.append(f"container {c.get('name')} port {port} is already taken "
                             f"({'by the proxy' if port in proxy_ports else 'by another container'}): skipped")
                continue
            taken.add(port)
            socks.append(Socket(bind, port))
        name = str(c.get("name", f"app{len(apps)}"))
        apps.append(App(name, uid=uid, gid=gid, sockets=tuple(socks)))
        line = _line_of(text, rf"^\s*-?\s*name:\s*['\"]?{re.escape(name)}['\"]?\s*$", (name_line or 1) - 1)
        if line is not None and not source.startswith("<"):
            refs.append((name, f"{source}:{line}"))
    return tuple(apps), tuple(notes), tuple(refs)


def default_config(version: str, ports: Sequence[int] = (defaults.APP_PORT,)) -> CaptureConfig:
    """The configuration the injector of ``version`` gives a pod whose containers expose ``ports``."""
    ver = normalise_version(version, what="--istio")
    pod = {"kind": "Pod", "metadata": {"name": "pod", "namespace": "default"},
           "spec": {"containers": [{"name": "app", "ports": [{"containerPort": p} for p in ports]}]}}
    argv, env, _ = injector_args(pod, ver)
    assert argv is not None
    return parse_flags(argv, env, version=ver)


def _pod_ips_for(config: CaptureConfig, family: str | None) -> tuple[IPAddress, ...]:
    if family == "ipv6":
        return (DEFAULT_POD["ipv6"],)
    if family == "dual" or (family is None and config.enable_ipv6):
        return (DEFAULT_POD["ipv4"], DEFAULT_POD["ipv6"])
    return (DEFAULT_POD["ipv4"],)


def load_configuration(*, setup: str | None = None, family: str | None = None, istio: str | None = None,
                       flags: Sequence[str] = (), env: Mapping[str, str] | None = None,
                       pod: str | None = None, rules: str | None = None,
                       binds: str | None = None) -> Configuration:
    """Build the world to check from the inputs described in the module docstring."""
    b = load_binds(binds) if binds is not None else Binds()
    if setup is not None:
        if pod or rules or istio or flags:
            raise SpecError("--setup is a complete pod: it cannot be combined with --pod, --rules or --istio",
                            source="--setup")
        world = setup_world(setup, "ipv6" if family == "ipv6" else "ipv4")
        world = _override(world, b)
        return Configuration(world, f"built-in set-up {setup.upper()} ({family or 'ipv4'})")
    if pod is None and rules is None and istio is None:
        raise SpecError("nothing to check: give --setup, --istio, --pod or --rules", source="usage")
    notes: list[str] = []
    refs: tuple[tuple[str, str], ...] = ()
    name, namespace = "pod", "default"
    apps = b.apps
    pod_ips = b.pod_ips
    if pod is not None:
        if flags:
            raise SpecError("give istio-iptables flags or --pod, not both", source="usage")
        try:
            text = Path(pod).read_text(encoding="utf-8")
        except OSError as exc:
            raise SpecError(f"cannot read manifest: {exc.strerror}", source=pod) from None
        pods = load_pods(text, pod)
        if len(pods) != 1:
            raise SpecError(f"the manifest has {len(pods)} pods; check takes one (use 'meshsolve audit' "
                            "for a list)", source=pod)
        ambient = ambient_configuration(pods[0], text=text, source=pod, version=istio, family=family, binds=b,
                                        rules=rules)
        if ambient is not None:
            return ambient
        pc = pod_capture(pods[0], version=istio, source=pod, text=text)
        config = pc.config
        notes.extend(pc.notes)
        name, namespace = pc.name, pc.namespace
        if pod_ips is None:
            pod_ips = pc.pod_ips or _pod_ips_for(config, family)
        if apps is None:
            pb = proxy_behavior(config.version, config)
            ports = [p for p in (pb.outbound_port, pb.inbound_port) if p is not None]
            apps, app_notes, refs = apps_from_pod(pods[0], ipv6=any(a.version == 6 for a in pod_ips),
                                                  proxy_ports=ports, source=pod, text=text)
            notes.extend(app_notes)
        label = f"pod {namespace}/{name} from {pod} ({pc.basis}, Istio {config.version})"
    elif flags or env:
        config = parse_flags(list(flags), env or {}, version=istio or "current")
        label = f"istio-iptables {config.version} {' '.join(flags)}".rstrip()
        name = f"istio-{config.version}"
    else:
        ports = sorted({s.port for a in apps for s in a.sockets}) if apps else [defaults.APP_PORT]
        config = default_config(istio or "current", ports or [defaults.APP_PORT])
        label = f"Istio {config.version} injector defaults"
        name = f"istio-{config.version}"
    if pod is None and family == "ipv6" and not config.enable_ipv6:
        config = config.evolve(enable_ipv6=True)  # istio-iptables enables IPv6 for an IPv6 pod
        notes.append("IPv6 pod: istio-iptables' IPv6 rules enabled (as for a pod whose first IP is IPv6)")
    if pod_ips is None:
        pod_ips = _pod_ips_for(config, family)
    services = b.services or ()
    if rules is not None:
        ruleset = parse_file(rules)
        proxy = proxy_behavior(config.version, config)
        if rules and pod is None and istio is None:
            notes.append("proxy behaviour of Istio current assumed (give --istio VERSION)")
        world = world_from_rules(ruleset, proxy, apps=apps, services=services, pod_ips=pod_ips,
                                 name=name if pod is not None else Path(rules).stem, namespace=namespace)
        label = f"rules {rules} with the proxy of Istio {config.version}" + (
            f", pod {namespace}/{name}" if pod is not None else "")
    else:
        world = world_from_config(config, apps=apps, services=services, pod_ips=pod_ips, name=name,
                                  namespace=namespace)
    return Configuration(world, label, tuple(notes), refs)


_ZTUNNEL_PORTS = (15001, 15006, 15008, 15053)


def ambient_configuration(pod: Mapping[str, Any], *, text: str = "", source: str = "<manifest>",
                          version: str | None = None, family: str | None = None, binds: Binds | None = None,
                          rules: str | None = None) -> Configuration | None:
    """The world of a pod ambient mode captures (``meshsolve.istio.ambient.pods``), with the ambient
    properties as its defaults; None for any other pod. The namespaces' labels come from the same
    manifest when it has them; ``rules``: a dump from the pod instead of the generated rules."""
    from meshsolve.analysis.ambient import ambient_properties
    from meshsolve.istio.ambient.pods import ambient_pod, namespaces_in
    from meshsolve.istio.ambient.profile import ambient_world

    b = binds or Binds()
    ns = str((pod.get("metadata") or {}).get("namespace", "default"))
    found = ambient_pod(pod, version=version, namespace=namespaces_in(text, source).get(ns) if text else None)
    if found is None:
        return None
    config = found.config
    notes = list(found.notes)
    pod_ips = b.pod_ips or found.pod_ips
    if not pod_ips:
        if family in ("ipv6", "dual"):
            config = config.evolve(enable_ipv6=True)
        pod_ips = tuple(DEFAULT_POD[f] for f in (("ipv6",) if family == "ipv6" else config.families))
    refs: tuple[tuple[str, str], ...] = ()
    apps = b.apps
    if apps is None:
        apps, app_notes, refs = apps_from_pod(pod, ipv6=any(a.version == 6 for a in pod_ips),
                                              proxy_ports=_ZTUNNEL_PORTS, source=source, text=text)
        notes.extend(app_notes)
    world = ambient_world(config, apps=apps, pod_ips=pod_ips, services=b.services or (), name=found.name,
                          namespace=found.namespace)
    label = f"ambient pod {found.namespace}/{found.name} from {source} ({config.describe()})"
    if rules is not None:
        world = attrs.evolve(world, rules=parse_file(rules))
        label = f"rules {rules} with ztunnel of Istio {config.version}, ambient pod {found.namespace}/{found.name}"
        notes.append("the pod's policy routing is assumed to be istio-cni's (fwmark 0x111/0xfff lookup 100): "
                     "a rules dump does not show it")
    props = tuple(p for _key, p in ambient_properties(config, world))
    return Configuration(world, label, tuple(notes), refs, props)


def _override(world: World, b: Binds) -> World:
    changes: dict[str, Any] = {}
    if b.apps is not None:
        changes["apps"] = b.apps
    if b.services is not None:
        changes["services"] = b.services
    if b.pod_ips is not None:
        changes["pod_ips"] = b.pod_ips
    return attrs.evolve(world, **changes) if changes else world


# ------------------------------------------------------------------------------------------------
# diff sides


def parse_side(spec: str) -> dict[str, str]:
    """One side of ``meshsolve diff``: ``A``..``E`` or ``setup:X``; an Istio version (``1.2``,
    ``current``) or ``istio:V``; ``rules:PATH`` or ``pod:PATH``; or a file (``.yaml``/``.yml`` is a
    pod manifest, anything else a rules dump). Returns ``load_configuration`` keyword arguments."""
    text = spec.strip()
    kind, sep, rest = text.partition(":")
    if sep and kind in ("setup", "istio", "rules", "pod"):
        return {kind: rest}
    if text.upper() in ("A", "B", "C", "D", "E"):
        return {"setup": text.upper()}
    try:
        return {"istio": normalise_version(text)}
    except SpecError:
        pass
    if Path(text).is_file():
        return {"pod": text} if text.endswith((".yaml", ".yml")) else {"rules": text}
    raise SpecError(f"{spec!r} is not a set-up (A..E), an Istio version, or a file", source="diff")


# ------------------------------------------------------------------------------------------------
# properties


def _fields(text: str) -> list[str]:
    """Split on ':' outside brackets (``observe:app:[2001:db8::1]:9001``)."""
    out, cur, depth = [], "", 0
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == ":" and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [f.strip().strip("[]") for f in out]


def _port(value: str, spec: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise SpecError(f"property {spec!r}: {value!r} is not a port", source="--property")
    return int(value)


def parse_property(spec: str, world: World) -> tuple[Property, ...]:
    """One ``--property`` value (see ``docs/cli.md``):

    ``default`` · ``capture-out`` · ``capture-in[:PORT,PORT]`` · ``bypass`` · ``no-loops`` ·
    ``no-exposure`` · ``reach:CLIENT:PORT[:DST]`` · ``observe:CLIENT:DST:PORT[:SIDES]`` where CLIENT
    is ``peer``, ``proxy`` or an app name, and SIDES is ``out,in`` (default), ``out`` or ``in``.
    """
    f = _fields(spec)
    head, args = f[0].lower(), f[1:]

    def need(lo: int, hi: int, usage: str) -> None:
        if not lo <= len(args) <= hi:
            raise SpecError(f"property {spec!r}: expected {usage}", source="--property")

    try:
        if head == "default":
            need(0, 0, "default")
            return check_defaults(world)
        if head in ("capture-out", "capture-outbound"):
            need(0, 0, "capture-out")
            return (CaptureOutbound(),)
        if head in ("capture-in", "capture-inbound"):
            need(0, 1, "capture-in[:PORT,PORT...]")
            if args:
                return (CaptureInbound(ports=tuple(_port(p, spec) for p in args[0].split(","))),)
            return (CaptureInbound(),)
        if head == "bypass":
            need(0, 0, "bypass")
            return (Bypass(),)
        if head in ("no-loops", "noloops"):
            need(0, 0, "no-loops")
            return (NoLoops(),)
        if head == "no-exposure":
            need(0, 0, "no-exposure")
            return (NoExposure(),)
        if head == "reach":
            need(2, 3, "reach:CLIENT:PORT[:DST]")
            _client(args[0], world, spec)
            return (Reachable(args[0], _port(args[1], spec), dst=args[2] if len(args) > 2 else None),)
        if head in ("observe", "observed"):
            need(3, 4, "observe:CLIENT:DST:PORT[:SIDES]")
            _client(args[0], world, spec)
            sides = tuple(s.strip() for s in (args[3] if len(args) > 3 else "out,in").split(","))
            if not sides or any(s not in ("out", "in") for s in sides):
                raise SpecError(f"property {spec!r}: sides are out, in or out,in", source="--property")
            return (Observation(args[0], args[1], _port(args[2], spec), sides=sides),)  # type: ignore[arg-type]
    except WorldError as exc:
        raise SpecError(f"property {spec!r}: {exc}", source="--property") from None
    raise SpecError(f"property {spec!r}: unknown kind {head!r} (default, capture-out, capture-in, bypass, "
                    "no-loops, no-exposure, reach, observe)", source="--property")


def _client(name: str, world: World, spec: str) -> None:
    if name not in ("peer", "proxy") and name not in {a.name for a in world.apps}:
        apps = ", ".join(a.name for a in world.apps) or "none"
        raise SpecError(f"property {spec!r}: no client {name!r} (peer, proxy or an app: {apps})",
                        source="--property")


def check_defaults(world: World, defaults: tuple[Property, ...] | None = None) -> tuple[Property, ...]:
    """What ``check`` proves when not told: the configuration's own ``defaults`` when it has them (an
    ambient pod's), else ``analysis.properties.default_properties`` (capture both ways, bypass, no
    loops, no exposure) and, for each app port not bound to loopback only, that a peer reaches it
    via the pod IP (the seed's question)."""
    if defaults is not None:
        return defaults
    ports = sorted({s.port for a in world.apps for s in a.sockets if not s.bind.is_loopback})
    return (*default_properties(world), *(Reachable("peer", p) for p in ports))


def parse_properties(specs: Sequence[str], world: World,
                     defaults: tuple[Property, ...] | None = None) -> tuple[Property, ...]:
    """All ``--property`` values (none, or ``default``: ``check_defaults``), duplicates removed."""
    if not specs:
        return check_defaults(world, defaults)
    out: list[Property] = []
    for s in specs:
        for p in (check_defaults(world, defaults) if s.strip().lower() == "default" else parse_property(s, world)):
            if p not in out:
                out.append(p)
    return tuple(out)


def family_label(world: World) -> str:
    return ",".join(family_of(a) for a in world.pod_ips)
