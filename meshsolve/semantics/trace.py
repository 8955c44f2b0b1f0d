"""Outcome, hop and result values of the concrete interpreter (frozen, hashable, stable ``__str__``).

A ``Result`` is what one ``Flow`` does in one ``World``: the ``outcome`` (how it ended), ``observed``
(which proxy sides accepted it, in order: ``"out"`` = the outbound/client side, ``"in"`` = the
inbound/server side), ``trace`` (numbered hops a person can read) and ``rule_hits`` (every rule whose
matches held, in evaluation order, for every connection the flow opened).

``Result.summary`` renders the flow in the cell notation of ``kernel-facts.md``: the observed sides
followed by the outcome token, e.g. ``in, app<-127.0.0.1``, ``out, in, refused``, ``in, loop``.
"""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

import attrs

from meshsolve.model.net import IPAddress
from meshsolve.model.rules import RuleRef
from meshsolve.model.world import Flow, Socket

__all__ = [
    "Delivered",
    "Dropped",
    "Egress",
    "Failed",
    "Hop",
    "HopKind",
    "Loop",
    "Outcome",
    "Refused",
    "Rejected",
    "Result",
    "Side",
    "Undetermined",
    "cell_key",
    "hostport",
]

Side: TypeAlias = Literal["out", "in"]


def hostport(addr: IPAddress, port: int | None) -> str:
    """``192.0.2.10:9001`` / ``[2001:db8::10]:9001``; a missing port prints as ``*``."""
    host = f"[{addr}]" if addr.version == 6 else str(addr)
    return f"{host}:{'*' if port is None else port}"


@attrs.frozen
class Delivered:
    """A non-proxy socket accepted the connection: the ``app`` owning ``socket``, seeing ``source``."""

    app: str
    socket: Socket
    source: IPAddress

    @property
    def token(self) -> str:
        return f"{self.app}<-{self.source}"

    def __str__(self) -> str:
        return f"delivered to {self.app} on {self.socket}, source {self.source}"


@attrs.frozen
class Refused:
    """No socket accepted a connection (RST), or the proxy closed it (blackhole / refused upstream)."""

    @property
    def token(self) -> str:
        return "refused"

    def __str__(self) -> str:
        return "refused"


@attrs.frozen
class Dropped:
    """A rule (DROP, REJECT, a TPROXY without a listener) or a DROP policy ended the connection.

    A policy is named by its built-in chain with index 0 (``filter::INPUT#0``)."""

    rule: RuleRef

    @property
    def token(self) -> str:
        return "dropped"

    def __str__(self) -> str:
        return f"dropped by {self.rule}"


@attrs.frozen
class Rejected:
    """A REJECT rule answered the connection: the client's ``connect()`` fails at once with ``errno``
    (unlike a DROP, where it waits until it gives up)."""

    rule: RuleRef
    errno: str = "ECONNREFUSED"

    @property
    def token(self) -> str:
        return "rejected"

    def __str__(self) -> str:
        return f"rejected by {self.rule} ({self.errno})"


@attrs.frozen
class Failed:
    """The kernel itself does not let the connection complete, with no rule involved: ``connect()``
    fails (EINVAL, ENETUNREACH), the packet is dropped at a re-route or as a martian, or its answer
    cannot come back (a source that exists only on ``lo``). ``reason`` says which."""

    reason: str

    @property
    def token(self) -> str:
        return "failed"

    def __str__(self) -> str:
        return f"fails: {self.reason}"


@attrs.frozen
class Loop:
    """The proxy saw the same (side, original destination) twice, or the hop bound was reached."""

    reason: str

    @property
    def token(self) -> str:
        return "loop"

    def __str__(self) -> str:
        return f"loop: {self.reason}"


@attrs.frozen
class Undetermined:
    """The path depends on something the model does not decide (an opaque match or target, ...)."""

    reason: str
    rule: RuleRef | None = None

    @property
    def token(self) -> str:
        return "undetermined"

    def __str__(self) -> str:
        at = f" at {self.rule}" if self.rule is not None else ""
        return f"undetermined{at}: {self.reason}"


@attrs.frozen
class Egress:
    """The connection leaves the pod through its interface to ``dst:port`` from ``source``, an
    address the remote host can answer, so it completes there (if a server listens)."""

    dst: IPAddress
    port: int
    source: IPAddress | None = None

    @property
    def token(self) -> str:
        return f"egress {hostport(self.dst, self.port)}"

    def __str__(self) -> str:
        src = f" from {self.source}" if self.source is not None else ""
        return f"leaves the pod to {hostport(self.dst, self.port)}{src}"


Outcome: TypeAlias = Delivered | Refused | Rejected | Dropped | Failed | Loop | Undetermined | Egress

HopKind: TypeAlias = Literal[
    "open",      # a connection is opened (by the client or by the proxy)
    "rule",      # a rule whose matches held (jump, return, verdict, rewrite, mark, ...)
    "policy",    # a built-in chain fell through to its policy
    "rewrite",   # a NAT rewrite or a TPROXY diversion
    "route",     # where the packet goes next (lo / eth0 / leaves the pod)
    "socket",    # which socket accepted, or that none did
    "proxy",     # what the proxy did with an accepted connection
    "reply",     # a later packet of the handshake (the SYN-ACK back, the ACK on)
]


@attrs.frozen
class Hop:
    """One step of a trace. ``leg`` numbers the connections of the flow (1 = the client's own);
    ``rule`` is set for rule and policy hops (policy hops use index 0); ``packet`` says which packet of
    the connection's handshake the step is about (``SYN``, ``SYN-ACK`` or ``ACK``)."""

    leg: int
    kind: HopKind
    text: str
    rule: RuleRef | None = None
    packet: str = "SYN"

    def __str__(self) -> str:
        return self.text


@attrs.frozen
class Result:
    """What one flow did: outcome, observed proxy sides, the readable trace and the rules hit."""

    flow: Flow
    outcome: Outcome
    observed: tuple[Side, ...] = ()
    trace: tuple[Hop, ...] = ()
    rule_hits: tuple[RuleRef, ...] = ()

    @property
    def summary(self) -> str:
        """The kernel-facts cell notation: ``out, in, app<-127.0.0.6``."""
        return ", ".join((*self.observed, self.outcome.token))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: flow, summary, outcome (kind + text), observed, numbered trace, rule hits."""
        return {
            "flow": str(self.flow),
            "summary": self.summary,
            "outcome": {"kind": type(self.outcome).__name__, "text": str(self.outcome)},
            "observed": list(self.observed),
            "trace": [{"leg": h.leg, "kind": h.kind, "text": h.text, "packet": h.packet,
                       "rule": None if h.rule is None else str(h.rule)} for h in self.trace],
            "rule_hits": [str(r) for r in self.rule_hits],
        }

    def __str__(self) -> str:
        lines = [f"flow {self.flow}"]
        width = len(str(len(self.trace)))
        for i, hop in enumerate(self.trace, 1):
            lines.append(f"  {i:>{width}}. [{hop.leg}] {hop}")
        lines.append(f"outcome: {self.outcome}")
        lines.append(f"observed: {', '.join(self.observed) or '-'}")
        return "\n".join(lines)


def cell_key(result: Result) -> str:
    """The string a bind-matrix cell is pinned by (``Result.summary``)."""
    return result.summary
