"""Pods and dumps of meshes other than Istio (Linkerd, Kuma, Consul) through the input door.

:func:`load_mesh` is the branch :func:`meshsolve.inputs.build.load` takes before Istio's: the mesh is
``--mesh`` (given), else the pod's own (its init container, sidecar or annotations:
``meshsolve.meshes.select_mesh``), else — for a dump without a pod — the mesh whose chains the dump
holds. When that is Istio (or nothing names a mesh) it returns ``None`` and Istio's path goes on;
there a dump of another mesh is still refused by name (``meshsolve.inputs.rules``) — which happens
only when ``--mesh istio`` says so. The rules are the dump (given) or what the mesh's init step
writes for the pod's settings or the mesh's defaults (inferred); the proxy is the mesh's; the apps
come from ``--binds`` or the pod's containers (``apps_of_pod``, the mesh's own containers left
out), else one app on the default port (assumed); every part is recorded with its provenance.

:func:`load_cohabitation` reads what ``meshsolve audit --rules`` works on: one pod's dumps (one per
backend and family), the mesh to audit them against and the pod's world.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

import meshsolve.defaults as defaults
from meshsolve.analysis.worlds import DEFAULT_POD, world_from_rules
from meshsolve.errors import MeshsolveError, SpecError, UnsupportedError
from meshsolve.inputs.binds import Binds, load_binds
from meshsolve.inputs.manifest import SIDECAR_CONTAINERS, apps_of_pod, read_manifest
from meshsolve.inputs.values import Loaded, address_parts
from meshsolve.iptables import read_unwrapped, unwrap_text
from meshsolve.istio.fingerprint import mesh_of_text
from meshsolve.istio.pod import PodCapture
from meshsolve.meshes import MeshChoice, MeshSetup, default_setup, mesh_of_rules, select_mesh, setup_for_pod
from meshsolve.meshes.select import SIDECAR_CONTAINERS as MESH_SIDECARS
from meshsolve.model.net import IPAddress
from meshsolve.model.provenance import Assumed, Given, Inferred, Part, Provenance
from meshsolve.model.routing import Routing
from meshsolve.model.rules import Rulesets
from meshsolve.model.world import App, World
from meshsolve.nftables import is_nft
from meshsolve.nftables.loadcheck import load_rulesets
from meshsolve.yamllines import yaml_lines

if TYPE_CHECKING:  # the audit's module loads the solver: only when an audit is asked for
    from meshsolve.analysis.cohabit import Dump

__all__ = ["OTHER_MESHES", "Cohabitation", "PodRead", "load_cohabitation", "load_mesh", "mesh_rules"]

#: The meshes this module's path takes (Istio's is ``build.py``'s).
OTHER_MESHES = ("linkerd", "kuma", "consul")
_NOT_APPS = SIDECAR_CONTAINERS | frozenset(MESH_SIDECARS)


@attrs.frozen
class PodRead:
    """One pod of a manifest as the door read it: the document, Istio's reading of it, the text."""

    source: str
    doc: Mapping[str, Any]
    capture: PodCapture
    text: str


def mesh_rules(raw: str, name: str) -> tuple[Rulesets, tuple[str, ...]]:
    """A dump's rules read whole for a mesh's path (iptables in any form the reader takes, or
    nftables), with notes (a failure the log shows before the state it left)."""
    if is_nft(raw):
        return load_rulesets(raw, name), ()
    reading = read_unwrapped(unwrap_text(raw, name), name)
    rulesets = reading.require_rulesets()
    notes = tuple(f"the log shows a failed run ({f}); the state after it is analysed" for f in reading.failures)
    return rulesets, (*reading.notes, *notes)


def _mesh_of_dump(raw: str, name: str) -> tuple[MeshChoice, Rulesets, tuple[str, ...]] | None:
    """The other mesh a dump belongs to, with its rules; ``None`` when its text names no other mesh's
    chains (Istio's sidecar, ambient, no mesh: Istio's reader says what those are). A dump of another
    mesh that cannot be read whole is refused naming the mesh and what is wrong with it."""
    if is_nft(raw):
        other = mesh_of_text(raw)
    else:
        unwrapped = unwrap_text(raw, name)
        other = mesh_of_text(unwrapped.text, ((ln.lineno, ln.text) for ln in unwrapped.lines))
    if other is None or other.kind not in OTHER_MESHES:
        return None
    try:
        rulesets, notes = mesh_rules(raw, name)
    except MeshsolveError as exc:
        raise UnsupportedError(f"{name}: these are the rules of {other.name} ({other.evidence}), and they cannot "
                               f"be analysed as given: {exc}") from None
    found = mesh_of_rules(rulesets)
    if found is None or found.mesh not in OTHER_MESHES:
        return None
    return found, rulesets, notes


