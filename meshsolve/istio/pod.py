"""Kubernetes Pod manifests (``kubectl get pod -o yaml``, a ``List`` of pods, or a workload with a pod
template) → the capture configuration Istio's injector would give each pod.

Two sources, in this order:

1. **The injected ``istio-init`` container** (the pod was already injected): its command/args and
   env are parsed as istio-iptables flags — that is what really ran. The version comes from the
   caller, else from the image tag (``proxyv2:1.10.2`` → 1.10), else ``current``.
2. **Annotations and container ports** (not injected yet): the injector's template per version —
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

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs
import yaml

from meshsolve.errors import SpecError
from meshsolve.istio.config import (
    WILDCARD,
    CaptureConfig,
    minor_of,
    normalise_version,
    validate_cidrs,
    validate_names,
    validate_ports,
    validate_value,
)
from meshsolve.istio.flags import parse_flags
from meshsolve.model.net import IPAddress, to_address

__all__ = ["ANNOTATIONS", "PodCapture", "injector_args", "load_pods", "pod_capture", "pods_from_file",
           "pods_from_text"]

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
ANNOTATIONS = (A_MODE, A_INJECT, A_IN_PORTS, A_EX_IN_PORTS, A_IN_CIDRS, A_EX_CIDRS, A_OUT_PORTS,
               A_EX_OUT_PORTS, A_KUBEVIRT, A_REROUTE, A_EX_IFACES, A_STATUS_PORT, A_PROXY_CONFIG)

_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "ReplicationController"}
_TAG_RE = re.compile(r":v?(1\.\d{1,2})(?:[.\-][^/]*)?$")


@attrs.frozen
class PodCapture:
    """One pod's capture set-up: the configuration, what it was read from, and the argv/env used."""

    name: str
    namespace: str
    config: CaptureConfig
    basis: Literal["istio-init", "annotations", "not-injected"]
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    pod_ips: tuple[IPAddress, ...] = ()
    notes: tuple[str, ...] = ()


class _Where:
    """Finds the line of a key in the manifest text, for error messages."""

    def __init__(self, text: str, source: str) -> None:
        self.lines = text.splitlines()
        self.source = source

    def line(self, key: str) -> int | None:
        for n, line in enumerate(self.lines, 1):
            stripped = line.strip().lstrip("-").strip()
            if stripped.startswith((key + ":", f'"{key}":', f"'{key}':")):
                return n
        return None


