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

The listing is streamed (``meshsolve.inputs.podlist``): a pod is reduced to its group key and a
small record (name, line, addresses) as it is read, and only a group's first pod keeps its document
and its own text, from which its world is built with the file's line numbers. Pods that share their
capture-relevant fields share one ``pod_capture`` call. Groups are handed to the worker processes
in slices as they are found, so proving overlaps reading; once every pod is read, a slice's groups
are copied onto their pods as it comes back, so that merging overlaps proving too.

A fleet larger than one machine splits the same way (``docs/cli.md``): the unit of work is one
group's ``Work`` (a world, its parts, the properties), and the results merge by group, in the order
the groups were found.

Like the command line, this module uses the layers rather than being one: it reads manifests
(``meshsolve.istio``, ``meshsolve.inputs``), proves (``meshsolve.analysis``) and reports
(``meshsolve.report``).
"""

from __future__ import annotations

import ipaddress
import json
import multiprocessing
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import attrs

from meshsolve.analysis.properties import Property
from meshsolve.errors import SpecError
from meshsolve.inputs import Loaded, Problem, apps_of_pod, parse_properties, world_of_pod
from meshsolve.inputs.podlist import Listed, PodListing, Reread, padded
from meshsolve.istio import CaptureConfig, proxy_behavior
from meshsolve.istio.ambient import AmbientConfig
from meshsolve.istio.ambient.config import ZTUNNEL_PORTS
from meshsolve.istio.ambient.pods import DATAPLANE_MODE, ambient_pod, namespace_labels
from meshsolve.istio.pod import (
    L_REVISION,
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
from meshsolve.yamllines import YamlLines, yaml_lines

__all__ = ["AuditResult", "FleetPod", "FleetProgress", "audit", "group_pods", "load_fleet"]


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
    capture: PodCapture | None = attrs.field(default=None, eq=False, repr=False)  # its key's sidecar set-up
    nth: int = attrs.field(default=0, eq=False)  # which of the pods with its name it is
    contradicts: tuple[VersionClaim, ...] = ()  # its own fields that the version used contradicts
    # which of the listing's distinct (config, apps, families, contradicts) it has, numbered as found:
    # pods with the same one and the same place form a group (a small key, hashed once per pod)
    setup: int = attrs.field(default=0, eq=False)


@attrs.frozen
class AuditResult:
    report: Report
    pods: int
    groups: int


_SCALARS = (str, int, float, type(None))


_COMPARED: dict[type[Any], tuple[str, ...]] = {}


def _compared(cls: type[Any]) -> tuple[str, ...]:
    """The fields of an attrs class that take part in equality (provenance, ``eq=False``, holds no
    address the kernel compares); ``()`` for other classes."""
    names = _COMPARED.get(cls)
    if names is None:
        names = _COMPARED[cls] = tuple(f.name for f in attrs.fields(cls) if f.eq) if attrs.has(cls) else ()
    return names


def _networks(rules: Rulesets) -> tuple[IPNetwork, ...]:
    """Every address range the rules name (in matches, targets and native sets)."""
    found: dict[IPNetwork, None] = {}
    seen: set[int] = set()

    def walk(value: Any) -> None:
        if isinstance(value, _SCALARS):
            return
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
        elif id(value) not in seen and (names := _compared(type(value))):
            seen.add(id(value))
            for name in names:
                walk(getattr(value, name))

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
    labels = meta.get("labels") or {}
    return json.dumps({"a": meta.get("annotations") or {}, "l": labels.get(DATAPLANE_MODE), "r": labels.get(L_REVISION),
                       "n": namespace_mode, "i": spec.get("initContainers") or [],
                       "c": [{k: c.get(k) for k in ("name", "ports", "securityContext", "env", "image")}
                             for c in spec.get("containers") or () if isinstance(c, Mapping)],
                       "s": spec.get("securityContext"), "d": spec.get("dnsConfig"), "f": fams},
                      sort_keys=True, default=str)


def load_fleet(path: str | Path, *, version: str | None = None) -> list[FleetPod]:
    """Every pod of the listing with its capture configuration, apps, address families and the
    place of its pod IPs (each with its document)."""
    listing = PodListing(path)
    while True:
        try:
            return [p for p, _item, _loaded in _fleet(listing, version)]
        except Reread:  # not a List after all: read whole
            continue


#: A pod as read: the pod, the listing item it came from, and (for the first pod of its set-up key)
#: its world, built by the one door from its own text.
Read = tuple[FleetPod, Listed, Loaded | None]

def _name_line(item: Listed, name: str, nth: int) -> int | None:
    """The file's line of the pod's ``metadata.name`` (``nth``: which pod named so it is)."""
    if item.whole:
        return yaml_lines(item.text).object_line(name, nth)
    # kubectl writes metadata before spec: the lines up to the first that holds the name most often
    # end with it (a line whose value is the name holds it, and lines are read one after the other,
    # so the first such line found in a prefix is the first in the text); else the lines before
    # the first "spec", else all
    at = None
    if (first := item.text.find(name)) >= 0:
        end = item.text.find("\n", first)
        at = YamlLines(item.text if end < 0 else item.text[:end]).object_line(name)
    cut = item.text.find("spec")
    if at is None and cut > 0:
        at = YamlLines(item.text[:cut]).object_line(name)
    if at is None:
        at = YamlLines(item.text).object_line(name)
    return None if at is None else at + item.line - 1


def _pods(listing: PodListing) -> tuple[Iterator[tuple[Mapping[str, Any], Listed]], dict[str, dict[str, str]]]:
    """The pods of the listing with the item each came from, and its namespaces' labels (which may
    enroll pods in ambient mode). A streamed List is read twice only when it holds namespaces."""
    if listing.whole:
        return _whole_pods(listing)
    namespaces: dict[str, dict[str, str]] = {}
    if listing.has_namespaces():
        namespaces = namespace_labels([i.doc for i in listing if _kind(i.doc) == "Namespace"])
        if listing.whole:  # read whole while looking for them
            return _whole_pods(listing)

    def pods() -> Iterator[tuple[Mapping[str, Any], Listed]]:
        found = False
        for item in listing:
            if item.whole:  # not a List: the documents as the general reader takes them
                listing.whole = True
                raise Reread
            kind = _kind(item.doc)
            if kind == "Pod":
                found = True
                yield item.doc, item
            elif kind != "Namespace":  # workloads and other shapes: the general loader
                listing.whole = True
                raise Reread
        if not found:
            raise SpecError("no pod in the manifest", source=listing.source)

    return pods(), namespaces


def _kind(doc: Any) -> Any:
    return doc.get("kind") if isinstance(doc, Mapping) else None


def _whole_pods(listing: PodListing) -> tuple[Iterator[tuple[Mapping[str, Any], Listed]], dict[str, dict[str, str]]]:
    """The pods of a manifest read whole: a List's, single pods', or the general loader's (workloads)."""
    items = list(listing)
    text = items[0].text if items else listing.text()
    whole = Listed(None, text, 1, True)
    docs = [i.doc for i in items]
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
            out = list(load_workloads(text, listing.source)[0])
            break
    if not out:
        raise SpecError("no pod in the manifest", source=listing.source)
    return ((p, whole) for p in out), namespaces


