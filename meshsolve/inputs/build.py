"""The one place a world is built from what a user has (the API, the command line, ``audit`` and the
pytest plugin all come here).

Inputs, combinable as noted:

* ``setup="A".."E"`` (+ ``family``): the seed's built-in pods; every part given by the set-up.
* ``istio=VERSION`` (+ istio-iptables ``flags``/``env``): the rules istio-init of that version writes
  for those flags (read as that version's flag library read them); without flags, the injector's
  defaults for the pod.
* ``pod=PATH``: a manifest (``kubectl get pod -o yaml|json``, a workload, ``istioctl kube-inject``
  output; documents that hold no pod are skipped with a note) holding one pod.
* ``rules=PATH``: what the pod's netns holds (a dump, an ``-S`` listing, a log): see
  ``meshsolve.inputs.rules``. A failed or partial installation is a problem, not a world.
* ``binds=PATH``: the apps' listeners: meshsolve's binds YAML or an ``ss``/``netstat`` listing.
* ``routing=PATH``: the pod's policy routing (``ip rule`` / ``ip route`` output or commands).

A pod that Istio's ambient mode captures (``meshsolve.istio.ambient.pods``: its label or its
namespace's, when the manifest has the Namespace, or istio-cni's annotation) gets istio-cni's in-pod
rules (or ``rules``, a dump of them), ztunnel and istio-cni's policy routing, and the ambient
properties A1–A5 as ``Loaded.defaults`` (:func:`from_ambient_pod`).

Every part of the world is recorded with its provenance (``meshsolve.model.provenance``):

* the **Istio version** (its sidecar's behaviour): *given* by ``--istio``; else *inferred* from the
  pod's istio-init image tag, or from the rules' fingerprints when every version they fit has the
  same sidecar; else *assumed* (the newest version the rules fit, or ``current``). A version that
  contradicts the rules' fingerprints is an ``MSH0112`` problem; one the pod's own fields contradict
  (its images' tags, ``sidecar.istio.io/proxyImage``, the injector's recorded revision,
  ``istio.io/rev``: ``meshsolve.istio.pod.version_claims``) an ``MSH0113`` problem.
* the **apps**: *given* by binds (their listeners, their ids when said), a manifest's declared
  ports (bind address *assumed*), or, with none of these, the listeners the rules make possible:
  the inbound ports they name (*inferred*, bind address *assumed*), one port standing for all ports
  no rule names when every port is captured alike, and the ports a property names (*assumed*). A
  world never gets an app on a port that comes from nowhere.
* the **pod IPs**: *given* by binds or the manifest's ``status.podIPs``, else *assumed*
  (documentation addresses 192.0.2.10 / 2001:db8::10); the **peer** is always *assumed* (192.0.2.20
  / 2001:db8::20).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

import meshsolve.defaults as defaults
from meshsolve.analysis.worlds import DEFAULT_POD, istio_routing, world_from_config, world_from_rules
from meshsolve.errors import SpecError
from meshsolve.inputs.binds import Binds, load_binds
from meshsolve.inputs.manifest import apps_of_pod, read_manifest, read_manifest_text
from meshsolve.inputs.meshes import PodRead, load_mesh
from meshsolve.inputs.rules import RulesRead, listeners_of_rules, read_rules, read_rules_text, rules_source
from meshsolve.inputs.values import Loaded, Problem, address_parts
from meshsolve.iproute import parse_routing
from meshsolve.iptables import file_text
from meshsolve.istio import CaptureConfig, generate, normalise_version, proxy_behavior
from meshsolve.istio.fingerprint import config_of_rules, versions_of
from meshsolve.istio.flags import read_flags
from meshsolve.istio.pod import PodCapture, injector_args, pod_capture, version_contradictions
from meshsolve.model.net import IPAddress
from meshsolve.model.provenance import Assumed, Given, Inferred, Part, Provenance
from meshsolve.model.routing import Routing
from meshsolve.model.rules import Rulesets
from meshsolve.model.world import App, Service, Socket, World
from meshsolve.semantics.setups import setup_world
from meshsolve.yamllines import yaml_lines

__all__ = ["default_config", "from_ambient_pod", "from_flags", "from_rules", "load", "possible_listeners",
           "world_of_pod", "worlds_of_manifest"]


def default_config(version: str, ports: Sequence[int] = (defaults.APP_PORT,)) -> CaptureConfig:
    """The configuration the injector of ``version`` gives a pod whose containers expose ``ports``."""
    ver = normalise_version(version, what="--istio")
    pod = {"kind": "Pod", "metadata": {"name": "pod", "namespace": "default"},
           "spec": {"containers": [{"name": "app", "ports": [{"containerPort": p} for p in ports]}]}}
    argv, env, _ = injector_args(pod, ver)
    assert argv is not None
    return read_flags(argv, env, version=ver).config


def _pod_ips_for(config: CaptureConfig, family: str | None) -> tuple[IPAddress, ...]:
    if family == "ipv6":
        return (DEFAULT_POD["ipv6"],)
    if family == "dual" or (family is None and config.enable_ipv6):
        return (DEFAULT_POD["ipv4"], DEFAULT_POD["ipv6"])
    return (DEFAULT_POD["ipv4"],)


def _proxy_ports(config: CaptureConfig) -> tuple[int, ...]:
    pb = proxy_behavior(config.version, config)
    return tuple(p for p in (pb.outbound_port, pb.inbound_port) if p is not None)


def _sock_text(bind: str, port: int) -> str:
    return f"[{bind}]:{port}" if ":" in bind else f"{bind}:{port}"


def possible_listeners(rules: Rulesets, config: CaptureConfig, *, ipv6: bool, extra_ports: Sequence[int] = (),
                       source: str | None = None) -> tuple[tuple[App, ...], tuple[Part, ...], int | None,
                                                           tuple[int, ...]]:
    """The app listeners the rules make possible, as one app ``app`` (see the module notes)."""
    found = listeners_of_rules(rules, _proxy_ports(config))
    bind = "::" if ipv6 else "0.0.0.0"
    sockets: list[Socket] = []
    parts: list[Part] = []
    remedy = "give --pod or --binds"
    for port, where in found.named:
        sockets.append(Socket(bind, port))
        parts.append(Part("listener", f"an app listens on {_sock_text(bind, port)}",
                          Assumed(f"port {port} is inferred from {where}, the listener and its address are not "
                                  "in the inputs", remedy), (_sock_text(bind, port),)))
    ports = {s.port for s in sockets}
    for port in extra_ports:
        if port not in ports and port not in _proxy_ports(config):
            sockets.append(Socket(bind, port))
            ports.add(port)
            parts.append(Part("listener", f"an app listens on {_sock_text(bind, port)}",
                              Assumed(f"a property names port {port}; nothing in the inputs says an app listens "
                                      "there", remedy), (_sock_text(bind, port),)))
    rep = found.representative
    if rep is not None and rep not in ports and not found.named:
        sockets.append(Socket(bind, rep))
        parts.append(Part("listener", f"a listener on {_sock_text(bind, rep)} stands for an app on any port no "
                                      "rule names",
                          Assumed("the rules capture every port alike and name no app port; port "
                                  f"{rep} is the lowest port above 1023 that no rule mentions", remedy),
                          (_sock_text(bind, rep),)))
    elif rep is not None and rep not in ports:
        rep = None
    if not sockets:
        return (), tuple(parts), None, found.excluded
    app = App("app", uid=defaults.APP_UID, gid=defaults.APP_GID, sockets=tuple(sorted(sockets, key=lambda s: s.port)))
    parts.append(Part("app", f"the app runs as uid {defaults.APP_UID}, gid {defaults.APP_GID}",
                      Assumed("no input says which user the app runs as", remedy), (f"uid {defaults.APP_UID}",)))
    return (app,), tuple(parts), rep, found.excluded


def _version_provenance(istio: str | None, capture: PodCapture | None) -> Provenance:
    if istio:
        return Given("--istio")
    if capture is not None and capture.version_from:
        return Inferred(capture.version_from)
    return Assumed("nothing in the inputs says which Istio", "give --istio VERSION")


@attrs.define
class _Acc:
    """What a load collects on its way: notes, parts, problems."""

    notes: list[str] = attrs.Factory(list)
    parts: list[Part] = attrs.Factory(list)
    problems: list[Problem] = attrs.Factory(list)


def _choose_version(ruleset: Rulesets, got: RulesRead | None, istio: str | None, capture: PodCapture | None,
                    acc: _Acc, where: str | None) -> tuple[str, Provenance]:
    """The Istio version for a rules input: given, read from the pod's image, or inferred from the
    rules' fingerprints; a contradiction with the fingerprints is a problem."""
    vr = got.versions if got is not None else versions_of(ruleset)
    if istio or (capture is not None and capture.version_from):
        version = normalise_version(istio) if istio else capture.config.version  # type: ignore[union-attr]
        said = "--istio" if istio else capture.version_from  # type: ignore[union-attr]
        if vr is not None and vr.versions and version not in vr:
            acc.problems.append(Problem("MSH0112", f"The rules fit Istio {vr} ({'; '.join(vr.reasons)}), but "
                                        f"{said} says {version}; the sidecar of {version} is used", where))
        return version, _version_provenance(istio, capture)
    if vr is not None and vr.versions:
        version = vr.newest or "current"
        sidecars = {proxy_behavior(v, config_of_rules(ruleset, v)) for v in vr.versions}
        why = "; ".join(vr.reasons)
        acc.notes.append(f"Istio version inferred from the rules: {vr}")
        if len(sidecars) == 1:
            return version, Inferred(f"the rules fit Istio {vr} ({why}), whose sidecars behave alike")
        return version, Assumed(f"the rules fit Istio {vr} ({why}) and the sidecar changed within that "
                                f"range: the newest, {version}, is used", "give --istio VERSION")
    return "current", Assumed("the rules fit no Istio version's default shape" if vr is not None
                              else "nothing says which Istio", "give --istio VERSION")


