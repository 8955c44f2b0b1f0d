"""Pod worlds: sockets, proxy behaviours, istio-init-shaped capture rules, and whole worlds.

``worlds()`` are the kernel oracle's worlds: one address family or both, one to three apps
(uids/gids around the app and proxy defaults, sometimes a socket mark) with sockets on ports 9001-9003 bound to the
wildcard, loopback or pod address, a proxy with random knobs (inbound port or none, virtual
dispatch, inbound port list, endpoint, inbound source, passthrough or blackhole), one service VIP
per family with endpoints in the pod and outside it, and ``capture_rulesets()``: a nat table in the
shape istio-init writes — PREROUTING -> ISTIO_INBOUND (per-port RETURN / redirect rules) and
OUTPUT -> ISTIO_OUTPUT (an Istio-era template mutated by random rules over -o lo, -s/-d CIDRs,
owner uid/gid, --dport; RETURN or a jump to ISTIO_REDIRECT / ISTIO_IN_REDIRECT), sometimes with a
filter table.

``small_worlds()`` are the solver differential test's: one family, one app, a fixed proxy shape.
"""

from __future__ import annotations

import attrs
from hypothesis import strategies as st

import meshsolve.defaults as defaults
from meshsolve.model.net import Family, IPAddress, to_address
from meshsolve.model.path import PATHS, TABLE_HOOKS, TABLE_ORDER
from meshsolve.model.routing import Route, Routing, RoutingRule
from meshsolve.model.rules import (
    Accept,
    Chain,
    CtTarget,
    Destination,
    Dnat,
    Drop,
    Goto,
    InInterface,
    Jump,
    Log,
    MarkMatch,
    Match,
    OutInterface,
    OwnerMatch,
    PortMatch,
    Protocol,
    Redirect,
    Reject,
    Return,
    Rule,
    Ruleset,
    Rulesets,
    SetMark,
    SetMatch,
    SocketMatch,
    Source,
    Table,
    Target,
    Tproxy,
    Trace,
)
from meshsolve.model.world import App, Endpoint, ProxyBehavior, Service, Socket, World
from meshsolve.strategies._addresses import SMALL_WORLD_ADDRS, WORLD_ADDRS, binds
from meshsolve.strategies._rules import BASIC_MATCHES, MODULE_MATCHES, TARGETS, Palette, kind_fits, rules, rules_of_kind

__all__ = ["SMALL_WORLD_CHAINS", "SMALL_WORLD_OWN_PORT", "SMALL_WORLD_PORTS", "capture_rulesets", "proxy_behaviors",
           "small_world_palette", "small_worlds", "sockets", "world_palette", "worlds"]

WORLD_APP_PORTS = (9001, 9002, 9003)
WORLD_SERVICE_PORT = 80
WORLD_IDS = (defaults.APP_UID, defaults.APP_UID + 1, defaults.PROXY_UID)
SMALL_WORLD_PORTS: tuple[int, ...] = (9001, 9002, 9003)
#: The port of the small worlds' proxy's own listener, where it ends connections itself (ztunnel's HBONE).
SMALL_WORLD_OWN_PORT = 15008

_PROXY_UID, _PROXY_GID = defaults.PROXY_UID, defaults.PROXY_GID
_OUTBOUND, _INBOUND = defaults.PROXY_OUTBOUND_PORT, defaults.PROXY_INBOUND_PORT


def sockets(family: Family = "ipv4", ports: tuple[int, ...] = WORLD_APP_PORTS,
            pod: str | IPAddress | None = None) -> st.SearchStrategy[Socket]:
    """A listening socket: one of :func:`binds` on one of ``ports`` (``::`` with or without V6ONLY)."""
    return st.builds(lambda bind, port, v6only: Socket(bind, port, v6only and bind == to_address("::")),
                     binds(family, pod), st.sampled_from(ports), st.booleans())


def _overlap(a: Socket, b: Socket) -> bool:
    """Whether two listening sockets claim a common (address, port)."""
    if a.port != b.port:
        return False

    def covers(w: Socket, o: Socket) -> bool:
        return w.bind.is_unspecified and (w.bind.version == o.bind.version
                                          or (w.bind.version == 6 and not w.v6only))

    return a.bind == b.bind or covers(a, b) or covers(b, a)


@st.composite
def _apps(draw: st.DrawFn, fams: tuple[Family, ...]) -> tuple[App, ...]:
    """One to three apps. Binds on one port overlap only within one app: the kernel lets a wildcard
    and a specific listener share a port only with SO_REUSEPORT and the same uid (and never two
    wildcards that both take IPv4)."""
    bind_choices = tuple(WORLD_ADDRS[f][k] for f in fams for k in ("wild", "lo", "pod"))
    n = draw(st.integers(1, 3))
    placed: list[tuple[int, Socket]] = []
    apps = []
    for i in range(n):
        socks = []
        for port in WORLD_APP_PORTS:
            for bind in draw(st.lists(st.sampled_from(bind_choices), max_size=2, unique=True)):
                v6only = ":" in bind and bind == "::" and draw(st.booleans())
                sock = Socket(bind, port, v6only)
                clash = any(_overlap(sock, other) and (j != i or other.bind == sock.bind
                                                       or (sock.bind.is_unspecified
                                                           and other.bind.is_unspecified))
                            for j, other in placed)
                if not clash:
                    placed.append((i, sock))
                    socks.append(sock)
        uid = draw(st.sampled_from(WORLD_IDS[:2])) if i == 0 else draw(st.sampled_from(WORLD_IDS))
        gid = draw(st.sampled_from(WORLD_IDS))
        # within one app a wildcard and a specific bind share a port: both set SO_REUSEPORT
        socks = [attrs.evolve(x, reuseport=True) if any(y is not x and _overlap(x, y) for y in socks) else x
                 for x in socks]
        apps.append(App(f"app{i}", uid=uid, gid=gid, sockets=tuple(socks)))
    return tuple(apps)


