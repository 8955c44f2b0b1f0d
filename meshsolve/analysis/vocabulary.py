"""The synthesizer's vocabulary, derived from the world when a spec does not list it.

A ``Condition`` is one thing a synthesized rule may test. Most have a *hole*: ``-d ADDR`` stands for
``-d`` with any of the addresses the world names, and the solver picks which one (a choice variable
per rule slot), so a larger world adds alternatives to a condition, not conditions to the search.
Minimality counts conditions, whichever alternative fills them.

What the world names:

* interfaces: ``lo`` and the pod interface (``-o`` where the searched chain is reached from
  OUTPUT/POSTROUTING, ``-i`` where from PREROUTING/INPUT);
* addresses (``-d``/``-s``, either way): loopback (127.0.0.1/32 and its 127.0.0.0/8, or ::1), the
  pod's address, the proxy's passthrough sources (127.0.0.6 / ::6 and any the proxy binds),
  service VIPs, the peer;
* ids (``-m owner``, either way, where the chain is reached from OUTPUT/POSTROUTING only): the proxy's
  uid and gid and every app's;
* ports (``-p tcp --dport``, either way): every app socket, the proxy's listeners and tunnel port,
  every service port;
* and the addresses and ports the spec's goals name (a database's port a goal exempts).

Targets, when a spec does not list them: ``RETURN`` and a jump to each user chain of the table
(other than the searched one) that rewrites or diverts a connection (REDIRECT, DNAT, TPROXY).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from meshsolve.model.net import Family, IPAddress, IPNetwork, family_of
from meshsolve.model.rules import (
    Destination,
    Dnat,
    InInterface,
    Jump,
    Match,
    OutInterface,
    OwnerMatch,
    PortMatch,
    Protocol,
    Redirect,
    Return,
    Source,
    Table,
    Target,
    Tproxy,
)
from meshsolve.model.world import World
from meshsolve.smt.query import Condition

__all__ = ["Condition", "derive_conditions", "derive_targets", "reaching_hooks"]


def reaching_hooks(table: Table, chain: str) -> frozenset[str]:
    """The built-in chains (hooks) from which ``chain`` is reached by jumps and gotos."""
    reached: dict[str, set[str]] = {}
    for c in table.chains:
        if not c.builtin:
            continue
        stack = [c.name]
        while stack:
            name = stack.pop()
            hooks = reached.setdefault(name, set())
            if c.name in hooks:
                continue
            hooks.add(c.name)
            cur = table.chain(name)
            for r in cur.rules if cur is not None else ():
                target = getattr(r.target, "chain", None)
                if isinstance(target, str):
                    stack.append(target)
    return frozenset(reached.get(chain, set()))


def _addresses(world: World, family: Family, named: Iterable[IPNetwork] = ()) -> list[IPNetwork]:
    v4 = family == "ipv4"
    nets: list[IPNetwork] = []

    def add(x: IPAddress | IPNetwork | str) -> None:
        n = ipaddress.ip_network(x)
        if (n.version == 4) == v4 and n not in nets:
            nets.append(n)

    add("127.0.0.1/32" if v4 else "::1/128")
    if v4:
        add("127.0.0.0/8")
    pod = world.pod_ip(family)
    if pod is not None:
        add(pod)
    add("127.0.0.6/32" if v4 else "::6/128")
    src = world.proxy.inbound_source(family)
    if src is not None:
        add(src)
    for s in world.services:
        if family_of(s.vip) == family:
            add(s.vip)
    peer = world.peer_ip(family)
    if peer is not None:
        add(peer)
    for n in named:
        add(n)
    return nets


def _ports(world: World, named: Iterable[int] = ()) -> list[int]:
    p = world.proxy
    ports = {s.port for a in world.apps for s in a.sockets}
    ports |= {p.outbound_port} | ({p.inbound_port} if p.inbound_port is not None else set())
    if p.tunnel_port is not None:
        ports.add(p.tunnel_port)
    ports |= {s.port for s in world.services}
    ports |= set(named)
    return sorted(ports)


def _ids(world: World, which: str) -> list[int]:
    ids = [getattr(world.proxy, which)]
    for a in world.apps:
        v = getattr(a, which)
        if v not in ids:
            ids.append(v)
    return ids


def _owner(which: str, ident: int, negated: bool) -> OwnerMatch:
    if which == "uid":
        return OwnerMatch(uid=str(ident), uid_negated=negated)
    return OwnerMatch(gid=str(ident), gid_negated=negated)


def _hole(text: str, items: Iterable[tuple[str, tuple[Match, ...]]]) -> Condition | None:
    alts = tuple(items)
    return Condition(text, alts) if alts else None


def derive_conditions(world: World, family: Family, table: str, chain: str, *, nets: Iterable[IPNetwork] = (),
                      ports: Iterable[int] = ()) -> tuple[Condition, ...]:
    """The conditions a rule of ``table::chain`` can usefully test in ``world`` (module docstring),
    plus the addresses and ports the spec's goals name (``nets``, ``ports``)."""
    tbl = world.rules.for_family(family).table(table)
    hooks = reaching_hooks(tbl, chain) if tbl is not None else frozenset()
    local_out = bool(hooks) and hooks <= {"OUTPUT", "POSTROUTING"}
    incoming = bool(hooks) and hooks <= {"PREROUTING", "INPUT", "FORWARD"}
    ifaces = ["lo", world.interface]
    conds: list[Condition | None] = []
    if local_out:
        conds += [_hole("-o IFACE", ((f"-o {i}", (OutInterface(i),)) for i in ifaces)),
                  _hole("! -o IFACE", ((f"! -o {i}", (OutInterface(i, True),)) for i in ifaces))]
    if incoming:
        conds += [_hole("-i IFACE", ((f"-i {i}", (InInterface(i),)) for i in ifaces)),
                  _hole("! -i IFACE", ((f"! -i {i}", (InInterface(i, True),)) for i in ifaces))]
    addrs = _addresses(world, family, nets)
    for flag, cls in (("-d", Destination), ("-s", Source)):
        conds += [_hole(f"{flag} ADDR", ((f"{flag} {n}", (cls(n),)) for n in addrs)),
                  _hole(f"! {flag} ADDR", ((f"! {flag} {n}", (cls(n, True),)) for n in addrs))]
    if local_out:
        for which, opt in (("uid", "--uid-owner"), ("gid", "--gid-owner")):
            ids = _ids(world, which)
            for neg in (False, True):
                bang = "! " if neg else ""
                conds.append(_hole(f"-m owner {bang}{opt} ID",
                                   ((f"-m owner {bang}{opt} {i}", (_owner(which, i, neg),)) for i in ids)))
    named_ports = _ports(world, ports)
    tcp = Protocol("tcp")
    conds += [_hole("-p tcp --dport PORT", ((f"-p tcp --dport {p}", (tcp, PortMatch("tcp", dport=p)))
                                            for p in named_ports)),
              _hole("-p tcp ! --dport PORT", ((f"-p tcp ! --dport {p}",
                                               (tcp, PortMatch("tcp", dport=p, dport_negated=True)))
                                              for p in named_ports))]
    return tuple(c for c in conds if c is not None)


def derive_targets(world: World, family: Family, table: str, chain: str) -> tuple[tuple[str, Target], ...]:
    """``RETURN`` and a jump to each user chain that rewrites or diverts connections."""
    out: list[tuple[str, Target]] = [("RETURN", Return())]
    tbl = world.rules.for_family(family).table(table)
    for c in tbl.chains if tbl is not None else ():
        if c.builtin or c.name == chain:
            continue
        if any(isinstance(r.target, Redirect | Dnat | Tproxy) for r in c.rules):
            out.append((c.name, Jump(c.name)))
    return tuple(out)