def _finish(acc: _Acc, *, ruleset: Rulesets, config: CaptureConfig, version_prov: Provenance,
            rules_prov: Provenance, apps: tuple[App, ...] | None, services: tuple[Service, ...],
            pod_ips: tuple[IPAddress, ...] | None, ip_prov: Provenance | None, family: str | None,
            name: str, namespace: str, label: str, routing: Routing | None = None,
            listen_ports: Sequence[int] = (), refs: tuple[tuple[str, str], ...] = ()) -> Loaded:
    """The world around ``ruleset`` with the sidecar of ``config.version``, every part recorded."""
    version = config.version
    if pod_ips is None:
        pod_ips = _pod_ips_for(config, family)
    ipv6 = any(a.version == 6 for a in pod_ips)
    representative: int | None = None
    excluded = listeners_of_rules(ruleset, _proxy_ports(config)).excluded
    if apps is None:
        apps, lparts, representative, _ = possible_listeners(ruleset, config, ipv6=ipv6, extra_ports=listen_ports)
        acc.parts.extend(lparts)
    route = routing
    if route is None and config.mode == "TPROXY":
        route = istio_routing(config, tuple(sorted({"ipv4" if a.version == 4 else "ipv6" for a in pod_ips})))
        acc.parts.append(Part("routing", "istio-init's policy routing for TPROXY (fwmark → local table)",
                              Inferred("TPROXY interception mode")))
    world = world_from_rules(ruleset, proxy_behavior(version, config), apps=apps, services=services,
                             pod_ips=pod_ips, name=name, namespace=namespace, routing=route)
    parts = [Part("rules", "the iptables rules", rules_prov), *acc.parts,
             Part("proxy", f"the sidecar of Istio {version}", version_prov, ("proxy",), everywhere=True),
             *address_parts(world, ip_prov)]
    return Loaded(world, label, tuple(dict.fromkeys(acc.notes)), refs, tuple(parts), tuple(acc.problems), version,
                  representative, excluded)


