"""The concrete interpreter: one ``World`` + one ``Flow`` → a ``Result`` (outcome, observed sides, trace).

This is the ground truth of meshsolve: the Z3 encoding is checked against it, and it is checked
against the real kernel. Every kernel fact it relies on is listed here.

Connections ("legs")
    A flow opens one connection; each time the proxy accepts one it may open another (its upstream).
    A connection is followed by its first packet only: nat is consulted once per connection (the
    decision sticks to the conntrack entry), so one connection = one nat decision.

A connection from the peer (another host)
    Source = the world's peer IP of the flow's family, arriving on the pod interface (``-i eth0``).
    Hooks in kernel order: raw, mangle, nat PREROUTING → routing → mangle, filter, security, nat INPUT.
    A destination that is not local after PREROUTING would be forwarded: not modelled (undetermined).
    ``-m owner`` never matches here (there is no local socket; rules reaching it are refused at load).

A connection opened in the pod (an app, or the proxy)
    Owner uid/gid = the opening process's. Route: ``-o lo`` when the destination is local
    (127.0.0.0/8, ::1, a pod IP, the proxy's IPv6 inbound source such as ::6 that Istio adds to
    ``lo``), else ``-o eth0``. Source chosen by the kernel unless the proxy binds one
    (``ProxyBehavior.inbound_source_*``; a connection bound to a loopback address — 127.0.0.6 —
    towards a remote destination fails in ``connect()`` with EINVAL, before any hook: seen on this
    kernel, so the flow is ``Refused``; ``::6`` is not a loopback address and connects normally):
    127.0.0.1 for any 127/8 destination (the ``lo`` route's
    preferred source), ::1 for ::1, the destination itself for another local IPv6 address (RFC 6724
    rule 1), otherwise the pod IP of the family. Hooks: raw, mangle, nat, filter, security OUTPUT →
    (re-route if nat rewrote the destination) → mangle, nat POSTROUTING. Rules after nat in OUTPUT
    still see the output interface routed before nat (``-o eth0`` for a redirected outbound
    connection: seen on this kernel); POSTROUTING sees the re-routed one. A local destination then
    loops back through ``lo``: raw and mangle PREROUTING (``-i lo``), mangle, filter, security INPUT.
    **nat PREROUTING and nat INPUT are never evaluated for a locally opened connection** (its
    conntrack entry already exists). A non-local destination leaves the pod: ``Egress(dst, port)``.

NAT
    ``REDIRECT`` in OUTPUT sets the destination to 127.0.0.1 (::1); in PREROUTING to the primary
    address of the incoming interface (the pod IP of the family on eth0, 127.0.0.1/::1 on lo). The
    port becomes ``--to-ports`` (unchanged without it). The source is unchanged. The accepting
    process reads the pre-NAT destination back (``SO_ORIGINAL_DST``). ``DNAT ADDR[:PORT]`` likewise.
    SNAT/MASQUERADE (POSTROUTING, INPUT) are parsed but give ``Undetermined`` when hit.

TPROXY (mangle PREROUTING)
    The connection is handed to a transparent listener at ``--on-ip`` (default: the primary address
    of the incoming interface) and ``--on-port``, the destination is kept, and ``--tproxy-mark`` is
    applied. The route for marked packets is taken to be local (Istio installs ``fwmark → local
    default dev lo``). The proxy's listeners are transparent, app sockets are not; no transparent
    listener → dropped (as xt_TPROXY does). Later tables still run; the assigned socket wins.

Which socket accepts (TCP; a UDP flow finds no socket and is refused)
    A socket bound to the exact destination address beats a wildcard on the same port. ``0.0.0.0``
    accepts any local IPv4 destination (any 127/8 address too); ``127.0.0.1`` only 127.0.0.1 (so
    127.0.0.6 reaches only a ``0.0.0.0`` or an exact ``127.0.0.6`` bind); a pod-IP bind only the pod
    IP; ``::`` any local IPv6 destination and, without V6ONLY, IPv4 too; ``::1`` only ::1. The proxy
    listens on 0.0.0.0 and ``::`` (V6ONLY) at ``outbound_port`` and ``inbound_port``.

The proxy
    A connection accepted on ``inbound_port`` is the inbound side (``in``); one accepted on
    ``outbound_port`` is the outbound side (``out``), unless ``virtual_inbound_dispatch`` and its
    original destination is a pod IP with a port in ``inbound_ports`` (None = all): then inbound.
    Outbound side: a service VIP:port → connect to ``endpoints[flow.endpoint]``; otherwise
    passthrough to the original destination (or ``blackhole``: the proxy closes the connection →
    ``Refused``). Inbound side: connect to 127.0.0.1/::1 at the original port (``localhost``) or to
    the original destination (``original_dst``), from ``inbound_source_*`` when set. The proxy's
    connections carry its uid/gid and go through nat OUTPUT again. The proxy seeing the same
    (side, original destination) twice in one flow → ``Loop`` (the repeated sighting is not added to
    ``observed``); more than ``max_hops`` connections → ``Loop``. The flow ends with the outcome of
    its last connection: an upstream that is refused makes the whole flow ``Refused`` (the client
    sees the proxy close it), keeping the sides observed so far. The modelled proxy has no special
    case for a connection addressed to its own listener port (Envoy blackholes those): such a
    connection is passed through to itself and ends in ``Loop``.
"""

