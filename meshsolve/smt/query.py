"""The solver's question language, as plain values (no z3 here).

A question is "for every first connection in ``Scope``, does the flow's end satisfy ``Pred``?".
The solver looks for a connection in the scope whose end violates the predicate; none means a
proof. The same predicate is evaluated on the concrete interpreter's result (``holds``), which is
how every witness is replayed and how exhaustive enumeration is compared with the solver.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, TypeAlias

import attrs

from meshsolve.errors import UnsupportedError
from meshsolve.model.net import Family, IPAddress, IPNetwork, PortRange, to_network
from meshsolve.model.rules import Match

__all__ = [
    "AllOf",
    "Condition",
    "AnyOf",
    "Captured",
    "DeliveredTo",
    "EndsAs",
    "Not",
    "Observed",
    "ObservedExactly",
    "Pred",
    "Scope",
    "SourceIs",
    "describe",
]

OutcomeKind = Literal["delivered", "refused", "dropped", "loop", "egress", "undetermined"]
ClientKind = Literal["peer", "app", "any-app", "proxy"]


def _nets(values: object) -> tuple[IPNetwork, ...] | None:
    if values is None:
        return None
    assert isinstance(values, tuple | list)
    return tuple(to_network(v) for v in values)


def _nets0(values: object) -> tuple[IPNetwork, ...]:
    out = _nets(values)
    return () if out is None else out


def _prs(values: object) -> tuple[PortRange, ...] | None:
    if values is None:
        return None
    assert isinstance(values, tuple | list)
    return tuple(v if isinstance(v, PortRange) else PortRange.parse(str(v)) for v in values)


def _prs0(values: object) -> tuple[PortRange, ...]:
    out = _prs(values)
    return () if out is None else out


def _ints(values: Iterable[int]) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


def _kinds(values: Iterable[str]) -> frozenset[str]:
    return frozenset(values)


def _sides(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


def _preds(values: Iterable[Pred]) -> tuple[Pred, ...]:
    return tuple(values)


@attrs.frozen
class Scope:
    """Which first connections a question ranges over (one address family).

    - ``client``: ``"peer"`` (a remote host, from the world's peer address), ``"app"`` (the app
      named ``app``, with its uid/gid), ``"any-app"`` (any process of the pod whose uid is not in
      ``uid_not`` and gid not in ``gid_not``), or ``"proxy"`` (the sidecar's ids).
    - ``dst``: destinations allowed (``None`` = any), ``dst_not``: excluded; ``local``: ``True`` for
      only the pod's own addresses (loopback and pod IPs), ``False`` for only remote ones.
    - ``dports``/``dports_not``: destination ports allowed / excluded.
    - ``vip_only``: only service VIP:port destinations (any endpoint choice).
    - ``ids``: for ``any-app``, only these (uid, gid) pairs (``None``: any pair); ``uid_is`` /
      ``gid_is``: only processes with this uid / gid.
    - ``any_mark``: for ``any-app``, the process's sockets may carry any ``SO_MARK`` (a free 32-bit
      value; 0 is no mark) but those in ``mark_not``; without it (the default) they carry none. An
      ``app`` client carries its own mark (``App.mark``), the proxy its ``socket_mark``; a peer's
      first connection carries none.
    - ``inner``: the port the first connection names as a tunnel's inner target (``Flow.inner``:
      HBONE to the proxy's tunnel listener), or None for plain connections.
    """

    family: Family
    client: ClientKind
    app: str | None = None
    uid_not: tuple[int, ...] = attrs.field(default=(), converter=_ints)
    gid_not: tuple[int, ...] = attrs.field(default=(), converter=_ints)
    dst: tuple[IPNetwork, ...] | None = attrs.field(default=None, converter=_nets)
    dst_not: tuple[IPNetwork, ...] = attrs.field(default=(), converter=_nets0)
    local: bool | None = None
    dports: tuple[PortRange, ...] | None = attrs.field(default=None, converter=_prs)
    dports_not: tuple[PortRange, ...] = attrs.field(default=(), converter=_prs0)
    vip_only: bool = False
    ids: tuple[tuple[int, int], ...] | None = None  # any-app: only these (uid, gid) pairs
    uid_is: int | None = None  # any-app: only processes running as this uid
    gid_is: int | None = None  # any-app: only processes running as this gid
    peer_src: IPAddress | None = None  # peer: the address it connects from (None: the world's peer)
    any_mark: bool = False  # any-app: any socket mark but ``mark_not`` (else: no mark)
    mark_not: tuple[int, ...] = attrs.field(default=(), converter=_ints)
    inner: int | None = None

    def __attrs_post_init__(self) -> None:
        if (self.any_mark or self.mark_not) and self.client != "any-app":
            raise UnsupportedError(f"a scope ranges over socket marks for client 'any-app' only, not {self.client!r}")
        if self.mark_not and not self.any_mark:
            raise UnsupportedError("mark_not excludes marks from any_mark: set any_mark too")
        for m in self.mark_not:
            if not 0 <= m <= 0xFFFFFFFF:
                raise UnsupportedError(f"mark_not: {m:#x} is not a 32-bit mark")
        if self.inner is not None and not 1 <= self.inner <= 65535:
            raise UnsupportedError(f"inner: {self.inner} is not a port (1..65535)")

    def __str__(self) -> str:
        anyone = "any non-proxy process" if self.uid_not or self.gid_not else "any process in the pod"
        if self.uid_is is not None:
            anyone = f"any process with uid {self.uid_is}"
        elif self.gid_is is not None:
            anyone = f"any process with gid {self.gid_is}"
        if self.any_mark:
            but = f" but {','.join(f'{m:#x}' for m in self.mark_not)}" if self.mark_not else ""
            anyone += f" with any socket mark{but}"
        who = {"peer": "a remote peer", "proxy": "the proxy", "app": f"app {self.app}",
               "any-app": anyone}[self.client]
        parts = [who]
        if self.vip_only:
            parts.append("to a service VIP")
        if self.local is True:
            parts.append("to the pod's own addresses")
        elif self.local is False:
            parts.append("to remote addresses")
        if self.dst is not None:
            parts.append("to " + ",".join(map(str, self.dst)))
        if self.dst_not:
            parts.append("not to " + ",".join(map(str, self.dst_not)))
        if self.dports is not None:
            parts.append("port " + ",".join(map(str, self.dports)))
        if self.dports_not:
            parts.append("port not " + ",".join(map(str, self.dports_not)))
        if self.inner is not None:
            parts.append(f"tunnelled to port {self.inner}")
        parts.append(f"({self.family})")
        return " ".join(parts)


# --- predicates over the end of a flow -----------------------------------------------------------


@attrs.frozen
class EndsAs:
    """The flow's outcome is one of ``kinds``."""

    kinds: frozenset[str] = attrs.field(converter=_kinds)