def _fleet(listing: PodListing, version: str | None, worlds: bool = False) -> Iterator[Read]:
    """The pods of the listing, read one by one; pods that share their capture-relevant fields (the
    key) share one ``pod_capture`` call and the ranges their rules name. A key's first pod comes with
    its world, and with ``worlds`` so does the first pod of every group (see :func:`group_pods`)."""
    source = listing.source
    pods, namespaces = _pods(listing)
    used: dict[str, int] = {}
    cache: dict[str, tuple[CaptureConfig | AmbientConfig, tuple[App, ...], tuple[str, ...], str, tuple[Part, ...],
                           PodCapture | None, tuple[VersionClaim, ...]]] = {}
    seen_by: dict[str, tuple[tuple[IPNetwork, ...], tuple[IPAddress, ...]]] = {}  # the ranges the key's rules name
    setups: dict[tuple[Any, ...], int] = {}  # (config, apps, families, contradicts) -> its number
    setup_of: dict[str, int] = {}  # a key's
    firsts: set[tuple[int, Place]] = set()
    for pod, item in pods:
        meta = pod.get("metadata") or {}
        name, ns = str(meta.get("name", "pod")), str(meta.get("namespace", "default"))
        nth = used.get(name, 0)
        used[name] = nth + 1
        ns_labels = namespaces.get(ns)
        key = _key(pod, None if ns_labels is None else ns_labels.get(DATAPLANE_MODE))
        if key not in cache:
            cache[key] = _set_up(pod, item, nth, version, source, ns_labels)
            config, apps, fams, _basis, _parts, _capture, contra = cache[key]
            setup_of[key] = setups.setdefault((config, apps, fams, contra), len(setups))
        config, apps, fams, basis, parts, capture, contra = cache[key]
        setup = setup_of[key]
        try:
            ips = pod_ips_of(pod)
        except SpecError as exc:
            raise SpecError(exc.message, source=source, lineno=_name_line(item, name, nth)) from None
        loaded: Loaded | None = None
        if key not in seen_by:  # the key's rules: its first pod's world, built by the door
            loaded = _world(pod, capture, item, nth, name, ns, ips, source, version, namespaces)
            assert loaded.world is not None
            seen_by[key] = (_networks(loaded.world.rules), loaded.world.peer_ips)
        nets, peers = seen_by[key]
        place = _place(ips, nets, peers)
        if worlds and loaded is None and (setup, place) not in firsts:
            loaded = _world(pod, capture, item, nth, name, ns, ips, source, version, namespaces)
        if loaded is not None:
            firsts.add((setup, place))
        at = _name_line(item, name, nth)
        ref = f"{source}:{at}" if at is not None else None
        yield (FleetPod(Subject("Pod", ns, name), ref, config, apps, fams, basis, parts, ips,
                        place, pod, capture, nth, contra, setup), item, loaded)


