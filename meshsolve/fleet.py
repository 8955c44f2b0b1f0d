"""Fleet audit: every pod of a ``kubectl get pods -A -o yaml`` List, grouped by effective capture set-up.

Each group's world is built by the one door (``meshsolve.inputs.world_of_pod``) from the group's
first pod, so it has that pod's rules, apps and ``status.podIPs`` (given), or a documentation
address for a pod without one (an assumption, named on the findings that rest on it).

Pods are in one group when their capture configuration (Istio version, annotations, injected
istio-init arguments), apps (container ports and ids), address families and the *place* of their
pod IPs are the same: every address range any rule of the group names (and the stand-in peer)
holds the same of their addresses. The rules and the kernel cannot tell such pods apart, so the
group is proven once — in a process pool over the machine's cores — and its findings are reported
for every pod of the group, each pointing at the pod's ``name:`` line in the manifest; a witness
shown on the first pod's address says so on the other pods' findings.

The manifest is read by ``meshsolve.yamllines`` (libyaml when PyYAML has it), and pods that share
their capture-relevant fields share one ``pod_capture`` call, so a 10,000-pod list is read in seconds.

Like the command line, this module uses the layers rather than being one: it reads manifests
(``meshsolve.istio``, ``meshsolve.inputs``), proves (``meshsolve.analysis``) and reports
(``meshsolve.report``).
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import multiprocessing
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import attrs

from meshsolve.analysis.properties import Property
from meshsolve.errors import SpecError
from meshsolve.inputs import Loaded, Problem, apps_of_pod, parse_properties, world_of_pod
from meshsolve.istio import CaptureConfig, proxy_behavior
from meshsolve.istio.ambient import AmbientConfig
from meshsolve.istio.ambient.config import ZTUNNEL_PORTS
from meshsolve.istio.ambient.pods import DATAPLANE_MODE, ambient_pod, namespace_labels
from meshsolve.istio.pod import (
    PodCapture,
    VersionClaim,
    load_workloads,
    pod_capture,
    pod_ips_of,
    version_contradictions,
)
from meshsolve.model.net import IPAddress, IPNetwork
from meshsolve.model.provenance import Part
from meshsolve.model.rules import Rulesets
from meshsolve.model.world import App, World
from meshsolve.report.catalog import Level
from meshsolve.report.findings import Finding, Subject, input_finding
from meshsolve.report.render import Checked, Report
from meshsolve.report.run import check_world
from meshsolve.yamllines import yaml_documents, yaml_lines

__all__ = ["AuditResult", "FleetPod", "audit", "group_pods", "load_fleet"]


#: Where a pod's addresses are, as the rules see them: per address, its family and the ranges that
#: hold it (``()`` for a pod whose manifest gives no address).
Place = tuple[tuple[int, tuple[IPNetwork, ...]], ...]


@attrs.frozen
class FleetPod:
    """One pod of the fleet: who it is, where it is written, and its group key."""

    subject: Subject
    reference: str | None
    config: CaptureConfig | AmbientConfig  # a sidecar's, or an ambient pod's
    apps: tuple[App, ...]
    families: tuple[str, ...]
    basis: str
    parts: tuple[Part, ...] = attrs.field(default=(), eq=False)  # the assumed parts of its apps
    pod_ips: tuple[IPAddress, ...] = ()  # from status.podIPs / podIP; () when the manifest has none
    place: Place = ()  # where the rules see its addresses (see ``Place``)
    doc: Mapping[str, Any] = attrs.field(factory=dict, eq=False, hash=False, repr=False)  # the pod itself
    capture: PodCapture | None = attrs.field(default=None, eq=False, repr=False)  # a sidecar pod's set-up
    nth: int = attrs.field(default=0, eq=False)  # which of the pods with its name it is
    contradicts: tuple[VersionClaim, ...] = ()  # its own fields that the version used contradicts


@attrs.frozen
class AuditResult:
    report: Report
    pods: int
    groups: int


def _parse_chunk(args: tuple[str, str]) -> list[Any]:
    text, source = args
    return [i for d, _line in yaml_documents(text, source) for i in (d if isinstance(d, list) else ())]


def _item_chunks(text: str, parts: int) -> list[str] | None:
    """Split a ``kubectl ... -o yaml`` List into ``parts`` texts of whole items (a YAML sequence
    each), or None when the text is not in that shape."""
    lines = text.splitlines(keepends=True)
    try:
        start = lines.index("items:\n") + 1
    except ValueError:
        return None
    starts: list[int] = []
    end = len(lines)
    for n in range(start, len(lines)):
        line = lines[n]
        if line.startswith("- "):
            starts.append(n)
        elif line[:1] not in (" ", "\n", "#", ""):
            end = n
            break
    if not starts or starts[0] != start:
        return None
    per = max(1, -(-len(starts) // parts))
    bounds = [*starts[::per], end]
    return ["".join(lines[a:b]) for a, b in itertools.pairwise(bounds)]


def _documents(text: str, source: str, pool: ProcessPoolExecutor | None, workers: int) -> list[Any]:
    """The YAML (or JSON) documents; a big List is parsed in chunks across the pool."""
    chunks = _item_chunks(text, workers * 4) if pool is not None and len(text) > 1_000_000 else None
    if chunks is not None and pool is not None:
        items: list[Any] = []
        try:
            for part in pool.map(_parse_chunk, [(c, source) for c in chunks]):
                items.extend(part)
            return [{"apiVersion": "v1", "kind": "List", "items": items}]
        except SpecError:  # e.g. an alias to an anchor in another chunk: parse it whole
            pass
    return [d for d, _line in yaml_documents(text, source)]


def _pods(text: str, source: str, pool: ProcessPoolExecutor | None = None,
          workers: int = 1) -> tuple[list[Mapping[str, Any]], dict[str, dict[str, str]]]:
    """The pods of the manifest, and its namespaces' labels (which may enroll pods in ambient mode)."""
    docs = _documents(text, source, pool, workers)
    namespaces = namespace_labels(docs) if "Namespace" in text else {}
    out: list[Mapping[str, Any]] = []
    for d in docs:
        if isinstance(d, Mapping) and d.get("kind") == "Pod":
            out.append(d)
        elif isinstance(d, Mapping) and d.get("kind") == "List" and all(
                isinstance(i, Mapping) and i.get("kind") in ("Pod", "Namespace") for i in d.get("items") or ()):
            out.extend(i for i in d.get("items") or () if i.get("kind") == "Pod")
        elif isinstance(d, Mapping) and d.get("kind") == "Namespace":
            continue
        else:  # workloads and other shapes: the general loader (documents without a pod skipped)
            return list(load_workloads(text, source)[0]), namespaces
    if not out:
        raise SpecError("no pod in the manifest", source=source)
    return out, namespaces


