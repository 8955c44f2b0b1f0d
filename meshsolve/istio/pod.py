"""Kubernetes Pod manifests (``kubectl get pod -o yaml``, a ``List`` of pods, or a workload with a pod
template) → the capture configuration Istio's injector would give each pod.

Three sources; the first that applies wins:

1. **The injected ``istio-init`` container** (the pod was already injected): its command/args and
   env are parsed as istio-iptables flags — that is what really ran. The version comes from the
   caller, else from the image tag (``proxyv2:1.10.2`` → 1.10), else ``current``.
2. **istio-cni** (the pod has the ``istio-validation`` init container instead): the CNI plugin's
   own defaults from the annotations (``cni_args``); current Istio only.
3. **Annotations and container ports** (not injected yet): the injector's template per version —
   ``-p 15001 [-z 15006] -u 1337 -m <interceptionMode> -i <includeOutboundIPRanges or *>
   -x <excludeOutboundIPRanges> -b <includeInboundPorts> -d <exclusions>`` plus ``-q -o -k -c`` when
   set. ``-b`` defaults to the containerPorts up to 1.2 and to ``*`` from 1.3; ``-d`` is the
   annotation plus the status port (1.1+), after ``15090,`` (1.5) or ``15090,15021,`` (1.6+).
   ``proxyMetadata`` of ``proxy.istio.io/config`` becomes istio-init's environment (DNS capture,
   ``INVALID_DROP`` …); DNS servers come from ``spec.dnsConfig.nameservers``.

``status.podIP(s)`` decides ``enable_ipv6`` (istio-iptables looks at the pod's first address).
Every annotation value is validated; errors name the annotation, the file and its line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs
import yaml

import meshsolve.defaults as defaults
from meshsolve.errors import SpecError, UnsupportedError
from meshsolve.istio.config import (
    KNOWN_MINORS,
    WILDCARD,
    CaptureConfig,
    minor_of,
    normalise_version,
    validate_cidrs,
    validate_interfaces,
    validate_ports,
    validate_value,
)
from meshsolve.istio.flags import read_flags
from meshsolve.model.net import IPAddress, to_address
from meshsolve.yamllines import yaml_documents, yaml_lines, yaml_value

__all__ = ["ANNOTATIONS", "MAX_MANIFEST_BYTES", "PodCapture", "VersionClaim", "cni_args", "injector_args",
           "load_pods", "pod_ips_of", "version_claims", "version_contradictions",
           "load_workloads",
           "pod_capture",
           "pods_from_file", "pods_from_text", "read_annotations", "to_annotations"]

A_MODE = "sidecar.istio.io/interceptionMode"
A_INJECT = "sidecar.istio.io/inject"
A_IN_PORTS = "traffic.sidecar.istio.io/includeInboundPorts"
A_EX_IN_PORTS = "traffic.sidecar.istio.io/excludeInboundPorts"
A_IN_CIDRS = "traffic.sidecar.istio.io/includeOutboundIPRanges"
A_EX_CIDRS = "traffic.sidecar.istio.io/excludeOutboundIPRanges"
A_OUT_PORTS = "traffic.sidecar.istio.io/includeOutboundPorts"
A_EX_OUT_PORTS = "traffic.sidecar.istio.io/excludeOutboundPorts"
A_KUBEVIRT = "traffic.sidecar.istio.io/kubevirtInterfaces"
A_REROUTE = "istio.io/reroute-virtual-interfaces"
A_EX_IFACES = "traffic.sidecar.istio.io/excludeInterfaces"
A_STATUS_PORT = "status.sidecar.istio.io/port"
A_PROXY_CONFIG = "proxy.istio.io/config"
A_STATUS = "sidecar.istio.io/status"  # the injector's record: what it added, and (1.6+) its revision
A_PROXY_IMAGE = "sidecar.istio.io/proxyImage"
L_REVISION = "istio.io/rev"
ANNOTATIONS = (A_MODE, A_INJECT, A_IN_PORTS, A_EX_IN_PORTS, A_IN_CIDRS, A_EX_CIDRS, A_OUT_PORTS,
               A_EX_OUT_PORTS, A_KUBEVIRT, A_REROUTE, A_EX_IFACES, A_STATUS_PORT, A_PROXY_CONFIG)

#: Manifests larger than this are refused before YAML parsing: PyYAML is pure Python (about 1 MB/s
#: and ~50x the text in memory), and one Kubernetes object is at most ~1.5 MB (etcd's limit).
MAX_MANIFEST_BYTES = 16 * 1024 * 1024

_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "ReplicationController"}
_TAG_RE = re.compile(r":v?(1\.\d{1,2})(?:[.\-][^/]*)?$")


@attrs.frozen
class PodCapture:
    """One pod's capture set-up: the configuration, what it was read from, and the argv/env used."""

    name: str
    namespace: str
    config: CaptureConfig
    basis: Literal["istio-init", "annotations", "cni", "not-injected"]
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    pod_ips: tuple[IPAddress, ...] = ()
    notes: tuple[str, ...] = ()
    version_from: str = ""  # where the version came from: "--istio", "image tag ...", "" (assumed)


