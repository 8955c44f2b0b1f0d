"""The addresses and ports a world names, and its class-complete flow space.

Rules and the proxy can only tell connections apart by what they name: an address or CIDR in a
``-s``/``-d`` match, a DNAT target, a service VIP or endpoint, the pod's and the peer's addresses,
loopback, a port or port range in a match, a REDIRECT/TPROXY port, a listening socket, the proxy's
listeners, the owner ids and the socket mark of a process. Two connections that agree on all of
these classes end the same way, so one representative per class covers the whole space:

* clients: the peer (when the family has a peer address), one app per distinct (uid, gid, socket
  mark), the proxy;
* destinations: for the peer, each pod IP of the family (a remote host can only reach the pod's own
  addresses over the pod's interface); for a process in the pod, loopback (``127.0.0.1`` / ``::1``),
  another loopback address (IPv4), the pod IP, every address the world names (one host of each
  rule CIDR, DNAT targets, VIPs, endpoints, the peer), the proxy's inbound source address, plus one
  remote address that nothing names;
* ports: every port the world names (the first and last port of each range, and the ports just
  outside it), plus one port that nothing names;
* for a service VIP:port, every endpoint choice.

Addresses ``connect()`` refuses outright (multicast, broadcast) are left out: no connection starts.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator

from meshsolve.model.net import Family, IPAddress, IPNetwork, PortRange, family_of, to_address
from meshsolve.model.rules import (
    Destination,
    Dnat,
    MultiportMatch,
    PortMatch,
    Redirect,
    Ruleset,
    Source,
    Tproxy,
)
from meshsolve.model.world import Flow, World

__all__ = ["UNNAMED_ADDRESS", "UNNAMED_PORT", "flow_space", "named_addresses", "named_ports",
           "remote_addresses", "unroutable"]

# documentation addresses no shipped world names: "somewhere else on the network"
UNNAMED_ADDRESS: dict[Family, IPAddress] = {"ipv4": to_address("203.0.113.199"),
                                            "ipv6": to_address("2001:db8:ffff::199")}
UNNAMED_LOOPBACK_V4 = to_address("127.0.0.9")
UNNAMED_PORT = 8999
_LOOPBACK: dict[Family, IPAddress] = {"ipv4": to_address("127.0.0.1"), "ipv6": to_address("::1")}
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_V4_SPECIAL = tuple(ipaddress.IPv4Network(n) for n in ("0.0.0.0/8", "224.0.0.0/4", "240.0.0.0/4"))


def unroutable(addr: IPAddress) -> bool:
    """Addresses no host can own: unspecified, multicast, broadcast/reserved, link-local, v4-mapped."""
    if addr.is_unspecified or addr.is_multicast or addr.is_link_local:
        return True
    if addr.version == 4:
        return any(addr in n for n in _V4_SPECIAL)
    return addr in _MAPPED


def _sample(net: IPNetwork) -> IPAddress:
    """One host of ``net``: the address itself for a host route, else the first host."""
    if net.num_addresses == 1:
        return net.network_address
    return net.network_address + 1


def _rule_addresses(rs: Ruleset) -> Iterator[IPAddress]:
    for table in rs.tables:
        for chain in table.chains:
            for rule in chain.rules:
                for m in rule.matches:
                    if isinstance(m, Source | Destination):
                        yield _sample(m.net)
                t = rule.target
                if isinstance(t, Dnat) and t.spec is not None and t.spec.addr is not None:
                    yield t.spec.addr
                if isinstance(t, Tproxy) and t.on_ip is not None and not t.on_ip.is_unspecified:
                    yield t.on_ip


def named_addresses(world: World, family: Family) -> tuple[IPAddress, ...]:
    """Every address of ``family`` the world names (pod, peer, loopback, services, rules, the
    proxy's inbound source), in a stable order, without duplicates."""
    seen: dict[IPAddress, None] = {}
    seen[_LOOPBACK[family]] = None
    for a in (*world.pod_ips, *world.peer_ips):
        seen[a] = None
    src = world.proxy.inbound_source(family)
    if src is not None:
        seen[src] = None
    for svc in world.services:
        seen[svc.vip] = None
        for e in svc.endpoints:
            seen[e.address] = None
    for a in _rule_addresses(world.rules.for_family(family)):
        seen[a] = None
    return tuple(a for a in seen if family_of(a) == family)


def remote_addresses(world: World) -> tuple[IPAddress, ...]:
    """The addresses the world names that are not the pod's own and that a host can own: the ones
    the outside world (the oracle's peer) must answer for."""
    out = []
    for fam in world.families:
        out += [a for a in named_addresses(world, fam) if not world.is_local(a) and not unroutable(a)]
        out.append(UNNAMED_ADDRESS[fam])
    return tuple(dict.fromkeys(out))


def _range_ports(r: PortRange) -> Iterator[int]:
    yield r.lo
    yield r.hi
    if r.lo > 1:
        yield r.lo - 1
    if r.hi < 65535:
        yield r.hi + 1


def named_ports(world: World) -> tuple[int, ...]:
    """Every port the world names: sockets, proxy listeners, services, endpoints, and the ports of
    every rule (both ends of a range and the ports just outside it), plus ``UNNAMED_PORT``."""
    ports: set[int] = {UNNAMED_PORT, world.proxy.outbound_port}
    if world.proxy.inbound_port is not None:
        ports.add(world.proxy.inbound_port)
    ports.update(s.port for a in world.apps for s in a.sockets)
    for svc in world.services:
        ports.add(svc.port)
        ports.update(e.port for e in svc.endpoints)
    for fam in ("ipv4", "ipv6"):
        rs = world.rules.for_family(fam)
        for table in rs.tables:
            for chain in table.chains:
                for rule in chain.rules:
                    for m in rule.matches:
                        if isinstance(m, PortMatch) and m.dport is not None:
                            ports.update(_range_ports(m.dport))
                        if isinstance(m, MultiportMatch) and m.kind in ("dports", "ports"):
                            for r in m.ports:
                                ports.update(_range_ports(r))
                    t = rule.target
                    if isinstance(t, Redirect) and t.to_ports is not None:
                        ports.update(_range_ports(t.to_ports))
                    if isinstance(t, Tproxy):
                        ports.add(t.on_port)
                    if isinstance(t, Dnat) and t.spec is not None and t.spec.port_lo is not None:
                        ports.add(t.spec.port_lo)
    ports.discard(0)
    return tuple(sorted(ports))


def _clients(world: World, family: Family) -> list[str]:
    out = ["peer"] if world.peer_ip(family) is not None else []
    ids: set[tuple[int, int, int | None]] = set()
    for app in world.apps:
        if (app.uid, app.gid, app.mark) not in ids:
            ids.add((app.uid, app.gid, app.mark))
            out.append(app.name)
    out.append("proxy")
    return out


def _destinations(world: World, family: Family, client: str) -> list[IPAddress]:
    if client == "peer":
        return [a for a in world.pod_ips if family_of(a) == family]
    dsts = list(named_addresses(world, family))
    if family == "ipv4":
        dsts.append(UNNAMED_LOOPBACK_V4)
    dsts.append(UNNAMED_ADDRESS[family])
    return [d for d in dict.fromkeys(dsts) if not unroutable(d) and not _broadcast(world, d)]


def _broadcast(world: World, addr: IPAddress) -> bool:
    return addr.version == 4 and (addr == ipaddress.IPv4Address("255.255.255.255")
                                  or addr == ipaddress.IPv4Address("127.255.255.255"))


def flow_space(world: World, *, families: Iterable[Family] | None = None,
               ports: Iterable[int] | None = None) -> tuple[Flow, ...]:
    """Every class of first connection in ``world``: clients × destinations × ports (× endpoint
    choices for a service VIP:port); see the module docstring."""
    fams = tuple(families) if families is not None else world.families
    port_list = tuple(ports) if ports is not None else named_ports(world)
    flows: list[Flow] = []
    for fam in fams:
        for client in _clients(world, fam):
            for dst in _destinations(world, fam, client):
                for port in port_list:
                    svc = world.service_at(dst, port)
                    n = len(svc.endpoints) if svc is not None else 1
                    flows += [Flow(client, dst, port, endpoint=e) for e in range(n)]
    return tuple(flows)