SetUp = tuple[CaptureConfig | AmbientConfig, tuple[App, ...], tuple[str, ...], str, tuple[Part, ...],
              PodCapture | None, tuple[VersionClaim, ...]]


def _set_up(pod: Mapping[str, Any], item: Listed, nth: int, version: str | None, source: str,
            ns_labels: Mapping[str, str] | None) -> SetUp:
    """What a key's pods share: the capture configuration, apps, families, basis, the apps' assumed
    parts, the sidecar's set-up and what of the pods' own fields the version used contradicts."""
    ambient = ambient_pod(pod, version=version, namespace=ns_labels)
    if ambient is not None:
        fams = tuple(sorted({"ipv6" if a.version == 6 else "ipv4" for a in ambient.pod_ips})) or \
            ambient.config.families
        pa = apps_of_pod(pod, ipv6="ipv6" in fams, proxy_ports=ZTUNNEL_PORTS, source=source)
        return ambient.config, pa.apps, fams, "ambient", pa.parts, None, ()
    try:
        pc = pod_capture(pod, version=version, source=source)
    except SpecError:
        text, _ = _text_of(item, nth)
        pod_capture(pod, version=version, source=source, text=text)  # the error with its line
        raise
    fams = tuple(sorted({"ipv6" if a.version == 6 else "ipv4" for a in pc.pod_ips})) or (
        ("ipv4", "ipv6") if pc.config.enable_ipv6 else ("ipv4",))
    pb = proxy_behavior(pc.config.version, pc.config)
    ports = [p for p in (pb.outbound_port, pb.inbound_port) if p is not None]
    pa = apps_of_pod(pod, ipv6="ipv6" in fams, proxy_ports=ports, source=source)
    contra = version_contradictions(pod, pc.config.version) if pc.config.mode != "NONE" else ()
    return pc.config, pa.apps, fams, pc.basis, pa.parts, pc, contra


def _text_of(item: Listed, nth: int) -> tuple[str, int]:
    """The text a pod's lines are found in (its own lines at their place, or the whole file) and
    which of the pods with its name it is there."""
    return padded(item), (nth if item.whole else 0)


def _world(pod: Mapping[str, Any], capture: PodCapture | None, item: Listed, nth: int, name: str, ns: str,
           ips: tuple[IPAddress, ...], source: str, version: str | None,
           namespaces: Mapping[str, Mapping[str, str]]) -> Loaded:
    """A pod's world, built by the one door from its text (``capture``: its key's set-up, given this
    pod's name and addresses)."""
    if capture is not None:
        capture = attrs.evolve(capture, name=name, namespace=ns, pod_ips=ips)
    text, at = _text_of(item, nth)
    loaded = world_of_pod(pod, capture, text=text, source=source, version=version, nth=at, namespaces=namespaces)
    if loaded.world is None:
        raise SpecError(f"no world for Pod {ns}/{name}", source=source)
    return loaded


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


def _shown(finding: Finding, first: FleetPod) -> tuple[str, ...]:
    """The first pod's addresses that ``finding`` (proven on it) shows."""
    texts = [finding.message, finding.witness or ""]
    if finding.result is not None:
        texts.extend(h.text for h in finding.result.trace)
    blob = "\n".join(texts)
    return tuple(str(a) for a in first.pod_ips if str(a) in blob)


def _shown_on(finding: Finding, first: FleetPod, pod_ips: tuple[IPAddress, ...],
              shown: tuple[str, ...] | None = None) -> Finding:
    """``finding`` (proven on ``first``) for a pod of its group with ``pod_ips``: a witness that shows
    ``first``'s address says so (``shown``: :func:`_shown`, when known)."""
    if pod_ips == first.pod_ips:
        return finding
    if shown is None:
        shown = _shown(finding, first)
    if not shown:
        return finding
    own = ", ".join(str(a) for a in pod_ips)
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


