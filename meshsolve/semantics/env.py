"""The pod as the kernel sees it for one address family, the packet a rule looks at, and the
socket table: which listening socket takes a connection.

Sockets: an exact bind beats a wildcard on the same port; ``0.0.0.0`` accepts any local IPv4
destination, ``::`` any local IPv6 one and, without V6ONLY, IPv4 too; ``127.0.0.1`` only 127.0.0.1;
a pod-IP bind only the pod IP. Only TCP sockets listen. The proxy listens on 0.0.0.0 and ``::``
(V6ONLY) at its outbound and inbound ports, ``IP_TRANSPARENT`` when the world says so.

Source ports the kernel picks come from the ephemeral range (``EPHEMERAL``: Linux's default
``ip_local_port_range``), so a rule about a port range decides for them when the range covers that
range or misses it, and is undetermined otherwise.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import attrs

from meshsolve.model.kinds import enables_conntrack
from meshsolve.model.net import Family, IPAddress, IPNetwork
from meshsolve.model.path import Hook, Stage
from meshsolve.model.world import Socket, World
from meshsolve.semantics.domain import Domain

__all__ = ["EPHEMERAL", "Env", "Pkt", "SockView", "is_local", "is_loopback", "lookup", "port_held"]

_LO4 = ipaddress.IPv4Address("127.0.0.1")
_LO6 = ipaddress.IPv6Address("::1")
EPHEMERAL = (32768, 60999)  # net.ipv4.ip_local_port_range, Linux's default
# Socket classes: an app socket, the proxy's outbound / inbound listener, nothing (RST).
DELIV, REFUSED, OUT, IN = 0, 1, 4, 5
NO_SOCKET = 0xFFFF


@attrs.frozen
class Env:
    """The per-family facts rules and routes ask about: the pod's local networks, its interface and
    address, each interface's primary address, owner names that resolve to ids, the sockets."""

    world: World
    family: Family
    local_nets: tuple[IPNetwork, ...]
    pod_ip: IPAddress | None
    names: tuple[tuple[str, int], ...] = ()
    sockets: tuple[tuple[str, Socket], ...] = ()
    conntrack: bool = True
    # addresses on lo only under a condition (a domain Boolean): the synthesizer's passthrough knob
    cond_local: tuple[tuple[IPNetwork, Any], ...] = ()
    # nothing can act on a connection's later packets (see ``replies_free``)
    replies_free: bool = False
    _stages: dict[str, tuple[Stage, ...]] = attrs.field(factory=dict, eq=False, repr=False, hash=False)


    def stages(self, hook: Hook) -> tuple[Stage, ...]:
        """The base chains run at ``hook`` (iptables tables and native nftables chains), in order."""
        hit = self._stages.get(hook)
        if hit is None:
            hit = self._stages[hook] = self.world.rules.for_family(self.family).stages(hook)
        return hit

    @classmethod
    def of(cls, world: World, family: Family, names: dict[str, int] | None = None) -> Env:
        sockets = tuple((a.name, s) for a in world.apps for s in a.sockets)
        wildcard = "0.0.0.0" if family == "ipv4" else "::"
        sockets += tuple(("proxy", Socket(wildcard, port, v6only=family == "ipv6"))
                         for port in world.proxy.own_listeners)
        return cls(world, family, world.local_networks(family), world.pod_ip(family),
                   tuple(sorted((names or {}).items())), sockets,
                   enables_conntrack(world.rules.for_family(family)), replies_free=replies_free(world, family))

    @property
    def iface(self) -> str:
        return self.world.interface

    @property
    def loopback(self) -> IPAddress:
        return _LO4 if self.family == "ipv4" else _LO6

    def primary(self, iface: str | None) -> IPAddress | None:
        if iface == "lo":
            return self.loopback
        if iface == self.iface:
            return self.pod_ip
        return None

    def name_id(self, token: str) -> int | None:
        return dict(self.names).get(token)

    def listeners(self) -> tuple[tuple[int, int], ...]:
        """The proxy's listener ports and the side each one is: ``(port, OUT|IN)``."""
        p = self.world.proxy
        out = [(p.outbound_port, OUT)]
        if p.inbound_port is not None and p.inbound_port != p.outbound_port:
            out.append((p.inbound_port, IN))
        return tuple(out)


def is_local(d: Domain, env: Env, x: Any) -> Any:
    """Whether ``x`` is one of the pod's own addresses (a connection to it stays in the pod)."""
    return d.or_(*[d.in_net(x, n) for n in env.local_nets],
                 *[d.and_(c, d.in_net(x, n)) for n, c in env.cond_local])


def is_loopback(d: Domain, env: Env, x: Any) -> Any:
    return d.in_net(x, ipaddress.ip_network("127.0.0.0/8" if env.family == "ipv4" else "::1/128"))




def replies_free(world: World, family: Family) -> bool:
    """Nothing can act on a connection's later packets: every table but nat (which they skip) is
    empty with an ACCEPT policy, there is no policy routing, no proxy socket mark and no transparent
    client socket. Then a handshake whose SYN arrived always completes."""
    ruleset = world.rules.for_family(family)
    if any(c.rules or c.policy not in (None, "ACCEPT") for t in ruleset.tables if t.name != "nat" for c in t.chains):
        return False
    if any(b.type != "nat" for n in ruleset.nft for b in n.bases):
        return False
    p = world.proxy
    return not world.routing.rules_for(family) and p.socket_mark is None and p.upstream_mark is None \
        and not p.inbound_original_source