def from_flags(argv: Sequence[str] = (), env: Mapping[str, str] | None = None, *, version: str | None = None,
               apps: tuple[App, ...] | None = None, services: tuple[Service, ...] = (),
               pod_ips: tuple[IPAddress, ...] | None = None, family: str | None = None, name: str | None = None,
               namespace: str = "default", listen_ports: Sequence[int] = (), acc: _Acc | None = None,
               routing: Routing | None = None) -> Loaded:
    """The world of a pod whose istio-init ran ``argv``/``env`` under Istio ``version`` (the rules that
    version's istio-iptables writes, read as its flag library read the argv)."""
    acc = acc or _Acc()
    fr = read_flags(list(argv), env or {}, version=version or "current")
    acc.notes.extend(fr.notes)
    config = fr.config
    if family == "ipv6" and not config.enable_ipv6:
        config = config.evolve(enable_ipv6=True)  # istio-iptables enables IPv6 for an IPv6 pod
        acc.notes.append("IPv6 pod: istio-iptables' IPv6 rules enabled (as for a pod whose first IP is IPv6)")
    prov: Provenance = Given("--istio") if version else Assumed("nothing says which Istio", "give --istio VERSION")
    return _finish(acc, ruleset=generate(config), config=config, version_prov=prov,
                   rules_prov=Inferred(f"what istio-iptables {config.version} installs for those flags"),
                   apps=apps, services=services, pod_ips=pod_ips, ip_prov=None if pod_ips is None else Given("api"),
                   family=family, name=name or f"istio-{config.version}", namespace=namespace,
                   label=f"istio-iptables {config.version} {' '.join(argv)}".rstrip(), routing=routing,
                   listen_ports=listen_ports)