@attrs.frozen
class DeliveredTo:
    """Delivered to an app socket; optionally a given app and/or a socket bound to ``bind``/``port``."""

    app: str | None = None
    bind: IPAddress | None = None
    port: int | None = None


@attrs.frozen
class SourceIs:
    """Delivered, and the app saw this source address."""

    address: IPAddress


@attrs.frozen
class Observed:
    """The proxy's ``side`` (``"out"`` client side, ``"in"`` server side) accepted the flow at some hop."""

    side: Literal["out", "in"]


@attrs.frozen
class ObservedExactly:
    """The proxy sides that accepted the flow, in order, are exactly ``sides`` (a repeated
    sighting that ends the flow as a loop is not counted)."""

    sides: tuple[str, ...] = attrs.field(converter=_sides)


@attrs.frozen
class Captured:
    """The *first* connection landed on the proxy's ``side`` (``None``: either side)."""

    side: Literal["out", "in"] | None = None


@attrs.frozen
class Not:
    arg: Pred


@attrs.frozen
class AllOf:
    args: tuple[Pred, ...] = attrs.field(converter=_preds)


@attrs.frozen
class AnyOf:
    args: tuple[Pred, ...] = attrs.field(converter=_preds)


Pred: TypeAlias = (
    EndsAs | DeliveredTo | SourceIs | Observed | ObservedExactly | Captured | Not | AllOf | AnyOf
)


def describe(p: Pred) -> str:
    """A short human reading of a predicate (used in verdict messages)."""
    match p:
        case EndsAs(kinds):
            return "ends " + "/".join(sorted(kinds))
        case DeliveredTo(app, bind, port):
            what = "delivered"
            if app:
                what += f" to {app}"
            if bind is not None or port is not None:
                what += f" at {bind if bind is not None else '*'}:{port if port is not None else '*'}"
            return what
        case SourceIs(addr):
            return f"seen from {addr}"
        case Observed(side):
            return f"observed {'client' if side == 'out' else 'server'} side"
        case ObservedExactly(sides):
            return "observed exactly " + (", ".join(sides) or "nowhere")
        case Captured(side):
            return "captured" if side is None else f"captured to the {side}bound side"
        case Not(arg):
            return f"not ({describe(arg)})"
        case AllOf(args):
            return " and ".join(describe(a) for a in args)
        case AnyOf(args):
            return " or ".join(describe(a) for a in args)
    raise TypeError(p)  # pragma: no cover


@attrs.frozen
class Condition:
    """A condition of the synthesizer's vocabulary: ``text`` (``-d ADDR``) and its ``alternatives``
    as (text, matches) — one for a condition spelled out, several for a hole the solver fills with
    one of the world's constants."""

    text: str
    alternatives: tuple[tuple[str, tuple[Match, ...]], ...]

    @property
    def hole(self) -> bool:
        return len(self.alternatives) > 1
