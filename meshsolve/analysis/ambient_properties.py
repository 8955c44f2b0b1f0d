"""The properties of ambient mode's in-pod capture (A1–A5), as values like ``properties.py``'s.

In ambient mode "reaches ztunnel" means: the connection lands on one of ztunnel's capture
listeners (15001 outbound, 15006 inbound plaintext: ``Captured``), or on one of the listeners
where ztunnel ends connections itself (15008 HBONE, 15053 DNS: delivered to ``proxy``). Each
property names its exemptions; anything else that does not reach ztunnel refutes it. Each has a
finding code of its own (``meshsolve.report.catalog``).

A property whose predicate the client's first connection decides says so (``decided_within =
1``): whether a connection reaches ztunnel is settled by where its first connection lands (on a
capture listener, or delivered), whatever ztunnel does next, so ``check`` follows one connection
only — a proof with one connection is the proof with any bound.

* A1 ``AmbientNoBypass``: every TCP connection of the pod reaches ztunnel — an app's to a remote
  address (but to the node's probe address: the probe's own direction), a peer's to the pod
  (unless inbound capture is off: ingress mode). No uid or gid is exempt: ambient rules test marks.
* A2 ``AmbientNoLoops``: no connection loops (calls to ztunnel's capture listeners themselves are
  left out, as for the sidecar); ``MarkSpoofing``: an app that sets ``SO_MARK`` to ztunnel's mark
  (with ``CAP_NET_ADMIN``) is still captured — expected to be *refuted*: the mark is all the rules
  look at, the ambient twin of the sidecar's uid-1337 bypass.
* A3 ``ReturnPath``: a peer's connection that ztunnel's inbound side takes reaches the app — the
  upstream from the client's own address completes, so the app's replies came back to ztunnel:
  plaintext inbound, and HBONE (a connection to ztunnel's tunnel listener naming the app's port
  as its inner target, ``Flow.inner``).
* A4 ``ProbeExemption``: connections from the probe address reach the app without ztunnel;
  connections from any other listed source (a NodePort or load balancer client keeps its own)
  reach ztunnel.
* A5 ``HboneSplit``: a peer's connection to 15008 (HBONE) reaches ztunnel's HBONE listener without
  a redirect; with inbound capture, one to any other port is redirected to ztunnel's inbound side.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

from meshsolve.errors import UnsupportedError
from meshsolve.model.net import Family, IPAddress, family_of, to_address
from meshsolve.model.rules import (
    Chain,
    InInterface,
    Protocol,
    Redirect,
    Rule,
    Ruleset,
    Rulesets,
    Source,
    Table,
)
from meshsolve.model.world import App, World
from meshsolve.smt.query import AllOf, AnyOf, Captured, DeliveredTo, EndsAs, Not, Observed, ObservedExactly, Pred, Scope

__all__ = ["REACHES_ZTUNNEL", "SPOOFER", "AmbientNoBypass", "AmbientNoLoops", "AmbientProperty", "HboneSplit",
           "MarkSpoofing", "ProbeExemption", "ReturnPath", "hbone_inner", "property_world", "with_spoofer"]

#: The connection lands on a capture listener, or on one where ztunnel ends it itself.
REACHES_ZTUNNEL: Pred = AnyOf((Captured(), DeliveredTo(app="proxy")))


def _addrs(values: tuple[str | IPAddress, ...]) -> tuple[IPAddress, ...]:
    return tuple(to_address(v) for v in values)


def _ints(values: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


def _of(addrs: tuple[IPAddress, ...], fam: Family) -> tuple[IPAddress, ...]:
    return tuple(a for a in addrs if family_of(a) == fam)


# ---------------------------------------------------------------------------------------------
# The worlds a property is asked about, when not the pod's own. Each only appends (rules, or an
# app), so the pod's own rules keep their names (``nat::ISTIO_PRERT#2``) in traces and findings.

#: The process of ``with_spoofer``: its name and uid.
SPOOFER = ("mark-spoofer", 4242)


def _append(rs: Ruleset, table: str, chain: str, rule: Rule) -> Ruleset:
    t = rs.table(table) if table in {x.name for x in rs.tables} else None
    chains = {c.name: c for c in (t.chains if t is not None else ())}
    old = chains.get(chain, Chain(chain, (), "ACCEPT"))
    chains[chain] = attrs.evolve(old, rules=(*old.rules, rule))
    new = Table(table, tuple(chains.values()))
    return attrs.evolve(rs, tables=(*(x for x in rs.tables if x.name != table), new))


def _with_family(rules: Rulesets, fam: Family, rs: Ruleset) -> Rulesets:
    return attrs.evolve(rules, ipv4=rs) if fam == "ipv4" else attrs.evolve(rules, ipv6=rs)


def hbone_inner(world: World) -> World:
    """The pod with the peer's plain connections standing for HBONE tunnels to the port they name
    (a variant the kernel oracle compares too; A3 asks the tunnel listener itself): a rule
    appended to nat ``PREROUTING`` sends them to ztunnel's inbound side (15006), which connects to
    the app from the peer's address with its mark — what ztunnel does with a tunnel's inner
    connection. Only the client's first leg differs from real HBONE (plaintext instead of mTLS on
    15008); the leg ztunnel opens, its handshake and the app's replies are HBONE's own. The rule
    matches the peer's address on the pod interface only, so nothing the pod sends meets it."""
    out = world
    for fam in world.families:
        peer = world.peer_ip(fam)
        if peer is None or world.proxy.inbound_port is None:
            continue
        rule = Rule((Source(peer), InInterface(world.interface), Protocol("tcp")), Redirect(world.proxy.inbound_port))
        rs = _append(out.rules.for_family(fam), "nat", "PREROUTING", rule)
        out = attrs.evolve(out, rules=_with_family(out.rules, fam, rs))
    return out


