"""Findings: what a verdict means for a pod, in the shape istioctl analyze users read.

``findings_for(world, verdict)`` turns a refuted or inconclusive property into one ``Finding``
(a proved property yields none); ``lint_world(world)`` adds the findings that need no solver
(an app running as the proxy's uid/gid). A finding keeps everything it needs as plain values
(strings, the interpreter's ``Result``), so it pickles across processes and renders without the
world.

The rule a finding points at (its ``rule`` and, when the rules came from a file, its
``reference`` ``file:line``) is the *decisive* rule of the witness trace: on the connection leg
that went wrong, the last rule whose matches were more than ``-p tcp`` (see ``decisive_hop``).
"""

from __future__ import annotations

from typing import Any

import attrs

from meshsolve.analysis.check import Refuted, Unknown, Verdict
from meshsolve.analysis.properties import (
    Bypass,
    CaptureInbound,
    CaptureOutbound,
    NoExposure,
    NoLoops,
    Observation,
    Reachable,
)
from meshsolve.model.rules import CommentMatch, Goto, Jump, PortMatch, Protocol, Rule, RuleRef
from meshsolve.model.world import World
from meshsolve.report.catalog import Level, documentation_anchor, message_type
from meshsolve.semantics.trace import Dropped, Failed, Hop, Loop, Rejected, Result, Undetermined

__all__ = ["Finding", "Subject", "findings_for", "lint_world", "subject_of"]


@attrs.frozen
class Subject:
    """The resource a finding is about: ``Pod default/reviews-v1``."""

    kind: str = "Pod"
    namespace: str = "default"
    name: str = "pod"

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


def subject_of(world: World) -> Subject:
    return Subject("Pod", world.namespace, world.name)


@attrs.frozen
class Finding:
    """One finding: a catalog code, its level and message, where it is, and the evidence."""

    code: str
    level: Level
    message: str
    subject: Subject
    property_title: str = ""
    verdict: str = "refuted"  # refuted | unknown | lint
    reference: str | None = None  # file:line of the decisive rule (or manifest line)
    rule: str | None = None  # nat::ISTIO_OUTPUT#1
    witness: str | None = None  # the witness flow, one line
    outcome: str | None = None  # the witness's summary (kernel-facts cell notation)
    result: Result | None = attrs.field(default=None, eq=False, repr=False)

    @property
    def origin(self) -> str:
        """``Pod default/reviews-v1 rules.txt:14`` (the reference only when it is a real file)."""
        return f"{self.subject} {self.reference}" if self.reference else str(self.subject)

    @property
    def related(self) -> str | None:
        return message_type(self.code).related

    def for_subject(self, subject: Subject, reference: str | None = None) -> Finding:
        """The same finding about another pod (a fleet audit proves a group once)."""
        return attrs.evolve(self, subject=subject,
                            reference=self.reference if reference is None else reference)

    def line(self) -> str:
        """``Error [MSH0104] (Pod default/x rules.txt:12) message``"""
        return f"{self.level} [{self.code}] ({self.origin}) {self.message}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, keys stable: istioctl's (code, level, message, origin, reference,
        documentationUrl) then meshsolve's (related, property, verdict, rule, witness, trace)."""
        return {
            "code": self.code,
            "level": self.level,
            "message": self.message,
            "origin": self.origin,
            "reference": self.reference,
            "documentationUrl": documentation_anchor(self.code),
            "related": self.related,
            "property": self.property_title,
            "verdict": self.verdict,
            "rule": self.rule,
            "witness": None if self.witness is None else {"flow": self.witness, "outcome": self.outcome},
            "trace": None if self.result is None else self.result.to_dict()["trace"],
            "rule_refs": [] if self.result is None else [str(r) for r in self.result.rule_hits],
        }


# ------------------------------------------------------------------------------------------------


def _conditional(rule: Rule) -> bool:
    """More than ``-p tcp`` (a bare protocol / port module without ports / a comment)."""
    for m in rule.matches:
        if isinstance(m, Protocol | CommentMatch):
            continue
        if isinstance(m, PortMatch) and m.sport is None and m.dport is None and not m.extra:
            continue
        return True
    return False