def _pod_ips(given: tuple[IPAddress, ...] | None, pod: PodRead | None, family: str | None, rules: Rulesets,
             ) -> tuple[tuple[IPAddress, ...], Provenance | None]:
    if given:
        return given, None
    if pod is not None and pod.capture.pod_ips:
        return pod.capture.pod_ips, Given(pod.source, yaml_lines(pod.text).key_line("podIP"))
    has6 = family in ("ipv6", "dual") or (family is None and not rules.ipv6.empty and rules.ipv4.empty)
    if family == "ipv6":
        return (DEFAULT_POD["ipv6"],), None
    if family == "dual" or has6:
        return (DEFAULT_POD["ipv4"], DEFAULT_POD["ipv6"]), None
    return (DEFAULT_POD["ipv4"],), None


def _apps(b: Binds, pod: PodRead | None, ms: MeshSetup, pod_ips: tuple[IPAddress, ...], notes: list[str],
          parts: list[Part]) -> tuple[tuple[App, ...] | None, tuple[tuple[str, str], ...]]:
    """The apps: binds (their parts already recorded), the pod's containers, else ``None`` (the
    default app, recorded as assumed)."""
    if b.apps is not None:
        return b.apps, ()
    if pod is not None:
        ports = tuple(p for p in (ms.proxy.outbound_port, ms.proxy.inbound_port) if p is not None)
        pa = apps_of_pod(pod.doc, ipv6=any(a.version == 6 for a in pod_ips), proxy_ports=ports,
                         source=pod.source, text=pod.text, sidecars=_NOT_APPS)
        notes.extend(pa.notes)
        parts.extend(pa.parts)
        return pa.apps, pa.references
    bind = "::" if any(a.version == 6 for a in pod_ips) else "0.0.0.0"
    sock = f"[{bind}]:{defaults.APP_PORT}" if ":" in bind else f"{bind}:{defaults.APP_PORT}"
    parts.append(Part("listener", f"an app listens on {sock}",
                      Assumed("no input names the pod's apps: one app on the default port stands for them",
                              "give --pod or --binds"), (sock,)))
    parts.append(Part("app", f"the app runs as uid {defaults.APP_UID}, gid {defaults.APP_GID}",
                      Assumed("no input says which user the app runs as", "give --pod or --binds"),
                      (f"uid {defaults.APP_UID}",)))
    return None, ()


def load_mesh(*, mesh: str | None, family: str | None, pod: PodRead | None, rules: tuple[str, str] | None,
              binds: Binds, istio_given: bool = False, routing: Routing | None = None,
              notes: Sequence[str] = (), parts: Sequence[Part] = ()) -> Loaded | None:
    """The world of a pod under Linkerd, Kuma or Consul, or ``None`` when Istio's path applies (see
    the module notes). ``rules`` is (source, text) of ``--rules``; ``notes``/``parts`` are what the
    door collected before (binds, routing)."""
    if mesh is not None and select_mesh(None, mesh).mesh == "istio":
        return None
    acc_notes, acc_parts = list(notes), list(parts)
    ruleset: Rulesets | None = None
    if mesh is None and pod is None:
        if rules is None:
            return None
        found = _mesh_of_dump(rules[1], rules[0])
        if found is None:
            return None
        choice, ruleset, rule_notes = found
        acc_notes.extend(rule_notes)
        acc_notes.append(f"the dump holds {choice.mesh}'s rules ({choice.evidence}): its proxy is {choice.mesh}'s")
        mesh_prov: Provenance = Inferred(f"the dump's chains ({choice.evidence})")
    else:
        choice = select_mesh(pod.doc if pod is not None else None, mesh)
        if choice.mesh == "istio":
            return None
        mesh_prov = Given("--mesh") if mesh is not None else Inferred(f"the pod's {choice.evidence}")
    if istio_given:
        raise SpecError(f"--istio and istio-iptables flags describe Istio, not {choice.mesh}", source="--mesh")
    if pod is not None:
        ms = setup_for_pod(pod.doc, mesh=choice.mesh, source=pod.source, text=pod.text)
        name, namespace = pod.capture.name, pod.capture.namespace
        setup_prov: Provenance = Inferred(f"{pod.source}: {ms.basis}")
    else:
        ms = default_setup(choice.mesh)
        name, namespace = Path(rules[0]).stem if rules is not None else choice.mesh, "default"
        acc_notes.append(f"{choice.mesh}'s default settings ({ms.basis})")
        setup_prov = Assumed(f"nothing says how {choice.mesh} was installed: its defaults ({ms.basis})",
                             "give --pod")
    acc_notes.extend(n for n in ms.notes if not n.startswith("mesh "))
    if rules is not None and ruleset is None:
        ruleset, rule_notes = mesh_rules(rules[1], rules[0])
        acc_notes.extend(rule_notes)
    world_rules = ruleset if ruleset is not None else ms.rules
    rules_prov: Provenance = Given(rules[0]) if rules is not None else Inferred(
        f"what {choice.mesh} {ms.version}'s init step writes for {ms.basis}")
    pod_ips, ip_prov = _pod_ips(binds.pod_ips, pod, family, world_rules)
    if binds.pod_ips:
        ip_prov = Given("--binds")
    apps, refs = _apps(binds, pod, ms, pod_ips, acc_notes, acc_parts)
    world = world_from_rules(world_rules, ms.proxy, apps=apps, services=binds.services or (), pod_ips=pod_ips,
                             name=name, namespace=namespace, routing=routing)
    what = f"pod {namespace}/{name} from {pod.source}" if pod is not None else f"{choice.mesh} defaults"
    label = f"{what} ({choice.mesh} {ms.version}, {ms.basis}; mesh from {choice.evidence})"
    if rules is not None:
        label = f"rules {rules[0]} with the proxy of {choice.mesh} {ms.version}" + (
            f", pod {namespace}/{name}" if pod is not None else "")
    all_parts = (Part("rules", f"the {choice.mesh} rules", rules_prov), *acc_parts,
                 Part("mesh", f"the mesh is {choice.mesh}", mesh_prov),
                 Part("proxy", f"the proxy of {choice.mesh} {ms.version}", setup_prov, ("proxy",), everywhere=True),
                 *address_parts(world, ip_prov))
    return Loaded(world, label, tuple(dict.fromkeys(acc_notes)), refs, all_parts)