@st.composite
def _proxy(draw: st.DrawFn, fams: tuple[Family, ...]) -> ProxyBehavior:
    inbound_port = draw(st.sampled_from((_INBOUND, None)))
    ports = draw(st.one_of(st.none(), st.sets(st.sampled_from(WORLD_APP_PORTS), max_size=3).map(tuple)))
    with_source = draw(st.booleans())
    # uid 0: the TPROXY-style sidecar, recognised by its gid
    uid, gid = draw(st.sampled_from(((_PROXY_UID, _PROXY_GID), (_PROXY_UID, _PROXY_GID), (0, _PROXY_GID))))
    return ProxyBehavior(
        uid=uid, gid=gid,
        inbound_port=inbound_port,
        virtual_inbound_dispatch=draw(st.booleans()),
        inbound_ports=ports,
        inbound_endpoint=draw(st.sampled_from(("localhost", "original_dst"))),
        inbound_source_v4=WORLD_ADDRS["ipv4"]["six"] if with_source and "ipv4" in fams else None,
        inbound_source_v6=WORLD_ADDRS["ipv6"]["six"] if with_source and "ipv6" in fams else None,
        outbound=draw(st.sampled_from(("passthrough", "passthrough", "blackhole"))),
    )


def proxy_behaviors(families: tuple[Family, ...] = ("ipv4",)) -> st.SearchStrategy[ProxyBehavior]:
    """Sidecar behaviours with random knobs (inbound port or shared listener, virtual inbound
    dispatch, inbound port list, localhost or original-destination forwarding, inbound source,
    passthrough or blackhole, TPROXY-style uid 0) — the ones :func:`worlds` draws."""
    return _proxy(families)


# --- capture rules -----------------------------------------------------------------------------------


@st.composite
def _output_rule(draw: st.DrawFn, fam: Family) -> Rule:
    a = WORLD_ADDRS[fam]
    matches: list[Match] = []
    if draw(st.booleans()):
        matches.append(OutInterface("lo", negated=draw(st.booleans())))
    if draw(st.integers(0, 2)) == 0:
        matches.append(Source(draw(st.sampled_from(a["cidrs"])), negated=draw(st.booleans())))
    if draw(st.booleans()):
        matches.append(Destination(draw(st.sampled_from(a["cidrs"])), negated=draw(st.booleans())))
    if draw(st.integers(0, 3)) == 0:
        matches.append(Protocol("tcp"))
        port = draw(st.sampled_from((*WORLD_APP_PORTS, WORLD_SERVICE_PORT)))
        matches.append(PortMatch("tcp", dport=port, dport_negated=draw(st.booleans())))
    owner = draw(st.integers(0, 3))
    if owner == 1:
        matches.append(OwnerMatch(uid=str(draw(st.sampled_from(WORLD_IDS))), uid_negated=draw(st.booleans())))
    elif owner == 2:
        matches.append(OwnerMatch(gid=str(draw(st.sampled_from(WORLD_IDS))), gid_negated=draw(st.booleans())))
    choices: tuple[Target, ...] = (Return(), Return(), Jump("ISTIO_REDIRECT"), Jump("ISTIO_IN_REDIRECT"))
    return Rule(tuple(matches), draw(st.sampled_from(choices)))


@st.composite
def _inbound_rule(draw: st.DrawFn) -> Rule:
    port = draw(st.sampled_from(WORLD_APP_PORTS))
    choices: tuple[Target, ...] = (Return(), Jump("ISTIO_IN_REDIRECT"))
    return Rule((Protocol("tcp"), PortMatch("tcp", dport=port)), draw(st.sampled_from(choices)))


def _templates(fam: Family, proxy: ProxyBehavior) -> tuple[tuple[Rule, ...], ...]:
    """ISTIO_OUTPUT as Istio wrote it in two eras (for the proxy's ids), and empty."""
    a = WORLD_ADDRS[fam]
    lo = a["cidrs"][0]
    uid, gid = str(proxy.uid), str(proxy.gid)
    seed = (
        Rule((OutInterface("lo"), Destination(lo, negated=True)), Jump("ISTIO_REDIRECT")),
        Rule((OwnerMatch(uid=uid),), Return()),
        Rule((OwnerMatch(gid=gid),), Return()),
        Rule((Destination(lo),), Return()),
        Rule((), Jump("ISTIO_REDIRECT")),
    )
    era_i: list[Rule] = [Rule((OutInterface("lo"), Source(a["cidrs"][1])), Return())]
    for own, not_own in ((OwnerMatch(uid=uid), OwnerMatch(uid=uid, uid_negated=True)),
                         (OwnerMatch(gid=gid), OwnerMatch(gid=gid, gid_negated=True))):
        era_i += [Rule((OutInterface("lo"), Destination(lo, negated=True), own), Jump("ISTIO_IN_REDIRECT")),
                  Rule((OutInterface("lo"), not_own), Return()),
                  Rule((own,), Return())]
    era_i += [Rule((Destination(lo),), Return()), Rule((), Jump("ISTIO_REDIRECT"))]
    return seed, tuple(era_i), ()