def from_rules(rules: Rulesets | RulesRead, *, version: str | None = None, flags: Sequence[str] = (),
               env: Mapping[str, str] | None = None, apps: tuple[App, ...] | None = None,
               services: tuple[Service, ...] = (), pod_ips: tuple[IPAddress, ...] | None = None,
               family: str | None = None, name: str = "pod", namespace: str = "default",
               capture: PodCapture | None = None, source: str | None = None, listen_ports: Sequence[int] = (),
               acc: _Acc | None = None, routing: Routing | None = None,
               refs: tuple[tuple[str, str], ...] = ()) -> Loaded:
    """The world around rules that were dumped from a pod. The sidecar is that of ``version`` (given),
    else of the pod's istio-init image, else of the versions the rules' fingerprints fit; its
    settings come from ``flags``/``env`` (given), the pod, or the rules themselves (inferred)."""
    acc = acc or _Acc()
    got = rules if isinstance(rules, RulesRead) else None
    if got is not None:
        acc.notes.extend(got.notes)
        acc.problems.extend(got.problems)
        if got.rulesets is None:
            return Loaded(None, f"rules {got.reading.source}", tuple(dict.fromkeys(acc.notes)),
                          parts=tuple(acc.parts), problems=tuple(acc.problems))
        ruleset = got.rulesets
        source = source or got.reading.source
    else:
        assert isinstance(rules, Rulesets)
        ruleset = rules
    chosen, prov = _choose_version(ruleset, got, version, capture, acc, source)
    if flags or env:
        fr = read_flags(list(flags), env or {}, version=chosen)
        acc.notes.extend(fr.notes)
        config = fr.config
    elif capture is not None:
        config = capture.config.evolve(version=chosen)
    else:
        config = config_of_rules(ruleset, chosen)
    label = f"rules {source or 'given'} with the proxy of Istio {chosen}" + (
        f", pod {namespace}/{name}" if capture is not None else "")
    return _finish(acc, ruleset=ruleset, config=config, version_prov=prov,
                   rules_prov=Given(source) if source else Given("api"), apps=apps, services=services,
                   pod_ips=pod_ips, ip_prov=None, family=family, name=name, namespace=namespace, label=label,
                   routing=routing, listen_ports=listen_ports, refs=refs)