def _networks(rules: Rulesets) -> tuple[IPNetwork, ...]:
    """Every address range the rules name (in matches, targets and native sets)."""
    found: dict[IPNetwork, None] = {}
    seen: set[int] = set()

    def walk(value: Any) -> None:
        if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
            found[value] = None
        elif isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
            found[ipaddress.ip_network(value)] = None
        elif isinstance(value, tuple | list | frozenset | set):
            for v in value:
                walk(v)
        elif isinstance(value, Mapping):
            for v in value.values():
                walk(v)
        elif attrs.has(type(value)) and id(value) not in seen:
            seen.add(id(value))
            for f in attrs.fields(type(value)):
                if f.eq:  # provenance (eq=False) holds no address the kernel compares
                    walk(getattr(value, f.name))

    walk(rules)
    return tuple(found)


def _place(ips: Sequence[IPAddress], nets: Sequence[IPNetwork], peers: Sequence[IPAddress]) -> Place:
    """Where the rules see ``ips``: per address, the ranges that hold it (the stand-in peers as /32s)."""
    out = []
    for ip in ips:
        held = [n for n in nets if n.version == ip.version and ip in n]
        held.extend(ipaddress.ip_network(p) for p in peers if p == ip)
        out.append((ip.version, tuple(held)))
    return tuple(out)


def _key(pod: Mapping[str, Any], namespace_mode: str | None = None) -> str:
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    ips = [str(p.get("ip", "")) for p in status.get("podIPs") or () if isinstance(p, Mapping)] or \
        ([str(status["podIP"])] if status.get("podIP") else [])
    fams = sorted({"ipv6" if ":" in ip else "ipv4" for ip in ips})
    return json.dumps({"a": meta.get("annotations") or {}, "l": (meta.get("labels") or {}).get(DATAPLANE_MODE),
                       "n": namespace_mode, "i": spec.get("initContainers") or [],
                       "c": [{k: c.get(k) for k in ("name", "ports", "securityContext", "env", "image")}
                             for c in spec.get("containers") or () if isinstance(c, Mapping)],
                       "s": spec.get("securityContext"), "d": spec.get("dnsConfig"), "f": fams},
                      sort_keys=True, default=str)