class _Where:
    """Finds the line of a key in the manifest text, for error messages (``meshsolve.yamllines``)."""

    def __init__(self, text: str, source: str, pod_name: str | None = None) -> None:
        self.index = yaml_lines(text)
        self.has_text = bool(text)
        self.source = source
        self.start = 0
        if pod_name:  # in a List, look below this pod's own name first
            found = self.index.object_line(pod_name) or self.index.pair_line("name", pod_name)
            self.start = 0 if found is None else found - 1

    def line(self, key: str) -> int | None:
        return self.index.key_line(key, self.start + 1) or self.index.key_line(key)

    def pod_line(self) -> int | None:
        """The line of the pod's ``name`` (or 1), for errors with no finer position; None without text."""
        return (self.start + 1) if self.has_text else None


def _name_of(pod: Mapping[str, Any]) -> str | None:
    name = (pod.get("metadata") or {}).get("name")
    return None if name is None else str(name)


def load_pods(text: str, source: str = "<manifest>") -> tuple[Mapping[str, Any], ...]:
    """Every pod (or pod template) in a YAML stream: ``Pod``, ``List`` of them, or workloads; other
    documents (a Service, a ServiceAccount...) are skipped (:func:`load_workloads` says which)."""
    return load_workloads(text, source)[0]


def load_workloads(text: str, source: str = "<manifest>") -> tuple[tuple[Mapping[str, Any], ...], tuple[str, ...]]:
    """:func:`load_pods` and a note for each document that was skipped because it holds no pod."""
    docs = yaml_documents(text, source)
    pods: list[Mapping[str, Any]] = []
    skipped: list[str] = []
    lineno = 1

    def sub(doc: Mapping[str, Any], key: str, what: str) -> Mapping[str, Any]:
        value = doc.get(key) or {}
        if not isinstance(value, Mapping):
            raise SpecError(f"{what}: expected a mapping, got {type(value).__name__}", source=source,
                            lineno=lineno)
        return value

    def visit(doc: Any) -> None:
        if not isinstance(doc, Mapping):
            raise SpecError("expected a Kubernetes object (a mapping)", source=source, lineno=lineno)
        kind = doc.get("kind")
        if not isinstance(kind, str | None):
            raise SpecError(f"kind: expected a string, got {type(kind).__name__}", source=source,
                            lineno=lineno)
        items = doc.get("items") or ()
        if kind != "Pod" and not isinstance(items, list | tuple):
            raise SpecError(f"items: expected a list, got {type(items).__name__}", source=source,
                            lineno=lineno)
        spec = sub(doc, "spec", "spec")
        sub(doc, "metadata", "metadata")
        if kind in _TEMPLATE_KINDS:
            sub(sub(spec, "template", "spec.template"), "metadata", "spec.template.metadata")
        elif kind == "CronJob":
            sub(sub(spec, "jobTemplate", "spec.jobTemplate"), "spec", "spec.jobTemplate.spec")
        if kind == "Pod":
            pods.append(doc)
        elif kind == "List" or (isinstance(kind, str) and kind.endswith("List") and "items" in doc):
            for item in doc.get("items") or ():
                visit(item)
        elif kind in _TEMPLATE_KINDS:
            tmpl = (doc.get("spec") or {}).get("template") or {}
            meta = dict(tmpl.get("metadata") or {})
            meta.setdefault("name", (doc.get("metadata") or {}).get("name", "pod"))
            meta.setdefault("namespace", (doc.get("metadata") or {}).get("namespace", "default"))
            pods.append({"kind": "Pod", "metadata": meta, "spec": tmpl.get("spec") or {}})
        elif kind == "CronJob":
            job = ((doc.get("spec") or {}).get("jobTemplate") or {})
            visit({"kind": "Job", "metadata": doc.get("metadata") or {}, "spec": job.get("spec") or {}})
        elif kind == "Namespace":
            return  # its labels can enroll its pods in ambient mode (meshsolve.istio.ambient.pods)
        elif isinstance(kind, str) and kind and isinstance(doc.get("apiVersion"), str):
            name = (doc.get("metadata") or {}).get("name")
            skipped.append(f"skipped the {kind}" + (f" {name!r}" if name else "") + f" ({source}:{lineno}): it "
                           "holds no pod")
        else:
            raise SpecError(f"expected a Kubernetes object with a kind (Pod, List or a workload), got kind {kind!r}",
                            source=source, lineno=lineno)

    for d, lineno in docs:  # lineno is read by visit() and sub() for their errors
        try:
            visit(d)
        except RecursionError:
            raise SpecError("Lists nested too deep", source=source, lineno=lineno) from None
    if not pods:
        what = f" ({'; '.join(skipped)})" if skipped else ""
        raise SpecError(f"no pod in the manifest{what}", source=source, lineno=docs[-1][1] if docs else 1)
    return tuple(pods), tuple(skipped)


def _str_map(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): "" if v is None else str(v) for k, v in value.items()}