def load_pods(text: str, source: str = "<manifest>") -> tuple[Mapping[str, Any], ...]:
    """Every pod (or pod template) in a YAML stream: ``Pod``, ``List`` of them, or workloads."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise SpecError(f"not valid YAML: {getattr(exc, 'problem', exc)}", source=source,
                        lineno=None if mark is None else mark.line + 1) from None
    pods: list[Mapping[str, Any]] = []

    def visit(doc: Any) -> None:
        if not isinstance(doc, Mapping):
            raise SpecError("expected a Kubernetes object (a mapping)", source=source)
        kind = doc.get("kind")
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
        else:
            raise SpecError(f"expected kind Pod or List, got {kind!r}", source=source)

    for d in docs:
        visit(d)
    if not pods:
        raise SpecError("no pod in the manifest", source=source)
    return tuple(pods)


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


def _pod_ips(pod: Mapping[str, Any]) -> tuple[IPAddress, ...]:
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


def pod_capture(pod: Mapping[str, Any], *, version: str | None = None, source: str = "<manifest>",
                text: str = "") -> PodCapture:
    """The capture configuration of one pod (see the module docstring for the rules)."""
    where = _Where(text, source)
    meta = pod.get("metadata") or {}
    name, namespace = str(meta.get("name", "pod")), str(meta.get("namespace", "default"))
    spec = pod.get("spec") or {}
    ips = _pod_ips(pod)
    ipv6 = bool(ips) and ips[0].version == 6
    dns = _dns_servers(pod, source, where)
    init = next((c for c in spec.get("initContainers") or () if isinstance(c, Mapping)
                 and c.get("name") == "istio-init"), None)
    if init is not None:
        tokens = [str(t) for t in (init.get("command") or ())] + [str(t) for t in (init.get("args") or ())]
        env = {str(e.get("name")): str(e.get("value", "")) for e in init.get("env") or ()
               if isinstance(e, Mapping) and "value" in e}
        ver = normalise_version(version) if version else (_version_from_image(str(init.get("image", "")))
                                                          or "current")
        cfg = parse_flags(tokens, env, version=ver, source=f"{source}: initContainers[istio-init]")
        cfg = _with_pod_facts(cfg, ipv6, dns, env_given="ENABLE_INBOUND_IPV6" in env)
        return PodCapture(name, namespace, cfg, "istio-init", tuple(tokens), tuple(sorted(env.items())), ips,
                          (f"read the injected istio-init container (Istio {ver})",))
    ver = normalise_version(version or "current")
    annotations = _str_map(meta.get("annotations"))
    if annotations.get(A_INJECT, "").strip().lower() == "false":
        return PodCapture(name, namespace, CaptureConfig(version=ver, mode="NONE"), "not-injected",
                          pod_ips=ips, notes=(f"{A_INJECT} is false: no sidecar, no capture",))
    argv, env, notes = injector_args(pod, ver, source=source, text=text)
    if argv is None:
        return PodCapture(name, namespace, CaptureConfig(version=ver, mode="NONE"), "annotations",
                          pod_ips=ips, notes=notes)
    cfg = parse_flags(argv, env, version=ver, source=f"{source}: injector template")
    cfg = _with_pod_facts(cfg, ipv6, dns, env_given=False)
    return PodCapture(name, namespace, cfg, "annotations", argv, tuple(sorted(env.items())), ips, notes)


def _with_pod_facts(cfg: CaptureConfig, ipv6: bool, dns: tuple[IPAddress, ...], *, env_given: bool) -> CaptureConfig:
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


def injector_args(pod: Mapping[str, Any], version: str, *, source: str = "<manifest>",
                  text: str = "") -> tuple[tuple[str, ...] | None, dict[str, str], tuple[str, ...]]:
    """The istio-init argv and env the injector of ``version`` builds for ``pod``.

    Returns ``(None, {}, notes)`` when no istio-init would be added (interception mode ``NONE``).
    Annotation values are validated here so errors name the annotation.
    """
    where = _Where(text, source)
    m = minor_of(normalise_version(version))
    meta = pod.get("metadata") or {}
    ann = _str_map(meta.get("annotations"))
    notes: list[str] = []

    def get(key: str) -> str | None:
        if key not in ann:
            return None
        validate_value(ann[key], what=f"annotation {key}", source=source, lineno=where.line(key))
        return ann[key]

    def check(key: str, kind: str) -> str | None:
        value = get(key)
        if value is None:
            return None
        kw: dict[str, Any] = {"what": f"annotation {key}", "source": source, "lineno": where.line(key)}
        if kind == "ports":
            validate_ports(value, **kw)
        elif kind == "ports*":
            validate_ports(value, wildcard=True, **kw)
        elif kind == "cidrs*":
            validate_cidrs(value, wildcard=True, **kw)
        elif kind == "cidrs":
            validate_cidrs(value, **kw)
        elif kind == "names":
            validate_names(value, **kw)
        elif kind == "port":
            got = validate_ports(value, **kw)
            if len(got) != 1:
                raise SpecError(f"annotation {key}: {value!r} is not one port number", **kw)
        return value

    mode = (get(A_MODE) or "REDIRECT").strip().upper()
    if mode not in ("REDIRECT", "TPROXY", "NONE"):
        raise SpecError(f"annotation {A_MODE}: {ann[A_MODE]!r} is not REDIRECT, TPROXY or NONE",
                        source=source, lineno=where.line(A_MODE))
    if mode == "NONE":
        return None, {}, (f"{A_MODE} is NONE: the injector adds no istio-init",)
    include_cidrs = check(A_IN_CIDRS, "cidrs*")
    exclude_cidrs = check(A_EX_CIDRS, "cidrs")
    in_ports = check(A_IN_PORTS, "ports*")
    ex_in_ports = check(A_EX_IN_PORTS, "ports") or ""
    status = check(A_STATUS_PORT, "port")
    out_ports = check(A_OUT_PORTS, "ports")
    ex_out_ports = check(A_EX_OUT_PORTS, "ports")
    reroute = check(A_REROUTE, "names")
    kubevirt = check(A_KUBEVIRT, "names")
    ex_ifaces = check(A_EX_IFACES, "names")

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
    argv: list[str] = ["-p", "15001"]
    if m >= 3:
        argv += ["-z", "15006"]
    argv += ["-u", "1337", "-m", mode, "-i", include_cidrs if include_cidrs is not None else WILDCARD,
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
        env["INBOUND_CAPTURE_PORT"] = "15006"
    proxy_config = get(A_PROXY_CONFIG)
    if proxy_config is not None:
        try:
            pc = yaml.safe_load(proxy_config) or {}
        except yaml.YAMLError:
            raise SpecError(f"annotation {A_PROXY_CONFIG}: not valid YAML", source=source,
                            lineno=where.line(A_PROXY_CONFIG)) from None
        if not isinstance(pc, Mapping):
            raise SpecError(f"annotation {A_PROXY_CONFIG}: expected a mapping", source=source,
                            lineno=where.line(A_PROXY_CONFIG))
        for k, v in _str_map(pc.get("proxyMetadata")).items():
            validate_value(v, what=f"annotation {A_PROXY_CONFIG} proxyMetadata.{k}", source=source,
                           lineno=where.line(A_PROXY_CONFIG))
            env[k] = v
        if "interceptionMode" in pc and A_MODE not in ann:
            notes.append("proxy.istio.io/config interceptionMode is not read; use the annotation")
    return tuple(argv), env, tuple(notes)


def pods_from_text(text: str, *, version: str | None = None, source: str = "<manifest>") -> tuple[PodCapture, ...]:
    """Every pod's capture set-up in a manifest text."""
    return tuple(pod_capture(p, version=version, source=source, text=text) for p in load_pods(text, source))


def pods_from_file(path: str | Path, *, version: str | None = None) -> tuple[PodCapture, ...]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"cannot read manifest: {exc.strerror}", source=str(p)) from None
    return pods_from_text(text, version=version, source=str(p))