from __future__ import annotations

import ipaddress

import attrs

from meshsolve.errors import WorldError
from meshsolve.model.net import Family, IPAddress, family_of
from meshsolve.model.rules import Rule, RuleRef, Ruleset
from meshsolve.model.world import Flow, Socket, World
from meshsolve.semantics.netfilter import Env, Hook, Packet, TableResult, traverse
from meshsolve.semantics.trace import (
    Delivered,
    Dropped,
    Egress,
    Hop,
    HopKind,
    Loop,
    Outcome,
    Refused,
    Result,
    Side,
    Undetermined,
    hostport,
)

__all__ = ["accepting_socket", "check_flow", "interpret", "rule_text", "source_for"]

_LO4 = ipaddress.IPv4Address("127.0.0.1")
_LO6 = ipaddress.IPv6Address("::1")
_LOOPNET4 = ipaddress.IPv4Network("127.0.0.0/8")
_WILD4 = ipaddress.IPv4Address("0.0.0.0")
_WILD6 = ipaddress.IPv6Address("::")


def rule_text(rule: Rule) -> str:
    """The rule as iptables text, via ``meshsolve.iptables.rule_text`` when it exists."""
    try:
        from meshsolve.iptables import rule_text as render
    except ImportError:  # the renderer is not there yet: show the model value
        return repr(rule)
    return str(render(rule))


def _on_lo_only(addr: IPAddress) -> bool:
    """A loopback address (127.0.0.0/8, ::1): the kernel refuses to route from it to a remote
    destination. (``::6`` is an ordinary address Istio puts on ``lo``: it connects anywhere.)"""
    return addr.is_loopback


def _loopback(family: Family) -> IPAddress:
    return _LO4 if family == "ipv4" else _LO6


def _rewrite(pkt: Packet, dst: IPAddress, dport: int) -> str:
    return f"dst {hostport(pkt.dst, pkt.dport)} -> {hostport(dst, dport)}"


def source_for(world: World, dst: IPAddress) -> IPAddress:
    """The source address the kernel picks for a connection opened in the pod to ``dst``."""
    if dst.version == 4 and dst in _LOOPNET4:
        return _LO4
    if dst == _LO6:
        return _LO6
    if dst.version == 6 and world.is_local(dst):
        return dst
    src = world.pod_ip(family_of(dst))
    if src is None:
        raise WorldError(f"the pod has no {family_of(dst)} address to connect to {dst} from")
    return src


def accepting_socket(world: World, dst: IPAddress, dport: int, protocol: str = "tcp",
                     ) -> tuple[str, Socket] | None:
    """Which listening socket (owner name, socket) accepts a connection to ``dst:dport``.

    The owner is an app name or ``"proxy"``. An exact bind beats a wildcard; among wildcards an
    IPv4 ``0.0.0.0`` beats a dual-stack ``::`` for an IPv4 destination.
    """
    if protocol != "tcp" or not world.is_local(dst):
        return None
    best: tuple[int, str, Socket] | None = None
    candidates = [(a.name, s) for a in world.apps for s in a.sockets]
    candidates += [("proxy", s) for s in world.proxy_sockets()]
    for owner, s in candidates:
        if s.port != dport:
            continue
        if s.bind == dst:
            score = 3
        elif dst.version == 4 and s.bind == _WILD4:
            score = 2
        elif s.bind == _WILD6 and (dst.version == 6 or not s.v6only):
            score = 2 if dst.version == 6 else 1
        else:
            continue
        if best is None or score > best[0]:
            best = (score, owner, s)
    return None if best is None else (best[1], best[2])


