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

Both are tables keyed by the kind registry (``meshsolve.model.kinds``): ``MATCH_PROPOSALS`` /
``TARGET_PROPOSALS`` say how each kind the search proposes is proposed, ``NOT_PROPOSED_MATCHES`` /
``NOT_PROPOSED_TARGETS`` why each other kind is not (a spec's ``conditions``/``targets`` may still
name those, except what the semantics leaves undecided). A test asserts that the two halves
partition the registry, so a new kind is a decision here, not an omission.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Iterator, Mapping

import attrs

from meshsolve.model.kinds import COARSENINGS, MATCH_KINDS, TARGET_KINDS
from meshsolve.model.net import Family, IPAddress, IPNetwork, family_of
from meshsolve.model.rules import (
    Accept,
    AddressSet,
    AddrtypeMatch,
    CommentMatch,
    ConnmarkMatch,
    ConnmarkTarget,
    ConntrackMatch,
    CtTarget,
    Destination,
    Dnat,
    Drop,
    FamilyMatch,
    Goto,
    InInterface,
    InterfaceSet,
    Jump,
    Log,
    MarkMatch,
    MarkRanges,
    MarkStatements,
    Match,
    MultiportMatch,
    OutInterface,
    OwnerMatch,
    PortMatch,
    PortPair,
    Protocol,
    ProtocolSet,
    Redirect,
    Reject,
    Return,
    SetMark,
    SetMatch,
    Snat,
    SocketMatch,
    SocketOwner,
    Source,
    StateMatch,
    Table,
    Target,
    Tproxy,
    TproxySocket,
    Trace,
)
from meshsolve.model.world import World
from meshsolve.smt.query import Condition

__all__ = [
    "DIVERTING",
    "MATCH_PROPOSALS",
    "NOT_PROPOSED_MATCHES",
    "NOT_PROPOSED_TARGETS",
    "TARGET_PROPOSALS",
    "Condition",
    "derive_conditions",
    "derive_targets",
    "reaching_hooks",
]


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


@attrs.frozen
class Place:
    """What a proposal may use: the world, the family, the hooks the searched chain is reached from,
    and the addresses and ports the goals name."""

    world: World
    family: Family
    hooks: frozenset[str]
    nets: tuple[IPNetwork, ...] = ()
    ports: tuple[int, ...] = ()

    @property
    def local_out(self) -> bool:
        """Reached from OUTPUT/POSTROUTING only: a locally opened connection (owner, ``-o``)."""
        return bool(self.hooks) and self.hooks <= {"OUTPUT", "POSTROUTING"}

    @property
    def incoming(self) -> bool:
        """Reached from PREROUTING/INPUT/FORWARD only (``-i``)."""
        return bool(self.hooks) and self.hooks <= {"PREROUTING", "INPUT", "FORWARD"}

    @property
    def ifaces(self) -> tuple[str, ...]:
        return ("lo", self.world.interface)


def _p_out(pl: Place) -> Iterator[Condition | None]:
    if pl.local_out:
        yield _hole("-o IFACE", ((f"-o {i}", (OutInterface(i),)) for i in pl.ifaces))
        yield _hole("! -o IFACE", ((f"! -o {i}", (OutInterface(i, True),)) for i in pl.ifaces))


def _p_in(pl: Place) -> Iterator[Condition | None]:
    if pl.incoming:
        yield _hole("-i IFACE", ((f"-i {i}", (InInterface(i),)) for i in pl.ifaces))
        yield _hole("! -i IFACE", ((f"! -i {i}", (InInterface(i, True),)) for i in pl.ifaces))


def _p_address(flag: str, cls: type[Source] | type[Destination]) -> Callable[[Place], Iterator[Condition | None]]:
    def propose(pl: Place) -> Iterator[Condition | None]:
        addrs = _addresses(pl.world, pl.family, pl.nets)
        yield _hole(f"{flag} ADDR", ((f"{flag} {n}", (cls(n),)) for n in addrs))
        yield _hole(f"! {flag} ADDR", ((f"! {flag} {n}", (cls(n, True),)) for n in addrs))

    return propose


def _p_owner(pl: Place) -> Iterator[Condition | None]:
    if not pl.local_out:
        return
    for which, opt in (("uid", "--uid-owner"), ("gid", "--gid-owner")):
        ids = _ids(pl.world, which)
        for neg in (False, True):
            bang = "! " if neg else ""
            yield _hole(f"-m owner {bang}{opt} ID",
                        ((f"-m owner {bang}{opt} {i}", (_owner(which, i, neg),)) for i in ids))


def _p_port(pl: Place) -> Iterator[Condition | None]:
    named_ports = _ports(pl.world, pl.ports)
    tcp = Protocol("tcp")  # a port condition carries its protocol, as iptables needs
    yield _hole("-p tcp --dport PORT", ((f"-p tcp --dport {p}", (tcp, PortMatch("tcp", dport=p)))
                                        for p in named_ports))
    yield _hole("-p tcp ! --dport PORT", ((f"-p tcp ! --dport {p}",
                                           (tcp, PortMatch("tcp", dport=p, dport_negated=True)))
                                          for p in named_ports))


# How the derived vocabulary proposes each match kind, in the order conditions are listed.
MATCH_PROPOSALS: dict[type, Callable[[Place], Iterator[Condition | None]]] = {
    OutInterface: _p_out,
    InInterface: _p_in,
    Destination: _p_address("-d", Destination),
    Source: _p_address("-s", Source),
    OwnerMatch: _p_owner,
    PortMatch: _p_port,
}

_NFT_ONLY = "nftables only: the search writes iptables rules (iptables-restore, the istio-iptables script)"


