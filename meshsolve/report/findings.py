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

from collections.abc import Mapping, Sequence
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
from meshsolve.model.provenance import Part
from meshsolve.model.rules import (
    AddressSet,
    CommentMatch,
    Destination,
    FamilyMatch,
    Goto,
    Jump,
    PortMatch,
    Protocol,
    Rule,
    RuleRef,
    Source,
    Tproxy,
)
from meshsolve.model.world import World
from meshsolve.report.catalog import Level, documentation_anchor, message_type
from meshsolve.semantics.trace import Dropped, Failed, Hop, Loop, Rejected, Result, Undetermined

__all__ = ["Finding", "Subject", "backend_of", "diff_findings", "findings_for", "input_finding", "lint_world",
           "load_findings", "rests_on", "subject_of"]


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
    assumes: tuple[str, ...] = ()  # the assumptions (parts of the world nobody gave) it rests on

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
        """``Error [MSH0104] (Pod default/x rules.txt:12) message [assumes: ...]``"""
        rests = f" [assumes: {'; '.join(self.assumes)}]" if self.assumes else ""
        return f"{self.level} [{self.code}] ({self.origin}) {self.message}{rests}"

    def evidence(self) -> dict[str, Any]:
        """The witness's trace and the rules it hit, JSON-ready (``to_dict``'s ``trace`` and ``rule_refs``)."""
        return {"trace": None if self.result is None else self.result.to_dict()["trace"],
                "rule_refs": [] if self.result is None else [str(r) for r in self.result.rule_hits]}

    def to_dict(self, evidence: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """JSON-ready, keys stable: istioctl's (code, level, message, origin, reference,
        documentationUrl) then meshsolve's (related, property, verdict, rule, witness, trace);
        ``evidence`` stands for :meth:`evidence` (a renderer that has it already)."""
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
            **(self.evidence() if evidence is None else evidence),
            "assumes": list(self.assumes),
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
    mark = f", socket mark {app.mark:#x}" if app.mark else ""
    return str(flow).replace(flow.client, f"a process with uid {app.uid}, gid {app.gid}{mark}", 1)


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


def load_findings(world: World) -> tuple[Finding, ...]:
    """What loading the world's rules would refuse (``MSH0150``, ``MSH0151``: found before loading,
    ``Rulesets.load_problems``) and IPv6 nftables rules in a pod without IPv6 (``MSH0152``)."""
    out: list[Finding] = []
    subject = subject_of(world)
    for p in world.rules.load_problems:
        ref = None if p.source.startswith("<") else p.where
        if p.kind == "refused":
            mt = message_type("MSH0150")
            msg = mt.format(where=p.where, reason=p.message)
        else:
            mt = message_type("MSH0151")
            msg = mt.format(what=p.message, where=p.where)
        out.append(Finding(mt.code, mt.level, msg, subject, "the rules load", "lint", ref))
    if "ipv6" not in world.families:
        six = [(t, c, n, r) for t in world.rules.ipv6.nft for c in t.table.chains
               for n, r in enumerate(c.rules, 1) if t.family == "ip6" or _names_ipv6(r)]
        if six:
            t, c, n, r = six[0]
            mt = message_type("MSH0152")
            where = f"{t.key}::{c.name}#{n}"
            text = r.origin.text if r.origin is not None and r.origin.text else where
            out.append(Finding(mt.code, mt.level, mt.format(count=len(six), rule=f"{where} {text}"), subject,
                               "the rules load", "lint", _file_reference(r), where))
    return tuple(out)


def _names_ipv6(rule: Rule) -> bool:
    for m in rule.matches:
        if isinstance(m, FamilyMatch) and m.family == "ipv6" and not m.negated:
            return True
        if isinstance(m, Source | Destination) and m.net.version == 6:
            return True
        if isinstance(m, AddressSet) and m.nets[0].version == 6:
            return True
    t = rule.target
    return isinstance(t, Tproxy) and t.on_ip is not None and t.on_ip.version == 6


def backend_of(world: World) -> str:
    """``iptables``, ``nftables`` (native tables only) or ``iptables+nftables``."""
    ipt = any(rs.tables for rs in (world.rules.ipv4, world.rules.ipv6))
    nft = any(rs.nft for rs in (world.rules.ipv4, world.rules.ipv6))
    return "iptables+nftables" if ipt and nft else "nftables" if nft else "iptables"


def diff_findings(a: World, b: World, results: Sequence[object]) -> tuple[Finding, ...]:
    """The differences ``diff`` found between set-ups on two backends (one iptables, one nftables) as
    findings: ``MSH0154`` when IPv6 is off on the iptables side (no ip6tables rules) and the nft side
    still captures the IPv6 connection, else ``MSH0153``. Set-ups on one backend give none."""
    from meshsolve.analysis.diff import Different

    ka, kb = backend_of(a), backend_of(b)
    if ka == kb:
        return ()
    out: list[Finding] = []
    for r in results:
        if not isinstance(r, Different):
            continue
        ipt_side, nft_side = (r.a, r.b) if kb == "nftables" else (r.b, r.a)
        ipt_world = a if kb == "nftables" else b
        ipv6_off = r.flow.family == "ipv6" and not ipt_world.rules.ipv6.tables and not ipt_world.rules.ipv6.nft
        if ipv6_off and nft_side.observed and not ipt_side.observed:
            mt = message_type("MSH0154")
            msg = mt.format(flow=r.flow, a_outcome=ipt_side.summary, b_outcome=nft_side.summary)
        else:
            mt = message_type("MSH0153")
            msg = mt.format(a=ka, b=kb, flow=r.flow, a_outcome=r.a.summary, b_outcome=r.b.summary)
        out.append(Finding(mt.code, mt.level, msg, subject_of(b), f"{ka} and {kb} set-ups agree", "refuted",
                           None, None, str(r.flow), r.b.summary, r.b))
    return tuple(out)


def lint_world(world: World, *, app_references: dict[str, str] | None = None) -> tuple[Finding, ...]:
    """Findings that need no solver: apps that run as the proxy's uid or gid (``MSH0144``), and what
    loading the rules would refuse (``load_findings``)."""
    out = list(load_findings(world))
    mt = message_type("MSH0144")
    refs = app_references or {}
    for app in world.apps:
        for what, mine, proxy in (("uid", app.uid, world.proxy.uid), ("gid", app.gid, world.proxy.gid)):
            if proxy and mine == proxy:
                out.append(Finding(mt.code, mt.level, mt.format(app=app.name, what=what, ident=mine),
                                   subject_of(world), f"app {app.name} does not share the proxy's ids",
                                   "lint", refs.get(app.name)))
    return tuple(out)


def rests_on(finding: Finding, parts: tuple[Part, ...]) -> Finding:
    """``finding`` naming the assumed parts its witness touches: a part rests under a finding when
    one of its ``mentions`` (an address, ``ip:port``, an app's uid) appears in the message, the flow
    or the trace, or, for the proxy's behaviour, when the trace passes the proxy."""
    assumed = [p for p in parts if p.assumed]
    if not assumed:
        return finding
    texts = [finding.message, finding.witness or ""]
    if finding.result is not None:
        texts.extend(h.text for h in finding.result.trace)
        texts.append(str(finding.result.outcome))
    blob = "\n".join(texts)
    proxy_seen = finding.result is not None and any(h.kind == "proxy" for h in finding.result.trace)
    out: list[str] = []
    for p in assumed:
        hit = (proxy_seen if p.everywhere else False) or any(m and m in blob for m in p.mentions)
        if hit:
            out.append(p.what)
    return attrs.evolve(finding, assumes=tuple(dict.fromkeys(out))) if out else finding


def input_finding(code: str, message: str, subject: Subject, reference: str | None = None) -> Finding:
    """A finding the inputs themselves show (``MSH0110``–``MSH0113``)."""
    mt = message_type(code)
    return Finding(mt.code, mt.level, mt.format(message=message), subject, "the inputs", "input",
                   reference if reference and not reference.startswith("<") else None)
