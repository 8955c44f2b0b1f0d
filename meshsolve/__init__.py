"""meshsolve: proofs and synthesis for service-mesh traffic capture.

The public API, in the order a user needs it (every name below is in ``__all__``):

* **Model values** (frozen, hashable): ``World`` (one pod: addresses, ``App``\\ s with their listening
  ``Socket``\\ s, the sidecar's ``ProxyBehavior``, ``Service``\\ s with ``Endpoint``\\ s, the iptables
  ``Rulesets``, the ``IpSet``\\ s its rules look up), ``Flow`` (one first TCP connection: client,
  destination, port), and the rule containers ``Ruleset``/``Table``/``Chain``/``Rule``/``RuleRef``;
  the types their fields use: ``Family``, ``IPAddress``, ``IPNetwork``, ``PortRange``, ``Match``, ``Target``,
  ``Origin``.
* **Loading**: ``parse_text``/``parse_file`` (any iptables text form → ``Rulesets``);
  ``CaptureConfig``/``parse_flags`` (istio-iptables flags of an Istio version), ``pods_from_file``/
  ``pods_from_text`` (Kubernetes manifests), ``generate`` (config → the rules Istio installs),
  ``proxy_behavior`` (the sidecar of a version); worlds: ``world_from_config``/``world_from_rules``,
  the shortcuts ``world_from_flags``/``worlds_from_manifest``/``worlds_from_manifest_text``/
  ``world_from_dump``, ``load_inputs`` (what the command line reads → ``Loaded``: the world, each
  ``Part``'s provenance, ``Given``/``Inferred``/``Assumed``, and the ``Problem``\\ s the inputs
  show), and the seed's built-in pods ``setup_world("A")`` … ``("E")``.
* **Questions**: ``interpret`` (one concrete flow → ``Result`` with a numbered trace); ``check``
  (a property → ``Proved``/``Refuted``/``Unknown``), ``audit`` (several), over the properties
  ``Reachable``, ``CaptureOutbound``, ``CaptureInbound``, ``Bypass``, ``NoLoops``, ``NoExposure``,
  ``Observation``, ``LeavesPod``; ``diff`` (two worlds → ``Equivalent``/``Different``/``DiffUnknown``).
  A verdict names the ``Scope`` (which connections, from which ``ClientKind``) and the ``Pred`` (what
  must hold) it is about;
  a trace's hops have a ``HopKind``, the proxy's sides are ``Side`` values.
* **Synthesis**: ``load_spec``/``parse_spec`` (a YAML ``Spec``: pod, ``Goal``\\ s, ``SearchSpace``) and
  ``synthesize`` (→ the minimal ``Synthesized`` set-up with its proofs, a minimal ``Conflict``, or
  ``SynthUnknown`` when the solver gave up).
* **Emitting**: ``render_save``/``render_restore`` (iptables-save / restore text), ``render_script``
  (a shell script), ``to_flags`` (config → istio-iptables argv + env), ``emit`` (a synthesized
  set-up as a script, restore file, istio-iptables args, pod annotations or JSON).
* **Errors**: everything meshsolve raises on purpose is a ``MeshsolveError``; bad input is a
  ``ParseError``/``SpecError`` (also ``ValueError``), an impossible world a ``WorldError``.

What the answers prove and assume (TCP first connections, the modelled matches, the hop bound,
opaque rules → ``Unknown``) is stated once in :mod:`meshsolve.api` and in each question's docstring.
Hypothesis strategies for your own property tests are in :mod:`meshsolve.strategies`, pytest
``assert_*`` helpers in :mod:`meshsolve.testing`.

Importing ``meshsolve`` is cheap: names are loaded on first use (PEP 562), and the solver (z3) only
when a question that needs it (``check``, ``audit``, ``diff``, ``synthesize``) is first called.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from meshsolve.errors import (
    InternalError,
    MeshsolveError,
    OracleError,
    ParseError,
    SpecError,
    UnsupportedError,
    WorldError,
)

if TYPE_CHECKING:  # the same names, for type checkers and IDEs (kept in sync by tests/test_api_public.py)
    from meshsolve.analysis.check import Proved, Refuted, Unknown, Verdict
    from meshsolve.analysis.diff import Different, DiffResult, DiffUnknown, Equivalent
    from meshsolve.analysis.emit import emit
    from meshsolve.analysis.properties import (
        Bypass,
        CaptureInbound,
        CaptureOutbound,
        LeavesPod,
        NoExposure,
        NoLoops,
        Observation,
        Property,
        Reachable,
        default_properties,
    )
    from meshsolve.analysis.spec import Goal, SearchSpace, Spec, load_spec, parse_spec
    from meshsolve.analysis.synth import Conflict, Synthesized, SynthUnknown
    from meshsolve.analysis.worlds import world_from_config, world_from_rules
    from meshsolve.api import (
        audit,
        check,
        diff,
        interpret,
        load_inputs,
        synthesize,
        world_from_dump,
        world_from_flags,
        worlds_from_manifest,
        worlds_from_manifest_text,
    )
    from meshsolve.inputs import Loaded, Problem
    from meshsolve.iproute import parse_routing
    from meshsolve.iptables import parse_file, parse_text, render_restore, render_save
    from meshsolve.istio import (
        CaptureConfig,
        PodCapture,
        parse_flags,
        pods_from_file,
        pods_from_text,
        proxy_behavior,
        render_script,
        to_flags,
    )
    from meshsolve.istio.generate import generate
    from meshsolve.model.load import LoadProblem
    from meshsolve.model.net import Family, IPAddress, IPNetwork, PortRange
    from meshsolve.model.path import Hook, Stage
    from meshsolve.model.provenance import Assumed, Given, Inferred, Part, Provenance
    from meshsolve.model.routing import Route, RouteKind, Routing, RoutingRule
    from meshsolve.model.rules import (
        BaseChain,
        Chain,
        Match,
        NftTable,
        Origin,
        Rule,
        RuleRef,
        Ruleset,
        Rulesets,
        Table,
        Target,
    )
    from meshsolve.model.world import App, Endpoint, Flow, IpSet, ProxyBehavior, Service, Socket, World
    from meshsolve.semantics.setups import setup_world
    from meshsolve.semantics.trace import (
        Delivered,
        Dropped,
        Egress,
        Failed,
        Hop,
        HopKind,
        Loop,
        Outcome,
        Refused,
        Rejected,
        Result,
        Side,
        Undetermined,
    )
    from meshsolve.smt.query import ClientKind, Condition, Pred, Scope

__version__ = "0.1.0"

# public name -> the module that defines it (loaded on first attribute access)
_LAZY: dict[str, str] = {
    **dict.fromkeys(["App", "Endpoint", "Flow", "IpSet", "ProxyBehavior", "Service", "Socket", "World"],
                    "meshsolve.model.world"),
    **dict.fromkeys(["Family", "IPAddress", "IPNetwork", "PortRange"], "meshsolve.model.net"),
    **dict.fromkeys(["Assumed", "Given", "Inferred", "Part", "Provenance"], "meshsolve.model.provenance"),
    "LoadProblem": "meshsolve.model.load",
    **dict.fromkeys(["Loaded", "Problem"], "meshsolve.inputs"),
    **dict.fromkeys(["Route", "RouteKind", "Routing", "RoutingRule"], "meshsolve.model.routing"),
    "parse_routing": "meshsolve.iproute",
    **dict.fromkeys(["BaseChain", "Chain", "Match", "NftTable", "Origin", "Rule", "RuleRef", "Ruleset", "Rulesets",
                     "Table", "Target"], "meshsolve.model.rules"),
    **dict.fromkeys(["Hook", "Stage"], "meshsolve.model.path"),
    **dict.fromkeys(["parse_file", "parse_text", "render_restore", "render_save"], "meshsolve.iptables"),
    **dict.fromkeys(["CaptureConfig", "PodCapture", "generate", "parse_flags", "pods_from_file",
                     "pods_from_text", "proxy_behavior", "render_script", "to_flags"], "meshsolve.istio"),
    **dict.fromkeys(["world_from_config", "world_from_rules"], "meshsolve.analysis.worlds"),
    "setup_world": "meshsolve.semantics.setups",
    **dict.fromkeys(["Delivered", "Dropped", "Egress", "Failed", "Hop", "HopKind", "Loop", "Outcome", "Refused",
                     "Rejected", "Result", "Side", "Undetermined"], "meshsolve.semantics.trace"),
    **dict.fromkeys(["ClientKind", "Condition", "Pred", "Scope"], "meshsolve.smt.query"),
    **dict.fromkeys(["Bypass", "CaptureInbound", "CaptureOutbound", "LeavesPod", "NoExposure", "NoLoops",
                     "Observation", "Property", "Reachable", "default_properties"], "meshsolve.analysis.properties"),
    **dict.fromkeys(["Proved", "Refuted", "Unknown", "Verdict"], "meshsolve.analysis.check"),
    **dict.fromkeys(["DiffResult", "Different", "DiffUnknown", "Equivalent"], "meshsolve.analysis.diff"),
    **dict.fromkeys(["audit", "check", "diff", "interpret", "load_inputs", "synthesize", "world_from_dump",
                     "world_from_flags", "worlds_from_manifest", "worlds_from_manifest_text"], "meshsolve.api"),
    **dict.fromkeys(["Goal", "SearchSpace", "Spec", "load_spec", "parse_spec"], "meshsolve.analysis.spec"),
    **dict.fromkeys(["Conflict", "SynthUnknown", "Synthesized"], "meshsolve.analysis.synth"),
    "emit": "meshsolve.analysis.emit",
}

__all__ = [
    # model values and the types of their fields
    "App", "BaseChain", "Chain", "Endpoint", "Family", "Flow", "Hook", "IPAddress", "IPNetwork", "IpSet", "Match",
    "NftTable",
    "Origin", "PortRange", "ProxyBehavior", "Route", "RouteKind", "Routing", "RoutingRule", "Rule", "RuleRef",
    "Ruleset", "Rulesets", "Service", "Socket", "Stage", "Table", "Target", "World",
    # loading
    "Assumed", "CaptureConfig", "Given", "Inferred", "LoadProblem", "Loaded", "Part", "PodCapture", "Problem",
    "Provenance",
    "generate", "load_inputs", "parse_file", "parse_flags", "parse_routing", "parse_text", "pods_from_file",
    "pods_from_text", "proxy_behavior", "setup_world", "world_from_config", "world_from_dump",
    "world_from_flags", "world_from_rules", "worlds_from_manifest", "worlds_from_manifest_text",
    # questions and answers
    "Bypass", "CaptureInbound", "CaptureOutbound", "ClientKind", "Delivered", "DiffResult", "DiffUnknown", "Different",
    "Dropped", "Egress", "Equivalent", "Failed", "Hop", "HopKind", "LeavesPod", "Loop", "NoExposure", "NoLoops",
    "Observation", "Outcome", "Pred", "Property", "Proved", "Reachable", "Refused", "Refuted", "Rejected", "Result",
    "Scope", "Side",
    "Undetermined", "Unknown", "Verdict",
    "audit", "check", "default_properties", "diff", "interpret",
    # synthesis
    "Condition", "Conflict", "Goal", "SearchSpace", "Spec", "SynthUnknown", "Synthesized", "load_spec", "parse_spec",
    "synthesize",
    # emitting
    "emit", "render_restore", "render_save", "render_script", "to_flags",
    # errors
    "InternalError", "MeshsolveError", "OracleError", "ParseError", "SpecError", "UnsupportedError",
    "WorldError",
    "__version__",
]

if not TYPE_CHECKING:  # runtime only: type checkers see the imports above, so a typo stays an error

    def __getattr__(name: str) -> Any:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module 'meshsolve' has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # later accesses skip this hook
        return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