def _version_from_image(image: str) -> str | None:
    m = _TAG_RE.search(image or "")
    if not m:
        return None
    try:
        return normalise_version(m.group(1))
    except SpecError:
        return None


@attrs.frozen
class VersionClaim:
    """What one field of a pod says of its Istio version: minors ``low`` to ``high`` (inclusive;
    ``None``: no upper bound), read from ``what`` (its ``key`` and ``value`` in the manifest, for the
    line)."""

    what: str
    low: int
    high: int | None
    key: str
    value: str = ""  # the key's value, when it finds the line better than the key alone

    def holds(self, version: str) -> bool:
        """Whether ``version`` (normalised) is one the claim allows; ``current`` stands for the
        newest minor meshsolve knows and any later one."""
        m = minor_of(version)
        if version == "current":
            return self.high is None or self.high >= max(KNOWN_MINORS)
        return self.low <= m and (self.high is None or m <= self.high)

    def says(self) -> str:
        if self.high is None:
            return f"Istio 1.{self.low} or later"
        return f"Istio 1.{self.low}" if self.low == self.high else f"Istio 1.{self.low}–1.{self.high}"


_REVISION_RE = re.compile(r"^v?1[-._](\d{1,2})(?:[-._]\d+)*(?:[-._].*)?$")


def _revision_minor(name: str) -> int | None:
    """The minor a revision name spells (``1-10-2``, ``1-10``, ``v1.10``); None for ``canary``..."""
    m = _REVISION_RE.match(name.strip().lower())
    return int(m.group(1)) if m and int(m.group(1)) in KNOWN_MINORS else None


def version_claims(pod: Mapping[str, Any]) -> tuple[VersionClaim, ...]:
    """What the pod says of its Istio version: the image tags of its ``istio-init`` (or
    ``istio-validation``) and ``istio-proxy`` containers, the ``sidecar.istio.io/proxyImage``
    annotation, the revision in ``sidecar.istio.io/status`` (a revision there means an injector of
    1.6 or later, when revisions came) and the ``istio.io/rev`` label or annotation (a revision
    name such as ``1-10-2`` spells 1.10)."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    ann = _str_map(meta.get("annotations")) if isinstance(meta, Mapping) else {}
    labels = _str_map(meta.get("labels")) if isinstance(meta, Mapping) else {}
    out: list[VersionClaim] = []

    def tag(what: str, image: str, key: str) -> None:
        v = _version_from_image(image)
        if v is not None and v != "current":
            m = minor_of(v)
            out.append(VersionClaim(f"{what} ({image})", m, m, key, image))

    for group in ("initContainers", "containers"):
        for c in (spec.get(group) or ()) if isinstance(spec, Mapping) else ():
            if isinstance(c, Mapping) and c.get("name") in ("istio-init", "istio-validation", "istio-proxy"):
                tag(f"the image tag of {c.get('name')}", str(c.get("image", "")), "image")
    if A_PROXY_IMAGE in ann:
        tag(f"annotation {A_PROXY_IMAGE}", ann[A_PROXY_IMAGE], A_PROXY_IMAGE)
    status = ann.get(A_STATUS)
    if status:
        try:
            record = json.loads(status)
        except ValueError:
            record = None
        if isinstance(record, Mapping) and "revision" in record:
            rev = str(record.get("revision") or "")
            minor = _revision_minor(rev)
            if minor is not None:
                out.append(VersionClaim(f"the revision {rev!r} in annotation {A_STATUS}", minor, minor, A_STATUS))
            else:
                out.append(VersionClaim(f"annotation {A_STATUS}, which names a revision ({rev!r}): "
                                        "injectors record one since 1.6", 6, None, A_STATUS))
    for where, values in (("label", labels), ("annotation", ann)):
        named = values.get(L_REVISION)
        minor = None if named is None else _revision_minor(named)
        if minor is not None:
            out.append(VersionClaim(f"the revision {named!r} in {where} {L_REVISION}", minor, minor, L_REVISION))
    return tuple(out)


def version_contradictions(pod: Mapping[str, Any], version: str) -> tuple[VersionClaim, ...]:
    """The claims of :func:`version_claims` that ``version`` (normalised) does not meet."""
    return tuple(c for c in version_claims(pod) if not c.holds(version))


def pod_ips_of(pod: Mapping[str, Any]) -> tuple[IPAddress, ...]:
    """The pod's addresses from ``status.podIPs`` (else ``status.podIP``); ``()`` when it has none."""
    status = pod.get("status") or {}
    raw = [p.get("ip") for p in status.get("podIPs") or () if isinstance(p, Mapping)]
    if not raw and status.get("podIP"):
        raw = [status["podIP"]]
    out = []
    for ip in raw:
        try:
            out.append(to_address(str(ip)))
        except ValueError:
            raise SpecError(f"status.podIP {ip!r} is not an IP address") from None
    return tuple(out)