def load(*, setup: str | None = None, family: str | None = None, istio: str | None = None,
         flags: Sequence[str] = (), env: Mapping[str, str] | None = None, pod: str | None = None,
         rules: str | None = None, binds: str | None = None, routing: str | None = None,
         listen_ports: Sequence[int] = (), mesh: str | None = None) -> Loaded:
    """Build the world to check from the inputs described in the module notes (files by path).
    ``listen_ports`` are ports the user's properties name (a listener is assumed there when no
    input gives one). ``mesh`` (``--mesh``: istio, linkerd, kuma, consul) names the mesh whose
    rules and proxy to use; without it a pod's own mesh is used, and a dump's: Linkerd, Kuma and
    Consul go through ``meshsolve.inputs.meshes``."""
    b = load_binds(binds) if binds is not None else Binds()
    acc = _Acc(list(b.notes), list(b.parts))
    route: Routing | None = None
    if routing is not None:
        try:
            route_text = Path(routing).read_text(encoding="utf-8")
        except OSError as exc:
            raise SpecError(f"cannot read routing: {exc.strerror}", source=routing) from None
        route = parse_routing(route_text, family="ipv6" if family == "ipv6" else "ipv4", source=routing)
        acc.parts.append(Part("routing", "the pod's policy routing", Given(routing)))
    if setup is not None:
        if pod or rules or istio or flags or mesh:
            raise SpecError("--setup is a complete pod: it cannot be combined with --pod, --rules, --istio "
                            "or --mesh", source="--setup")
        world = _override(setup_world(setup, "ipv6" if family == "ipv6" else "ipv4"), b)
        if route is not None:
            world = attrs.evolve(world, routing=route)
        setup_parts = (Part("rules", f"the built-in set-up {setup.upper()}", Given("--setup")), *acc.parts)
        return Loaded(world, f"built-in set-up {setup.upper()} ({family or 'ipv4'})", tuple(acc.notes),
                      parts=setup_parts)
    if pod is None and rules is None and istio is None and not flags and mesh is None:
        raise SpecError("nothing to check: give --setup, --istio, --mesh, --pod or --rules", source="usage")
    if pod is not None and flags:
        raise SpecError("give istio-iptables flags or --pod, not both", source="usage")
    ip_prov: Provenance | None = Given(binds) if b.pod_ips is not None and binds else None
    read: PodRead | None = None
    if pod is not None:
        pods, skipped, text = read_manifest(pod, version=istio)
        acc.notes.extend(skipped)
        if len(pods) != 1:
            raise SpecError(f"the manifest has {len(pods)} pods; check takes one (use 'meshsolve audit' "
                            "for a list)", source=pod)
        read = PodRead(pod, pods[0][0], pods[0][1], text)
        if mesh is None or mesh.strip().lower() == "istio":
            ambient = from_ambient_pod(read.doc, text=text, source=pod, istio=istio, family=family, binds=b,
                                       binds_source=binds, rules=rules, routing=route, acc=acc, env=env)
            if ambient is not None:
                return ambient
    dump: tuple[str, str] | None = None
    if rules is not None:
        name = rules_source(rules)
        dump = (name, file_text(rules, name))
    other = load_mesh(mesh=mesh, family=family, pod=read, rules=dump, binds=b,
                      istio_given=istio is not None or bool(flags), routing=route, notes=acc.notes, parts=acc.parts)
    if other is not None:
        return other
    if read is not None:
        pod_doc, capture, text = read.doc, read.capture, read.text
        acc.notes.extend(capture.notes)
        pod_ips = b.pod_ips
        if pod_ips is None and capture.pod_ips:
            pod_ips = capture.pod_ips
            ip_prov = Given(read.source, _pod_ip_line(text, capture.name, 0))
        config = capture.config
        ipv6 = any(a.version == 6 for a in (pod_ips or _pod_ips_for(config, family)))
        apps = b.apps
        refs: tuple[tuple[str, str], ...] = ()
        if apps is None:
            pa = apps_of_pod(pod_doc, ipv6=ipv6, proxy_ports=_proxy_ports(config), source=read.source, text=text)
            apps, refs = pa.apps, pa.references
            acc.parts.extend(pa.parts)
            acc.notes.extend(pa.notes)
        if dump is not None:
            got = from_rules(read_rules_text(dump[1], dump[0]), version=istio, apps=apps, services=b.services or (),
                             pod_ips=pod_ips, family=family, name=capture.name, namespace=capture.namespace,
                             capture=capture, acc=acc, routing=route, refs=refs)
            contra = _pod_problems(pod_doc, got.version, _proxy_provenance(got.parts), source=read.source, text=text,
                                   name=capture.name)
            return attrs.evolve(got, parts=_fix_ip(got.parts, ip_prov), problems=(*got.problems, *contra))
        loaded = _finish(acc, ruleset=generate(config), config=config,
                         version_prov=_version_provenance(istio, capture),
                         rules_prov=Inferred(f"what istio-iptables {config.version} installs for the pod's "
                                             f"{'istio-init' if capture.basis == 'istio-init' else capture.basis}"),
                         apps=apps, services=b.services or (), pod_ips=pod_ips, ip_prov=ip_prov, family=family,
                         name=capture.name, namespace=capture.namespace,
                         label=f"pod {capture.namespace}/{capture.name} from {pod} ({capture.basis}, "
                               f"Istio {config.version})", routing=route, refs=refs)
        contra = _pod_problems(pod_doc, loaded.version, _proxy_provenance(loaded.parts), source=read.source,
                               text=text, name=capture.name)
        return attrs.evolve(loaded, problems=(*loaded.problems, *contra))
    if rules is not None and dump is not None:
        loaded = from_rules(read_rules_text(dump[1], dump[0]), version=istio, flags=flags, env=env, apps=b.apps,
                            services=b.services or (), pod_ips=b.pod_ips, family=family,
                            name=Path(rules).stem, acc=acc, routing=route, listen_ports=listen_ports)
        return attrs.evolve(loaded, parts=_fix_ip(loaded.parts, ip_prov))
    if flags or env:
        loaded = from_flags(flags, env, version=istio, apps=b.apps, services=b.services or (), pod_ips=b.pod_ips,
                            family=family, listen_ports=listen_ports, acc=acc, routing=route)
        return attrs.evolve(loaded, parts=_fix_ip(loaded.parts, ip_prov))
    ports = sorted({s.port for a in b.apps or () for s in a.sockets}) if b.apps else [defaults.APP_PORT]
    config = default_config(istio or "current", ports or [defaults.APP_PORT])
    if not b.apps and config.inbound_ports not in ("*", ()):
        acc.parts.append(Part("listener", f"the pod's container declares port {defaults.APP_PORT}",
                              Assumed(f"the Istio {config.version} injector captures the declared ports only, "
                                      "and no input declares one", "give --pod or --binds"),
                              (f":{defaults.APP_PORT}",)))
    if family == "ipv6" and not config.enable_ipv6:
        config = config.evolve(enable_ipv6=True)
        acc.notes.append("IPv6 pod: istio-iptables' IPv6 rules enabled (as for a pod whose first IP is IPv6)")
    version_prov: Provenance = Given("--istio") if istio else Assumed("nothing says which Istio (--mesh istio)",
                                                                      "give --istio VERSION")
    return _finish(acc, ruleset=generate(config), config=config, version_prov=version_prov,
                   rules_prov=Inferred(f"what the Istio {config.version} injector and istio-iptables give a pod"),
                   apps=b.apps, services=b.services or (), pod_ips=b.pod_ips, ip_prov=ip_prov, family=family,
                   name=f"istio-{config.version}", namespace="default",
                   label=f"Istio {config.version} injector defaults", routing=route, listen_ports=listen_ports)