@st.composite
def _output_chain(draw: st.DrawFn, fam: Family, proxy: ProxyBehavior) -> tuple[Rule, ...]:
    """A template ISTIO_OUTPUT mutated by a few random deletions and insertions."""
    chain_rules = list(draw(st.sampled_from(_templates(fam, proxy))))
    for _ in range(draw(st.integers(0, 4))):
        delete: bool = draw(st.booleans())
        if chain_rules and delete:
            del chain_rules[draw(st.integers(0, len(chain_rules) - 1))]
        else:
            chain_rules.insert(draw(st.integers(0, len(chain_rules))), draw(_output_rule(fam)))
    return tuple(chain_rules)


@st.composite
def _filter_table(draw: st.DrawFn, fam: Family) -> Table:
    """A filter table that rejects (rarely drops) some first packets: OUTPUT by port, loopback,
    destination or owner; INPUT by port (after nat: the proxy's ports too) and interface. Rules never
    match reply packets (their destination port is the client's ephemeral port)."""
    a = WORLD_ADDRS[fam]
    # DROP costs the client's whole connect timeout: keep it rare
    verdicts: tuple[Target, ...] = (*(Reject(),) * 10, *(Accept(),) * 3, Drop())
    verdict = st.sampled_from(verdicts)
    ports = (*WORLD_APP_PORTS, WORLD_SERVICE_PORT, _OUTBOUND, _INBOUND)
    output, inbound = [], []
    for _ in range(draw(st.integers(0, 2))):
        m: list[Match] = [Protocol("tcp"), PortMatch("tcp", dport=draw(st.sampled_from(ports)))]
        extra = draw(st.integers(0, 3))
        if extra == 1:
            m.append(OutInterface("lo", negated=draw(st.booleans())))
        elif extra == 2:
            m.append(Destination(draw(st.sampled_from((a["pod"], a["lo"], a["out"])))))
        elif extra == 3:
            m.append(OwnerMatch(uid=str(draw(st.sampled_from(WORLD_IDS)))))
        output.append(Rule(tuple(m), draw(verdict)))
    for _ in range(draw(st.integers(0, 2))):
        m = [Protocol("tcp"), PortMatch("tcp", dport=draw(st.sampled_from(ports)))]
        if draw(st.booleans()):
            m.append(InInterface(draw(st.sampled_from(("lo", "eth0")))))
        inbound.append(Rule(tuple(m), draw(verdict)))
    return Table("filter", (Chain("INPUT", tuple(inbound), "ACCEPT"),
                            Chain("OUTPUT", tuple(output), "ACCEPT")))


@st.composite
def capture_rulesets(draw: st.DrawFn, fams: tuple[Family, ...], proxy: ProxyBehavior) -> Rulesets:
    """A random istio-init-shaped nat table per family in ``fams`` (other families stay empty)."""
    inbound_to = proxy.inbound_port if proxy.inbound_port is not None else proxy.outbound_port
    out: dict[str, Ruleset] = {}
    for fam in fams:
        inbound = draw(st.lists(_inbound_rule(), max_size=3))
        if draw(st.booleans()):
            inbound.append(Rule((Protocol("tcp"),), Jump("ISTIO_IN_REDIRECT")))
        output = draw(_output_chain(fam, proxy))
        nat = Table("nat", (
            Chain("PREROUTING", (Rule((Protocol("tcp"),), Jump("ISTIO_INBOUND")),), "ACCEPT"),
            Chain("OUTPUT", (Rule((Protocol("tcp"),), Jump("ISTIO_OUTPUT")),), "ACCEPT"),
            Chain("ISTIO_INBOUND", tuple(inbound)),
            Chain("ISTIO_OUTPUT", output),
            Chain("ISTIO_REDIRECT", (Rule((Protocol("tcp"),), Redirect(proxy.outbound_port)),)),
            Chain("ISTIO_IN_REDIRECT", (Rule((Protocol("tcp"),), Redirect(inbound_to)),)),
        ))
        tables = [nat]
        if draw(st.integers(0, 3)) == 0:
            tables.append(draw(_filter_table(fam)))
        out[fam] = Ruleset(fam, tuple(tables))
    return Rulesets(out.get("ipv4", Ruleset("ipv4")), out.get("ipv6", Ruleset("ipv6")))


# --- worlds --------------------------------------------------------------------------------------------


# Every registered match and target kind, as the strategies' tables list them.
ALL_KINDS: tuple[type, ...] = (*BASIC_MATCHES, *MODULE_MATCHES, *TARGETS)
# The kinds only native nftables rules have (``meshsolve.model.nftrules``): iptables worlds never hold them
NFT_ONLY_KINDS: tuple[type, ...] = tuple(k for k in ALL_KINDS if k.__module__ == "meshsolve.model.nftrules")
# A set lookup needs its set in the kernel (and its members in the world): the random worlds give
# none, so they never hold one (``rules()`` draws it where no kernel must load it)
SET_KINDS: tuple[type, ...] = (SetMatch,)
IPTABLES_KINDS: tuple[type, ...] = tuple(k for k in ALL_KINDS if k not in NFT_ONLY_KINDS and k not in SET_KINDS)

# Where the solver differential's extra rules may go: every table at every hook a connection meets.
SMALL_WORLD_CHAINS: tuple[tuple[str, str], ...] = tuple(
    (t, h) for t in TABLE_ORDER for h in TABLE_HOOKS[t] if h in {x for hooks, _ in PATHS.values() for x in hooks})