def load_fleet(path: str | Path, *, version: str | None = None, pool: ProcessPoolExecutor | None = None,
               workers: int = 1) -> list[FleetPod]:
    """Every pod of the manifest with its capture configuration, apps, address families and the
    place of its pod IPs."""
    return _load_fleet(path, version, pool, workers)[0]


Read = tuple[list["FleetPod"], str, str, dict[str, dict[str, str]]]


def _load_fleet(path: str | Path, version: str | None, pool: ProcessPoolExecutor | None, workers: int) -> Read:
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"cannot read manifest: {exc.strerror}", source=source) from None
    pods, namespaces = _pods(text, source, pool, workers)
    lines = yaml_lines(text)
    used: dict[str, int] = {}
    cache: dict[str, tuple[CaptureConfig | AmbientConfig, tuple[App, ...], tuple[str, ...], str, tuple[Part, ...],
                           PodCapture | None]] = {}
    seen_by: dict[str, tuple[tuple[IPNetwork, ...], tuple[IPAddress, ...]]] = {}  # the ranges the key's rules name
    out: list[FleetPod] = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        name, ns = str(meta.get("name", "pod")), str(meta.get("namespace", "default"))
        nth = used.get(name, 0)
        used[name] = nth + 1
        ns_labels = namespaces.get(ns)
        key = _key(pod, None if ns_labels is None else ns_labels.get(DATAPLANE_MODE))
        ambient = ambient_pod(pod, version=version, namespace=ns_labels) if key not in cache else None
        if ambient is not None:
            fams = tuple(sorted({"ipv6" if a.version == 6 else "ipv4" for a in ambient.pod_ips})) or \
                ambient.config.families
            pa = apps_of_pod(pod, ipv6="ipv6" in fams, proxy_ports=ZTUNNEL_PORTS, source=source)
            cache[key] = (ambient.config, pa.apps, fams, "ambient", pa.parts, None)
        if key not in cache:
            try:
                pc = pod_capture(pod, version=version, source=source)
            except SpecError:
                pod_capture(pod, version=version, source=source, text=text)  # the error with its line
                raise
            fams = tuple(sorted({"ipv6" if a.version == 6 else "ipv4" for a in pc.pod_ips})) or (
                ("ipv4", "ipv6") if pc.config.enable_ipv6 else ("ipv4",))
            pb = proxy_behavior(pc.config.version, pc.config)
            ports = [p for p in (pb.outbound_port, pb.inbound_port) if p is not None]
            pa = apps_of_pod(pod, ipv6="ipv6" in fams, proxy_ports=ports, source=source)
            cache[key] = (pc.config, pa.apps, fams, pc.basis, pa.parts, pc)
        config, apps, fams, basis, parts, capture = cache[key]
        try:
            ips = pod_ips_of(pod)
        except SpecError as exc:
            raise SpecError(exc.message, source=source, lineno=lines.object_line(name, nth)) from None
        if capture is not None:  # the set-up its key shares, with this pod's own name and addresses
            capture = attrs.evolve(capture, name=name, namespace=ns, pod_ips=ips)
        if key not in seen_by:  # the key's rules: the first pod's world, built by the door
            world = world_of_pod(pod, capture, source=source, version=version, namespaces=namespaces).world
            assert world is not None
            seen_by[key] = (_networks(world.rules), world.peer_ips)
        nets, peers = seen_by[key]
        at = lines.object_line(name, nth)
        ref = f"{source}:{at}" if at is not None else None
        contra = version_contradictions(pod, capture.config.version) if capture is not None and \
            capture.config.mode != "NONE" else ()
        out.append(FleetPod(Subject("Pod", ns, name), ref, config, apps, fams, basis, parts, ips,
                            _place(ips, nets, peers), pod, capture, nth, contra))
    return out, text, source, namespaces


GroupKey = tuple[CaptureConfig | AmbientConfig, tuple[App, ...], tuple[str, ...], Place, tuple[VersionClaim, ...]]


def group_pods(pods: Sequence[FleetPod]) -> dict[GroupKey, list[FleetPod]]:
    """The pods by capture set-up, apps, families, the place of their addresses (the module notes) and
    what of their own fields contradicts the Istio version used."""
    groups: dict[GroupKey, list[FleetPod]] = {}
    for p in pods:
        groups.setdefault((p.config, p.apps, p.families, p.place, p.contradicts), []).append(p)
    return groups


#: What a worker proves: the group's world, the parts it is made of, its own default properties
#: (an ambient pod's A1–A5), and the ``--property`` values.
Work = tuple[World, tuple[Part, ...], tuple[Property, ...] | None, tuple[str, ...]]


def _prove(args: Work) -> Report:
    world, parts, own, specs = args
    return check_world(world, parse_properties(specs, world, defaults=own), parts=parts)