def _dns_servers(pod: Mapping[str, Any], source: str, where: _Where) -> tuple[IPAddress, ...]:
    servers = ((pod.get("spec") or {}).get("dnsConfig") or {}).get("nameservers") or ()
    out = []
    for s in servers:
        try:
            out.append(to_address(str(s)))
        except ValueError:
            raise SpecError(f"spec.dnsConfig.nameservers: {s!r} is not an IP address",
                            source=source, lineno=where.line("nameservers")) from None
    return tuple(out)


_SHAPE: tuple[tuple[str, type], ...] = (
    ("metadata", Mapping), ("metadata.annotations", Mapping), ("spec", Mapping),
    ("spec.initContainers", list), ("spec.containers", list), ("spec.dnsConfig", Mapping),
    ("spec.dnsConfig.nameservers", list), ("status", Mapping), ("status.podIPs", list),
)
_CONTAINER_SHAPE: tuple[tuple[str, type], ...] = (
    ("command", list), ("args", list), ("env", list), ("ports", list), ("securityContext", Mapping),
)


def _check_shape(pod: Any, source: str, where: _Where) -> None:
    """A ``SpecError`` naming the key (and its line) when a field the capture rules read has the
    wrong YAML type (``args: "-p 15001"`` instead of a list, ``metadata: [..]``, ...)."""
    def bad(path: str, value: Any, want: type) -> SpecError:
        return SpecError(f"{path}: expected a {'list' if want is list else 'mapping'}, got "
                         f"{type(value).__name__}", source=source,
                         lineno=where.line(path.rsplit(".", 1)[-1]) or where.pod_line())

    if not isinstance(pod, Mapping):
        raise SpecError("expected a Kubernetes object (a mapping)", source=source, lineno=where.pod_line())
    for path, want in _SHAPE:
        value: Any = pod
        for key in path.split("."):
            value = value.get(key) if isinstance(value, Mapping) else None
        if value is not None and not isinstance(value, want):
            raise bad(path, value, want)
    spec = pod.get("spec") or {}
    for group in ("initContainers", "containers"):
        for c in spec.get(group) or ():
            if not isinstance(c, Mapping):
                continue
            for key, want in _CONTAINER_SHAPE:
                if c.get(key) is not None and not isinstance(c[key], want):
                    raise bad(f"spec.{group}[{c.get('name')!s}].{key}", c[key], want)


def pod_capture(pod: Mapping[str, Any], *, version: str | None = None, source: str = "<manifest>",
                text: str = "") -> PodCapture:
    """The capture configuration of one pod (see the module docstring for the rules).

    A ``SpecError`` that cannot name a finer line (a flag inside ``args``, a ``podIP``) names the
    line of the pod's ``name``.
    """
    where = _Where(text, source, _name_of(pod) if isinstance(pod, Mapping) else None)
    try:
        _check_shape(pod, source, where)
        return _pod_capture(pod, version=version, source=source, text=text, where=where)
    except SpecError as exc:
        if exc.lineno is not None or not text:
            raise
        raise type(exc)(exc.message, source=exc.source, lineno=where.pod_line(), line=exc.line) from None


def _pod_capture(pod: Mapping[str, Any], *, version: str | None, source: str, text: str,
                 where: _Where) -> PodCapture:
    meta = pod.get("metadata") or {}
    name, namespace = str(meta.get("name", "pod")), str(meta.get("namespace", "default"))
    spec = pod.get("spec") or {}
    ips = pod_ips_of(pod)
    ipv6 = bool(ips) and ips[0].version == 6
    dns = _dns_servers(pod, source, where)
    init = next((c for c in spec.get("initContainers") or () if isinstance(c, Mapping)
                 and c.get("name") == "istio-init"), None)
    if init is not None:
        tokens = [str(t) for t in (init.get("command") or ())] + [str(t) for t in (init.get("args") or ())]
        env = {str(e.get("name")): str(e.get("value", "")) for e in init.get("env") or ()
               if isinstance(e, Mapping) and "value" in e}
        ver, ver_from = _version(version, init)
        got = read_flags(tokens, env, version=ver, source=f"{source}: initContainers[istio-init]")
        cfg = _with_pod_facts(got.config, ipv6, dns, env_given="ENABLE_INBOUND_IPV6" in env)
        return PodCapture(name, namespace, cfg, "istio-init", tuple(tokens), tuple(sorted(env.items())), ips,
                          _notes(cfg, (f"read the injected istio-init container (Istio {ver})", *got.notes)),
                          ver_from)
    validation = next((c for c in spec.get("initContainers") or () if isinstance(c, Mapping)
                       and c.get("name") == "istio-validation"), None)
    if validation is not None:
        ver, ver_from = _version(version, validation)
        argv, env, notes = cni_args(pod, ver, source=source, text=text)
        if argv is None:
            return PodCapture(name, namespace, CaptureConfig(version=ver, mode="NONE"), "cni",
                              pod_ips=ips, notes=notes, version_from=ver_from)
        cfg = read_flags(argv, env, version=ver, source=f"{source}: istio-cni").config
        if cfg.redirect_dns:
            cfg = cfg.evolve(capture_all_dns=True)
        cfg = _with_pod_facts(cfg, ipv6, (), env_given=False)
        return PodCapture(name, namespace, cfg, "cni", argv, tuple(sorted(env.items())), ips,
                          _notes(cfg, notes), ver_from)
    ver = normalise_version(version or "current")
    ver_from = "--istio" if version else ""
    annotations = _str_map(meta.get("annotations"))
    if annotations.get(A_INJECT, "").strip().lower() == "false":
        return PodCapture(name, namespace, CaptureConfig(version=ver, mode="NONE"), "not-injected",
                          pod_ips=ips, notes=(f"{A_INJECT} is false: no sidecar, no capture",), version_from=ver_from)
    argv, env, notes = injector_args(pod, ver, source=source, text=text)
    if argv is None:
        return PodCapture(name, namespace, CaptureConfig(version=ver, mode="NONE"), "annotations",
                          pod_ips=ips, notes=notes, version_from=ver_from)
    cfg = read_flags(argv, env, version=ver, source=f"{source}: injector template").config
    cfg = _with_pod_facts(cfg, ipv6, dns, env_given=False)
    return PodCapture(name, namespace, cfg, "annotations", argv, tuple(sorted(env.items())), ips,
                      _notes(cfg, notes), ver_from)