def _undecided(kinds: Mapping[type, object]) -> dict[type, str]:
    """The kinds of ``kinds`` the semantics leaves wholly undecided (``COARSENINGS``): never proposed,
    since a rule made of one cannot be proved."""
    return {c.kind: f"left undecided by the semantics ({c.why}): a rule made of it cannot be proved"
            for c in COARSENINGS if not c.option and c.kind in kinds}


# Why the derived vocabulary does not propose the other match kinds (a spec's list may name them).
NOT_PROPOSED_MATCHES: dict[type, str] = {
    Protocol: "proposed inside the port condition (-p tcp --dport PORT); alone it tells no connection of the "
              "pod apart: the search decides TCP connections only",
    MultiportMatch: "a port list is the union of --dport conditions, which separate rules already express; "
                    "minimality counts conditions, not ports",
    MarkMatch: "a packet mark is set by rules the search does not write; a spec whose chains mark lists "
               "-m mark itself",
    ConnmarkMatch: "a connection mark is set by rules the search does not write; a spec lists -m connmark "
                   "itself",
    ConntrackMatch: "the search decides first connections, all NEW to conntrack (DNAT once rewritten): a state "
                    "tells none of them apart but by an earlier rewrite, which the spec's chains make; a spec "
                    "may list one",
    StateMatch: "as -m conntrack: the connections the search decides are all NEW",
    AddrtypeMatch: "the pod's own addresses are proposed one by one (-d ADDR), as capture set-ups write them",
    CommentMatch: "holds for every packet: it tells nothing apart",
    SocketMatch: "for a first connection it says whether a listener is bound to its destination, which the "
                 "world fixes, not the rules; TPROXY set-ups give it in their mangle chains",
    SetMatch: "a set's members are the host's state, not the rules': the pod's addresses are proposed one by one "
              "(-d ADDR)",
    FamilyMatch: _NFT_ONLY,
    AddressSet: _NFT_ONLY,
    InterfaceSet: _NFT_ONLY,
    ProtocolSet: _NFT_ONLY,
    PortPair: _NFT_ONLY,
    SocketOwner: _NFT_ONLY,
    MarkRanges: _NFT_ONLY,
    TproxySocket: _NFT_ONLY,
    **_undecided(MATCH_KINDS),
}

# Targets that divert a connection: a user chain holding one is a jump target of the search.
DIVERTING: frozenset[type] = frozenset({Redirect, Dnat, Tproxy})


def _t_return(world: World, family: Family, tbl: Table | None, chain: str) -> Iterator[tuple[str, Target]]:
    yield "RETURN", Return()


def _t_jump(world: World, family: Family, tbl: Table | None, chain: str) -> Iterator[tuple[str, Target]]:
    for c in tbl.chains if tbl is not None else ():
        if c.builtin or c.name == chain:
            continue
        if any(type(r.target) in DIVERTING for r in c.rules):
            yield c.name, Jump(c.name)


# How the derived targets propose each target kind, in order.
TARGET_PROPOSALS: dict[type, Callable[[World, Family, Table | None, str], Iterator[tuple[str, Target]]]] = {
    Return: _t_return,
    Jump: _t_jump,
}

# Why the derived targets leave the other target kinds out (a spec's ``targets`` may name them).
NOT_PROPOSED_TARGETS: dict[type, str] = {
    Accept: "from a chain jumped to from a hook, RETURN lets the rest of the hook's rules run and ACCEPT "
            "skips them; RETURN is the one that keeps other writers' rules in force (a spec may list ACCEPT)",
    Drop: "a capture set-up diverts or lets connections through; refusing them is not one of its choices",
    Reject: "as DROP: a capture set-up does not refuse connections",
    Goto: "a jump to the same chains diverts the same connections; goto differs only in where a chain's "
          "end returns to, and a diverting chain ends by diverting",
    Redirect: "proposed as a jump to the spec's chain that holds it, so its port is the spec's, not a guess",
    Dnat: "proposed as a jump to the spec's chain that holds it, so its address is the spec's",
    Tproxy: "proposed as a jump to the spec's chain that holds it, with its port and mark",
    Snat: "source NAT changes the source a remote host sees, not where a connection goes; a spec may list a "
          "chain that rewrites the source",
    SetMark: "a mark acts through rules and routing the search does not write; a spec may list a chain "
             "that marks",
    ConnmarkTarget: "as MARK: it acts through rules the search does not write",
    CtTarget: "conntrack zones are the raw table's, not a capture chain's decision",
    Log: "no effect on the packet's path",
    Trace: "no effect on the packet's path",
    MarkStatements: _NFT_ONLY,
    **_undecided(TARGET_KINDS),
}


def derive_conditions(world: World, family: Family, table: str, chain: str, *, nets: Iterable[IPNetwork] = (),
                      ports: Iterable[int] = ()) -> tuple[Condition, ...]:
    """The conditions a rule of ``table::chain`` can usefully test in ``world`` (module docstring),
    plus the addresses and ports the spec's goals name (``nets``, ``ports``)."""
    tbl = world.rules.for_family(family).table(table)
    hooks = reaching_hooks(tbl, chain) if tbl is not None else frozenset()
    place = Place(world, family, hooks, tuple(nets), tuple(ports))
    conds = [c for propose in MATCH_PROPOSALS.values() for c in propose(place)]
    return tuple(c for c in conds if c is not None)


def derive_targets(world: World, family: Family, table: str, chain: str) -> tuple[tuple[str, Target], ...]:
    """``RETURN`` and a jump to each user chain that rewrites or diverts connections."""
    tbl = world.rules.for_family(family).table(table)
    return tuple(t for propose in TARGET_PROPOSALS.values() for t in propose(world, family, tbl, chain))