def _rule_of(world: World, family: str, ref: RuleRef) -> Rule | None:
    try:
        return world.rules.for_family("ipv6" if family == "ipv6" else "ipv4").rule(ref)
    except KeyError:
        return None


def decisive_hop(world: World, result: Result, *, leg: str = "first") -> tuple[Hop, Rule | None] | None:
    """The rule hop a finding points at; ``leg`` is ``first`` or ``last`` (the last leg that hit a
    rule). On that leg: the last rule with a condition beyond ``-p tcp``, else the last jump/goto,
    else the last rule."""
    hops = [h for h in result.trace if h.kind == "rule" and h.rule is not None and h.rule.index > 0]
    # what a connection's first packet met decides it, unless the handshake's later packets did
    if not isinstance(result.outcome, Dropped | Rejected | Failed | Undetermined) or not any(
            h.packet != "SYN" and h.rule == getattr(result.outcome, "rule", None) for h in hops):
        hops = [h for h in hops if h.packet == "SYN"] or hops
    if not hops:
        return None
    want = hops[0].leg if leg == "first" else hops[-1].leg
    on_leg = [h for h in hops if h.leg == want]
    fam = result.flow.family
    for h in reversed(on_leg):
        assert h.rule is not None
        rule = _rule_of(world, fam, h.rule)
        if rule is not None and _conditional(rule):
            return h, rule
    for h in reversed(on_leg):  # no condition: the rule that sent it on (``-j ISTIO_REDIRECT``)
        assert h.rule is not None
        rule = _rule_of(world, fam, h.rule)
        if rule is not None and isinstance(rule.target, Jump | Goto):
            return h, rule
    last = on_leg[-1]
    assert last.rule is not None
    return last, _rule_of(world, fam, last.rule)


def _file_reference(rule: Rule | None) -> str | None:
    if rule is None or rule.origin is None or rule.origin.source.startswith("<"):
        return None
    return str(rule.origin)


# Which connection leg the decisive rule is taken from: a loop is closed by the rule that captures
# the proxy's own connection again, and a lost side by the rule that lets the proxy's connection
# through (the last leg); everything else is decided on the client's leg.
_LEG: dict[str, str] = {"MSH0104": "last", "MSH0105": "last", "MSH0161": "last", "MSH0163": "last"}
# Codes whose message also quotes what the proxy did (where it forwarded the connection).
_PROXY_STEP = ("MSH0105", "MSH0106", "MSH0143", "MSH0145")


def _code_for(world: World, v: Refuted) -> str:
    prop = v.prop
    own = getattr(prop, "code", None)  # a property with a code of its own (ambient's)
    if isinstance(own, str):
        return own
    if isinstance(prop, CaptureInbound):
        return "MSH0101"
    if isinstance(prop, CaptureOutbound):
        return "MSH0102"
    if isinstance(prop, Bypass):
        return "MSH0103"
    if isinstance(prop, NoLoops) or isinstance(v.result.outcome, Loop):
        return "MSH0104"
    if isinstance(prop, NoExposure):
        return "MSH0143"
    if isinstance(prop, Observation):
        return "MSH0105" if any(s not in v.result.observed for s in prop.sides) else "MSH0106"
    if isinstance(prop, Reachable):
        socks = [s for a in world.apps for s in a.sockets if s.port == prop.port
                 and (prop.app is None or a.name == prop.app)]
        if socks and all(s.bind in world.pod_ips for s in socks):
            return "MSH0145"
        return "MSH0106"
    return "MSH0106"


def _sides(sides: tuple[str, ...]) -> str:
    names = {"out": "client side", "in": "server side"}
    return " and ".join(names[s] for s in sides) if sides else "by neither side"


