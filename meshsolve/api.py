"""Thin convenience functions over the layers: load a capture set-up, build a world, ask, get a verdict.

Everything here delegates to the layer that does the work (``meshsolve.istio``, ``meshsolve.iptables``,
``meshsolve.analysis``, ``meshsolve.semantics``); the functions exist so that a user's script or test
needs one import and so that each question states, in one place, what its answer proves and what it
assumes.

What every answer assumes (the model)
-------------------------------------
* **First TCP connections only.** A flow is one connection attempt (its SYN) plus the connections the
  sidecar opens because of it. UDP, established traffic and replies are not questions meshsolve
  answers; a UDP flow finds no socket.
* **Modelled rules.** The matches ``-s -d -i -o -p``, ``--sport/--dport`` (and ``--syn``),
  ``multiport``, ``owner`` (numeric ids), ``mark``, ``connmark``, ``conntrack --ctstate``/``state``
  (a first packet is ``NEW``, plus ``DNAT`` after a rewrite), ``addrtype`` and ``comment``; the
  targets ``ACCEPT DROP REJECT RETURN``, jumps and gotos, ``REDIRECT``, ``TPROXY``, ``MARK``,
  ``CONNMARK``, ``DNAT``, ``LOG``, ``TRACE`` and ``CT --zone``. Anything else (an ``OpaqueMatch`` such
  as ``-m length``, ``-m socket``, other tcp/conntrack options, owner *names*, ``SNAT``/``MASQUERADE``,
  ``CT --notrack``, an ``OpaqueTarget`` such as ``NFQUEUE``) is *opaque*: a proof holds whatever such
  a rule does (it is listed in ``Proved.assumes``), and a counterexample that depends on one becomes
  ``Unknown`` naming the rule — never a guess.
* **Hop bound.** A flow is followed for at most ``hops`` connections (default 8); a proxy seeing the
  same original destination twice, or a flow longer than the bound, is a ``Loop``. A ``Proved``
  verdict is a proof for every connection in the property's scope *up to that bound*.
* **The proxy is a model.** ``ProxyBehavior`` (per Istio version: ``meshsolve.istio.proxy_behavior``)
  says where the sidecar forwards; Envoy's own refusal of traffic addressed to its listener ports is
  not modelled (``NoLoops`` leaves those ports out by default).
* **Worlds built from partial inputs use stated defaults**: documentation addresses
  (pod 192.0.2.10 / 2001:db8::10, peer .20) when a manifest or dump has none; apps bound to the
  wildcard address on their declared ports; uid/gid 1000 when a container does not say.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import meshsolve.defaults as defaults
from meshsolve.errors import WorldError

if TYPE_CHECKING:
    from meshsolve.analysis.check import Verdict
    from meshsolve.analysis.diff import DiffResult
    from meshsolve.analysis.properties import Property
    from meshsolve.analysis.spec import Spec
    from meshsolve.analysis.synth import Conflict, Synthesized, SynthUnknown
    from meshsolve.istio.config import CaptureConfig
    from meshsolve.model.net import IPAddress
    from meshsolve.model.rules import Rulesets
    from meshsolve.model.world import App, Flow, Service, World
    from meshsolve.semantics.trace import Result

__all__ = [
    "DEFAULT_HOPS",
    "audit",
    "check",
    "diff",
    "interpret",
    "synthesize",
    "world_from_dump",
    "world_from_flags",
    "worlds_from_manifest",
    "worlds_from_manifest_text",
]

DEFAULT_HOPS = defaults.HOPS  # kept for callers that imported it from here
_SIDECAR_CONTAINERS = frozenset({"istio-proxy", "istio-init", "istio-validation"})


# --- loading: a configuration, a manifest, a dump → a World ---------------------------------------


def world_from_flags(argv: Sequence[str] = (), env: Mapping[str, str] | None = None, *,
                     version: str = "current", apps: tuple[App, ...] | None = None,
                     services: tuple[Service, ...] = (), pod_ips: tuple[IPAddress, ...] | None = None,
                     name: str = "pod", namespace: str = "default") -> World:
    """The world of a pod whose ``istio-init`` ran with ``argv``/``env`` under Istio ``version``.

    The rules are what that version's istio-iptables installs for those flags
    (``meshsolve.istio.generate``), the proxy is that version's sidecar
    (``meshsolve.istio.proxy_behavior``). Without ``apps``: one app (uid/gid 1000) listening on the
    wildcard address on the ``-b`` ports (8080 when ``-b`` is ``*`` or empty). Without ``pod_ips``:
    192.0.2.10 (and 2001:db8::10 when the rules have IPv6 tables). Raises ``SpecError`` for a flag
    or value that version does not accept.
    """
    from meshsolve.analysis.worlds import world_from_config
    from meshsolve.istio import parse_flags

    config = parse_flags(argv, env, version=version)
    return world_from_config(config, apps=apps, services=services, pod_ips=pod_ips, name=name,
                             namespace=namespace)


def worlds_from_manifest(path: str | os.PathLike[str], *, version: str | None = None) -> tuple[World, ...]:
    """One world per pod (or pod template) in a Kubernetes manifest file.

    See :func:`worlds_from_manifest_text`; errors name the file and, where known, the line.
    """
    from meshsolve.errors import SpecError

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"cannot read manifest: {exc.strerror}", source=str(p)) from None
    return worlds_from_manifest_text(text, version=version, source=str(p))


def worlds_from_manifest_text(text: str, *, version: str | None = None,
                              source: str = "<manifest>") -> tuple[World, ...]:
    """One world per pod in manifest ``text`` (a Pod, a ``List``, or workloads with a pod template).

    The capture configuration is what the pod's injected ``istio-init`` ran, else what Istio's
    injector (or istio-cni) would give it from its annotations (``meshsolve.istio.pods_from_text``;
    ``version`` overrides the version read from the image tag, default ``current``). The apps are
    the pod's containers (the sidecar's own left out), each with ``securityContext.runAsUser`` /
    ``runAsGroup`` (container, else pod level, else 1000) and a listening TCP socket on the wildcard
    address for each declared ``containerPort`` — a manifest does not say which address an app
    binds, so a loopback- or pod-IP-only listener must be modelled by hand (``attrs.evolve`` the
    world's apps). A port declared twice in one pod is kept once; a container port that is one of
    the sidecar's listener ports is a ``WorldError`` (the pod could not run). Pod addresses are
    ``status.podIPs`` when present, else the documentation defaults.
    """
    from meshsolve.analysis.worlds import world_from_config
    from meshsolve.istio import generate
    from meshsolve.istio.pod import load_pods, pod_capture

    worlds = []
    for pod in load_pods(text, source):
        capture = pod_capture(pod, version=version, source=source, text=text)
        rules = generate(capture.config)
        ipv6 = any(a.version == 6 for a in capture.pod_ips) or (not capture.pod_ips and not rules.ipv6.empty)
        apps = _apps_of(pod, ipv6=ipv6, reserved=_proxy_ports(capture.config))
        worlds.append(world_from_config(capture.config, rules=rules, apps=apps,
                                        pod_ips=capture.pod_ips or None, name=capture.name,
                                        namespace=capture.namespace))
    return tuple(worlds)


def world_from_dump(dump: str | os.PathLike[str] | Rulesets, *, version: str = "current",
                    flags: Sequence[str] = (), env: Mapping[str, str] | None = None,
                    apps: tuple[App, ...] | None = None, services: tuple[Service, ...] = (),
                    pod_ips: tuple[IPAddress, ...] | None = None, name: str = "pod",
                    namespace: str = "default") -> World:
    """The world of a pod whose rules were dumped (``iptables-save``, restore input, an Istio dry-run
    transcript, ``kubectl logs -c istio-init``: any form ``meshsolve.iptables.parse_file`` reads).

    ``dump`` is a file path or already-parsed ``Rulesets``. The rules are taken as they are; only the
    sidecar's behaviour comes from ``version`` (and ``flags``/``env``, for a non-default proxy port,
    uid or interception mode). Defaults for apps and addresses as in :func:`world_from_flags`.
    """
    from meshsolve.analysis.worlds import world_from_rules
    from meshsolve.iptables import parse_file
    from meshsolve.istio import parse_flags, proxy_behavior
    from meshsolve.model.rules import Rulesets as _Rulesets

    rules = dump if isinstance(dump, _Rulesets) else parse_file(dump)
    config = parse_flags(flags, env, version=version)
    return world_from_rules(rules, proxy_behavior(version, config), apps=apps, services=services,
                            pod_ips=pod_ips, name=name, namespace=namespace)


def _proxy_ports(config: CaptureConfig) -> frozenset[int]:
    return frozenset({config.proxy_port, config.effective_inbound_capture_port()})


def _int_or(value: Any, default: int) -> int:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else default


def _apps_of(pod: Mapping[str, Any], *, ipv6: bool, reserved: frozenset[int]) -> tuple[App, ...]:
    from meshsolve.model.world import App, Socket

    spec = pod.get("spec") or {}
    pod_sc = spec.get("securityContext") or {}
    bind = "::" if ipv6 else "0.0.0.0"
    apps: list[App] = []
    taken: set[int] = set()
    for c in spec.get("containers") or ():
        if not isinstance(c, Mapping) or c.get("name") in _SIDECAR_CONTAINERS:
            continue
        name = str(c.get("name", f"container{len(apps)}"))
        if name in ("peer", "proxy"):
            name = f"{name}-container"
        sc = c.get("securityContext") or {}
        uid = _int_or(sc.get("runAsUser"), _int_or(pod_sc.get("runAsUser"), defaults.APP_UID))
        gid = _int_or(sc.get("runAsGroup"), _int_or(pod_sc.get("runAsGroup"), defaults.APP_GID))
        sockets = []
        for p in c.get("ports") or ():
            if not isinstance(p, Mapping) or str(p.get("protocol", "TCP")).upper() != "TCP":
                continue
            port = _int_or(p.get("containerPort"), -1)
            if port in taken or port < 0:
                continue
            if port in reserved:
                raise WorldError(f"container {name!r} declares port {port}, a sidecar listener port")
            taken.add(port)
            sockets.append(Socket(bind, port))
        apps.append(App(name, uid=uid, gid=gid, sockets=tuple(sockets)))
    return tuple(apps)


# --- questions -----------------------------------------------------------------------------------


def interpret(world: World, flow: Flow, *, max_hops: int = defaults.HOPS) -> Result:
    """Follow one concrete ``flow`` through ``world`` and say how it ends, with a numbered trace.

    Proves nothing beyond this one flow: it is the concrete semantics (kernel hooks in order, nat
    once per connection, socket lookup, the proxy's forwarding) that every solver answer is replayed
    in. Assumes a TCP first connection and at most ``max_hops`` connections; a decision that rests on
    an opaque rule ends as ``Undetermined`` naming the rule. Raises ``WorldError`` when the flow
    cannot start (unknown client, no address of its family, no such service endpoint).
    """
    from meshsolve.semantics.interpret import interpret as _interpret

    return _interpret(world, flow, max_hops=max_hops)


def check(world: World, prop: Property, *, hops: int = defaults.HOPS,
          timeout_ms: int = defaults.TIMEOUT_MS) -> Verdict:
    """Prove or refute one property (``Reachable``, ``CaptureOutbound``, ``CaptureInbound``, ``Bypass``,
    ``NoLoops``, ``NoExposure``, ``Observation``) in ``world``.

    * ``Proved``: Z3 found no first TCP connection in the property's scope (every address family of
      the world it ranges over; every source port, destination and process id the scope allows, every
      service endpoint choice) that violates it, within ``hops`` connections. Opaque rules the proof
      holds regardless of are listed in ``Proved.assumes``.
    * ``Refuted``: a concrete counterexample ``flow``, replayed by the interpreter (``result`` holds its
      numbered trace). A replay that disagrees with the solver raises ``InternalError``: never a
      silent answer.
    * ``Unknown``: the solver gave up within ``timeout_ms``, or the only counterexamples depend on an
      opaque rule (named in ``reason``).
    """
    from meshsolve.analysis.check import check as _check

    return _check(world, prop, hops=hops, timeout_ms=timeout_ms)


def audit(world: World, properties: Iterable[Property] | None = None, *, hops: int = defaults.HOPS,
          timeout_ms: int = defaults.TIMEOUT_MS) -> tuple[Verdict, ...]:
    """:func:`check` each property; without ``properties``, what every capture set-up should satisfy
    (``meshsolve.analysis.properties.default_properties``): outbound capture of the apps' traffic,
    inbound capture of the ports the apps listen on, bypass of the proxy's own traffic, no loops, no
    exposure of localhost-only sockets. Same guarantees and assumptions as :func:`check`: each
    ``Proved`` covers every first TCP connection of that property's scope within ``hops`` connections.
    """
    from meshsolve.analysis.properties import default_properties

    props = default_properties(world) if properties is None else tuple(properties)
    return tuple(check(world, p, hops=hops, timeout_ms=timeout_ms) for p in props)


def diff(a: World, b: World, *, hops: int = defaults.HOPS,
         timeout_ms: int = defaults.TIMEOUT_MS) -> list[DiffResult]:
    """Compare two worlds (e.g. one pod's rules under two Istio versions) over every first connection.

    Per address family both worlds have, and per client kind (the remote peer, when both worlds
    have the same peer address; any process in the pod, the proxy included), Z3 looks for a first
    TCP connection that ends differently: outcome class, the app and socket reached, the source
    address the app sees, or the proxy sides that observe it. The answer is ``[Equivalent]`` — a
    proof over all those connections within ``hops`` connections — or one ``Different`` per scope
    (the flow and both interpreter results, each with its numbered trace) and/or ``DiffUnknown``
    (solver gave up, or the difference rests on an opaque rule). Connections the two worlds'
    *apps* open are compared by uid/gid, so give both worlds the same apps.
    """
    from meshsolve.analysis.diff import diff as _diff

    return _diff(a, b, hops=hops, timeout_ms=timeout_ms)


# --- synthesis -------------------------------------------------------------------------------------


def synthesize(spec: Spec, *, progress: Callable[[str], None] | None = None
               ) -> Synthesized | Conflict | SynthUnknown:
    """The smallest capture set-up that meets every goal of ``spec`` (``load_spec``/``parse_spec``), or
    a minimal set of goals no set-up of the search space can meet together.

    * ``Synthesized``: the searched chain's rules and the proxy knob values, minimal in the spec's
      ``minimize`` order among the rule lists of the vocabulary (at most ``search.max_rules`` rules
      built from ``search.conditions`` and ``search.targets``), and, for every goal, a ``Proved``
      verdict of ``check`` on the resulting world (``proofs``) — so the guarantees and assumptions of
      :func:`check` apply: first TCP connections, the modelled rules, the hop bound.
    * ``Conflict``: the named goals cannot all hold for any rule list of the vocabulary with any knob
      values, and each proper subset of them was synthesized and proved (``subsets``), so every goal
      named is needed; ``flows`` are the example connections that pin the conflict. "No set-up" is
      relative to the search space: a richer vocabulary may meet the goals.
    * ``SynthUnknown``: the solver hit its time or resource limit — no claim either way.

    Raises ``UnsupportedError`` when a goal cannot be expressed, ``SpecError`` for a bad spec.
    Emit a result with ``meshsolve.emit(result, "script" | "restore" | "args" | "annotations" | "json")``.
    """
    from meshsolve.analysis.synth import synthesize as _synthesize

    return _synthesize(spec, progress=progress)
