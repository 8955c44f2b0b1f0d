"""A pod world: the pod's addresses, its apps and their listening sockets, the sidecar proxy's
behaviour (as explicit parameters, not hard-coded Istio), the services it can call, the iptables
rulesets, and the connection attempts (flows) one can ask about.

Only values live here; what happens to a flow is the business of ``meshsolve.semantics``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Literal

import attrs

import meshsolve.defaults as defaults
from meshsolve.errors import WorldError
from meshsolve.model.kinds import kind_of
from meshsolve.model.net import Family, IPAddress, IPNetwork, family_of, to_address, to_port
from meshsolve.model.routing import Routing
from meshsolve.model.rules import (
    Goto,
    Jump,
    NftTable,
    Rule,
    Ruleset,
    Rulesets,
)

__all__ = [
    "App",
    "Endpoint",
    "Flow",
    "IpSet",
    "ProxyBehavior",
    "Service",
    "Socket",
    "World",
    "validate_rulesets",
    "validate_world",
]

LOOPBACK_V4 = to_address("127.0.0.1")
LOOPBACK_V6 = to_address("::1")


def _addr(value: str | IPAddress) -> IPAddress:
    return to_address(value)


def _addrs(values: Iterable[str | IPAddress]) -> tuple[IPAddress, ...]:
    return tuple(to_address(v) for v in values)


def _port_set(values: Iterable[int | str]) -> tuple[int, ...]:
    return tuple(sorted({to_port(v) for v in values}))


def _ports(values: Iterable[int | str] | None) -> tuple[int, ...] | None:
    return None if values is None else tuple(sorted({to_port(v) for v in values}))


@attrs.frozen
class Socket:
    """A listening TCP socket: ``bind`` is ``0.0.0.0``, ``::``, ``127.0.0.1``, ``::1`` or a pod IP.

    ``v6only`` applies to ``::`` only: without it (Linux default) ``::`` also accepts IPv4.
    ``reuseport``: the socket set SO_REUSEPORT, which lets a wildcard and a specific bind share a port
    (only when both set it and belong to the same uid).
    """

    bind: IPAddress = attrs.field(converter=_addr)
    port: int = attrs.field(converter=to_port)
    v6only: bool = False
    reuseport: bool = False

    def __str__(self) -> str:
        host = f"[{self.bind}]" if self.bind.version == 6 else str(self.bind)
        return f"{host}:{self.port}"


def _sockets(values: Iterable[Socket]) -> tuple[Socket, ...]:
    return tuple(values)


def _mark(value: int | str | None) -> int | None:
    """A socket mark: an int (or its text, ``0x539``) in 0..0xffffffff; 0 is no mark (None)."""
    if value is None:
        return None
    try:
        mark = value if isinstance(value, int) and not isinstance(value, bool) else int(str(value), 0)
    except ValueError:
        raise WorldError(f"socket mark {value!r} is not a number") from None
    if not 0 <= mark <= 0xFFFFFFFF:
        raise WorldError(f"socket mark {value!r} is not a 32-bit value (0..0xffffffff)")
    return mark or None


@attrs.frozen
class App:
    """An application process in the pod: its ids, its listening sockets and ``mark``, the
    ``SO_MARK`` on every socket it opens (its connections and its listeners; setting it needs
    ``CAP_NET_ADMIN``), or None for none (0 is no mark too, and reads as None)."""

    name: str
    uid: int = defaults.APP_UID
    gid: int = defaults.APP_GID
    sockets: tuple[Socket, ...] = attrs.field(default=(), converter=_sockets)
    mark: int | None = attrs.field(default=None, converter=_mark)


@attrs.frozen
class Endpoint:
    """One backend of a service: an address and a target port."""

    address: IPAddress = attrs.field(converter=_addr)
    port: int = attrs.field(converter=to_port)

    def __str__(self) -> str:
        host = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return f"{host}:{self.port}"


def _endpoints(values: Iterable[Endpoint]) -> tuple[Endpoint, ...]:
    return tuple(values)


@attrs.frozen
class Service:
    """A service VIP:port load-balanced (by the proxy's outbound side) to its endpoints."""

    name: str
    vip: IPAddress = attrs.field(converter=_addr)
    port: int = attrs.field(converter=to_port)
    endpoints: tuple[Endpoint, ...] = attrs.field(default=(), converter=_endpoints)


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
    - ``transparent``: the listeners are ``IP_TRANSPARENT`` (TPROXY can hand them connections).
    - ``inbound_original_source``: the inbound side connects upstream from the client's own address
      (a transparent socket: Envoy's ``original_src``), instead of ``inbound_source_*``.
    - ``upstream_mark``: the mark (``SO_MARK``) on the inbound side's upstream sockets, or None.
    - ``tunnel_port``: the port of the proxy's tunnel (HBONE) listener that capture leaves alone
      (Istio ≥1.7: 15008), or None; meshsolve names it (goals, vocabulary) but does not model what
      listens there unless it is one of ``own_listeners``.
    - ``socket_mark``: ``SO_MARK`` on every socket of the proxy, listeners included (a SYN-ACK from a
      listener carries it) — ambient's ztunnel marks all its sockets 0x539 — or None.
    - ``own_listeners``: ports where the proxy listens in the pod and ends the connection itself
      (ztunnel's HBONE 15008 and DNS 15053): a connection there is delivered to the proxy.
    """

    uid: int = defaults.PROXY_UID
    gid: int = defaults.PROXY_GID
    outbound_port: int = attrs.field(default=defaults.PROXY_OUTBOUND_PORT, converter=to_port)
    inbound_port: int | None = attrs.field(default=defaults.PROXY_INBOUND_PORT,
                                           converter=attrs.converters.optional(to_port))
    virtual_inbound_dispatch: bool = False
    inbound_ports: tuple[int, ...] | None = attrs.field(default=None, converter=_ports)
    inbound_endpoint: Literal["localhost", "original_dst"] = "original_dst"
    inbound_source_v4: IPAddress | None = attrs.field(
        default=None, converter=attrs.converters.optional(_addr))
    inbound_source_v6: IPAddress | None = attrs.field(
        default=None, converter=attrs.converters.optional(_addr))
    outbound: Literal["passthrough", "blackhole"] = "passthrough"
    transparent: bool = False
    inbound_original_source: bool = False
    upstream_mark: int | None = None
    tunnel_port: int | None = attrs.field(default=None, converter=attrs.converters.optional(to_port))
    socket_mark: int | None = None
    own_listeners: tuple[int, ...] = attrs.field(default=(), converter=_port_set)

    def inbound_source(self, family: Family) -> IPAddress | None:
        return self.inbound_source_v4 if family == "ipv4" else self.inbound_source_v6


def _nets(values: Iterable[str | IPNetwork | IPAddress]) -> tuple[IPNetwork, ...]:
    return tuple(sorted({ipaddress.ip_network(v, strict=False) for v in values}, key=lambda n: (n.version, n)))


@attrs.frozen
class IpSet:
    """The members of a set of addresses the rules look up by name (an ipset ``hash:ip``/``hash:net``,
    or an nft set filled at run time): state of the host, given by the input, never guessed. An
    ``-m set``/``@NAME`` lookup of a set the world does not give is left undecided."""

    name: str
    family: Family
    members: tuple[IPNetwork, ...] = attrs.field(default=(), converter=_nets)

    def __attrs_post_init__(self) -> None:
        if self.family not in ("ipv4", "ipv6"):
            raise WorldError(f"set {self.name!r}: family {self.family!r} is not ipv4 or ipv6")
        for n in self.members:
            if (n.version == 4) != (self.family == "ipv4"):
                raise WorldError(f"set {self.name!r} of {self.family} addresses holds {n}")


def _ip_sets(values: Iterable[IpSet]) -> tuple[IpSet, ...]:
    return tuple(values)


def _apps(values: Iterable[App]) -> tuple[App, ...]:
    return tuple(values)


def _services(values: Iterable[Service]) -> tuple[Service, ...]:
    return tuple(values)


@attrs.frozen
class World:
    """One pod and its surroundings.

    ``pod_ips`` are the addresses of the pod interface ``interface`` (v4 and/or v6); ``peer_ips``
    are the addresses a remote client connects from (one per family); ``ip_sets``: the members of
    the address sets the rules look up by name (``-m set``, nft ``@NAME``), where the input gives them.
    """

    pod_ips: tuple[IPAddress, ...] = attrs.field(converter=_addrs)
    peer_ips: tuple[IPAddress, ...] = attrs.field(converter=_addrs)
    apps: tuple[App, ...] = attrs.field(default=(), converter=_apps)
    proxy: ProxyBehavior = attrs.field(factory=ProxyBehavior)
    services: tuple[Service, ...] = attrs.field(default=(), converter=_services)
    rules: Rulesets = attrs.field(factory=Rulesets)
    routing: Routing = attrs.field(factory=Routing)
    interface: str = "eth0"
    name: str = "pod"
    namespace: str = "default"
    ip_sets: tuple[IpSet, ...] = attrs.field(default=(), converter=_ip_sets)

    def ip_set(self, name: str) -> IpSet | None:
        """The set named ``name`` (None: the world does not give its members)."""
        return next((s for s in self.ip_sets if s.name == name), None)

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

    def __attrs_post_init__(self) -> None:
        validate_world(self)

    def local_networks(self, family: Family) -> tuple[IPNetwork, ...]:
        """The addresses the pod owns: 127.0.0.0/8 or ::1, its pod IPs, and the proxy's IPv6 inbound
        source (Istio adds ``::6/128`` to ``lo``; 127.0.0.6 needs nothing, it is inside 127/8)."""
        if family == "ipv4":
            nets: list[IPNetwork] = [ipaddress.IPv4Network("127.0.0.0/8")]
        else:
            nets = [ipaddress.IPv6Network("::1/128")]
            if self.proxy.inbound_source_v6 is not None:
                nets.append(ipaddress.ip_network(self.proxy.inbound_source_v6))
        nets.extend(ipaddress.ip_network(a) for a in self.pod_ips if family_of(a) == family)
        return tuple(nets)

    def is_local(self, addr: IPAddress) -> bool:
        """True when ``addr`` is one of the pod's own addresses (traffic to it goes over ``lo``)."""
        return any(addr in n for n in self.local_networks(family_of(addr)))

    def proxy_sockets(self) -> tuple[Socket, ...]:
        """The proxy's listeners: ``outbound_port``, ``inbound_port`` and its own listeners on 0.0.0.0
        and/or ``::`` (``::`` with V6ONLY, as Envoy binds it), for each family the pod has an address in."""
        ports = [self.proxy.outbound_port]
        if self.proxy.inbound_port is not None:
            ports.append(self.proxy.inbound_port)
        ports.extend(self.proxy.own_listeners)
        out: list[Socket] = []
        for fam in self.families:
            wildcard = "0.0.0.0" if fam == "ipv4" else "::"
            out.extend(Socket(wildcard, p, v6only=fam == "ipv6") for p in ports)
        return tuple(out)


_WILDCARDS = (ipaddress.IPv4Address("0.0.0.0"), ipaddress.IPv6Address("::"))


def _shares(a: Socket, b: Socket) -> bool:
    """Whether two distinct binds on one port overlap: a wildcard and an address it covers."""
    def covers(w: Socket, o: Socket) -> bool:
        if not w.bind.is_unspecified or o.bind.is_unspecified:
            return False  # two wildcards are checked on their own (a :: without V6ONLY takes IPv4)
        return w.bind.version == o.bind.version or (w.bind.version == 6 and not w.v6only)
    return covers(a, b) or covers(b, a)


def validate_world(world: World) -> None:
    """Raise ``WorldError`` for a world that cannot exist.

    Checked: at least one pod IP and at most one per family; one peer IP per family at most;
    app names unique and not ``peer``/``proxy``; each socket bound to a wildcard or a local address;
    no two sockets on the same address and port (also across apps); no ``::`` (without V6ONLY) and
    ``0.0.0.0`` on the same port; no app socket on a proxy listener port; distinct proxy ports; the
    proxy's inbound source is local (IPv4: inside 127/8 or a pod IP); every service has endpoints;
    set names unique; and the rulesets pass ``validate_rulesets``.
    """
    if not world.pod_ips:
        raise WorldError(f"world {world.name!r} has no pod IP")
    set_names = [s.name for s in world.ip_sets]
    if len(set(set_names)) != len(set_names):
        raise WorldError(f"world {world.name!r} gives a set twice: {', '.join(sorted(set_names))}")
    for what, addrs in (("pod IP", world.pod_ips), ("peer IP", world.peer_ips)):
        fams = [family_of(a) for a in addrs]
        for fam in ("ipv4", "ipv6"):
            if fams.count(fam) > 1:
                raise WorldError(f"world {world.name!r} has more than one {fam} {what}: "
                                 f"{', '.join(str(a) for a in addrs if family_of(a) == fam)}")
    for a in world.pod_ips:
        if a.is_loopback or a.is_unspecified:
            raise WorldError(f"pod IP {a} must be an interface address, not loopback/unspecified")
    names = [a.name for a in world.apps]
    for n in names:
        if names.count(n) > 1:
            raise WorldError(f"two apps are named {n!r}")
        if n in ("peer", "proxy"):
            raise WorldError(f"an app may not be named {n!r} (that name is a flow client kind)")
    proxy_ports = {world.proxy.outbound_port}
    if world.proxy.inbound_port is not None:
        if world.proxy.inbound_port == world.proxy.outbound_port:
            raise WorldError(f"proxy inbound_port {world.proxy.inbound_port} equals outbound_port; "
                             "use inbound_port=None for one shared listener")
        proxy_ports.add(world.proxy.inbound_port)
    proxy_ports.update(world.proxy.own_listeners)
    seen: dict[tuple[IPAddress, int], str] = {}
    dual: dict[int, str] = {}
    by_port: dict[int, list[tuple[App, Socket]]] = {}
    for app in world.apps:
        for s in app.sockets:
            for other_app, o in by_port.get(s.port, ()):
                if _shares(s, o) and not (s.reuseport and o.reuseport and other_app.uid == app.uid):
                    raise WorldError(f"app {app.name!r} socket {s}: {o} of app {other_app.name!r} covers the same "
                                     "port; both binds succeed only with SO_REUSEPORT on both sockets and the same "
                                     "uid (else bind() fails with EADDRINUSE)")
            by_port.setdefault(s.port, []).append((app, s))
            where = f"app {app.name!r} socket {s}"
            if s.bind not in _WILDCARDS and not world.is_local(s.bind):
                raise WorldError(f"{where}: {s.bind} is not an address of the pod (bind would fail)")
            if s.port in proxy_ports:
                raise WorldError(f"{where} collides with a proxy listener on port {s.port}")
            key = (s.bind, s.port)
            if key in seen:
                raise WorldError(f"{where}: {s} is already bound by {seen[key]}")
            seen[key] = where
            if s.bind == _WILDCARDS[0] or (s.bind == _WILDCARDS[1] and not s.v6only):
                if s.port in dual:
                    raise WorldError(f"{where}: port {s.port} is already bound for all IPv4 addresses "
                                     f"by {dual[s.port]} (a :: socket without V6ONLY also takes IPv4)")
                dual[s.port] = where
    for fam, src in (("ipv4", world.proxy.inbound_source_v4), ("ipv6", world.proxy.inbound_source_v6)):
        if src is None:
            continue
        if family_of(src) != fam:
            raise WorldError(f"proxy inbound_source_{fam[2:]} {src} is not an {fam} address")
        if fam == "ipv4" and not world.is_local(src):
            raise WorldError(f"proxy inbound source {src} is not local (must be in 127.0.0.0/8 or a pod IP)")
    for svc in world.services:
        if not svc.endpoints:
            raise WorldError(f"service {svc.name!r} ({svc.vip}:{svc.port}) has no endpoints")
    validate_rulesets(world.rules)


def validate_rulesets(rulesets: Rulesets) -> None:
    """Raise ``WorldError`` for rules the kernel's loader would refuse: a jump/goto to a missing chain,
    a jump cycle, and any match or target used outside the tables and hooks the kind registry
    (``meshsolve.model.kinds``) allows — ``-m owner`` reached from PREROUTING, REDIRECT outside nat
    PREROUTING/OUTPUT, DROP in nat, REJECT outside filter INPUT/FORWARD/OUTPUT, ``-i`` in OUTPUT...
    The message names the rule and, when it came from a file, its line."""
    for ruleset in rulesets.ipv4, rulesets.ipv6:
        for table in ruleset.tables:
            graph: dict[str, list[str]] = {}
            for chain in table.chains:
                targets = graph.setdefault(chain.name, [])
                for n, rule in enumerate(chain.rules, 1):
                    tgt = rule.target
                    if isinstance(tgt, Jump | Goto):
                        if table.chain(tgt.chain) is None:
                            raise WorldError(f"{_where(ruleset, table.name, chain.name, n, rule)} jumps to "
                                             f"chain {tgt.chain}, which does not exist")
                        targets.append(tgt.chain)
            _check_cycles(ruleset.family, table.name, graph)
            reach: dict[str, set[str]] = {}
            for chain in table.chains:
                if chain.builtin:
                    stack = [chain.name]
                    while stack:
                        c = stack.pop()
                        hooks = reach.setdefault(c, set())
                        if chain.name in hooks:
                            continue
                        hooks.add(chain.name)
                        stack.extend(graph.get(c, ()))
            for chain in table.chains:
                reached = frozenset(reach.get(chain.name, set()))
                builtin = chain.name if chain.builtin else None
                for n, rule in enumerate(chain.rules, 1):
                    for part in (*rule.matches, *((rule.target,) if rule.target is not None else ())):
                        why = kind_of(part).allowed(table.name, reached, builtin)
                        if why is not None:
                            raise WorldError(f"{_where(ruleset, table.name, chain.name, n, rule)}: {why}")
        for nft in ruleset.nft:
            _validate_nft(ruleset, nft)


def _validate_nft(ruleset: Ruleset, nft: NftTable) -> None:
    """A native nftables table: jumps to existing chains, no cycles, and each kind used where nft
    accepts it: reached only from base chains of the types and hooks its registry entry allows
    (``Kind.allowed_nft``)."""
    table = nft.table
    graph: dict[str, list[str]] = {}
    for chain in table.chains:
        targets = graph.setdefault(chain.name, [])
        for n, rule in enumerate(chain.rules, 1):
            if isinstance(rule.target, Jump | Goto):
                if table.chain(rule.target.chain) is None:
                    raise WorldError(f"{_where(ruleset, nft.key, chain.name, n, rule)} jumps to chain "
                                     f"{rule.target.chain}, which does not exist")
                targets.append(rule.target.chain)
    _check_cycles(ruleset.family, nft.key, graph)
    reach: dict[str, set[tuple[str, str]]] = {}
    for base in nft.bases:
        stack = [base.chain]
        while stack:
            c = stack.pop()
            seen = reach.setdefault(c, set())
            if (base.hook, base.type) in seen:
                continue
            seen.add((base.hook, base.type))
            stack.extend(graph.get(c, ()))
    for chain in table.chains:
        for ctype in sorted({t for _h, t in reach.get(chain.name, set())}):
            hooks = frozenset(h for h, t in reach.get(chain.name, set()) if t == ctype)
            for n, rule in enumerate(chain.rules, 1):
                for part in (*rule.matches, *((rule.target,) if rule.target is not None else ())):
                    why = kind_of(part).allowed_nft(ctype, hooks)
                    if why is not None:
                        raise WorldError(f"{_where(ruleset, nft.key, chain.name, n, rule)}: {why}")


def _where(ruleset: Ruleset, table: str, chain: str, n: int, rule: Rule) -> str:
    at = f" (line {rule.origin})" if rule.origin is not None else ""
    return f"{ruleset.family} {table}::{chain}#{n}{at}"


def _check_cycles(family: str, table: str, graph: dict[str, list[str]]) -> None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt):], nxt] if nxt in path else [node, nxt]
                raise WorldError(f"{family} table {table}: jump cycle {' -> '.join(cycle)}")
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in graph:
        if start not in state:
            visit(start, [start])


