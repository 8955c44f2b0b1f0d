"""Properties a user asks about a pod world, as values.

Each property says, per address family, which first connections it ranges over (``Scope``) and
what must hold at the end of each such flow (``Pred``). ``meshsolve.analysis.check`` proves it or
finds a counterexample; the same scopes and predicates drive exhaustive concrete enumeration.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeAlias

import attrs

from meshsolve.analysis.ambient_properties import AmbientProperty
from meshsolve.model.net import Family, IPAddress, to_address
from meshsolve.model.world import World
from meshsolve.semantics.trace import Side
from meshsolve.smt.query import (
    AllOf,
    AnyOf,
    Captured,
    DeliveredTo,
    EndsAs,
    Not,
    Observed,
    ObservedExactly,
    Pred,
    Scope,
)

__all__ = [
    "Bypass",
    "CaptureInbound",
    "CaptureOutbound",
    "Direct",
    "Exempt",
    "LeavesPod",
    "NoExposure",
    "NoLoops",
    "Observation",
    "Property",
    "Reachable",
    "default_properties",
]


def _ints(values: Iterable[int]) -> tuple[int, ...]:
    """``tuple`` as a typed converter (mypy's attrs plugin cannot infer ``converter=tuple``)."""
    return tuple(values)


def _strs(values: Iterable[str]) -> tuple[str, ...]:
    """``tuple`` as a typed converter, for strings."""
    return tuple(values)


def _opt_addr(v: str | IPAddress | None) -> IPAddress | None:
    return None if v is None else to_address(v)


@attrs.frozen
class Reachable:
    """``client`` reaches the app socket on ``port`` (of ``app`` if given) via ``dst`` (default: the
    pod IP); every such connection (any source port, any endpoint choice) is delivered there.

    With ``partial``, a connection that loops also counts (partial correctness: "every connection
    that ends is delivered"), leaving termination to ``NoLoops`` — how synthesis specs state it, so
    that a conflict between goals names each failure mode once.
    """

    client: str
    port: int
    dst: IPAddress | None = attrs.field(default=None, converter=_opt_addr)
    app: str | None = None
    partial: bool = False
    name: str = ""

    def title(self) -> str:
        return self.name or f"{self.client} reaches port {self.port} via {self.dst or 'the pod IP'}"

    def checks(self, world: World) -> list[tuple[Scope, Pred]]:
        out: list[tuple[Scope, Pred]] = []
        for fam in _families(world, self.dst):
            dst = self.dst or world.pod_ip(fam)
            if dst is None:
                continue
            pred: Pred = DeliveredTo(app=self.app, port=self.port)
            if self.partial:
                pred = AnyOf((pred, EndsAs({"loop"})))
            out.append((_client_scope(self.client, fam, dst=(dst,), dports=(self.port,)), pred))
        return out


@attrs.frozen
class CaptureOutbound:
    """Every outbound TCP connection of a non-proxy process to a remote address (minus the
    excluded ports/CIDRs) lands on the proxy's outbound listener: any process without a socket mark,
    and each app of the pod that has one (with its mark)."""

    exclude_ports: tuple[int, ...] = attrs.field(default=(), converter=_ints)
    exclude_cidrs: tuple[str, ...] = attrs.field(default=(), converter=_strs)
    name: str = ""

    def title(self) -> str:
        return self.name or "all outbound traffic of the pod's apps is captured"

    def checks(self, world: World) -> list[tuple[Scope, Pred]]:
        p = world.proxy
        out: list[tuple[Scope, Pred]] = []
        for fam in world.families:
            dst_not = tuple(c for c in self.exclude_cidrs if (":" in c) == (fam == "ipv6"))
            dports_not = tuple(str(x) for x in self.exclude_ports)
            out.append((Scope(family=fam, client="any-app", uid_not=(p.uid,), gid_not=(p.gid,), local=False,
                              dst_not=dst_not, dports_not=dports_not), Captured("out")))
            out += [(Scope(family=fam, client="app", app=a.name, local=False, dst_not=dst_not, dports_not=dports_not),
                     Captured("out")) for a in world.apps
                    if a.mark is not None and a.uid != p.uid and a.gid != p.gid]
        return out


@attrs.frozen
class CaptureInbound:
    """Every inbound TCP connection from a remote peer to ``ports`` (``None``: all ports but
    ``exclude_ports``) lands on the proxy's inbound side."""

    ports: tuple[int, ...] | None = None
    exclude_ports: tuple[int, ...] = attrs.field(default=(), converter=_ints)
    name: str = ""

    def title(self) -> str:
        return self.name or "inbound traffic is captured"

    def checks(self, world: World) -> list[tuple[Scope, Pred]]:
        return [(Scope(family=fam, client="peer",
                       dports=None if self.ports is None else tuple(str(x) for x in self.ports),
                       dports_not=tuple(str(x) for x in self.exclude_ports)), Captured("in"))
                for fam in world.families if world.peer_ip(fam) is not None]


@attrs.frozen
class Bypass:
    """The proxy's own connections to remote addresses are never captured. With ``by_uid_or_gid``,
    neither are those of any process running with the proxy's uid or with its group (how Istio
    tells the proxy's traffic apart: a TPROXY-mode proxy runs as root in the proxy's group)."""

    name: str = ""
    by_uid_or_gid: bool = False

    def title(self) -> str:
        if self.by_uid_or_gid:
            return self.name or "traffic of the proxy's uid or group bypasses capture"
        return self.name or "the proxy's own outbound traffic bypasses capture"

    def checks(self, world: World) -> list[tuple[Scope, Pred]]:
        out: list[tuple[Scope, Pred]] = []
        for fam in world.families:
            out.append((Scope(family=fam, client="proxy", local=False), Not(Captured())))
            if self.by_uid_or_gid:
                p = world.proxy
                out.append((Scope(family=fam, client="any-app", uid_is=p.uid, local=False), Not(Captured())))
                out.append((Scope(family=fam, client="any-app", gid_is=p.gid, local=False), Not(Captured())))
        return out


@attrs.frozen
class NoLoops:
    """No connection — from a peer or from any process in the pod, the proxy included — loops.

    Connections addressed to the proxy's own listener ports are left out unless
    ``include_proxy_ports``: a real sidecar refuses those itself (Envoy's listeners do not forward
    traffic addressed to 15001/15006), which the proxy model does not describe.
    """

    include_proxy_ports: bool = False
    ports: tuple[int, ...] | None = None  # only connections to these ports (None: every port)
    name: str = ""

    def title(self) -> str:
        if self.name:
            return self.name
        on = "" if self.ports is None else " to port " + ",".join(map(str, self.ports))
        return f"no connection{on} loops through the proxy"

    def checks(self, world: World) -> list[tuple[Scope, Pred]]:
        p = world.proxy
        skip = () if self.include_proxy_ports else tuple(
            str(x) for x in {p.outbound_port, p.inbound_port} if x is not None)
        out: list[tuple[Scope, Pred]] = []
        for fam in world.families:
            only = None if self.ports is None else tuple(str(x) for x in self.ports)
            if world.peer_ip(fam) is not None:
                out.append((Scope(family=fam, client="peer", dports=only, dports_not=skip),
                            Not(EndsAs({"loop"}))))
            out.append((Scope(family=fam, client="any-app", dports=only, dports_not=skip),
                        Not(EndsAs({"loop"}))))
        return out


@attrs.frozen
class NoExposure:
    """No app socket bound to a loopback address is reachable from a remote peer."""

    name: str = ""

    def title(self) -> str:
        return self.name or "localhost-only sockets are not exposed"

    def checks(self, world: World) -> list[tuple[Scope, Pred]]:
        out: list[tuple[Scope, Pred]] = []
        for fam in world.families:
            if world.peer_ip(fam) is None:
                continue
            for app in world.apps:
                for s in app.sockets:
                    if s.bind.is_loopback:
                        out.append((Scope(family=fam, client="peer", dports=(str(s.port),)),
                                    Not(DeliveredTo(app=app.name, bind=s.bind, port=s.port))))
        return out



@attrs.frozen
class Observation:
    """Every connection of ``client`` to ``dst:port`` is seen by the proxy on each of ``sides``
    (``"out"``: client-side telemetry, ``"in"``: server-side); with ``delivered`` also delivered.

    The seed's self-call is ``Observation("app", "198.51.100.1", 9001, sides=("out", "in"))``
    with the service's endpoint on the pod itself.
    """

    client: str
    dst: IPAddress = attrs.field(converter=to_address)
    port: int
    sides: tuple[Side, ...] = ("out", "in")
    delivered: bool = True
    exactly: bool = False  # exactly these sides, in this order (``sides=()``: the proxy never sees it)
    name: str = ""

    def title(self) -> str:
        s = " and ".join("client side" if x == "out" else "server side" for x in self.sides)
        if self.exactly:
            return self.name or f"{self.client} -> {self.dst}:{self.port} is observed exactly: {s or 'never'}"
        return self.name or f"{self.client} -> {self.dst}:{self.port} is observed {s}"

    def checks(self, world: World) -> list[tuple[Scope, Pred]]:
        fam: Family = "ipv4" if self.dst.version == 4 else "ipv6"
        preds: list[Pred] = [ObservedExactly(self.sides)] if self.exactly else [Observed(s) for s in self.sides]
        if self.delivered:
            preds.append(EndsAs({"delivered"}))
        return [(_client_scope(self.client, fam, dst=(self.dst,), dports=(self.port,)), AllOf(preds))]


@attrs.frozen
class LeavesPod:
    """Every connection of ``client`` to the remote ``dst:port`` leaves the pod towards its destination
    and completes there (its source is one the remote host can answer, its handshake gets through),
    seen by the proxy on each of ``sides`` on the way."""

    client: str
    dst: IPAddress = attrs.field(converter=to_address)
    port: int
    sides: tuple[Side, ...] = ("out",)
    exactly: bool = False  # the sides are exactly these (``sides=()`` with it: the proxy never sees it)
    name: str = ""

    def title(self) -> str:
        return self.name or f"{self.client} -> {self.dst}:{self.port} leaves the pod"

    def checks(self, world: World) -> list[tuple[Scope, Pred]]:
        fam: Family = "ipv4" if self.dst.version == 4 else "ipv6"
        preds: list[Pred] = [ObservedExactly(self.sides)] if self.exactly else [Observed(s) for s in self.sides]
        preds.append(EndsAs({"egress"}))
        return [(_client_scope(self.client, fam, dst=(self.dst,), dports=(self.port,)), AllOf(preds))]


@attrs.frozen
class Direct:
    """Every connection of ``client`` (an app, or ``any-app``: any process but the proxy) to ``dst``
    (on ``port``, or any port) goes straight to its socket or destination: the proxy never sees it.
    ``dst`` may be local (127.0.0.1, the pod's own address) or remote. Connections addressed to the
    proxy's own listener ports are left out (they are calls to the proxy, not captures)."""

    client: str
    dst: IPAddress = attrs.field(converter=to_address)
    port: int | None = None
    name: str = ""

    def title(self) -> str:
        on = f":{self.port}" if self.port is not None else ""
        return self.name or f"{self.client} -> {self.dst}{on} goes direct, the proxy never sees it"

    def checks(self, world: World) -> list[tuple[Scope, Pred]]:
        fam: Family = "ipv4" if self.dst.version == 4 else "ipv6"
        ports = None if self.port is None else (str(self.port),)
        p = world.proxy
        listeners = tuple(str(x) for x in {p.outbound_port, p.inbound_port} if x is not None)
        if self.client == "any-app":
            scope = Scope(family=fam, client="any-app", uid_not=(p.uid,), gid_not=(p.gid,), dst=(self.dst,),
                          dports=ports, dports_not=listeners)
        else:
            scope = _client_scope(self.client, fam, dst=(self.dst,), dports=ports, dports_not=listeners)
        return [(scope, AllOf((ObservedExactly(()), EndsAs({"delivered", "refused", "egress"}))))]


EXEMPT_DIRECTIONS = ("inbound", "local", "outbound")


def _directions(values: Iterable[str]) -> tuple[str, ...]:
    out = tuple(values)
    bad = [x for x in out if x not in EXEMPT_DIRECTIONS]
    if bad:
        raise ValueError(f"a direction is one of {', '.join(EXEMPT_DIRECTIONS)}, got {', '.join(bad)}")
    return out


@attrs.frozen
class Exempt:
    """Connections to ``ports`` are left alone by capture — the proxy never sees them — in the given
    ``directions``: ``inbound`` (a peer's to the pod), ``local`` (any process's, the proxy's included,
    to the pod's own addresses), ``outbound`` (any other process's to a remote address). A tunnel port
    is exempt inbound and locally; excluded outbound ports are exempt outbound."""

    ports: tuple[int, ...] = attrs.field(converter=_ints)
    directions: tuple[str, ...] = attrs.field(default=EXEMPT_DIRECTIONS, converter=_directions)
    name: str = ""

    def title(self) -> str:
        return self.name or f"port {','.join(map(str, self.ports))} is exempt from capture " \
                            f"({', '.join(self.directions)})"

    def checks(self, world: World) -> list[tuple[Scope, Pred]]:
        ports = tuple(str(x) for x in self.ports)
        p = world.proxy
        out: list[tuple[Scope, Pred]] = []
        for fam in world.families:
            if "inbound" in self.directions and world.peer_ip(fam) is not None:
                out.append((Scope(family=fam, client="peer", dports=ports), ObservedExactly(())))
            if "local" in self.directions:
                out.append((Scope(family=fam, client="any-app", local=True, dports=ports), ObservedExactly(())))
            if "outbound" in self.directions:
                out.append((Scope(family=fam, client="any-app", uid_not=(p.uid,), gid_not=(p.gid,), local=False,
                                  dports=ports), ObservedExactly(())))
        return out


Property: TypeAlias = (
    Reachable | CaptureOutbound | CaptureInbound | Bypass | NoLoops | NoExposure | Observation | LeavesPod
    | Direct | Exempt | AmbientProperty
)


def _families(world: World, dst: IPAddress | None) -> tuple[Family, ...]:
    if dst is not None:
        return ("ipv4",) if dst.version == 4 else ("ipv6",)
    return world.families


def _client_scope(client: str, fam: Family, **kw: object) -> Scope:
    if client in ("peer", "proxy"):
        return Scope(family=fam, client=client, **kw)  # type: ignore[arg-type]
    return Scope(family=fam, client="app", app=client, **kw)  # type: ignore[arg-type]


def default_properties(world: World) -> tuple[Property, ...]:
    """What every capture set-up should satisfy: outbound capture, inbound capture of the ports the
    apps listen on, bypass of the proxy's own traffic, no loops, no exposure of localhost sockets."""
    app_ports = tuple(sorted({s.port for a in world.apps for s in a.sockets}))
    inbound = CaptureInbound(ports=app_ports) if app_ports else CaptureInbound()
    return (CaptureOutbound(), inbound, Bypass(), NoLoops(), NoExposure())
