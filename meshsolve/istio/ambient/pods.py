"""Which pods ambient mode captures, and each one's ``AmbientConfig``, from Kubernetes manifests.

A pod is in the ambient mesh (istio-cni enrolls it) when its namespace or the pod itself is
labelled ``istio.io/dataplane-mode=ambient``, unless the pod opts out (label value ``none``) or
has a sidecar (an ``istio-proxy`` container, or the injector's ``sidecar.istio.io/status``
annotation: a sidecar wins). istio-cni records an enrolled pod with the annotation
``ambient.istio.io/redirection: enabled``, which is what a pod dumped from a cluster shows; a
manifest of ``kubectl get ns,pods -o yaml`` also carries the namespaces' labels.

The pod's own settings (read as istio-cni reads them; booleans as Go's ``strconv.ParseBool``):
``ambient.istio.io/bypass-inbound-capture`` (ingress mode), ``ambient.istio.io/dns-capture``
(the pod's DNS setting), ``istio.io/reroute-virtual-interfaces`` (comma-separated interfaces).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from meshsolve.istio.ambient.config import AmbientConfig, Backend, DnsOverride
from meshsolve.istio.pod import pod_ips_of
from meshsolve.model.net import IPAddress

__all__ = ["BYPASS_INBOUND", "DATAPLANE_MODE", "DNS_CAPTURE", "REDIRECTION", "VIRTUAL_INTERFACES", "AmbientPod",
           "ambient_enrollment", "ambient_pod", "has_sidecar", "namespace_labels", "namespaces_in"]

DATAPLANE_MODE = "istio.io/dataplane-mode"
REDIRECTION = "ambient.istio.io/redirection"
BYPASS_INBOUND = "ambient.istio.io/bypass-inbound-capture"
DNS_CAPTURE = "ambient.istio.io/dns-capture"
VIRTUAL_INTERFACES = "istio.io/reroute-virtual-interfaces"
SIDECAR_STATUS = "sidecar.istio.io/status"

_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


def _map(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): "" if v is None else str(v) for k, v in value.items()}


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def has_sidecar(pod: Mapping[str, Any]) -> bool:
    """An ``istio-proxy`` container (or native sidecar init container), or the injector's status."""
    spec = pod.get("spec") if isinstance(pod.get("spec"), Mapping) else {}
    assert isinstance(spec, Mapping)
    for key in ("containers", "initContainers"):
        for c in spec.get(key) or ():
            if isinstance(c, Mapping) and c.get("name") == "istio-proxy":
                return True
    return SIDECAR_STATUS in _map(_meta(pod).get("annotations"))


def namespace_labels(docs: Any) -> dict[str, dict[str, str]]:
    """The labels of every ``Namespace`` in parsed manifest documents (Lists included)."""
    out: dict[str, dict[str, str]] = {}

    def visit(doc: Any) -> None:
        if not isinstance(doc, Mapping):
            return
        if doc.get("kind") == "Namespace":
            name = _meta(doc).get("name")
            if name is not None:
                out[str(name)] = _map(_meta(doc).get("labels"))
        items = doc.get("items")
        if isinstance(items, list | tuple):
            for item in items:
                visit(item)

    for d in docs if isinstance(docs, list | tuple) else (docs,):
        visit(d)
    return out


def namespaces_in(text: str, source: str = "<manifest>") -> dict[str, dict[str, str]]:
    """The labels of every ``Namespace`` in a YAML stream (``kubectl get ns,pods -o yaml``)."""
    from meshsolve.yamllines import yaml_documents

    return namespace_labels([d for d, _line in yaml_documents(text, source)])


def ambient_enrollment(pod: Mapping[str, Any], namespace: Mapping[str, str] | None = None) -> str | None:
    """Why ambient mode captures ``pod`` (which label or annotation says so), or None.
    ``namespace``: the labels of the pod's namespace, when known."""
    if has_sidecar(pod):
        return None
    labels = _map(_meta(pod).get("labels"))
    annotations = _map(_meta(pod).get("annotations"))
    redirection = annotations.get(REDIRECTION, "").strip()
    if redirection == "enabled":
        return f"annotation {REDIRECTION}=enabled (istio-cni enrolled it)"
    if redirection == "disabled" or labels.get(DATAPLANE_MODE, "").strip() == "none":
        return None
    if labels.get(DATAPLANE_MODE, "").strip() == "ambient":
        return f"pod label {DATAPLANE_MODE}=ambient"
    if namespace is not None and namespace.get(DATAPLANE_MODE, "").strip() == "ambient":
        ns = str(_meta(pod).get("namespace", "default"))
        return f"namespace {ns} label {DATAPLANE_MODE}=ambient"
    return None


@attrs.frozen
class AmbientPod:
    """An ambient pod: its name, configuration, addresses, why it is ambient, and notes."""

    name: str
    namespace: str
    config: AmbientConfig
    pod_ips: tuple[IPAddress, ...]
    reason: str
    notes: tuple[str, ...] = ()


def _bool(annotations: Mapping[str, str], key: str, notes: list[str]) -> bool | None:
    if key not in annotations:
        return None
    v = annotations[key].strip()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    notes.append(f"annotation {key}={v!r} is not a boolean: istio-cni ignores it")
    return None


def _pod_ips(pod: Mapping[str, Any]) -> tuple[IPAddress, ...]:
    """The pod's addresses (``pod_ips_of``, the one reader), the first of each family."""
    out: list[IPAddress] = []
    for a in pod_ips_of(pod):
        if all(x.version != a.version for x in out):
            out.append(a)
    return tuple(out)


def ambient_pod(pod: Mapping[str, Any], *, version: str | None = None, namespace: Mapping[str, str] | None = None,
                redirect_dns: bool | None = None, backend: Backend = "iptables") -> AmbientPod | None:
    """The ambient configuration of ``pod`` (None when ambient mode does not capture it).

    ``version``: the Istio release of istio-cni (default ``current``); ``redirect_dns``: the chart's
    ``cni.ambient.dnsCapture`` (default: the release's); IPv6 rules when the pod has an IPv6 address."""
    reason = ambient_enrollment(pod, namespace)
    if reason is None:
        return None
    meta = _meta(pod)
    annotations = _map(meta.get("annotations"))
    notes: list[str] = [f"ambient mode: {reason}"]
    ingress = _bool(annotations, BYPASS_INBOUND, notes)
    dns = _bool(annotations, DNS_CAPTURE, notes)
    override: DnsOverride = "unset" if dns is None else ("enabled" if dns else "disabled")
    virtual = tuple(x.strip() for x in annotations.get(VIRTUAL_INTERFACES, "").split(",") if x.strip())
    ips = _pod_ips(pod)
    ipv6 = any(a.version == 6 for a in ips)
    config = AmbientConfig(version=version or "current", backend=backend,
                           redirect_dns=redirect_dns, dns_override=override, ingress=bool(ingress),
                           virtual_interfaces=virtual, enable_ipv6=ipv6)
    if redirect_dns is None and override == "unset":
        notes.append(f"DNS capture {'on' if config.dns else 'off'}: the chart's default for Istio {config.version} "
                     "(cni.ambient.dnsCapture) is assumed")
    if ipv6:
        notes.append("IPv6 rules: the pod has an IPv6 address (ENABLE_INBOUND_IPV6 is assumed on)")
    return AmbientPod(str(meta.get("name", "pod")), str(meta.get("namespace", "default")), config, ips, reason,
                      tuple(notes))
