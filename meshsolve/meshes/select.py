"""Which mesh a pod or a ruleset belongs to, each mesh's set-up for a pod, and which rules are the mesh's.

* :func:`mesh_of_pod` reads the pod: its injected init container (``istio-init``, ``linkerd-init``,
  ``kuma-init``, consul-k8s's ``consul-connect-inject-init``), then its sidecar container
  (``istio-proxy``, ``linkerd-proxy``, ``kuma-sidecar``, ``consul-dataplane``/``envoy-sidecar``), then
  the meshes' own annotations; :func:`select_mesh` is that choice with a user's override (``--mesh``).
* :func:`setup_for_pod` gives the chosen mesh's :class:`MeshSetup` for the pod, :func:`default_setup`
  the mesh's defaults when there is no pod.
* :func:`mesh_of_rules` names the mesh from the chains of a dump; :func:`own_rule` says whether a
  rule is the mesh's (in one of its chains, jumping to one, carrying its comment label, or one of the
  rules its generator puts into a built-in chain) — the cohabitation audit's notion of "the mesh's
  own chains".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from meshsolve.errors import SpecError, WorldError
from meshsolve.istio.config import CaptureConfig, normalise_version
from meshsolve.istio.flags import parse_flags
from meshsolve.istio.generate import generate as istio_generate
from meshsolve.istio.pod import injector_args, pod_capture
from meshsolve.istio.proxy import proxy_behavior as istio_proxy
from meshsolve.meshes import consul, kuma, linkerd
from meshsolve.meshes.common import MeshSetup
from meshsolve.model.net import IPAddress, to_address
from meshsolve.model.rules import CommentMatch, Goto, Jump, Rule, Rulesets

__all__ = ["MESHES", "SIDECAR_CONTAINERS", "MeshChoice", "default_setup", "istio_setup", "mesh_of_pod",
           "mesh_of_rules", "own_rule", "owns_chain", "pod_ips_of", "select_mesh", "setup_for_pod"]

MESHES: tuple[str, ...] = ("istio", "linkerd", "kuma", "consul")


@attrs.frozen
class MeshChoice:
    """The mesh a pod or dump belongs to, and what showed it."""

    mesh: str
    evidence: str


_INIT: tuple[tuple[str, Callable[[Mapping[str, Any]], bool]], ...] = (
    ("istio", lambda c: c.get("name") == "istio-init"),
    ("linkerd", lambda c: c.get("name") == "linkerd-init" or ("linkerd" in str(c.get("image", ""))
     and "proxy-init" in str(c.get("image", "")))),
    ("kuma", lambda c: c.get("name") == "kuma-init" or "transparent-proxy" in _words(c)),
    ("consul", lambda c: c.get("name") == "consul-connect-inject-init" or "redirect-traffic" in _words(c)),
)
_SIDECAR = {"istio-proxy": "istio", "linkerd-proxy": "linkerd", "kuma-sidecar": "kuma",
            "consul-dataplane": "consul", "envoy-sidecar": "consul"}
#: The meshes' proxy containers (not apps of the pod).
SIDECAR_CONTAINERS: tuple[str, ...] = tuple(_SIDECAR)
_ANNOTATIONS = (("istio", "sidecar.istio.io/status"), ("linkerd", linkerd.A_VERSION),
                ("kuma", kuma.A_INJECTED), ("consul", consul.A_REDIRECT), ("consul", consul.A_INJECT_STATUS))


def _words(c: Mapping[str, Any]) -> list[str]:
    return [str(w) for w in (*(c.get("command") or ()), *(c.get("args") or ()))]


def mesh_of_pod(pod: Mapping[str, Any]) -> MeshChoice | None:
    """The mesh whose sidecar a pod carries (``None``: no mesh's)."""
    spec = pod.get("spec") or {}
    for c in spec.get("initContainers") or ():
        if isinstance(c, Mapping):
            for mesh, test in _INIT:
                if test(c):
                    return MeshChoice(mesh, f"init container {c.get('name')}")
    for c in spec.get("containers") or ():
        if isinstance(c, Mapping) and c.get("name") in _SIDECAR:
            return MeshChoice(_SIDECAR[str(c["name"])], f"sidecar container {c.get('name')}")
    ann = (pod.get("metadata") or {}).get("annotations") or {}
    for mesh, key in _ANNOTATIONS:
        if key in ann:
            return MeshChoice(mesh, f"annotation {key}")
    return None


def pod_ips_of(pod: Mapping[str, Any]) -> tuple[IPAddress, ...]:
    """The pod's addresses from ``status.podIPs`` (else ``status.podIP``), at most one per family."""
    status = pod.get("status") or {}
    items = [str(i.get("ip")) for i in status.get("podIPs") or () if isinstance(i, Mapping) and i.get("ip")]
    if not items and status.get("podIP"):
        items = [str(status["podIP"])]
    out: list[IPAddress] = []
    for item in items:
        try:
            addr = to_address(item)
        except WorldError:
            raise SpecError(f"status.podIPs: {item!r} is not an address", source="<manifest>") from None
        if all(a.version != addr.version for a in out):
            out.append(addr)
    return tuple(out)


def select_mesh(pod: Mapping[str, Any] | None = None, mesh: str | None = None) -> MeshChoice:
    """The mesh to analyse a pod with: ``mesh`` when given (a user's ``--mesh``), else the pod's own
    (``mesh_of_pod``), else Istio (meshsolve's default). ``SpecError`` for an unknown mesh name."""
    if mesh is not None:
        name = mesh.strip().lower()
        if name not in MESHES:
            raise SpecError(f"unknown mesh {mesh!r} (one of {', '.join(MESHES)})", source="--mesh")
        return MeshChoice(name, "--mesh")
    found = mesh_of_pod(pod) if pod is not None else None
    return found or MeshChoice("istio", "no mesh named by the pod: Istio assumed")


def setup_for_pod(pod: Mapping[str, Any], *, mesh: str | None = None, version: str | None = None,
                  source: str = "<manifest>", text: str = "") -> MeshSetup:
    """The capture set-up of ``pod`` under its mesh (or ``mesh``), read from its manifest."""
    choice = select_mesh(pod, mesh)
    notes = [f"mesh {choice.mesh} ({choice.evidence})"]
    if choice.mesh == "istio":
        pc = pod_capture(pod, version=version, source=source, text=text)
        return istio_setup(pc.config, basis=pc.basis, notes=(*notes, *pc.notes))
    if choice.mesh == "linkerd":
        lc, basis, more = linkerd.config_from_pod(pod, version=version, source=source)
        return linkerd.setup(lc, basis=basis, notes=(*notes, *more))
    if choice.mesh == "kuma":
        kc, basis, more = kuma.config_from_pod(pod, version=version, source=source)
        return kuma.setup(kc, basis=basis, notes=(*notes, *more))
    cc, basis, more = consul.config_from_pod(pod, source=source)
    return consul.setup(cc, basis=basis, notes=(*notes, *more))


def istio_setup(config: CaptureConfig, *, basis: str, notes: Iterable[str] = ()) -> MeshSetup:
    """Istio's sidecar set-up for ``config``, with what its rules exempt: the proxy's uids and gids
    (the owner-group rules aside), the excluded outbound ports and CIDRs."""
    proxy = istio_proxy(config.version, config)
    uids = [int(u) for u in config.proxy_uids if u.isdigit()]
    gids = [int(g) for g in config.proxy_gids if g.isdigit()]
    return MeshSetup("istio", config.version, istio_generate(config), proxy, basis, tuple(notes),
                     exempt_uids=uids, exempt_gids=gids, exempt_ports=tuple(config.outbound_ports_exclude),
                     exempt_cidrs=tuple(str(n) for n in config.outbound_cidrs_exclude))


def default_setup(mesh: str, version: str | None = None) -> MeshSetup:
    """A mesh's set-up with its defaults (Istio: the injector's for a pod exposing 8080)."""
    name = select_mesh(None, mesh).mesh
    if name == "istio":
        ver = normalise_version(version or "current", what="--istio")
        pod = {"kind": "Pod", "metadata": {"name": "pod", "namespace": "default"},
               "spec": {"containers": [{"name": "app", "ports": [{"containerPort": 8080}]}]}}
        argv, env, _ = injector_args(pod, ver)
        assert argv is not None
        return istio_setup(parse_flags(argv, env, version=ver), basis="injector defaults")
    if name == "linkerd":
        return linkerd.setup(linkerd.LinkerdConfig(version=version or "current"), basis="chart defaults")
    if name == "kuma":
        return kuma.setup(kuma.KumaConfig(version=version or "current"), basis="kumactl defaults")
    return consul.setup(consul.ConsulConfig(), basis="consul-k8s defaults")


# -- whose rules ------------------------------------------------------------------------------------

_CHAINS: dict[str, re.Pattern[str]] = {
    "istio": re.compile(r"ISTIO_\w+"),
    "linkerd": re.compile(r"PROXY_INIT_\w+"),
    "kuma": re.compile(r"(?:KUMA_)?MESH_(?:INBOUND|OUTBOUND)(?:_REDIRECT)?"),
    "consul": re.compile(r"CONSUL_(?:PROXY|DNS)_\w+"),
}
_COMMENTS = {"linkerd": linkerd.COMMENT_PREFIX, "kuma": kuma.COMMENT_PREFIX}


def owns_chain(mesh: str, chain: str) -> bool:
    """Whether ``chain`` is one of ``mesh``'s own (user) chains."""
    return bool(_CHAINS[mesh].fullmatch(chain))


def mesh_of_rules(rulesets: Rulesets) -> MeshChoice | None:
    """The mesh whose chains a dump holds (Istio's ambient chains ``ISTIO_PRERT``… are not a sidecar
    set-up and do not count); ``None`` when no mesh's chain is there."""
    found: dict[str, list[str]] = {}
    for rs in (rulesets.ipv4, rulesets.ipv6):
        for t in rs.all_tables():
            for c in t.chains:
                for mesh in MESHES:
                    if owns_chain(mesh, c.name) and not c.name.startswith(("ISTIO_PRERT", "ISTIO_POSTRT")):
                        found.setdefault(mesh, [])
                        if c.name not in found[mesh]:
                            found[mesh].append(c.name)
    if not found:
        return None
    mesh = max(found, key=lambda m: len(found[m]))
    return MeshChoice(mesh, f"its chains {', '.join(found[mesh])}")


def _plain(rule: Rule) -> Rule:
    return Rule(tuple(m for m in rule.matches if not isinstance(m, CommentMatch)), rule.target)


def own_rule(mesh: str, table: str, chain: str, rule: Rule, reference: Rulesets | None = None,
             family: str = "ipv4") -> bool:
    """Whether ``rule`` (in ``table``/``chain``) is ``mesh``'s: in one of its chains, jumping to one,
    carrying its comment label, or — in a built-in chain — one of the rules ``reference`` (the
    mesh's generated rules for this pod) puts there."""
    if owns_chain(mesh, chain):
        return True
    if isinstance(rule.target, Jump | Goto) and owns_chain(mesh, rule.target.chain):
        return True
    prefix = _COMMENTS.get(mesh)
    if prefix and any(isinstance(m, CommentMatch) and m.text.startswith(prefix) for m in rule.matches):
        return True
    if reference is not None:
        ref = reference.ipv4 if family == "ipv4" else reference.ipv6
        c = ref.chain(table, chain)
        if c is not None and _plain(rule) in {_plain(r) for r in c.rules}:
            return True
    return False