def findings_for(world: World, verdict: Verdict) -> tuple[Finding, ...]:
    """The findings of one verdict about ``world`` (none for a proof)."""
    subject = subject_of(world)
    if isinstance(verdict, Unknown):
        mt = message_type("MSH0199")
        return (Finding(mt.code, mt.level, mt.format(prop=verdict.prop.title(), reason=verdict.reason),
                        subject, verdict.prop.title(), "unknown"),)
    if not isinstance(verdict, Refuted):
        return ()
    code = _code_for(world, verdict)
    mt = message_type(code)
    res = verdict.result
    # the witness's world: the pod, or the variant of it the property is about (its rules are the
    # pod's with some appended, so the pod's rule names still hold)
    found = decisive_hop(verdict.world, res, leg=_LEG.get(code, "first"))
    hop, rule = found if found is not None else (None, None)
    if hop is not None and hop.rule is not None and _rule_of(world, res.flow.family, hop.rule) != rule:
        hop, rule = None, None  # a rule of the variant only (a stand-in), not one of the pod's
    at = "" if hop is None else f"; rule {hop.text}"
    if code in _PROXY_STEP:
        step = _proxy_step(res)
        at = at if step is None else f"; {step}{at}"
    params: dict[str, object] = {"flow": _flow_text(world, verdict), "outcome": res.summary, "at": at}
    prop = verdict.prop
    if code == "MSH0105":
        assert isinstance(prop, Observation)
        params.update(observed="only " + _sides(res.observed) if res.observed else "by neither side",
                      expected=_sides(prop.sides))
    elif code == "MSH0143":
        params.update(port=verdict.flow.dport, bind=_bind_of(world, verdict.flow.dport, loopback=True))
    elif code == "MSH0145":
        assert isinstance(prop, Reachable)
        params.update(port=prop.port, bind=_bind_of(world, prop.port, loopback=False))
    elif code == "MSH0165":
        params.update(port=getattr(prop, "tunnel_port", verdict.flow.dport))
    if callable(getattr(prop, "finding_params", None)):
        params.update(prop.finding_params())
    if code == "MSH0106":
        port = getattr(prop, "port", verdict.flow.dport)
        app = getattr(prop, "app", None)
        params.update(target=f"{app or 'an app'} on port {port}" if isinstance(prop, Reachable)
                      else "an app")
    return (Finding(code, mt.level, mt.format(**params), subject, prop.title(), "refuted",
                    _file_reference(rule), None if hop is None or hop.rule is None else str(hop.rule),
                    str(verdict.flow), res.summary, res),)


def _flow_text(world: World, v: Refuted) -> str:
    """The witness flow; a process the solver made up (not an app of the pod) shows its ids."""
    flow = v.flow
    if flow.client in ("peer", "proxy") or flow.client in {a.name for a in world.apps}:
        return str(flow)
    app = next((a for a in v.world.apps if a.name == flow.client), None)
    if app is None:
        return str(flow)
    return str(flow).replace(flow.client, f"a process with uid {app.uid}, gid {app.gid}", 1)


def _proxy_step(res: Result) -> str | None:
    """The last thing the proxy did with the connection (``proxy inbound side: forwards to ...``)."""
    steps = [h.text for h in res.trace if h.kind == "proxy" and ("forwards" in h.text or "side" in h.text)]
    return steps[-1] if steps else None


def _bind_of(world: World, port: int, *, loopback: bool) -> str:
    for a in world.apps:
        for s in a.sockets:
            if s.port == port and (s.bind.is_loopback == loopback):
                return str(s.bind)
    return "?"


def lint_world(world: World, *, app_references: dict[str, str] | None = None) -> tuple[Finding, ...]:
    """Findings that need no solver: apps that run as the proxy's uid or gid (``MSH0144``)."""
    out = []
    mt = message_type("MSH0144")
    refs = app_references or {}
    for app in world.apps:
        for what, mine, proxy in (("uid", app.uid, world.proxy.uid), ("gid", app.gid, world.proxy.gid)):
            if proxy and mine == proxy:
                out.append(Finding(mt.code, mt.level, mt.format(app=app.name, what=what, ident=mine),
                                   subject_of(world), f"app {app.name} does not share the proxy's ids",
                                   "lint", refs.get(app.name)))
    return tuple(out)