def from_ambient_pod(pod: Mapping[str, Any], *, text: str = "", source: str = "<manifest>",
                     istio: str | None = None, family: str | None = None, binds: Binds | None = None,
                     binds_source: str | None = None, rules: str | None = None, routing: Routing | None = None,
                     acc: _Acc | None = None, nth: int = 0,
                     namespaces: Mapping[str, Mapping[str, str]] | None = None,
                     env: Mapping[str, str] | None = None) -> Loaded | None:
    """The world of a pod that ambient mode captures, with the ambient properties as its
    ``defaults``; None for any other pod. ``env``: istio-cni's environment (``NATIVE_NFTABLES``,
    the chart's ``values.global.nativeNftables``, selects the nftables rules). The namespaces'
    labels come from the same manifest (``text``) when it has them; ``rules``: a dump from the pod
    instead of the generated rules; ``nth``: which of the pods with this name it is
    (``apps_of_pod``); ``namespaces``: the manifest's namespaces' labels when the caller has read
    them (else read from ``text``)."""
    from meshsolve.analysis.ambient import ambient_properties
    from meshsolve.istio.ambient.config import ZTUNNEL_PORTS, backend_from_env
    from meshsolve.istio.ambient.pods import ambient_pod, namespaces_in
    from meshsolve.istio.ambient.profile import ambient_world

    ns = str((pod.get("metadata") or {}).get("namespace", "default"))
    if namespaces is None:
        namespaces = namespaces_in(text, source) if text else {}
    found = ambient_pod(pod, version=istio, namespace=namespaces.get(ns))
    if found is None:
        return None
    b = binds or Binds()
    acc = acc or _Acc()
    acc.notes.extend(found.notes)
    config = found.config
    backend = backend_from_env(env or {})
    if backend is not None:
        config = config.evolve(backend=backend)
    pod_ips = b.pod_ips or found.pod_ips or None
    ip_prov: Provenance | None = None
    if b.pod_ips:
        ip_prov = Given(binds_source or "binds")
    elif found.pod_ips:
        ip_prov = Given(source, _pod_ip_line(text, found.name, nth)) if text and not source.startswith("<") \
            else Given(source)
    else:
        if family in ("ipv6", "dual"):
            config = config.evolve(enable_ipv6=True)
        pod_ips = tuple(DEFAULT_POD[f] for f in (("ipv6",) if family == "ipv6" else config.families))
    refs: tuple[tuple[str, str], ...] = ()
    apps = b.apps
    if apps is None:
        pa = apps_of_pod(pod, ipv6=any(a.version == 6 for a in pod_ips or ()), proxy_ports=ZTUNNEL_PORTS,
                         source=source, text=text, nth=nth)
        apps, refs = pa.apps, pa.references
        acc.parts.extend(pa.parts)
        acc.notes.extend(pa.notes)
    world = ambient_world(config, apps=apps, pod_ips=pod_ips or (), services=b.services or (), name=found.name,
                          namespace=found.namespace)
    who = f"ambient pod {found.namespace}/{found.name}"
    label = f"{who} from {source} ({config.describe()})"
    backend_said = "NATIVE_NFTABLES in --env" if backend is not None else \
        "the iptables backend, the chart's default (values.global.nativeNftables: --env NATIVE_NFTABLES=true)"
    rules_part = Part("rules", f"istio-cni's in-pod {config.backend} rules of Istio {config.version}",
                      Inferred(f"what istio-cni writes in the pod's netns ({found.reason}; {backend_said})"))
    route_part = Part("routing", "istio-cni's policy routing (fwmark 0x111/0xfff lookup 100, local route in "
                                 "table 100)", Inferred("ambient mode"))
    if rules is not None:
        got = read_rules(rules, ambient=True)
        acc.notes.extend(got.notes)
        acc.problems.extend(got.problems)
        if got.rulesets is None:
            return Loaded(None, f"rules {got.reading.source}, {who}", tuple(dict.fromkeys(acc.notes)),
                          parts=tuple(acc.parts), problems=tuple(acc.problems))
        world = attrs.evolve(world, rules=got.rulesets)
        label = f"rules {rules} with ztunnel of Istio {config.version}, {who}"
        rules_part = Part("rules", "the pod's rules", Given(rules))
        route_part = Part("routing", "istio-cni's policy routing (fwmark 0x111/0xfff lookup 100)",
                          Assumed("a rules dump does not show the pod's policy routing", "give --routing"))
    if routing is not None:
        world = attrs.evolve(world, routing=routing)  # its part (given by --routing) is recorded already
    else:
        acc.parts.append(route_part)
    version_prov: Provenance = Given("--istio") if istio else Assumed(
        f"nothing in the inputs says which Istio: istio-cni and ztunnel of {config.version} are used",
        "give --istio VERSION")
    parts = [rules_part, *acc.parts, Part("proxy", f"ztunnel of Istio {config.version}", version_prov, ("proxy",),
                                          everywhere=True), *address_parts(world, ip_prov)]
    props = tuple(p for _key, p in ambient_properties(config, world))
    return Loaded(world, label, tuple(dict.fromkeys(acc.notes)), refs, tuple(parts), tuple(acc.problems),
                  config.version, defaults=props)