def _version(version: str | None, container: Mapping[str, Any]) -> tuple[str, str]:
    """The Istio version for an injected pod and where it came from: ``--istio``, else the init
    container's image tag, else ``current`` (assumed: ``""``)."""
    if version:
        return normalise_version(version), "--istio"
    image = str(container.get("image", ""))
    tagged = _version_from_image(image)
    if tagged:
        return tagged, f"the image tag of {container.get('name')} ({image})"
    return "current", ""


def _notes(cfg: CaptureConfig, notes: tuple[str, ...]) -> tuple[str, ...]:
    if cfg.redirect_dns and not cfg.dns_enabled():
        notes += ("DNS capture is on but the pod's nameservers are unknown (istio-iptables reads them "
                  "from resolv.conf): no DNS rules; give them with spec.dnsConfig or --dns-server",)
    return notes


def _with_pod_facts(cfg: CaptureConfig, ipv6: bool, dns: tuple[IPAddress, ...], *,
                    env_given: bool) -> CaptureConfig:
    changes: dict[str, Any] = {}
    if ipv6 and not env_given:
        changes["enable_ipv6"] = True
    if cfg.redirect_dns and not cfg.capture_all_dns and dns:
        changes["dns_servers_v4"] = tuple(a for a in dns if a.version == 4)
        changes["dns_servers_v6"] = tuple(a for a in dns if a.version == 6)
    return cfg.evolve(**changes) if changes else cfg


