"""Fleet audit: every pod of a ``kubectl get pods -A -o yaml`` List, grouped by effective capture set-up.

Pods whose capture configuration (Istio version, annotations, injected istio-init arguments), apps
(container ports and ids) and address families are the same get the same world, so each group is
proven once — in a process pool over the machine's cores — and its findings are reported for every
pod of the group, each pointing at the pod's ``name:`` line in the manifest.

Parsing uses libyaml when PyYAML has it, and pods that share their capture-relevant fields share
one ``pod_capture`` call, so a 10,000-pod list is read in seconds.

Like the command line, this module uses the layers rather than being one: it reads manifests
(``meshsolve.istio``, ``meshsolve.inputs``), proves (``meshsolve.analysis``) and reports
(``meshsolve.report``).
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import attrs
import yaml

from meshsolve.analysis.worlds import DEFAULT_POD, world_from_config
from meshsolve.errors import SpecError
from meshsolve.inputs import apps_of_pod, parse_properties
from meshsolve.istio import CaptureConfig, proxy_behavior
from meshsolve.istio.ambient import AmbientConfig
from meshsolve.istio.ambient.config import ZTUNNEL_PORTS
from meshsolve.istio.ambient.pods import DATAPLANE_MODE, ambient_pod, namespaces_in
from meshsolve.istio.pod import load_pods, load_workloads, pod_capture
from meshsolve.model.net import IPAddress
from meshsolve.model.provenance import Assumed, Part
from meshsolve.model.world import App
from meshsolve.report.catalog import Level
from meshsolve.report.findings import Finding, Subject
from meshsolve.report.render import Checked, Report
from meshsolve.report.run import check_world
from meshsolve.yamllines import yaml_lines

__all__ = ["AuditResult", "FleetPod", "audit", "group_pods", "load_fleet"]


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


@attrs.frozen
class AuditResult:
    report: Report
    pods: int
    groups: int


def _yaml_loader() -> Any:
    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _parse_chunk(text: str) -> list[Any]:
    return list(yaml.load(text, Loader=_yaml_loader()) or ())


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
    try:
        if text.lstrip().startswith("{"):
            return [json.loads(text)]
        chunks = _item_chunks(text, workers * 4) if pool is not None and len(text) > 1_000_000 else None
        if chunks is not None and pool is not None:
            items: list[Any] = []
            try:
                for part in pool.map(_parse_chunk, chunks):
                    items.extend(part)
                return [{"apiVersion": "v1", "kind": "List", "items": items}]
            except yaml.YAMLError:  # e.g. an alias to an anchor in another chunk: parse it whole
                pass
        return [d for d in yaml.load_all(text, Loader=_yaml_loader()) if d is not None]
    except (yaml.YAMLError, ValueError):
        load_pods(text, source)  # raises the SpecError with the line
        raise


def _pods(text: str, source: str, pool: ProcessPoolExecutor | None = None,
          workers: int = 1) -> list[Mapping[str, Any]]:
    docs = _documents(text, source, pool, workers)
    out: list[Mapping[str, Any]] = []
    for d in docs:
        if isinstance(d, Mapping) and d.get("kind") == "Pod":
            out.append(d)
        elif isinstance(d, Mapping) and d.get("kind") == "List" and all(
                isinstance(i, Mapping) and i.get("kind") == "Pod" for i in d.get("items") or ()):
            out.extend(d.get("items") or ())
        else:  # workloads and other shapes: the general loader (documents without a pod skipped)
            return list(load_workloads(text, source)[0])
    if not out:
        raise SpecError("no pod in the manifest", source=source)
    return out


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
    """Every pod of the manifest with its capture configuration, apps and address families."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"cannot read manifest: {exc.strerror}", source=source) from None
    pods = _pods(text, source, pool, workers)
    namespaces = namespaces_in(text, source) if "Namespace" in text else {}
    lines = yaml_lines(text)
    used: dict[str, int] = {}
    cache: dict[str, tuple[CaptureConfig | AmbientConfig, tuple[App, ...], tuple[str, ...], str, tuple[Part, ...]]] = {}
    out: list[FleetPod] = []
    for pod in pods:
        ns_labels = namespaces.get(str((pod.get("metadata") or {}).get("namespace", "default")))
        key = _key(pod, None if ns_labels is None else ns_labels.get(DATAPLANE_MODE))
        ambient = ambient_pod(pod, version=version, namespace=ns_labels) if key not in cache else None
        if ambient is not None:
            fams = tuple(sorted({"ipv6" if a.version == 6 else "ipv4" for a in ambient.pod_ips})) or \
                ambient.config.families
            pa = apps_of_pod(pod, ipv6="ipv6" in fams, proxy_ports=ZTUNNEL_PORTS, source=source)
            cache[key] = (ambient.config, pa.apps, fams, "ambient", pa.parts)
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
            cache[key] = (pc.config, pa.apps, fams, pc.basis, pa.parts)
        config, apps, fams, basis, parts = cache[key]
        meta = pod.get("metadata") or {}
        name, ns = str(meta.get("name", "pod")), str(meta.get("namespace", "default"))
        i = used.get(name, 0)
        used[name] = i + 1
        at = lines.object_line(name, i)
        ref = f"{source}:{at}" if at is not None else None
        out.append(FleetPod(Subject("Pod", ns, name), ref, config, apps, fams, basis, parts))
    return out


GroupKey = tuple[CaptureConfig | AmbientConfig, tuple[App, ...], tuple[str, ...]]


def group_pods(pods: Sequence[FleetPod]) -> dict[GroupKey, list[FleetPod]]:
    groups: dict[GroupKey, list[FleetPod]] = {}
    for p in pods:
        groups.setdefault((p.config, p.apps, p.families), []).append(p)
    return groups


Work = tuple[GroupKey, tuple[str, ...], tuple[Part, ...]]


def _prove(args: Work) -> Report:
    (config, apps, fams), specs, parts = args
    pod_ips: tuple[IPAddress, ...] = tuple(DEFAULT_POD[f] for f in fams)
    stand_ins = tuple(Part("pod-ip", f"the pod IP {a}", Assumed("a group of pods is proven with a documentation "
                                                               "address for the pod IP"), (str(a),))
                      for a in pod_ips)
    if isinstance(config, AmbientConfig):
        from meshsolve.analysis.ambient import ambient_properties
        from meshsolve.istio.ambient.profile import ambient_world

        world = ambient_world(config, apps=apps, pod_ips=pod_ips, name="group")
        own = tuple(p for _key, p in ambient_properties(config, world))
        return check_world(world, parse_properties(specs, world, defaults=own), parts=(*parts, *stand_ins))
    world = world_from_config(config, apps=apps, pod_ips=pod_ips, name="group")
    return check_world(world, parse_properties(specs, world), parts=(*parts, *stand_ins))


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
    pods = load_fleet(path, version=version, pool=pool, workers=workers)
    groups = group_pods(pods)
    keys = list(groups)
    work: list[Work] = [(k, tuple(properties), groups[k][0].parts) for k in keys]
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
    for key, report in zip(keys, reports, strict=True):
        for pod in groups[key]:
            findings.extend(f.for_subject(pod.subject, f.reference or pod.reference) for f in report.findings)
            checked.extend(Checked(pod.subject, c.property, c.verdict) for c in report.checked)
    order = {p.subject: i for i, p in enumerate(pods)}
    findings.sort(key=lambda f: order[f.subject])
    return AuditResult(Report(tuple(findings), tuple(checked), failure_threshold), len(pods), len(groups))