_SYN_EXTRAS: tuple[tuple[str, ...], ...] = (
    (), (), ("--tcp-flags", "FIN,SYN,RST,ACK", "SYN"), ("!", "--tcp-flags", "FIN,SYN,RST,ACK", "SYN"),
    ("--tcp-flags", "SYN,ACK", "SYN,ACK"), ("--tcp-flags", "ACK", "ACK"))


def world_palette(family: Family) -> Palette:
    """The values the extra rules of :func:`worlds` name (``WORLD_ADDRS``: the CIDRs capture rules
    use, the pod, loopback, the passthrough source, the VIP, the outside address, the peer; the app,
    service and proxy ports; the ids of ``worlds``' apps; two marks), deciding only what the model
    decides (the flows are compared with the kernel outcome for outcome)."""
    a = WORLD_ADDRS[family]
    plen = _plen(family)
    return Palette(
        nets=(*a["cidrs"], f"{a['vip']}/{plen}", f"{a['out']}/{plen}", f"{a['peer']}/{plen}"),
        addrs=(a["pod"], a["lo"], a["out"], a["vip"], a["peer"]),
        ports=(*WORLD_APP_PORTS, WORLD_SERVICE_PORT, _OUTBOUND, _INBOUND),
        ranges=((9001, 9003), (9002, 9003), (_OUTBOUND, _INBOUND)),
        ids=tuple(str(i) for i in WORLD_IDS), marks=(0x539, 0x53A), masks=(0xFFFFFFFF, 0xFF),
        ifaces=("lo", "eth0"), tcp_extras=_SYN_EXTRAS, protos=("tcp",), decided=True,
    )


# targets that change nothing a packet's path depends on
_INERT = (Accept, Return, Log, Trace)


def _spares_kernel_packets(draw: st.DrawFn, rule: Rule, pal: Palette) -> Rule:
    """``rule``, or when its target acts on packets, the rule restricted to a server port
    (``--dport`` from the palette). The model follows a connection's handshake and the RST that
    refuses it, not the RST a REJECT sends nor the kernel's ICMP errors: those go to the client's
    ephemeral port or are not TCP, so they never meet such a rule."""
    if rule.target is None or isinstance(rule.target, _INERT):
        return rule
    pm = next((m for m in rule.matches if isinstance(m, PortMatch)), None)
    if pm is not None and pm.dport is not None and not pm.dport_negated:
        return rule
    dport = draw(pal.port_ranges())
    if pm is None:
        return attrs.evolve(rule, matches=(*rule.matches, PortMatch("tcp", dport=dport)))
    return attrs.evolve(rule, matches=tuple(attrs.evolve(m, dport=dport, dport_negated=False) if m is pm else m
                                            for m in rule.matches))


def _tproxy_marks(rules_: Rulesets, fam: Family) -> tuple[tuple[int, int], ...]:
    marks = [(r.target.mark or 0, r.target.mask) for t in rules_.for_family(fam).tables for c in t.chains
             for r in c.rules if isinstance(r.target, Tproxy)]
    return tuple(dict.fromkeys(marks))


def _local_dnat(t: Dnat, fam: Family) -> Dnat:
    """A PREROUTING DNAT to an address of the pod: a peer's connection sent elsewhere would be
    forwarded, which the model leaves undetermined (tests/test_oracle_open_disagreements.py)."""
    if t.spec is None or t.spec.addr is None or str(t.spec.addr) in (WORLD_ADDRS[fam]["pod"], WORLD_ADDRS[fam]["lo"]):
        return t
    pod = WORLD_ADDRS[fam]["pod"]
    host = f"[{pod}]" if fam == "ipv6" and t.spec.port_lo is not None else pod
    port = "" if t.spec.port_lo is None else f":{t.spec.port_lo}" + (
        f"-{t.spec.port_hi}" if t.spec.port_hi not in (None, t.spec.port_lo) else "")
    return Dnat(host + port)


@st.composite
def _extra_rules(draw: st.DrawFn, rules_: Rulesets, fams: tuple[Family, ...]) -> Rulesets:
    """``rules_`` with ``-p tcp`` rules of every kind the model decides added to the built-in chains
    of every table at every hook a connection meets (each chain with probability 1/4)."""
    out: dict[str, Ruleset] = {}
    all_fams: tuple[Family, ...] = ("ipv4", "ipv6")
    for fam in all_fams:
        rs = rules_.for_family(fam)
        if fam not in fams:
            out[fam] = rs
            continue
        pal = world_palette(fam)
        tables = {t.name: {c.name: c for c in t.chains} for t in rs.tables}
        for table, hook in SMALL_WORLD_CHAINS:
            if draw(st.integers(0, 3)) > 0:
                continue
            chains = tables.setdefault(table, {})
            old = chains.get(hook, Chain(hook, (), "ACCEPT"))
            here = list(old.rules)
            for extra in draw(st.lists(rules(fam, table, hook, kernel=True, palette=pal), min_size=1, max_size=2)):
                if hook == "PREROUTING" and isinstance(extra.target, Dnat):  # no forwarding: see _local_dnat
                    extra = attrs.evolve(extra, target=_local_dnat(extra.target, fam))
                if hook == "PREROUTING":  # -m socket before nat, on the ACK of a NATed connection: see
                    # tests/test_oracle_open_disagreements.py (the model finds a socket the kernel does not)
                    extra = attrs.evolve(extra, matches=tuple(m for m in extra.matches
                                                              if not isinstance(m, SocketMatch)))
                if isinstance(extra.target, Tproxy) and extra.target.on_port != _OUTBOUND:
                    # a transparent listener takes it: TPROXY to an ordinary listener drops at the rule,
                    # which the model does not know (tests/test_oracle_open_disagreements.py)
                    extra = attrs.evolve(extra, target=attrs.evolve(extra.target, on_port=_OUTBOUND))
                here.insert(draw(st.integers(0, len(here))), _spares_kernel_packets(draw, extra, pal))
            chains[hook] = attrs.evolve(old, rules=tuple(here))
        out[fam] = Ruleset(fam, tuple(Table(t, tuple(cs.values())) for t, cs in tables.items()))
    return Rulesets(out["ipv4"], out["ipv6"])