def check_flow(world: World, flow: Flow) -> None:
    """Raise ``WorldError`` if ``flow`` cannot start in ``world``."""
    if flow.client not in ("peer", "proxy") and flow.client not in {a.name for a in world.apps}:
        known = ", ".join(["peer", "proxy", *(repr(a.name) for a in world.apps)])
        raise WorldError(f"flow client {flow.client!r} is not one of: {known}")
    fam = flow.family
    if world.pod_ip(fam) is None:
        raise WorldError(f"flow {flow}: the pod has no {fam} address")
    if flow.client == "peer" and world.peer_ip(fam) is None:
        raise WorldError(f"flow {flow}: the world has no {fam} peer IP")
    if flow.endpoint < 0:
        raise WorldError(f"flow {flow}: endpoint index must be >= 0")


@attrs.frozen
class _Opener:
    """Who opens a connection: ``client`` kind, ids (None for the peer), explicit source or None."""

    who: str
    uid: int | None
    gid: int | None
    src: IPAddress | None
    why: str = ""


class _Run:
    """Mutable builder of one Result (kept private; the result is frozen)."""

    def __init__(self, world: World, flow: Flow, max_hops: int) -> None:
        self.world = world
        self.flow = flow
        self.max_hops = max_hops
        self.hops: list[Hop] = []
        self.hits: list[RuleRef] = []
        self.observed: list[Side] = []
        self.seen: set[tuple[Side, IPAddress, int]] = set()
        self.leg = 0
        fam = flow.family
        self.ruleset: Ruleset = world.rules.for_family(fam)
        addrs: list[tuple[str, IPAddress]] = [("lo", _loopback(fam))]
        pod = world.pod_ip(fam)
        if pod is not None:
            addrs.append((world.interface, pod))
        self.env = Env(world.local_networks(fam), tuple(addrs))

    def hop(self, kind: HopKind, text: str, rule: RuleRef | None = None) -> None:
        self.hops.append(Hop(self.leg, kind, text, rule))

    def result(self, outcome: Outcome) -> Result:
        return Result(self.flow, outcome, tuple(self.observed), tuple(self.hops), tuple(self.hits))

    # -- netfilter --------------------------------------------------------------------------

    def table(self, table: str, hook: Hook, pkt: Packet) -> TableResult:
        res = traverse(self.ruleset, table, hook, pkt, self.env)
        for step in res.steps:
            if step.rule is None:
                self.hop("policy", f"{table}::{step.ref.chain} policy {step.policy}", step.ref)
            else:
                self.hits.append(step.ref)
                self.hop("rule", f"{step.ref} {rule_text(step.rule)}", step.ref)
        return res

    def hooks(self, pkt: Packet, chain: list[tuple[str, Hook]],
              ) -> tuple[Packet, Outcome | None, TableResult | None]:
        """Run the tables in order; stop at a drop, undetermined or nat/tproxy decision."""
        for table, hook in chain:
            res = self.table(table, hook, pkt)
            pkt = res.packet
            if res.verdict == "drop":
                assert res.rule is not None
                return pkt, Dropped(res.rule), None
            if res.verdict == "undetermined":
                return pkt, Undetermined(res.reason, res.rule), None
            if res.verdict in ("nat", "tproxy"):
                return pkt, None, res
        return pkt, None, None

    # -- one connection -----------------------------------------------------------------------

    def connect(self, opener: _Opener, dst: IPAddress, dport: int) -> Result:
        """Follow one connection (and what the proxy does with it) to the end of the flow."""
        self.leg += 1
        if self.leg > self.max_hops:
            return self.result(Loop(f"more than {self.max_hops} connections in one flow"))
        world, flow, fam = self.world, self.flow, self.flow.family
        proto = flow.protocol
        sport = flow.sport if self.leg == 1 else None
        if opener.who == "peer":
            src = world.peer_ip(fam)
            assert src is not None
            self.hop("open", f"peer {src} connects to {hostport(dst, dport)}/{proto}, "
                             f"arriving on {world.interface}")
            return self.inbound(opener, Packet(fam, proto, src, dst, sport, dport, iif=world.interface))
        src = opener.src if opener.src is not None else source_for(world, dst)
        oif = "lo" if world.is_local(dst) else world.interface
        why = f" ({opener.why})" if opener.why else ""
        self.hop("open", f"{opener.who} (uid {opener.uid}, gid {opener.gid}) connects {src} -> "
                         f"{hostport(dst, dport)}/{proto} via {oif}{why}")
        if opener.src is not None and oif != "lo" and _on_lo_only(opener.src):
            self.hop("route", f"cannot connect from {src} (an address of lo) to the remote {hostport(dst, dport)}: "
                              "connect() fails (EINVAL)")
            return self.result(Refused())
        pkt = Packet(fam, proto, src, dst, sport, dport, oif=oif, uid=opener.uid, gid=opener.gid)
        pkt, end, nat = self.hooks(pkt, [("raw", "OUTPUT"), ("mangle", "OUTPUT"), ("nat", "OUTPUT")])
        if end is not None:
            return self.result(end)
        orig = (dst, dport)
        if nat is not None:
            assert nat.new_dst is not None and nat.new_dport is not None and nat.rule is not None
            self.hop("rewrite", _rewrite(pkt, nat.new_dst, nat.new_dport), nat.rule)
            pkt = attrs.evolve(pkt, dst=nat.new_dst, dport=nat.new_dport, ctstates=("NEW", "DNAT"))
        # the rest of OUTPUT still sees the interface routed before nat (the hook's output device is
        # fixed when the hook starts); POSTROUTING sees the re-routed one
        pkt, end, _ = self.hooks(pkt, [("filter", "OUTPUT"), ("security", "OUTPUT")])
        if end is not None:
            return self.result(end)
        pkt = attrs.evolve(pkt, oif="lo" if world.is_local(pkt.dst) else world.interface)
        pkt, end, _ = self.hooks(pkt, [("mangle", "POSTROUTING"), ("nat", "POSTROUTING")])
        if end is not None:
            return self.result(end)
        if not world.is_local(pkt.dst):
            self.hop("route", f"leaves through {world.interface} to {hostport(pkt.dst, pkt.dport)}")
            return self.result(Egress(pkt.dst, pkt.dport))
        self.hop("route", "loops back through lo")
        pkt = attrs.evolve(pkt, iif="lo", oif=None)
        pkt, end, tp = self.hooks(pkt, [("raw", "PREROUTING"), ("mangle", "PREROUTING")])
        if end is not None:
            return self.result(end)
        return self.deliver(pkt, orig, tp, [("mangle", "INPUT"), ("filter", "INPUT"), ("security", "INPUT")])

    def inbound(self, opener: _Opener, pkt: Packet) -> Result:
        world = self.world
        orig = (pkt.dst, pkt.dport)
        pkt, end, tp = self.hooks(pkt, [("raw", "PREROUTING"), ("mangle", "PREROUTING")])
        if end is not None:
            return self.result(end)
        pkt, end, nat = self.hooks(pkt, [("nat", "PREROUTING")])
        if end is not None:
            return self.result(end)
        if nat is not None:
            assert nat.new_dst is not None and nat.new_dport is not None and nat.rule is not None
            self.hop("rewrite", _rewrite(pkt, nat.new_dst, nat.new_dport), nat.rule)
            pkt = attrs.evolve(pkt, dst=nat.new_dst, dport=nat.new_dport, ctstates=("NEW", "DNAT"))
        if tp is None and not world.is_local(pkt.dst):
            return self.result(Undetermined(
                f"{hostport(pkt.dst, pkt.dport)} is not an address of the pod: forwarding is not modelled"))
        return self.deliver(pkt, orig, tp, [("mangle", "INPUT"), ("filter", "INPUT"), ("security", "INPUT"),
                                            ("nat", "INPUT")])

    def deliver(self, pkt: Packet, orig: tuple[IPAddress, int], tp: TableResult | None,
                chain: list[tuple[str, Hook]]) -> Result:
        world = self.world
        found: tuple[str, Socket] | None
        if tp is not None:
            assert tp.new_dst is not None and tp.new_dport is not None and tp.rule is not None
            self.hop("rewrite", f"TPROXY to {hostport(tp.new_dst, tp.new_dport)}, destination kept "
                                f"{hostport(pkt.dst, pkt.dport)}, mark {tp.packet.mark:#x}", tp.rule)
            found = accepting_socket(world, tp.new_dst, tp.new_dport, pkt.protocol)
            if found is None or found[0] != "proxy":
                where = hostport(tp.new_dst, tp.new_dport)
                self.hop("socket", f"no transparent listener on {where}: dropped")
                return self.result(Dropped(tp.rule))
            orig = (pkt.dst, pkt.dport)
        pkt, end, nat = self.hooks(pkt, chain)
        if end is not None:
            return self.result(end)
        if nat is not None:  # DNAT in nat INPUT is refused by the kernel; keep it explicit
            return self.result(Undetermined("destination NAT after routing is not modelled", nat.rule))
        if tp is None:
            found = accepting_socket(world, pkt.dst, pkt.dport, pkt.protocol)
        if found is None:
            self.hop("socket", f"nothing listens on {hostport(pkt.dst, pkt.dport)}/{pkt.protocol}: refused")
            return self.result(Refused())
        owner, sock = found
        if owner != "proxy":
            self.hop("socket", f"{owner} socket {sock} accepts, source {pkt.src}")
            return self.result(Delivered(owner, sock, pkt.src))
        self.hop("socket", f"proxy listener {sock} accepts, original destination {hostport(*orig)}")
        return self.proxy(sock, orig)

    # -- the proxy ----------------------------------------------------------------------------

    def proxy(self, listener: Socket, orig: tuple[IPAddress, int]) -> Result:
        world, behavior = self.world, self.world.proxy
        odst, oport = orig
        on_inbound = behavior.inbound_port is not None and listener.port == behavior.inbound_port
        dispatched = (behavior.virtual_inbound_dispatch and odst in world.pod_ips
                      and (behavior.inbound_ports is None or oport in behavior.inbound_ports))
        side: Side = "in" if on_inbound or dispatched else "out"
        key = (side, odst, oport)
        name = "inbound" if side == "in" else "outbound"
        if key in self.seen:
            self.hop("proxy", f"proxy {name} side sees {hostport(odst, oport)} again")
            return self.result(Loop(f"the proxy's {name} side saw {hostport(odst, oport)} twice"))
        self.seen.add(key)
        self.observed.append(side)
        fam = family_of(odst)
        if side == "out":
            svc = world.service_at(odst, oport)
            if svc is not None:
                if self.flow.endpoint >= len(svc.endpoints):
                    raise WorldError(f"flow {self.flow} picks endpoint #{self.flow.endpoint}, but service "
                                     f"{svc.name!r} has {len(svc.endpoints)}")
                ep = svc.endpoints[self.flow.endpoint]
                self.hop("proxy", f"proxy outbound side: service {svc.name} -> "
                                  f"endpoint #{self.flow.endpoint} {ep}")
                why = f"outbound, service {svc.name}"
                target = (ep.address, ep.port)
            elif behavior.outbound == "blackhole":
                self.hop("proxy", f"proxy outbound side: no service at {hostport(odst, oport)}, "
                                  "blackhole: closed")
                return self.result(Refused())
            else:
                self.hop("proxy", f"proxy outbound side: passthrough to {hostport(odst, oport)}")
                why = "outbound, passthrough"
                target = orig
            src = None
        else:
            target = (_loopback(fam), oport) if behavior.inbound_endpoint == "localhost" else orig
            src = behavior.inbound_source(family_of(target[0]))
            via = f" from {src}" if src is not None else ""
            self.hop("proxy", f"proxy inbound side: forwards to {hostport(*target)}{via} "
                              f"({behavior.inbound_endpoint})")
            why = f"inbound, {behavior.inbound_endpoint}"
        opener = _Opener("proxy", behavior.uid, behavior.gid, src, why)
        return self.connect(opener, *target)


def interpret(world: World, flow: Flow, *, max_hops: int = 8) -> Result:
    """Follow ``flow`` through ``world``: kernel hooks, sockets and proxy hops (see the module doc).

    Raises ``WorldError`` when the flow cannot start (unknown client, no address of its family) or
    picks a service endpoint that does not exist.
    """
    check_flow(world, flow)
    run = _Run(world, flow, max_hops)
    if flow.client == "peer":
        opener = _Opener("peer", None, None, None)
    elif flow.client == "proxy":
        opener = _Opener("proxy", world.proxy.uid, world.proxy.gid, None)
    else:
        app = world.app(flow.client)
        opener = _Opener(app.name, app.uid, app.gid, None)
    return run.connect(opener, flow.dst, flow.dport)

