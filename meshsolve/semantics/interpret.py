"""The concrete interpreter: one ``World`` + one ``Flow`` → a ``Result`` (outcome, observed sides, trace).

This runs the single definition of meshsolve's semantics (``meshsolve.semantics.kernel``, where
every kernel fact it relies on is listed) over concrete values, walking chains forward with
``meshsolve.semantics.netfilter``, and turns the legs of the run into a readable ``Result``. The
solver (``meshsolve.smt``) runs the same definition over Z3 terms; the kernel oracle
(``meshsolve.oracle``) checks both against Linux.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import attrs

import meshsolve.defaults as defaults
from meshsolve.errors import WorldError
from meshsolve.model.kinds import REJECT_ERRNO
from meshsolve.model.net import IPAddress, family_of
from meshsolve.model.path import Stage
from meshsolve.model.rules import Reject, Rule, RuleRef
from meshsolve.model.world import Flow, Socket, World
from meshsolve.semantics import kernel as K
from meshsolve.semantics.domain import Concrete
from meshsolve.semantics.netfilter import traverse
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
    hostport,
)

__all__ = ["accepting_socket", "check_flow", "interpret", "rule_text", "source_for"]

_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def rule_text(rule: Rule) -> str:
    """The rule as its own language writes it: a native nftables rule's nft text (its origin's), else
    iptables text via ``meshsolve.iptables.rule_text`` when it exists."""
    if rule.origin is not None and rule.origin.text is not None:
        return rule.origin.text
    try:
        from meshsolve.iptables import rule_text as render
    except ImportError:  # the renderer is not there yet: show the model value
        return repr(rule)
    return str(render(rule))


def source_for(world: World, dst: IPAddress) -> IPAddress:
    """The source address the kernel picks for a connection opened in the pod to ``dst``."""
    src: IPAddress = K.source_for(Concrete(), K.Env.of(world, family_of(dst)), dst)
    return src


def accepting_socket(world: World, dst: IPAddress, dport: int, protocol: str = "tcp",
                     ) -> tuple[str, Socket] | None:
    """Which listening socket (owner name, socket) accepts a connection to ``dst:dport``.

    The owner is an app name or ``"proxy"``. An exact bind beats a wildcard; among wildcards an
    IPv4 ``0.0.0.0`` beats a dual-stack ``::`` for an IPv4 destination.
    """
    if not world.is_local(dst):
        return None
    _cls, _idx, owner, _sk = K.lookup(Concrete(), K.Env.of(world, family_of(dst)), dst, dport, protocol)
    return owner  # type: ignore[no-any-return]


def check_flow(world: World, flow: Flow) -> None:
    """Raise ``WorldError`` if ``flow`` cannot start in ``world``."""
    if flow.client not in ("peer", "proxy") and flow.client not in {a.name for a in world.apps}:
        known = ", ".join(["peer", "proxy", *(repr(a.name) for a in world.apps)])
        raise WorldError(f"flow client {flow.client!r} is not one of: {known}")
    fam = flow.family
    if world.pod_ip(fam) is None:
        raise WorldError(f"flow {flow}: the pod has no {fam} address")
    if flow.client == "peer" and world.peer_ip(fam) is None:
        raise WorldError(f"flow {flow}: the world has no {fam} peer IP")
    if flow.endpoint < 0:
        raise WorldError(f"flow {flow}: endpoint index must be >= 0")


class _Recorder:
    """Collects the readable trace and the rules hit while the kernel semantics runs."""

    def __init__(self) -> None:
        self.hops: list[Hop] = []
        self.hits: list[RuleRef] = []
        self.leg = 0
        self.packet = "SYN"

    def note(self, kind: str, text: str, rule: Any) -> None:
        if kind == "packet":  # which packet of the handshake the following steps are about
            self.packet = text
            return
        k: HopKind = kind  # type: ignore[assignment]
        self.hops.append(Hop(self.leg, k, text, rule, self.packet))

    def set_leg(self, n: int) -> None:
        self.leg = n


def interpret(world: World, flow: Flow, *, max_hops: int = defaults.HOPS) -> Result:
    """Follow ``flow`` through ``world``: kernel hooks, sockets and proxy hops (see
    ``meshsolve.semantics.kernel``).

    Raises ``WorldError`` when the flow cannot start (unknown client, no address of its family) or
    picks a service endpoint that does not exist.
    """
    check_flow(world, flow)
    if flow.dst.version == 6 and flow.dst in _MAPPED and flow.client != "peer":
        # an AF_INET6 socket connecting to ::ffff:a.b.c.d opens an IPv4 connection
        assert isinstance(flow.dst, ipaddress.IPv6Address) and flow.dst.ipv4_mapped is not None
        mapped = attrs.evolve(flow, dst=flow.dst.ipv4_mapped)
        check_flow(world, mapped)
        res = interpret(world, mapped, max_hops=max_hops)
        return attrs.evolve(res, flow=flow)
    rec = _Recorder()
    d = Concrete(rec.note)
    fam = flow.family
    env = K.Env.of(world, fam)
    ruleset = world.rules.for_family(fam)

    def tr(stage: Stage, pkt: K.Pkt) -> K.Decision:
        dec = traverse(ruleset, stage, pkt, env)
        for step in dec.steps:
            if step.rule is None:
                rec.note("policy", f"{stage.table}::{step.ref.chain} policy {step.policy}", step.ref)
            else:
                rec.hits.append(step.ref)
                rec.note("rule", f"{step.ref} {rule_text(step.rule)}", step.ref)
        return dec

    if flow.client == "peer":
        uid = gid = None
        who = "peer"
    elif flow.client == "proxy":
        uid, gid, who = world.proxy.uid, world.proxy.gid, "proxy"
    else:
        app = world.app(flow.client)
        uid, gid, who = app.uid, app.gid, app.name
    mark = K.first_mark(world, flow.client)
    if flow.src is not None and (flow.client != "peer" or flow.src.version != flow.dst.version):
        raise WorldError(f"flow {flow}: only a peer's connection names its source, of the flow's family")
    first = K.First(flow.client == "peer", flow.dst, flow.dport, flow.sport, uid, gid, flow.endpoint,
                    flow.protocol, who, flow.src, mark, flow.inner or 0)
    records = K.run_flow(d, env, tr, first, hops=max_hops, on_leg=rec.set_leg)
    observed: list[Side] = [("in" if r.leg.cls == K.IN else "out") for r in records
                            if r.leg.cls in (K.OUT, K.IN) and r.repeat is not True]
    outcome = _outcome(records, env, max_hops)
    if isinstance(outcome, Rejected):
        target = ruleset.rule(outcome.rule).target
        with_ = target.reject_with if isinstance(target, Reject) else None
        outcome = Rejected(outcome.rule, REJECT_ERRNO.get(with_, "ECONNREFUSED"))
    return Result(flow, outcome, tuple(observed), tuple(rec.hops), tuple(rec.hits))


def _outcome(records: list[K.LegRecord], env: K.Env, max_hops: int) -> Outcome:
    for r in records:
        if r.loop is True:
            if r.repeat is True:
                name = "inbound" if r.leg.cls == K.IN else "outbound"
                return Loop(f"the proxy's {name} side saw {hostport(r.leg.odst, r.leg.odport)} twice")
            return Loop(f"more than {max_hops} connections in one flow")
    leg = records[-1].leg
    cls = leg.cls
    if cls == K.DELIV:
        app, sock = env.sockets[leg.sock]
        return Delivered(app, sock, leg.seen_src)
    if cls == K.REFUSED:
        return Refused()
    if cls == K.DROPPED:
        return Dropped(leg.rule)
    if cls == K.REJECTED:
        return Rejected(leg.rule)
    if cls == K.EGRESS:
        return Egress(leg.dst, leg.dport, leg.seen_src)
    if cls == K.FAILED:
        return Failed(leg.why or "the kernel does not let it complete")
    if cls == K.UNDET:
        return Undetermined(leg.why or "", leg.rule)
    raise AssertionError(f"a flow ended on a proxy hop without a loop: {cls}")  # pragma: no cover