def with_spoofer(world: World, mark: int) -> World:
    """The pod with one more process (``SPOOFER``) that sets ``SO_MARK`` ``mark`` on its sockets
    (which needs ``CAP_NET_ADMIN``): an app with that ``mark``; the pod's rules are its own."""
    name, uid = SPOOFER
    return attrs.evolve(world, apps=(*world.apps, App(name, uid=uid, gid=uid, mark=mark)))


def property_world(prop: Any, world: World) -> World:
    """The world a property is checked in: its own (``world_for``), else ``world``."""
    derive = getattr(prop, "world_for", None)
    return world if derive is None else derive(world)


@attrs.frozen
class AmbientNoBypass:
    """A1: every TCP connection of the pod reaches ztunnel but the stated exemptions (see the module
    docstring); ``inbound``/``outbound`` say which directions are captured; ``skip_ports`` are
    inbound ports left out (named in the title)."""

    exempt_dsts: tuple[IPAddress, ...] = attrs.field(default=(), converter=_addrs)
    inbound: bool = True
    outbound: bool = True
    skip_ports: tuple[int, ...] = attrs.field(default=(), converter=_ints)
    interface: str | None = None  # peers arrive on this interface (a virtual one) instead of the pod's
    name: str = ""
    code: ClassVar[str] = "MSH0160"
    decided_within: ClassVar[int] = 1

    def title(self) -> str:
        if self.name:
            return self.name
        ways = [w for w, on in (("outbound", self.outbound), ("inbound", self.inbound)) if on]
        but = f" but to {', '.join(map(str, self.exempt_dsts))}" if self.exempt_dsts and self.outbound else ""
        skip = f" (port {','.join(map(str, self.skip_ports))} left out)" if self.skip_ports else ""
        via = f" (arriving on {self.interface})" if self.interface else ""
        return f"every {' and '.join(ways)} TCP connection{via} of the pod reaches ztunnel{but}{skip}"

    def world_for(self, world: World) -> World:
        return world if self.interface is None else attrs.evolve(world, interface=self.interface)

    def checks(self, world: World) -> list[tuple[Scope, Pred]]:
        out: list[tuple[Scope, Pred]] = []
        for fam in world.families:
            if self.outbound:
                out.append((Scope(family=fam, client="any-app", local=False, dst_not=_of(self.exempt_dsts, fam)),
                            REACHES_ZTUNNEL))
            if self.inbound and world.peer_ip(fam) is not None:
                out.append((Scope(family=fam, client="peer", dports_not=tuple(map(str, self.skip_ports))),
                            REACHES_ZTUNNEL))
        return out


@attrs.frozen
class AmbientNoLoops:
    """A2: no connection from a peer or any process of the pod loops through ztunnel (connections
    addressed to its capture listeners ``skip_ports`` are left out)."""

    skip_ports: tuple[int, ...] = attrs.field(default=(15001, 15006), converter=_ints)
    name: str = ""
    code: ClassVar[str] = "MSH0161"

    def title(self) -> str:
        return self.name or "no connection loops through ztunnel"

    def checks(self, world: World) -> list[tuple[Scope, Pred]]:
        skip = tuple(map(str, self.skip_ports))
        out: list[tuple[Scope, Pred]] = []
        for fam in world.families:
            if world.peer_ip(fam) is not None:
                out.append((Scope(family=fam, client="peer", dports_not=skip), Not(EndsAs({"loop"}))))
            out.append((Scope(family=fam, client="any-app", dports_not=skip), Not(EndsAs({"loop"}))))
        return out