def _tproxy_capture(rules_: Rulesets, fam: Family) -> Rulesets:
    """A ruleset with TPROXY captures inbound connections with it alone, as Istio's TPROXY mode does:
    nat PREROUTING keeps no jump or NAT target (the kernel resets a connection that both TPROXY and a
    REDIRECT act on, which the model does not know: tests/test_oracle_open_disagreements.py)."""
    rs = rules_.for_family(fam)
    nat = rs.table("nat")
    pre = nat.chain("PREROUTING") if nat is not None else None
    if nat is None or pre is None:
        return rules_
    keep = tuple(r for r in pre.rules if not isinstance(r.target, Jump | Goto | Redirect | Dnat))
    new_nat = Table("nat", tuple(attrs.evolve(c, rules=keep) if c is pre else c for c in nat.chains))
    new_rs = Ruleset(fam, tuple(new_nat if t is nat else t for t in rs.tables))
    return Rulesets(new_rs, rules_.ipv6) if fam == "ipv4" else Rulesets(rules_.ipv4, new_rs)


@st.composite
def _zoned(draw: st.DrawFn, rules_: Rulesets, fams: tuple[Family, ...]) -> Rulesets:
    """``rules_`` with, for some families, every TCP packet put in conntrack zone 5 or 6 by the first
    rule of raw PREROUTING and raw OUTPUT. Both directions of a connection share the zone: when only
    one does, a packet after the handshake is picked up in zone 0 as a new connection, which the
    model does not follow (tests/test_oracle_open_disagreements.py)."""
    out = {"ipv4": rules_.ipv4, "ipv6": rules_.ipv6}
    for fam in fams:
        if draw(st.integers(0, 3)) < 3:
            continue
        first = Rule((Protocol("tcp"),), CtTarget(draw(st.sampled_from((5, 6)))))
        rs = out[fam]
        raw = rs.table("raw") or Table("raw", ())
        chains = {c.name: c for c in raw.chains}
        for hook in ("PREROUTING", "OUTPUT"):
            old = chains.get(hook, Chain(hook, (), "ACCEPT"))
            chains[hook] = attrs.evolve(old, rules=(first, *old.rules))
        new_raw = Table("raw", tuple(chains.values()))
        tables = tuple(new_raw if t.name == "raw" else t for t in rs.tables)
        tables = tables if rs.table("raw") else (*tables, new_raw)
        out[fam] = Ruleset(fam, tuple(sorted(tables, key=lambda t: TABLE_ORDER.index(t.name))))
    return Rulesets(out["ipv4"], out["ipv6"])


@st.composite
def worlds(draw: st.DrawFn, families: tuple[Family, ...] = ("ipv4", "ipv6"), *, extended: bool = False) -> World:
    """A random pod world, IPv4, IPv6 or (when both are allowed) dual-stack; see the module doc.

    Besides the capture rules, rules of every kind the model decides sit in every table at every
    hook a connection meets (``world_palette`` values: DNAT to loopback, port ranges, REJECT,
    ``-m socket``, raw-table conntrack states, ``--tcp-flags``, TPROXY with its policy route and
    transparent listeners); in some worlds every TCP packet is in conntrack zone 5 or 6 (``CT --zone``
    first in raw PREROUTING and OUTPUT). ``extended`` also draws policy routing of its own, transparent
    listeners without TPROXY, the inbound side's original-source upstream and an upstream mark."""
    choices: list[tuple[Family, ...]] = [(f,) for f in families]
    if len(families) == 2:
        choices.append(("ipv4", "ipv6"))
    fams = draw(st.sampled_from(choices))
    proxy = draw(_proxy(fams))
    services = []
    for fam in fams:
        a = WORLD_ADDRS[fam]
        eps = (*(Endpoint(a["pod"], p) for p in WORLD_APP_PORTS), Endpoint(a["out"], WORLD_APP_PORTS[0]))
        services.append(Service(f"svc-{fam}", a["vip"], WORLD_SERVICE_PORT, eps))
    rules_ = draw(_zoned(draw(_extra_rules(draw(capture_rulesets(fams, proxy)), fams)), fams))
    marks = {fam: _tproxy_marks(rules_, fam) for fam in fams}
    for fam in fams:
        if marks[fam]:
            rules_ = _tproxy_capture(rules_, fam)
    routing = Routing()
    for fam in fams:  # TPROXY hands connections to transparent listeners through a policy route
        for i, (mark, mask) in enumerate(marks[fam]):
            part = Routing.tproxy(mark, mask, families=(fam,))
            routing = Routing((*routing.rules, *(attrs.evolve(r, priority=r.priority - i) for r in part.rules)),
                              (*routing.routes, *part.routes[:1 if i == 0 else 0]))
    transparent = any(marks.values())
    if extended:
        for fam in fams:
            if not marks[fam] and draw(st.integers(0, 2)) == 0:
                routing = Routing((*routing.rules, *(extra := draw(_small_routing(fam, world_palette(fam)))).rules),
                                  (*routing.routes, *extra.routes))
        proxy = attrs.evolve(proxy, transparent=transparent or draw(st.integers(0, 3)) == 0,
                             inbound_original_source=draw(st.integers(0, 3)) == 0,
                             upstream_mark=draw(st.none() | st.sampled_from((0x539, 0x53A))))
    else:
        proxy = attrs.evolve(proxy, transparent=transparent)
    apps = draw(_apps(fams))
    # drawn last, so the rest of a world is what it was before apps had marks
    apps = tuple(attrs.evolve(a, mark=draw(_app_marks(world_palette(fams[0]).marks))) for a in apps)
    return World(
        pod_ips=tuple(WORLD_ADDRS[f]["pod"] for f in fams),
        peer_ips=tuple(WORLD_ADDRS[f]["peer"] for f in fams),
        apps=apps, proxy=proxy, services=tuple(services),
        rules=rules_, routing=routing,
    )