def _pod_problems(pod: Mapping[str, Any], version: str | None, said: Provenance | None, *, source: str,
                  text: str, name: str, nth: int = 0) -> tuple[Problem, ...]:
    """``MSH0113``: the pod's own fields that contradict the Istio ``version`` meshsolve uses."""
    if version is None:
        return ()
    out = []
    lines = yaml_lines(text) if text else None
    start = (lines.object_line(name, nth) or 0) if lines else 0
    how = f" ({said})" if said is not None else ""
    for claim in version_contradictions(pod, version):
        at = None if lines is None else (lines.pair_line(claim.key, claim.value, start) if claim.value else None) \
            or lines.key_line(claim.key, start)
        ref = f"{source}:{at}" if at is not None and not source.startswith("<") else None
        what = claim.what[:1].upper() + claim.what[1:]
        out.append(Problem("MSH0113", f"{what} says {claim.says()}, but the sidecar of Istio {version} is "
                           f"used{how}", ref))
    return tuple(out)


def _proxy_provenance(parts: Sequence[Part]) -> Provenance | None:
    return next((p.provenance for p in parts if p.kind == "proxy"), None)


def _fix_ip(parts: tuple[Part, ...], prov: Provenance | None) -> tuple[Part, ...]:
    """Pod-IP parts given by an input, not assumed."""
    if prov is None:
        return parts
    return tuple(attrs.evolve(p, provenance=prov) if p.kind == "pod-ip" else p for p in parts)