@attrs.define
class SockView:
    """What ``-m socket`` can see of the socket a packet belongs to: whether there is one, whether
    it is a listener bound to a wildcard address, and whether it is ``IP_TRANSPARENT``."""

    exists: Any
    wildcard: Any
    transparent: Any


@attrs.define
class Pkt:
    """A packet of a connection at one stage. ``iif`` is a concrete interface name (None at
    OUTPUT/POSTROUTING); ``oif_lo`` says whether the output interface is ``lo`` (None where there is
    no output interface); ``uid``/``gid`` are None without a socket that has an owner (a packet from
    another host, or a SYN-ACK sent before ``accept()``); ``natted``: the connection's destination
    was rewritten by nat; ``entry``: the packet carries its conntrack entry from before (a loopback
    re-entry); ``before_ct``: the current stage runs before conntrack; ``state``: the conntrack
    state it shows once looked up (``NEW`` for the first packet, ``ESTABLISHED`` after); ``flags``:
    its TCP flags; ``sk``: the socket it belongs to (None for a first packet: the listener its
    destination finds); ``zone``: the conntrack zone the raw table put it in; ``conn_zone``: its
    connection's zone (None for a first packet, which creates the connection); ``snatted``: nat
    rewrote the connection's source (SNAT at INPUT / POSTROUTING)."""

    protocol: str
    src: Any
    dst: Any
    sport: Any
    dport: Any
    iif: str | None
    oif_lo: Any
    uid: Any
    gid: Any
    mark: Any
    ctmark: Any
    natted: Any
    entry: bool = False
    before_ct: bool = False
    state: str = "NEW"
    flags: frozenset[str] = frozenset({"SYN"})
    sk: SockView | None = None
    zone: Any = 0
    conn_zone: Any = None
    snatted: Any = False



def lookup(d: Domain, env: Env, dst: Any, dport: Any, protocol: str = "tcp") -> tuple[Any, Any, Any, SockView]:
    """Which socket accepts a connection to ``dst:dport``: (class DELIV/OUT/IN/REFUSED, app socket
    index, for the concrete trace (owner, socket), and what ``-m socket`` sees of it). An exact bind
    beats a wildcard; among wildcards 0.0.0.0 beats a dual-stack ``::`` for an IPv4 destination."""
    fam = env.family
    cands: list[tuple[int, Any, int, int, tuple[str, Socket]]] = []  # (score, holds, class, index, owner)
    transparent = env.world.proxy.transparent
    if protocol == "tcp":
        for i, (app, s) in enumerate(env.sockets):
            b = s.bind
            if b.is_unspecified:
                if b.version == 4:
                    if fam != "ipv4":
                        continue
                    score = 2
                elif fam == "ipv6":
                    score = 2
                elif not s.v6only:
                    score = 1
                else:
                    continue
                holds = d.eq(dport, d.port(s.port))
            else:
                if (b.version == 4) != (fam == "ipv4"):
                    continue
                score = 3
                holds = d.and_(d.eq(dport, d.port(s.port)), d.eq(dst, d.addr(b)))
            cands.append((score, holds, DELIV, i, (app, s)))
        wildcard = "0.0.0.0" if fam == "ipv4" else "::"
        for port, side in env.listeners():
            cands.append((2, d.eq(dport, d.port(port)), side, NO_SOCKET, ("proxy", Socket(wildcard, port))))
    cls: Any = d.kind(REFUSED)
    idx: Any = d.port(NO_SOCKET)
    wild: Any = d.const(False)
    transp: Any = d.const(False)
    # the best candidate is the outermost if-then-else: highest score, then the earliest listed
    order = sorted(range(len(cands)), key=lambda j: (cands[j][0], -j))
    for j in order:
        score, holds, c, i, _who = cands[j]
        cls = d.ite(holds, d.kind(c), cls)
        idx = d.ite(holds, d.port(i), idx)
        wild = d.ite(holds, d.const(score < 3), wild)
        transp = d.ite(holds, d.const(c != DELIV and transparent), transp)
    owner = None
    if not d.symbolic:
        for j in reversed(order):
            if cands[j][1] is True:
                owner = cands[j][4]
                break
    return cls, idx, owner, SockView(d.not_(d.eq(cls, REFUSED)), wild, transp)


def port_held(d: Domain, env: Env, src: Any, sport: Any, protocol: str = "tcp") -> Any:
    """Whether a client socket of the pod cannot bind ``src:sport`` because a listening socket holds
    it (``bind()`` fails with EADDRINUSE): a listener on that port bound to ``src`` itself or to a
    wildcard that covers ``src``'s family (``0.0.0.0`` for IPv4, ``::`` for IPv6 and, without
    V6ONLY, IPv4 too); the proxy's capture listeners are such wildcards. ``sport`` 0 (or None) is no
    bind: the kernel picks a free port. The client is taken to set no SO_REUSEPORT."""
    if sport is None or protocol != "tcp":
        return d.const(False)
    fam = env.family
    held: list[Any] = []
    for _owner, s in env.sockets:
        b = s.bind
        if b.is_unspecified:
            if (b.version == 4 and fam != "ipv4") or (b.version == 6 and fam == "ipv4" and s.v6only):
                continue
            held.append(d.eq(sport, d.port(s.port)))
        elif (b.version == 4) == (fam == "ipv4"):
            held.append(d.and_(d.eq(sport, d.port(s.port)), d.eq(src, d.addr(b))))
    held += [d.eq(sport, d.port(port)) for port, _side in env.listeners()]
    return d.and_(d.not_(d.eq(sport, d.port(0))), d.or_(*held))