@attrs.frozen
class MarkSpoofing:
    """A2: the connections of a process that put ztunnel's mark ``mark`` on its socket (``SPOOFER``,
    added by ``with_spoofer``) to remote addresses still reach ztunnel (expected: refuted, the
    mark-spoofing bypass)."""

    mark: int = 0x539
    name: str = ""
    code: ClassVar[str] = "MSH0162"
    decided_within: ClassVar[int] = 1

    def title(self) -> str:
        return self.name or f"a process that sets SO_MARK {self.mark:#x} is still captured"

    def world_for(self, world: World) -> World:
        return with_spoofer(world, self.mark)

    def finding_params(self) -> dict[str, object]:
        return {"mark": f"{self.mark:#x}"}

    def checks(self, world: World) -> list[tuple[Scope, Pred]]:
        return [(Scope(family=fam, client="app", app=SPOOFER[0], local=False), REACHES_ZTUNNEL)
                for fam in world.families]


@attrs.frozen
class ReturnPath:
    """A3: a peer's connection to each of ``ports`` that ztunnel's inbound side takes reaches the app
    on that port: the upstream ztunnel opens from the client's address completes."""

    ports: tuple[int, ...] = attrs.field(converter=_ints)
    tunnel: bool = False  # HBONE: a connection to the tunnel listener naming the port, not plaintext inbound
    name: str = ""
    code: ClassVar[str] = "MSH0163"

    def title(self) -> str:
        how = "HBONE's inner connections" if self.tunnel else "ztunnel's inbound connections"
        return self.name or (f"replies to {how} to port {','.join(map(str, self.ports))} come back to ztunnel")

    def checks(self, world: World) -> list[tuple[Scope, Pred]]:
        tunnel = world.proxy.tunnel_port
        if self.tunnel and (tunnel is None or tunnel not in world.proxy.own_listeners):
            raise UnsupportedError("A3 over HBONE needs the proxy's tunnel listener (tunnel_port among own_listeners)")
        return [(Scope(family=fam, client="peer", dports=(str(tunnel if self.tunnel else p),),
                       inner=p if self.tunnel else None), AllOf((Observed("in"), DeliveredTo(port=p))))
                for fam in world.families if world.peer_ip(fam) is not None for p in self.ports]


@attrs.frozen
class ProbeExemption:
    """A4: a connection from ``probe`` (the node's SNAT of kubelet's probes) to ``ports`` reaches the
    app and ztunnel never sees it; a connection from any of ``others`` reaches ztunnel."""

    probe: tuple[IPAddress, ...] = attrs.field(converter=_addrs)
    others: tuple[IPAddress, ...] = attrs.field(converter=_addrs)
    ports: tuple[int, ...] = attrs.field(converter=_ints)
    skip_ports: tuple[int, ...] = attrs.field(default=(), converter=_ints)
    name: str = ""
    code: ClassVar[str] = "MSH0164"
    decided_within: ClassVar[int] = 1

    def title(self) -> str:
        return self.name or (f"only probes from {', '.join(map(str, self.probe))} bypass ztunnel "
                             f"(not {', '.join(map(str, self.others))})")

    def checks(self, world: World) -> list[tuple[Scope, Pred]]:
        out: list[tuple[Scope, Pred]] = []
        ports = tuple(map(str, self.ports))
        for fam in world.families:
            for src in _of(self.probe, fam):
                out.append((Scope(family=fam, client="peer", peer_src=src, dports=ports),
                            AllOf((ObservedExactly(()), EndsAs({"delivered"})))))
            for src in _of(self.others, fam):
                out.append((Scope(family=fam, client="peer", peer_src=src,
                                  dports_not=tuple(map(str, self.skip_ports))), REACHES_ZTUNNEL))
        return out


@attrs.frozen
class HboneSplit:
    """A5: a peer's connection to ``tunnel_port`` reaches ztunnel's own listener there, not
    redirected; with ``plaintext``, one to any other port lands on ztunnel's inbound side."""

    tunnel_port: int = 15008
    plaintext: bool = True
    name: str = ""
    code: ClassVar[str] = "MSH0165"
    decided_within: ClassVar[int] = 1

    def title(self) -> str:
        rest = ", plaintext to any other port is redirected" if self.plaintext else ""
        return self.name or f"HBONE on {self.tunnel_port} is not redirected{rest}"

    def checks(self, world: World) -> list[tuple[Scope, Pred]]:
        out: list[tuple[Scope, Pred]] = []
        port = str(self.tunnel_port)
        for fam in world.families:
            if world.peer_ip(fam) is None:
                continue
            out.append((Scope(family=fam, client="peer", dports=(port,)),
                        AllOf((ObservedExactly(()), DeliveredTo(app="proxy", port=self.tunnel_port)))))
            if self.plaintext:
                out.append((Scope(family=fam, client="peer", dports_not=(port,)), Captured("in")))
        return out


AmbientProperty = AmbientNoBypass | AmbientNoLoops | MarkSpoofing | ReturnPath | ProbeExemption | HboneSplit