def _app_marks(marks: tuple[int, ...]) -> st.SearchStrategy[int | None]:
    """An app's socket mark: none three times in four, else one of ``marks`` (a world's palette)."""
    return st.integers(0, 3).flatmap(lambda n: st.sampled_from(marks) if n == 0 else st.none())


def small_world_palette(family: Family) -> Palette:
    """The values the rules of :func:`small_worlds` name: the world's addresses and CIDRs (loopback,
    the passthrough source, the pod, the VIP, the remote endpoint, the peer, multicast), its ports
    and port ranges, the app's and the proxy's ids, two marks, ``lo``/``eth0``, and ``--syn``-like
    ``--tcp-flags`` options (the SYN's, the SYN-ACK's, the ACK's)."""
    a = SMALL_WORLD_ADDRS[family]
    wide, mcast = ("192.0.2.0/24", "224.0.0.0/4") if family == "ipv4" else ("2001:db8::/32", "ff00::/8")
    loopnet = "127.0.0.0/8" if family == "ipv4" else "::1/128"
    return Palette(
        nets=(a["lonet"], loopnet, a["srcnet"], a["podnet"], f"{a['vip']}/{_plen(family)}",
              f"{a['remote']}/{_plen(family)}", f"{a['peer']}/{_plen(family)}", wide, mcast),
        addrs=(a["pod"], a["lo"], a["remote"], a["vip"], a["src6"], a["peer"]),
        ports=(*SMALL_WORLD_PORTS, _OUTBOUND, _INBOUND, 80),
        ranges=((9001, 9003), (9002, 9003), (_OUTBOUND, _INBOUND), (80, 9001)),
        ids=(str(defaults.APP_UID), str(_PROXY_UID), f"{defaults.APP_UID}-{_PROXY_UID}", "0"),
        marks=(0x539, 0x53A, 0x1), masks=(0xFFFFFFFF, 0xFF, 0x1),
        ifaces=("lo", "eth0", "eth+", "veth0"),
        tcp_extras=_SYN_EXTRAS,
    )


def _plen(family: Family) -> int:
    return 32 if family == "ipv4" else 128


@st.composite
def _small_sockets(draw: st.DrawFn, fam: Family) -> tuple[Socket, ...]:
    """Up to four listeners of the app: wildcard, loopback or pod bind on 9001-9003; a wildcard and a
    specific bind on one port are an SO_REUSEPORT pair (the kernel refuses them otherwise)."""
    a = SMALL_WORLD_ADDRS[fam]
    pairs = draw(st.lists(st.tuples(st.sampled_from([a["any"], a["lo"], a["pod"]]), st.sampled_from(SMALL_WORLD_PORTS)),
                          max_size=4, unique=True))
    socks = [Socket(b, p, v6only=b == "::" and draw(st.booleans()), reuseport=draw(st.integers(0, 3)) == 0)
             for b, p in pairs]
    return tuple(attrs.evolve(x, reuseport=True) if any(y is not x and _overlap(x, y) for y in socks) else x
                 for x in socks)


@st.composite
def _small_routing(draw: st.DrawFn, fam: Family, pal: Palette) -> Routing:
    """None, Istio's TPROXY policy route, or an fwmark rule (maybe inverted) looking up a table of
    local / unicast / error / throw routes for the world's CIDRs."""
    how = draw(st.integers(0, 4))
    if how <= 1:
        return Routing()
    mark, mask = draw(st.sampled_from(pal.marks)), draw(st.sampled_from(pal.masks))
    if how == 2:
        return Routing.tproxy(mark, mask, families=(fam,))
    rule = RoutingRule(fam, draw(st.sampled_from((100, 32765))), 100,
                       draw(st.none() | st.just(mark)), mask, draw(st.booleans()))
    default = "0.0.0.0/0" if fam == "ipv4" else "::/0"
    routes = []
    nets = draw(st.lists(st.sampled_from((default, *pal.nets[:7])), min_size=1, max_size=3, unique=True))
    for i, net in enumerate(nets):  # the first route delivers or sends out; others may be of any kind
        kinds = ("local", "unicast") if i == 0 else \
            ("local", "unicast", "blackhole", "unreachable", "prohibit", "throw")
        kind = draw(st.sampled_from(kinds))
        dev = {"local": "lo", "unicast": draw(st.sampled_from(("eth0", "lo")))}.get(kind)
        routes.append(Route(net, kind, dev, 100))  # type: ignore[arg-type]
    return Routing((rule,), tuple(routes))