def _container_ports(spec: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for c in spec.get("containers") or ():
        if not isinstance(c, Mapping) or c.get("name") == "istio-proxy":
            continue
        for p in c.get("ports") or ():
            if isinstance(p, Mapping) and "containerPort" in p:
                out.append(str(p["containerPort"]))
    return out


def _exclude_inbound_port(port: str, excluded: str) -> str:
    """The injector's helper: add the status port to the exclusion list unless 0 or present."""
    port = port.strip()
    if not port or port == "0":
        return excluded
    if port in [p.strip() for p in excluded.split(",")]:
        return excluded
    return port if not excluded.strip() else f"{excluded},{port}"


_KINDS = {
    A_IN_CIDRS: "cidrs*", A_EX_CIDRS: "cidrs", A_IN_PORTS: "ports*", A_EX_IN_PORTS: "ports",
    A_STATUS_PORT: "port", A_OUT_PORTS: "ports", A_EX_OUT_PORTS: "ports", A_REROUTE: "interfaces",
    A_KUBEVIRT: "interfaces", A_EX_IFACES: "interfaces",
}


def read_annotations(pod: Mapping[str, Any], *, source: str = "<manifest>",
                     text: str = "") -> dict[str, str]:
    """The pod's capture annotations, each validated (errors name the annotation, file and line).

    The result has the interception mode normalised (``REDIRECT`` when absent) under ``A_MODE``
    and only the annotations that are present otherwise.
    """
    where = _Where(text, source, _name_of(pod))
    _check_shape(pod, source, where)
    ann = _str_map((pod.get("metadata") or {}).get("annotations"))
    out: dict[str, str] = {}
    for key, kind in _KINDS.items():
        if key not in ann:
            continue
        value = ann[key]
        kw: dict[str, Any] = {"what": f"annotation {key}", "source": source, "lineno": where.line(key)}
        validate_value(value, **kw)
        if kind == "ports":
            validate_ports(value, **kw)
        elif kind == "ports*":
            validate_ports(value, wildcard=True, **kw)
        elif kind == "cidrs*":
            validate_cidrs(value, wildcard=True, **kw)
        elif kind == "cidrs":
            validate_cidrs(value, **kw)
        elif kind == "interfaces":
            validate_interfaces(value, **kw)
        elif kind == "port" and len(validate_ports(value, **kw)) != 1:
            raise SpecError(f"annotation {key}: {value!r} is not one port number",
                            source=source, lineno=kw["lineno"])
        out[key] = value
    mode = ann.get(A_MODE, "REDIRECT")
    validate_value(mode, what=f"annotation {A_MODE}", source=source, lineno=where.line(A_MODE))
    if mode.strip().upper() not in ("REDIRECT", "TPROXY", "NONE"):
        raise SpecError(f"annotation {A_MODE}: {mode!r} is not REDIRECT, TPROXY or NONE",
                        source=source, lineno=where.line(A_MODE))
    out[A_MODE] = mode.strip().upper()
    return out


def _proxy_metadata(pod: Mapping[str, Any], *, source: str, text: str) -> dict[str, str]:
    """``proxyMetadata`` of the ``proxy.istio.io/config`` annotation (istio-init's extra env)."""
    where = _Where(text, source, _name_of(pod))
    raw = _str_map((pod.get("metadata") or {}).get("annotations")).get(A_PROXY_CONFIG)
    if raw is None:
        return {}
    try:  # nested YAML in an annotation: the same failures as the manifest's (deep nesting included)
        pc = yaml_value(raw) or {}
    except (yaml.YAMLError, ValueError, RecursionError):
        raise SpecError(f"annotation {A_PROXY_CONFIG}: not valid YAML", source=source,
                        lineno=where.line(A_PROXY_CONFIG)) from None
    if not isinstance(pc, Mapping):
        raise SpecError(f"annotation {A_PROXY_CONFIG}: expected a mapping", source=source,
                        lineno=where.line(A_PROXY_CONFIG))
    env = {}
    for k, v in _str_map(pc.get("proxyMetadata")).items():
        validate_value(v, what=f"annotation {A_PROXY_CONFIG} proxyMetadata.{k}", source=source,
                       lineno=where.line(A_PROXY_CONFIG))
        env[k] = v
    return env


def injector_args(pod: Mapping[str, Any], version: str, *, source: str = "<manifest>",
                  text: str = "") -> tuple[tuple[str, ...] | None, dict[str, str], tuple[str, ...]]:
    """The istio-init argv and env the injector of ``version`` builds for ``pod``.

    Returns ``(None, {}, notes)`` when no istio-init would be added (interception mode ``NONE``).
    Annotation values are validated here so errors name the annotation.
    """
    m = minor_of(normalise_version(version))
    ann = read_annotations(pod, source=source, text=text)
    notes: list[str] = []
    mode = ann[A_MODE]
    if mode == "NONE":
        return None, {}, (f"{A_MODE} is NONE: the injector adds no istio-init",)
    include_cidrs = ann.get(A_IN_CIDRS)
    exclude_cidrs = ann.get(A_EX_CIDRS)
    in_ports = ann.get(A_IN_PORTS)
    ex_in_ports = ann.get(A_EX_IN_PORTS, "")
    status = ann.get(A_STATUS_PORT)
    out_ports = ann.get(A_OUT_PORTS)
    ex_out_ports = ann.get(A_EX_OUT_PORTS)
    reroute = ann.get(A_REROUTE)
    kubevirt = ann.get(A_KUBEVIRT)
    ex_ifaces = ann.get(A_EX_IFACES)

    spec = pod.get("spec") or {}
    if in_ports is None:
        if m <= 2:
            ports = _container_ports(spec)
            in_ports = ",".join(ports) if ports else ""
        else:
            in_ports = WILDCARD
    status_port = status.strip() if status is not None else "15020"
    if m == 0:
        exclusions = ex_in_ports
    else:
        exclusions = _exclude_inbound_port(status_port, ex_in_ports)
        if m == 5:
            exclusions = "15090," + exclusions
        elif m >= 6:
            exclusions = "15090,15021," + exclusions
    argv: list[str] = ["-p", str(defaults.PROXY_OUTBOUND_PORT)]
    if m >= 3:
        argv += ["-z", str(defaults.PROXY_INBOUND_PORT)]
    argv += ["-u", str(defaults.PROXY_UID), "-m", mode, "-i", include_cidrs if include_cidrs is not None else WILDCARD,
             "-x", exclude_cidrs or "", "-b", in_ports, "-d", exclusions]

    def optional(flag: str, value: str | None, since: int, key: str) -> None:
        nonlocal argv
        if value is None:
            return
        if m < since:
            notes.append(f"annotation {key} is ignored by the Istio {version} injector (added in 1.{since})")
            return
        argv += [flag, value]

    optional("-q", out_ports, 7, A_OUT_PORTS)
    optional("-o", ex_out_ports, 2, A_EX_OUT_PORTS)
    if reroute is not None and m >= 25:
        optional("-k", reroute, 25, A_REROUTE)
    elif kubevirt is not None:
        optional("-k", kubevirt, 1, A_KUBEVIRT)
    elif reroute is not None:
        optional("-k", reroute, 25, A_REROUTE)
    optional("-c", ex_ifaces, 15, A_EX_IFACES)

    env: dict[str, str] = {}
    if m == 2 and WILDCARD in in_ports:
        env["INBOUND_CAPTURE_PORT"] = str(defaults.PROXY_INBOUND_PORT)
    env.update(_proxy_metadata(pod, source=source, text=text))
    return tuple(argv), env, tuple(notes)


def _proxy_ids(spec: Mapping[str, Any]) -> tuple[str, str]:
    """istio-cni's proxy uid/gid: the istio-proxy container's runAsUser/runAsGroup if non-zero."""
    proxy = next((c for c in spec.get("containers") or () if isinstance(c, Mapping)
                  and c.get("name") == "istio-proxy"), None)
    ctx = (proxy or {}).get("securityContext") or {}
    uid, gid = ctx.get("runAsUser"), ctx.get("runAsGroup")
    return (str(uid or defaults.PROXY_UID), str(gid or defaults.PROXY_GID))


def cni_args(pod: Mapping[str, Any], version: str, *, source: str = "<manifest>",
             text: str = "") -> tuple[tuple[str, ...] | None, dict[str, str], tuple[str, ...]]:
    """The istio-iptables settings the sidecar istio-cni plugin (current) derives for ``pod``.

    Differences from the injector: inbound exclusions are the annotation (default ``15020``) plus
    ``15020,15021,15090``, deduplicated; outbound port exclusions default to ``15020``; the proxy
    ids come from the istio-proxy container; DNS capture captures every nameserver. Only the
    current CNI is modelled (facts §2.9).
    """
    if minor_of(normalise_version(version)) < 25:
        raise UnsupportedError(f"the istio-cni rules of Istio {version} are not modelled (only 1.25+)")
    ann = read_annotations(pod, source=source, text=text)
    if ann[A_MODE] == "NONE":
        return None, {}, (f"{A_MODE} is NONE: istio-cni leaves the pod alone",)
    excluded: list[str] = []
    for port in [*ann.get(A_EX_IN_PORTS, "15020").split(","), "15020", "15021", "15090"]:
        if port.strip() and port.strip() not in excluded:
            excluded.append(port.strip())
    spec = pod.get("spec") or {}
    uid, gid = _proxy_ids(spec)
    argv = ["-p", str(defaults.PROXY_OUTBOUND_PORT), "-z", str(defaults.PROXY_INBOUND_PORT),
            "-u", uid, "-g", gid, "-m", ann[A_MODE],
            "-i", ann.get(A_IN_CIDRS, WILDCARD), "-x", ann.get(A_EX_CIDRS, ""),
            "-b", ann.get(A_IN_PORTS, WILDCARD), "-d", ",".join(excluded),
            "-o", ann.get(A_EX_OUT_PORTS, "15020"), "-q", ann.get(A_OUT_PORTS, "")]
    if A_REROUTE in ann or A_KUBEVIRT in ann:
        argv += ["-k", ann.get(A_REROUTE, ann.get(A_KUBEVIRT, ""))]
    if A_EX_IFACES in ann:
        argv += ["-c", ann[A_EX_IFACES]]
    env = _proxy_metadata(pod, source=source, text=text)
    proxy = next((c for c in spec.get("containers") or () if isinstance(c, Mapping)
                  and c.get("name") == "istio-proxy"), None)
    for e in (proxy or {}).get("env") or ():
        if isinstance(e, Mapping) and e.get("name") in ("ISTIO_META_DNS_CAPTURE", "INVALID_DROP",
                                                         "ISTIO_DUAL_STACK") and "value" in e:
            validate_value(str(e["value"]), what=f"istio-proxy env {e['name']}", source=source)
            env[str(e["name"])] = str(e["value"])
    return tuple(argv), env, ("rules written by the istio-cni plugin (pod has istio-validation)",)


def pods_from_text(text: str, *, version: str | None = None,
                   source: str = "<manifest>") -> tuple[PodCapture, ...]:
    """Every pod's capture set-up in a manifest text (at most ``MAX_MANIFEST_BYTES`` characters)."""
    if len(text) > MAX_MANIFEST_BYTES:
        raise SpecError(f"manifest larger than {MAX_MANIFEST_BYTES} characters", source=source, lineno=1)
    return tuple(pod_capture(p, version=version, source=source, text=text) for p in load_pods(text, source))


def pods_from_file(path: str | Path, *, version: str | None = None) -> tuple[PodCapture, ...]:
    """Every pod's capture set-up in a manifest file: at most ``MAX_MANIFEST_BYTES`` are read (a
    larger file is refused before it is parsed); the text must be UTF-8."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            data = fh.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise SpecError(f"cannot read manifest: {exc.strerror or exc}", source=str(p)) from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise SpecError(f"manifest larger than {MAX_MANIFEST_BYTES} bytes", source=str(p), lineno=1)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"not UTF-8 text: {exc.reason} at byte {exc.start}", source=str(p),
                        lineno=data.count(b"\n", 0, exc.start) + 1) from None
    return pods_from_text(text, version=version, source=str(p))


_PROXY_METADATA_BOOLS = (("redirect_dns", "ISTIO_META_DNS_CAPTURE"), ("drop_invalid", "INVALID_DROP"),
                         ("dual_stack", "ISTIO_DUAL_STACK"))


def _csv(values: Any) -> str:
    return WILDCARD if values == WILDCARD else ",".join(str(v) for v in values)


def to_annotations(config: CaptureConfig) -> tuple[dict[str, str], tuple[str, ...]]:
    """The pod annotations with which the injector of ``config.version`` produces ``config``.

    The inverse of the annotation path of ``pod_capture``: returns ``(annotations, notes)``; the
    notes name what has to come from the pod itself (an IPv6 address, its nameservers). Settings no
    annotation can express (proxy ports and ids, TPROXY mark/table, exclusions without the
    injector's own ports, CNI-only DNS capture-all …) raise ``UnsupportedError`` naming them.
    """
    c = config
    m = c.minor
    problems = [what for what, bad in (
        (f"proxy port (always {defaults.PROXY_OUTBOUND_PORT})", c.proxy_port != defaults.PROXY_OUTBOUND_PORT),
        ("inbound tunnel port (always 15008)", c.inbound_tunnel_port != 15008),
        (f"proxy uid/gid (always {defaults.PROXY_UID})",
         c.proxy_uids != (str(defaults.PROXY_UID),) or c.proxy_gids != (str(defaults.PROXY_GID),)),
        ("TPROXY mark / route table", c.tproxy_mark != 1337 or c.tproxy_route_table != 133),
        ("capture-all DNS (istio-cni only)", c.capture_all_dns),
        ("DISABLE_REDIRECTION_ON_LOCAL_LOOPBACK", c.disable_redirection_on_local_loopback),
    ) if bad]
    wildcard_in = c.inbound_ports == WILDCARD
    if m >= 3:
        if c.inbound_capture_port not in (None, defaults.PROXY_INBOUND_PORT):
            problems.append(f"inbound capture port (always {defaults.PROXY_INBOUND_PORT})")
    elif c.inbound_capture_port != (defaults.PROXY_INBOUND_PORT if m == 2 and wildcard_in else None):
        problems.append(f"inbound capture port {c.inbound_capture_port} in Istio {c.version}")
    ann: dict[str, str] = {}
    if c.mode != "REDIRECT":
        ann[A_MODE] = c.mode
    if m <= 2 or not wildcard_in:
        ann[A_IN_PORTS] = _csv(c.inbound_ports)
    exclusions = list(c.inbound_ports_exclude)
    if m == 0:
        if exclusions:
            ann[A_EX_IN_PORTS] = _csv(exclusions)
    else:
        prefix = [15090, 15021] if m >= 6 else [15090] if m == 5 else []
        if exclusions[:len(prefix)] != prefix:
            problems.append(f"inbound exclusions {_csv(exclusions)!r} (the injector always starts them "
                            f"with {_csv(prefix)!r})")
        rest = exclusions[len(prefix):]
        if rest and rest[-1] == 15020:
            rest = rest[:-1]
        else:
            ann[A_STATUS_PORT] = "0"
        if rest:
            ann[A_EX_IN_PORTS] = _csv(rest)
    if c.outbound_cidrs != WILDCARD:
        ann[A_IN_CIDRS] = _csv(c.outbound_cidrs)
    if c.outbound_cidrs_exclude:
        ann[A_EX_CIDRS] = _csv(c.outbound_cidrs_exclude)
    optional = ((A_OUT_PORTS, c.outbound_ports, 7), (A_EX_OUT_PORTS, c.outbound_ports_exclude, 2),
                (A_REROUTE if m >= 25 else A_KUBEVIRT, c.reroute_interfaces, 1),
                (A_EX_IFACES, c.exclude_interfaces, 15))
    for key, values, since in optional:
        if values:
            if m < since:
                problems.append(f"{key} (the Istio {c.version} injector ignores it)")
            ann[key] = _csv(values)
    metadata: dict[str, str] = {env: "true" for name, env in _PROXY_METADATA_BOOLS if getattr(c, name)}
    if c.owner_groups_include != WILDCARD:
        metadata["ISTIO_OUTBOUND_OWNER_GROUPS"] = _csv(c.owner_groups_include)
    if c.owner_groups_exclude:
        metadata["ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE"] = _csv(c.owner_groups_exclude)
    if str(c.host_ipv4_loopback_cidr) != "127.0.0.1/32":
        metadata["ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR"] = str(c.host_ipv4_loopback_cidr)
    if metadata:
        ann[A_PROXY_CONFIG] = yaml.safe_dump({"proxyMetadata": metadata}, default_flow_style=False)
    if problems:
        raise UnsupportedError(f"no pod annotation expresses: {'; '.join(problems)}")
    notes: list[str] = []
    if c.enable_ipv6:
        notes.append("IPv6 rules need the pod to have an IPv6 address (status.podIPs)")
    if c.dns_servers_v4 or c.dns_servers_v6:
        servers = ",".join(str(a) for a in (*c.dns_servers_v4, *c.dns_servers_v6))
        notes.append(f"DNS rules need the pod's nameservers ({servers}) in its resolv.conf")
    return ann, tuple(notes)
