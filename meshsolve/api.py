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
* **Worlds built from partial inputs say what they assume** (``meshsolve.inputs``, the one door for
  manifests, dumps, logs, flags and binds): documentation addresses (pod 192.0.2.10 / 2001:db8::10,
  peer .20) when a manifest or dump has none; apps bound to the wildcard address on their declared
  ports; uid/gid 1000 when a container does not say; with no apps at all, the listeners the rules
  make possible. ``load_inputs`` returns each part's provenance.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import meshsolve.defaults as defaults

if TYPE_CHECKING:
    from meshsolve.analysis.check import Verdict
    from meshsolve.analysis.diff import DiffResult
    from meshsolve.analysis.properties import Property
    from meshsolve.analysis.spec import Spec
    from meshsolve.analysis.synth import Conflict, Synthesized, SynthUnknown
    from meshsolve.inputs import Loaded
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
    "load_inputs",
    "synthesize",
    "world_from_dump",
    "world_from_flags",
    "worlds_from_manifest",
    "worlds_from_manifest_text",
]

DEFAULT_HOPS = defaults.HOPS  # kept for callers that imported it from here


# --- loading: a configuration, a manifest, a dump → a World ---------------------------------------


def world_from_flags(argv: Sequence[str] = (), env: Mapping[str, str] | None = None, *,
                     version: str = "current", apps: tuple[App, ...] | None = None,
                     services: tuple[Service, ...] = (), pod_ips: tuple[IPAddress, ...] | None = None,
                     name: str = "pod", namespace: str = "default") -> World:
    """The world of a pod whose ``istio-init`` ran with ``argv``/``env`` under Istio ``version``.

    The rules are what that version's istio-iptables installs for those flags
    (``meshsolve.istio.generate``), the argv read as that version's flag library read it; the proxy
    is that version's sidecar (``meshsolve.istio.proxy_behavior``). Without ``apps``: the listeners
    the rules make possible (``meshsolve.inputs``): one app on the wildcard address on the ``-b``
    ports, or, with ``-b '*'``, on one port that stands for every port no rule names. Without
    ``pod_ips``: 192.0.2.10 (and 2001:db8::10 when the rules have IPv6 tables). Raises ``SpecError``
    for a flag or value that version does not accept; :func:`load_inputs` also returns the notes and
    the provenance of each part.
    """
    from meshsolve.inputs import from_flags

    return from_flags(argv, env, version=version, apps=apps, services=services, pod_ips=pod_ips,
                      name=name, namespace=namespace).require_world()


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
    """One world per pod in manifest ``text`` (a Pod, a ``List``, workloads with a pod template;
    documents that hold no pod, such as a Service next to a Deployment, are skipped).

    Built by ``meshsolve.inputs`` (the same door as the command line's): the capture configuration is
    what the pod's injected ``istio-init`` ran, else what Istio's injector (or istio-cni) would give it
    from its annotations (``version`` overrides the version read from the image tag, default
    ``current``). The apps are the pod's containers (``meshsolve.inputs.apps_of_pod``: the sidecar's
    own left out; ids from ``securityContext``, else 1000; a wildcard listener per declared TCP
    ``containerPort`` — a manifest does not say which address an app binds, so a loopback- or
    pod-IP-only listener must be modelled by hand with ``attrs.evolve``). A port declared twice, or
    declared on one of the sidecar's listener ports, is left out (with a note in
    ``meshsolve.inputs.worlds_of_manifest``). Pod addresses are ``status.podIPs`` when present, else
    the documentation defaults.
    """
    from meshsolve.inputs import worlds_of_manifest

    return tuple(loaded.require_world() for loaded in worlds_of_manifest(text, version=version, source=source))


def world_from_dump(dump: str | os.PathLike[str] | Rulesets, *, version: str | None = None,
                    flags: Sequence[str] = (), env: Mapping[str, str] | None = None,
                    apps: tuple[App, ...] | None = None, services: tuple[Service, ...] = (),
                    pod_ips: tuple[IPAddress, ...] | None = None, name: str = "pod",
                    namespace: str = "default") -> World:
    """The world of a pod whose rules were dumped (``iptables-save``, ``iptables -t nat -S``, restore
    input, an Istio dry-run transcript, ``kubectl logs -c istio-init``: any form
    ``meshsolve.iptables.read_text`` reads).

    ``dump`` is a file path or already-parsed ``Rulesets``. The rules are taken as they are. The
    sidecar is that of ``version`` when given, else of the Istio versions whose rules the dump's
    fingerprints fit (``meshsolve.istio.fingerprint``); its settings come from ``flags``/``env`` or,
    without them, from the rules. Apps and addresses as in :func:`world_from_flags`. Raises
    ``UnsupportedError`` for another mesh's rules (Linkerd, Kuma, Consul, Istio ambient) or rules that
    capture nothing, and ``SpecError`` for a log of a failed istio-init or a ruleset not installed
    whole (nothing to analyse: :func:`load_inputs` returns those as problems).
    """
    from meshsolve.inputs import from_rules, read_rules
    from meshsolve.model.rules import Rulesets as _Rulesets

    rules = dump if isinstance(dump, _Rulesets) else read_rules(dump)
    return from_rules(rules, version=version, flags=flags, env=env, apps=apps, services=services,
                      pod_ips=pod_ips, name=name, namespace=namespace).require_world()


def load_inputs(*, setup: str | None = None, family: str | None = None, istio: str | None = None,
                flags: Sequence[str] = (), env: Mapping[str, str] | None = None, pod: str | None = None,
                rules: str | None = None, binds: str | None = None, routing: str | None = None) -> Loaded:
    """Everything the command line reads, by file path, as one ``Loaded``: the world (``None`` when
    a problem such as a failed istio-init leaves nothing to analyse), its label, the notes of what
    was read, skipped or assumed, each part's provenance (given / inferred / assumed) and the
    problems the inputs show (``MSH0110``–``MSH0113``). See ``meshsolve.inputs.build``."""
    from meshsolve.inputs import load

    return load(setup=setup, family=family, istio=istio, flags=flags, env=env, pod=pod, rules=rules,
                binds=binds, routing=routing)


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