# -- the cohabitation audit's inputs ----------------------------------------------------------------

@attrs.frozen
class Cohabitation:
    """What ``meshsolve audit --rules`` works on: the dumps, the mesh's set-up, the pod."""

    dumps: tuple[Dump, ...]
    mesh: MeshSetup
    world: World
    label: str
    notes: tuple[str, ...] = ()


def load_cohabitation(rules: Sequence[str], *, pod: str | None = None, mesh: str | None = None,
                      binds: str | None = None) -> Cohabitation:
    """A pod's dumps (``[legacy:|nft:]PATH``, one per backend and family) and the mesh to audit them
    against: ``mesh``, else the pod's (``pod``), else the one whose chains the dumps hold. The pod's
    apps and addresses come from ``pod`` / ``binds`` or the defaults."""
    from meshsolve.analysis.cohabit import read_dump

    b = load_binds(binds) if binds is not None else Binds()
    dumps = tuple(read_dump(r) for r in rules)
    notes: list[str] = list(b.notes)
    read: PodRead | None = None
    if pod is not None:
        pods, skipped, text = read_manifest(pod)
        notes.extend(skipped)
        if len(pods) != 1:
            raise SpecError(f"the manifest has {len(pods)} pods; give one", source=pod)
        read = PodRead("<stdin>" if pod == "-" else pod, pods[0][0], pods[0][1], text)
    if mesh is None and read is None:
        found = [m for m in (mesh_of_rules(d.rules) for d in dumps) if m is not None]
        if not found:
            raise SpecError("no mesh's chains in the dumps: name the mesh with --mesh", source="--rules")
        mesh = found[0].mesh
        notes.append(f"mesh {mesh} ({found[0].evidence})")
    if read is not None:
        ms = setup_for_pod(read.doc, mesh=mesh, source=read.source, text=read.text)
    else:
        ms = default_setup(select_mesh(None, mesh).mesh)
        notes.append(f"{ms.mesh}'s default settings decide which rules are its own ({ms.basis})")
    pod_ips: tuple[IPAddress, ...] | None = b.pod_ips or (read.capture.pod_ips if read is not None else None)
    if not pod_ips:
        has6 = any(not d.rules.ipv6.empty for d in dumps)
        has4 = any(not d.rules.ipv4.empty for d in dumps) or not has6
        pod_ips = tuple(DEFAULT_POD[f] for f, on in (("ipv4", has4), ("ipv6", has6)) if on)
    parts: list[Part] = []
    apps, _refs = _apps(b, read, ms, pod_ips, notes, parts) if (b.apps is not None or read is not None) \
        else (None, ())
    world = world_from_rules(ms.rules, ms.proxy, apps=apps, services=b.services or (), pod_ips=pod_ips,
                             name=read.capture.name if read is not None else Path(dumps[0].source).stem,
                             namespace=read.capture.namespace if read is not None else "default")
    label = f"{', '.join(d.source for d in dumps)} against {ms.mesh} {ms.version} ({ms.basis})"
    return Cohabitation(dumps, ms, world, label, tuple(dict.fromkeys(notes)))