def _group_world(first: FleetPod, text: str, source: str, version: str | None,
                 namespaces: Mapping[str, Mapping[str, str]]) -> Loaded:
    """The world of a group: its first pod's, built by the one door."""
    loaded = world_of_pod(first.doc, first.capture, text=text, source=source, version=version, nth=first.nth,
                          namespaces=namespaces)
    if loaded.world is None:
        raise SpecError(f"no world for {first.subject}", source=source)
    return loaded


def _shown_on(finding: Finding, first: FleetPod, pod: FleetPod) -> Finding:
    """``finding`` (proven on ``first``) for ``pod``: a witness that shows ``first``'s address says so."""
    if pod.pod_ips == first.pod_ips:
        return finding
    texts = [finding.message, finding.witness or ""]
    if finding.result is not None:
        texts.extend(h.text for h in finding.result.trace)
    blob = "\n".join(texts)
    shown = [str(a) for a in first.pod_ips if str(a) in blob]
    if not shown:
        return finding
    own = ", ".join(str(a) for a in pod.pod_ips)
    note = (f"shown on the pod IP {', '.join(shown)} of {first.subject} (its group's first pod); this pod's IP "
            f"{own} lies in the same address ranges of every rule")
    return attrs.evolve(finding, assumes=(*finding.assumes, note))


# Groups proven per worker process. Each slice runs in a fresh process, so a group's witnesses do
# not depend on which groups a worker proved before, nor on the number of cores.
SLICE = 8


def _fresh_context() -> multiprocessing.context.BaseContext:
    """Fresh worker processes, started fast: forked from a server that has imported the solver
    but proven nothing (spawn where fork is not available)."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["meshsolve.fleet"])
        return ctx
    return multiprocessing.get_context("spawn")


def _prove_slice(work: list[Work]) -> list[Report]:
    return [_prove(w) for w in work]


def audit(path: str | Path, *, version: str | None = None, properties: Sequence[str] = (),
          jobs: int | None = None, failure_threshold: Level = "Info",
          on_group: Callable[[int, int], None] | None = None) -> AuditResult:
    """Audit every pod of ``path``; ``on_group(done, total)`` is called as groups finish.

    The output does not depend on ``jobs``: groups are proven in slices of ``SLICE``, each in a
    fresh worker process (``jobs`` of them at a time, default the machine's cores)."""
    workers = max(1, jobs if jobs is not None else (os.cpu_count() or 1))
    if workers == 1:
        return _audit(path, version, properties, None, 1, failure_threshold, on_group)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return _audit(path, version, properties, pool, workers, failure_threshold, on_group)


def _audit(path: str | Path, version: str | None, properties: Sequence[str], pool: ProcessPoolExecutor | None,
           workers: int, failure_threshold: Level, on_group: Callable[[int, int], None] | None) -> AuditResult:
    pods, text, source, namespaces = _load_fleet(path, version, pool, workers)
    groups = group_pods(pods)
    keys = list(groups)
    work: list[Work] = []
    problems: list[tuple[Problem, ...]] = []  # what each group's pods show of themselves (MSH0113)
    for k in keys:
        loaded = _group_world(groups[k][0], text, source, version, namespaces)
        assert loaded.world is not None
        work.append((loaded.world, loaded.parts, loaded.defaults, tuple(properties)))
        problems.append(loaded.problems)
    slices = [work[i:i + SLICE] for i in range(0, len(work), SLICE)]
    reports: list[Report] = []
    with ProcessPoolExecutor(max_workers=min(workers, len(slices)), max_tasks_per_child=1,
                             mp_context=_fresh_context()) as provers:
        for part in provers.map(_prove_slice, slices):
            for r in part:
                reports.append(r)
                if on_group:
                    on_group(len(reports), len(work))
    findings: list[Finding] = []
    checked: list[Checked] = []
    for key, report, shown in zip(keys, reports, problems, strict=True):
        first = groups[key][0]
        for pod in groups[key]:
            findings.extend(input_finding(p.code, p.message, pod.subject,
                                          p.reference if pod is first else pod.reference) for p in shown)
            findings.extend(_shown_on(f, first, pod).for_subject(pod.subject, f.reference or pod.reference)
                            for f in report.findings)
            checked.extend(Checked(pod.subject, c.property, c.verdict) for c in report.checked)
    order = {p.subject: i for i, p in enumerate(pods)}
    findings.sort(key=lambda f: order[f.subject])
    return AuditResult(Report(tuple(findings), tuple(checked), failure_threshold), len(pods), len(groups))