def _override(world: World, b: Binds) -> World:
    changes: dict[str, Any] = {}
    if b.apps is not None:
        changes["apps"] = b.apps
    if b.services is not None:
        changes["services"] = b.services
    if b.pod_ips is not None:
        changes["pod_ips"] = b.pod_ips
    return attrs.evolve(world, **changes) if changes else world


def world_of_pod(pod: Mapping[str, Any], capture: PodCapture | None = None, *, text: str = "",
                 source: str = "<manifest>",
                 version: str | None = None, nth: int = 0, notes: Sequence[str] = (),
                 namespaces: Mapping[str, Mapping[str, str]] | None = None) -> Loaded:
    """The world of one pod of a manifest (``capture``: its capture set-up, read by
    ``pod_capture`` when not given): an ambient pod's is :func:`from_ambient_pod`'s; a sidecar pod gets the rules
    its capture set-up writes, its declared apps, and its ``status.podIPs`` (given, with their line)
    or a documentation address (assumed). ``nth``: which of the pods with this name it is;
    ``namespaces``: the manifest's namespaces' labels, when the caller has read them already."""
    ambient = from_ambient_pod(pod, text=text, source=source, istio=version, nth=nth, namespaces=namespaces)
    if ambient is not None:
        return attrs.evolve(ambient, notes=tuple(dict.fromkeys((*notes, *ambient.notes))))
    if capture is None:
        capture = pod_capture(pod, version=version, source=source, text=text)
    rules = generate(capture.config)
    ipv6 = any(a.version == 6 for a in capture.pod_ips) or (not capture.pod_ips and not rules.ipv6.empty)
    pa = apps_of_pod(pod, ipv6=ipv6, proxy_ports=_proxy_ports(capture.config), source=source, text=text, nth=nth)
    world = world_from_config(capture.config, rules=rules, apps=pa.apps, pod_ips=capture.pod_ips or None,
                              name=capture.name, namespace=capture.namespace)
    ip_prov: Provenance | None = None
    if capture.pod_ips:
        ip_prov = Given(source, _pod_ip_line(text, capture.name, nth)) if text and not source.startswith("<") \
            else Given(source)
    said = _version_provenance(version, capture)
    parts = (*pa.parts, Part("proxy", f"the sidecar of Istio {capture.config.version}", said, ("proxy",),
                             everywhere=True),
             *address_parts(world, ip_prov))
    problems = _pod_problems(pod, capture.config.version, said, source=source, text=text, name=capture.name, nth=nth) \
        if capture.config.mode != "NONE" else ()
    return Loaded(world, f"pod {capture.namespace}/{capture.name} from {source}",
                  tuple(dict.fromkeys((*notes, *capture.notes, *pa.notes))), pa.references, parts, problems,
                  version=capture.config.version)


def _pod_ip_line(text: str, name: str, nth: int) -> int | None:
    """The line of the ``nth`` pod ``name``'s ``podIP`` (or ``podIPs``) in the manifest text."""
    lines = yaml_lines(text)
    start = lines.object_line(name, nth) or 0
    nxt = lines.object_line(name, nth + 1)
    found = [n for n in (lines.key_line("podIP", start), lines.key_line("podIPs", start)) if n is not None]
    at = min(found) if found else None
    return at if at is not None and (nxt is None or at < nxt) else None


def worlds_of_manifest(text: str, *, version: str | None = None, source: str = "<manifest>") -> tuple[Loaded, ...]:
    """One loaded world per pod of a manifest text (the API and the pytest plugin): :func:`world_of_pod`
    of each."""
    pods, skipped = read_manifest_text(text, version=version, source=source)
    out = []
    seen: dict[str, int] = {}
    for pod_doc, capture in pods:
        nth = seen.get(capture.name, 0)
        seen[capture.name] = nth + 1
        out.append(world_of_pod(pod_doc, capture, text=text, source=source, version=version, nth=nth,
                                notes=skipped))
    return tuple(out)