@attrs.frozen
class FleetProgress:
    """How far an audit is: pods read (and how much of the file), set-ups found, set-ups proven."""

    pods: int
    read: int
    size: int
    groups: int
    proven: int
    reading: bool


@attrs.define
class _Group:
    """A group as the audit keeps it: its first pod, what that pod's manifest shows (MSH0113), and
    its pods (subject, reference, addresses): never their documents."""

    first: FleetPod
    problems: tuple[Problem, ...]
    pods: list[tuple[Subject, str | None, tuple[IPAddress, ...]]] = attrs.Factory(list)


def audit(path: str | Path, *, version: str | None = None, properties: Sequence[str] = (),
          jobs: int | None = None, failure_threshold: Level = "Info",
          progress: Callable[[FleetProgress], None] | None = None) -> AuditResult:
    """Audit every pod of ``path``, read as a stream; ``progress`` is called as pods are read and
    groups proven.

    The output does not depend on ``jobs``: groups are proven in slices of ``SLICE`` in the order
    they are found, each slice in a fresh worker process (``jobs`` of them at a time, default the
    machine's cores), while the listing is still being read."""
    workers = max(1, jobs if jobs is not None else (os.cpu_count() or 1))
    listing = PodListing(path)
    while True:
        try:
            return _audit(listing, version, tuple(properties), workers, failure_threshold, progress)
        except Reread:  # not a List after all: read whole, from the start
            continue


def _audit(listing: PodListing, version: str | None, properties: tuple[str, ...], workers: int,
           failure_threshold: Level, progress: Callable[[FleetProgress], None] | None) -> AuditResult:
    groups: dict[tuple[int, Place], _Group] = {}  # by set-up and place: the group key, as numbers
    order: dict[Subject, int] = {}  # where each pod is in the listing (the last of a name and namespace)
    pending: list[Work] = []
    futures: list[Future[list[Report]]] = []
    sizes: list[int] = []
    provers = ProcessPoolExecutor(max_workers=workers, max_tasks_per_child=1, mp_context=_fresh_context())

    def tell(reading: bool) -> None:
        if progress is not None:
            proven = sum(n for f, n in zip(futures, sizes, strict=True) if f.done())
            progress(FleetProgress(len(order), listing.read, listing.size, len(groups), proven, reading))

    def submit() -> None:
        nonlocal pending
        futures.append(provers.submit(_prove_slice, pending))
        sizes.append(len(pending))
        pending = []

    try:
        n = 0
        for pod, _item, loaded in _fleet(listing, version, worlds=True):
            key = (pod.setup, pod.place)
            group = groups.get(key)
            if group is None:
                assert loaded is not None and loaded.world is not None
                group = groups[key] = _Group(attrs.evolve(pod, doc={}, capture=None), loaded.problems)
                pending.append((loaded.world, loaded.parts, loaded.defaults, properties))
                if len(pending) == SLICE:
                    submit()
            group.pods.append((pod.subject, pod.reference, pod.pod_ips))
            order[pod.subject] = n
            n += 1
            if progress is not None and (n % 1000 == 0 or group.first.subject == pod.subject):
                tell(True)
        if pending:
            submit()
        tell(False)
        # every pod is read, so each group's findings go onto its pods as its slice comes back (in
        # the order the groups were found) while later slices are still being proven
        findings: list[Finding] = []
        checked: list[Checked] = []
        found = iter(groups.values())
        for future in futures:
            for report in future.result():
                _merge(next(found), report, findings, checked)
            tell(False)
    finally:
        provers.shutdown(cancel_futures=True)
    findings.sort(key=lambda f: order[f.subject])
    return AuditResult(Report(tuple(findings), tuple(checked), failure_threshold), n, len(groups))


def _merge(group: _Group, report: Report, findings: list[Finding], checked: list[Checked]) -> None:
    """A group's findings and checks, for each of its pods."""
    first = group.first
    shown = [_shown(f, first) for f in report.findings]
    for i, (subject, reference, ips) in enumerate(group.pods):
        findings.extend(input_finding(p.code, p.message, subject, p.reference if i == 0 else reference)
                        for p in group.problems)
        findings.extend(_shown_on(f, first, ips, s).for_subject(subject, f.reference or reference)
                        for f, s in zip(report.findings, shown, strict=True))
        checked.extend(Checked(subject, c.property, c.verdict) for c in report.checked)