def _tproxy_mangle(draw: st.DrawFn, a: dict[str, str], mark: int) -> tuple[Rule, ...]:
    """Istio's TPROXY capture in mangle PREROUTING: packets of a transparent socket's connection
    are marked and accepted, other TCP is handed to a listener with TPROXY."""
    tcp = Protocol("tcp")
    sock = SocketMatch(("--transparent",) if draw(st.booleans()) else ())
    port = draw(st.sampled_from((_INBOUND, _OUTBOUND)))
    return (Rule((tcp, sock), SetMark(mark)),
            Rule((tcp, sock), Accept()),
            Rule((Destination(a["lonet"], negated=True), tcp), Tproxy(port, None, mark, 0xFFFFFFFF)))


@st.composite
def small_worlds(draw: st.DrawFn) -> World:
    """A one-family pod (IPv4 twice as often) with one app ``app`` (uid/gid 1000, sometimes a socket
    mark of the palette) whose sockets bind the wildcard, loopback or pod address on 9001-9003 (an
    overlapping pair with SO_REUSEPORT), a
    proxy with random knobs (inbound port or shared listener, dispatch, endpoint, passthrough source,
    blackhole, transparent listeners, the client's original source, an upstream mark; in one world
    of four ztunnel's shape: a listener of its own on ``SMALL_WORLD_OWN_PORT``, where TPROXY capture
    also sends that port, maybe its tunnel listener (which nat PREROUTING then leaves alone), and
    maybe a mark on every socket), a service
    VIP on 9001 whose endpoints are this pod (and maybe a remote host), policy routing (none,
    Istio's TPROXY route, or an fwmark rule with a table of routes), and rules:

    * usually an istio-init-shaped nat table whose ``ISTIO_OUTPUT`` is up to six rules built from the
      matches capture turns on (``-o lo``, ``-d``/``-s`` loopback and pod CIDRs, owner uid/gid 1337
      either way, ``--dport``, a mark), sometimes with a mangle ``OUTPUT`` rule marking the proxy's
      loopback traffic, sometimes Istio's TPROXY capture in mangle PREROUTING;
    * rules of every registered kind in the built-in chains of every table at every hook a
      connection meets (``SMALL_WORLD_CHAINS``), drawn by :func:`rules` with the world's
      :func:`small_world_palette` where the kernel's loader accepts them.

    These are the worlds the solver is checked against exhaustive interpretation on."""
    small_fams: tuple[Family, ...] = ("ipv4", "ipv4", "ipv6")
    fam = draw(st.sampled_from(small_fams))
    a = SMALL_WORLD_ADDRS[fam]
    pal = small_world_palette(fam)
    ports = SMALL_WORLD_PORTS
    app = App("app", uid=defaults.APP_UID, gid=defaults.APP_GID, sockets=draw(_small_sockets(fam)))
    inbound_port = draw(st.sampled_from([_INBOUND, None]))
    tproxy_mode = draw(st.integers(0, 4)) == 0
    proxy = ProxyBehavior(
        uid=_PROXY_UID, gid=_PROXY_GID, outbound_port=_OUTBOUND, inbound_port=inbound_port,
        virtual_inbound_dispatch=inbound_port is None or draw(st.booleans()),
        inbound_ports=draw(st.sampled_from([None, ports, ports[:1]])),
        inbound_endpoint=draw(st.sampled_from(["localhost", "original_dst"])),
        inbound_source_v4=draw(st.sampled_from([None, SMALL_WORLD_ADDRS["ipv4"]["src6"]])),
        inbound_source_v6=draw(st.sampled_from([None, SMALL_WORLD_ADDRS["ipv6"]["src6"]])),
        outbound=draw(st.sampled_from(["passthrough", "passthrough", "blackhole"])),
        transparent=tproxy_mode or draw(st.integers(0, 3)) == 0,
        inbound_original_source=draw(st.integers(0, 4)) == 0,
        upstream_mark=draw(st.none() | st.sampled_from(pal.marks)),
    )
    eps = draw(st.sampled_from([(Endpoint(a["pod"], 9001),),
                                (Endpoint(a["pod"], 9003), Endpoint(a["remote"], 80))]))
    svc = Service("svc", a["vip"], 9001, eps)
    in_port = inbound_port or _OUTBOUND

    chains: dict[tuple[str, str], list[Rule]] = {}
    user: dict[str, list[Chain]] = {}
    if draw(st.integers(0, 4)) > 0:  # the istio-init capture (else: no NAT unless drawn below)
        proxy_id = str(_PROXY_UID), str(_PROXY_GID)
        match_choices = st.sampled_from([
            OutInterface("lo"), OutInterface("lo", True), Destination(a["lonet"]), Destination(a["lonet"], True),
            Source(a["srcnet"]), Destination(a["podnet"]), OwnerMatch(uid=proxy_id[0]),
            OwnerMatch(uid=proxy_id[0], uid_negated=True), OwnerMatch(gid=proxy_id[1]),
            PortMatch("tcp", dport=9002), PortMatch("tcp", dport=9001, dport_negated=True), MarkMatch(0x53A),
            OwnerMatch(gid=proxy_id[1], gid_negated=True),
        ])
        target_choices = st.sampled_from([Return(), Jump("ISTIO_REDIRECT"), Jump("ISTIO_IN_REDIRECT")])
        out_rules = draw(st.lists(st.builds(lambda ms, t: Rule((Protocol("tcp"), *ms), t),
                                            st.lists(match_choices, max_size=3, unique_by=type), target_choices),
                                  max_size=6))
        inbound_rules = draw(st.lists(st.sampled_from([
            Rule((Protocol("tcp"), PortMatch("tcp", dport=p)), Return()) for p in (*ports, 15008)]),
            max_size=2, unique=True))
        inbound_rules.append(Rule((Protocol("tcp"),), Jump("ISTIO_IN_REDIRECT")))
        if draw(st.booleans()):
            chains[("nat", "PREROUTING")] = [Rule((Protocol("tcp"),), Jump("ISTIO_INBOUND"))]
        chains[("nat", "OUTPUT")] = [Rule((Protocol("tcp"),), Jump("ISTIO_OUTPUT"))]
        user["nat"] = [
            Chain("ISTIO_INBOUND", tuple(inbound_rules)),
            Chain("ISTIO_OUTPUT", tuple(out_rules)),
            Chain("ISTIO_REDIRECT", (Rule((Protocol("tcp"),), Redirect(_OUTBOUND)),)),
            Chain("ISTIO_IN_REDIRECT", (Rule((Protocol("tcp"),), Redirect(in_port)),)),
        ]
        if draw(st.booleans()):  # mangle OUTPUT marks the proxy's lo traffic (seen by nat's mark match)
            chains[("mangle", "OUTPUT")] = [
                Rule((OutInterface("lo"), Protocol("tcp"), OwnerMatch(uid=proxy_id[0])), SetMark(0x53A))]
    routing = draw(_small_routing(fam, pal))
    if tproxy_mode:
        mark = draw(st.sampled_from(pal.marks))
        chains[("mangle", "PREROUTING")] = list(_tproxy_mangle(draw, a, mark))
        routing = Routing.tproxy(mark, families=(fam,))
    for table, hook in SMALL_WORLD_CHAINS:  # rules of every kind, everywhere a connection passes
        if draw(st.integers(0, 9)) < 3:
            here = chains.setdefault((table, hook), [])
            for extra in draw(st.lists(rules(fam, table, hook, kernel=True, palette=pal), min_size=1, max_size=2)):
                here.insert(draw(st.integers(0, len(here))), extra)
    # a few featured kinds, each in a chain where the loader accepts it: every kind is drawn often
    featured = draw(st.permutations(IPTABLES_KINDS))[:draw(st.integers(2, 4))]  # (spreads kinds more evenly than lists)
    for kind in featured:
        jumpable = ("X_FEATURED",) if kind in (Jump, Goto) else ()
        where = [(t, h) for t, h in SMALL_WORLD_CHAINS if kind_fits(kind, fam, t, h, kernel=True, jumpable=jumpable)]
        table, hook = draw(st.sampled_from(where))
        here = chains.setdefault((table, hook), [])
        here.insert(draw(st.integers(0, len(here))),
                    draw(rules_of_kind(kind, fam, table, hook, jumpable, kernel=True, palette=pal)))
        if jumpable and not any(c.name == jumpable[0] for c in user.get(table, ())):
            body = draw(st.lists(rules(fam, table, jumpable[0], kernel=True, palette=pal), max_size=2))
            user.setdefault(table, []).append(Chain(jumpable[0], tuple(body)))
    app = attrs.evolve(app, mark=draw(_app_marks(pal.marks)))  # drawn late: the rest is as before marks
    if draw(st.integers(0, 3)) == 0:  # drawn last: ztunnel's shape, a listener of its own and a mark on every socket
        proxy = attrs.evolve(proxy, own_listeners=(SMALL_WORLD_OWN_PORT,),
                             socket_mark=draw(st.none() | st.sampled_from(pal.marks)),
                             tunnel_port=SMALL_WORLD_OWN_PORT if draw(st.booleans()) else None)
        if proxy.tunnel_port is not None:  # inbound capture leaves the tunnel port alone, as ambient's does
            chains.setdefault(("nat", "PREROUTING"), []).insert(
                0, Rule((Protocol("tcp"), PortMatch("tcp", dport=SMALL_WORLD_OWN_PORT)), Accept()))
        if tproxy_mode:  # the TPROXY era's HBONE: TPROXY to the proxy's own (transparent) listener
            here = chains[("mangle", "PREROUTING")]
            here.insert(0, Rule((Protocol("tcp"), PortMatch("tcp", dport=SMALL_WORLD_OWN_PORT)),
                                Tproxy(SMALL_WORLD_OWN_PORT, None, mark, 0xFFFFFFFF)))
    tables = []
    for tname in TABLE_ORDER:
        built = [Chain(h, tuple(chains[(tname, h)]), "ACCEPT") for h in TABLE_HOOKS[tname] if (tname, h) in chains]
        if built or tname in user:
            tables.append(Table(tname, (*built, *user.get(tname, ()))))
    rs = Ruleset(fam, tuple(tables))
    rules_ = Rulesets(ipv4=rs) if fam == "ipv4" else Rulesets(ipv6=rs)
    return World(pod_ips=(a["pod"],), peer_ips=(a["peer"],), apps=(app,), proxy=proxy, services=(svc,),
                 rules=rules_, routing=routing)