@attrs.frozen
class Flow:
    """One connection attempt: who opens it, to which address and port.

    ``client`` is ``"peer"`` (a remote host, arriving on the pod interface), ``"proxy"`` (the sidecar
    itself) or the name of an app in the pod. ``endpoint`` picks which backend the proxy's outbound
    side chooses when the destination is a service VIP (an index into its endpoints). ``src`` is the
    address a peer's connection comes from (default: the world's peer address), e.g. the node's
    probe address after its SNAT. ``inner`` is the port the connection names as a tunnel's inner
    target (HBONE's CONNECT to the pod's address at that port), or None for a plain connection: a
    proxy whose tunnel listener accepts it connects there itself.
    """

    client: str
    dst: IPAddress = attrs.field(converter=_addr)
    dport: int = attrs.field(converter=to_port)
    protocol: Literal["tcp", "udp"] = "tcp"
    sport: int | None = None
    endpoint: int = 0
    src: IPAddress | None = attrs.field(default=None, converter=attrs.converters.optional(_addr))
    inner: int | None = attrs.field(default=None, converter=attrs.converters.optional(to_port))

    @inner.validator
    def _inner_port(self, _attr: object, value: int | None) -> None:
        if value == 0:
            raise WorldError(f"flow to {self.dst} port {self.dport}: a tunnel's inner port is 1..65535, not 0")

    @property
    def family(self) -> Family:
        return family_of(self.dst)

    def __str__(self) -> str:
        host = f"[{self.dst}]" if self.dst.version == 6 else str(self.dst)
        via = f" (endpoint #{self.endpoint})" if self.endpoint else ""
        src = f" from {self.src}" if self.src is not None else ""
        tunnel = f" (tunnel to port {self.inner})" if self.inner is not None else ""
        return f"{self.client}{src} -> {host}:{self.dport}/{self.protocol}{via}{tunnel}"
