"""A pod world: the pod's addresses, its apps and their listening sockets, the sidecar proxy's
behaviour (as explicit parameters, not hard-coded Istio), the services it can call, the iptables
rulesets, and the connection attempts (flows) one can ask about.

Only values live here; what happens to a flow is the business of ``meshsolve.semantics``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import attrs

from meshsolve.errors import WorldError
from meshsolve.model.net import Family, IPAddress, family_of, to_address, to_port
from meshsolve.model.rules import Rulesets

__all__ = [
    "App",
    "Endpoint",
    "Flow",
    "ProxyBehavior",
    "Service",
    "Socket",
    "World",
]

LOOPBACK_V4 = to_address("127.0.0.1")
LOOPBACK_V6 = to_address("::1")


def _addr(value: str | IPAddress) -> IPAddress:
    return to_address(value)


def _addrs(values: Iterable[str | IPAddress]) -> tuple[IPAddress, ...]:
    return tuple(to_address(v) for v in values)


def _ports(values: Iterable[int | str] | None) -> tuple[int, ...] | None:
    return None if values is None else tuple(sorted({to_port(v) for v in values}))


@attrs.frozen
class Socket:
    """A listening TCP socket: ``bind`` is ``0.0.0.0``, ``::``, ``127.0.0.1``, ``::1`` or a pod IP.

    ``v6only`` applies to ``::`` only: without it (Linux default) ``::`` also accepts IPv4.
    """

    bind: IPAddress = attrs.field(converter=_addr)
    port: int = attrs.field(converter=to_port)
    v6only: bool = False

    def __str__(self) -> str:
        host = f"[{self.bind}]" if self.bind.version == 6 else str(self.bind)
        return f"{host}:{self.port}"


@attrs.frozen
class App:
    """An application process in the pod: its ids and its listening sockets."""

    name: str
    uid: int = 1000
    gid: int = 1000
    sockets: tuple[Socket, ...] = attrs.field(default=(), converter=tuple)


@attrs.frozen
class Endpoint:
    """One backend of a service: an address and a target port."""

    address: IPAddress = attrs.field(converter=_addr)
    port: int = attrs.field(converter=to_port)

    def __str__(self) -> str:
        host = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return f"{host}:{self.port}"


@attrs.frozen
class Service:
    """A service VIP:port load-balanced (by the proxy's outbound side) to its endpoints."""

    name: str
    vip: IPAddress = attrs.field(converter=_addr)
    port: int = attrs.field(converter=to_port)
    endpoints: tuple[Endpoint, ...] = attrs.field(default=(), converter=tuple)


@attrs.frozen
class ProxyBehavior:
    """What the sidecar does with a connection that iptables handed to it.

    - ``outbound_port``: the listener that outbound captures land on (Istio: 15001).
    - ``inbound_port``: the listener inbound captures land on (Istio ≥1.3: 15006); ``None`` means
      inbound captures are also sent to ``outbound_port`` (Istio ≤1.2).
    - ``virtual_inbound_dispatch``: the outbound listener hands a connection whose original
      destination is one of the pod's own IPs and one of ``inbound_ports`` to the inbound side
      (the Istio 1.0–1.2 ``virtual`` listener with ``use_original_dst``).
    - ``inbound_ports``: ports the proxy has inbound listeners for; ``None`` = every port.
    - ``inbound_endpoint``: where the inbound side forwards: ``"localhost"`` (127.0.0.1/::1 with the
      original port, Istio ≤1.9) or ``"original_dst"`` (the pod IP it was sent to, Istio ≥1.10).
    - ``inbound_source_v4``/``_v6``: the source address the inbound side binds for its upstream
      connection (Istio ≥1.10: 127.0.0.6 / ::6), or ``None`` to let the kernel choose.
    - ``outbound``: the outbound side's upstream for a non-service destination: ``"passthrough"`` to
      the original destination, or ``"blackhole"`` (connection closed).
    """

    uid: int = 1337
    gid: int = 1337
    outbound_port: int = attrs.field(default=15001, converter=to_port)
    inbound_port: int | None = 15006
    virtual_inbound_dispatch: bool = False
    inbound_ports: tuple[int, ...] | None = attrs.field(default=None, converter=_ports)
    inbound_endpoint: Literal["localhost", "original_dst"] = "original_dst"
    inbound_source_v4: IPAddress | None = attrs.field(
        default=None, converter=attrs.converters.optional(_addr))
    inbound_source_v6: IPAddress | None = attrs.field(
        default=None, converter=attrs.converters.optional(_addr))
    outbound: Literal["passthrough", "blackhole"] = "passthrough"

    def inbound_source(self, family: Family) -> IPAddress | None:
        return self.inbound_source_v4 if family == "ipv4" else self.inbound_source_v6


@attrs.frozen
class World:
    """One pod and its surroundings.

    ``pod_ips`` are the addresses of the pod interface ``interface`` (v4 and/or v6); ``peer_ips``
    are the addresses a remote client connects from (one per family).
    """

    pod_ips: tuple[IPAddress, ...] = attrs.field(converter=_addrs)
    peer_ips: tuple[IPAddress, ...] = attrs.field(converter=_addrs)
    apps: tuple[App, ...] = attrs.field(default=(), converter=tuple)
    proxy: ProxyBehavior = attrs.field(factory=ProxyBehavior)
    services: tuple[Service, ...] = attrs.field(default=(), converter=tuple)
    rules: Rulesets = attrs.field(factory=Rulesets)
    interface: str = "eth0"
    name: str = "pod"
    namespace: str = "default"

    def pod_ip(self, family: Family) -> IPAddress | None:
        return next((a for a in self.pod_ips if family_of(a) == family), None)

    def peer_ip(self, family: Family) -> IPAddress | None:
        return next((a for a in self.peer_ips if family_of(a) == family), None)

    def app(self, name: str) -> App:
        for a in self.apps:
            if a.name == name:
                return a
        raise WorldError(f"no app named {name!r} in the world")

    def service_at(self, vip: IPAddress, port: int) -> Service | None:
        for s in self.services:
            if s.vip == vip and s.port == port:
                return s
        return None

    @property
    def families(self) -> tuple[Family, ...]:
        fams = {family_of(a) for a in self.pod_ips}
        return tuple(f for f in ("ipv4", "ipv6") if f in fams)


@attrs.frozen
class Flow:
    """One connection attempt: who opens it, to which address and port.

    ``client`` is ``"peer"`` (a remote host, arriving on the pod interface), ``"proxy"`` (the sidecar
    itself) or the name of an app in the pod. ``endpoint`` picks which backend the proxy's outbound
    side chooses when the destination is a service VIP (an index into its endpoints).
    """

    client: str
    dst: IPAddress = attrs.field(converter=_addr)
    dport: int = attrs.field(converter=to_port)
    protocol: Literal["tcp", "udp"] = "tcp"
    sport: int | None = None
    endpoint: int = 0

    @property
    def family(self) -> Family:
        return family_of(self.dst)

    def __str__(self) -> str:
        host = f"[{self.dst}]" if self.dst.version == 6 else str(self.dst)
        via = f" (endpoint #{self.endpoint})" if self.endpoint else ""
        return f"{self.client} -> {host}:{self.dport}/{self.protocol}{via}"
