"""Pod worlds: sockets, proxy behaviours, istio-init-shaped capture rules, and whole worlds.

``worlds()`` are the kernel oracle's worlds: one address family or both, one to three apps
(uids/gids around the app and proxy defaults) with sockets on ports 9001-9003 bound to the
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
from meshsolve.model.rules import (
    Accept,
    Chain,
    Destination,
    Drop,
    InInterface,
    Jump,
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
    Source,
    Table,
    Target,
)
from meshsolve.model.world import App, Endpoint, ProxyBehavior, Service, Socket, World
from meshsolve.strategies._addresses import SMALL_WORLD_ADDRS, WORLD_ADDRS, binds

__all__ = ["SMALL_WORLD_PORTS", "capture_rulesets", "proxy_behaviors", "small_worlds", "sockets", "worlds"]

WORLD_APP_PORTS = (9001, 9002, 9003)
WORLD_SERVICE_PORT = 80
WORLD_IDS = (defaults.APP_UID, defaults.APP_UID + 1, defaults.PROXY_UID)
SMALL_WORLD_PORTS: tuple[int, ...] = (9001, 9002, 9003)

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


@st.composite
def worlds(draw: st.DrawFn, families: tuple[Family, ...] = ("ipv4", "ipv6")) -> World:
    """A random pod world, IPv4, IPv6 or (when both are allowed) dual-stack; see the module doc."""
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
    return World(
        pod_ips=tuple(WORLD_ADDRS[f]["pod"] for f in fams),
        peer_ips=tuple(WORLD_ADDRS[f]["peer"] for f in fams),
        apps=draw(_apps(fams)), proxy=proxy, services=tuple(services),
        rules=draw(capture_rulesets(fams, proxy)),
    )


@st.composite
def small_worlds(draw: st.DrawFn) -> World:
    """A one-family pod (IPv4 twice as often) with one app ``app`` (uid/gid 1000) whose sockets bind
    the wildcard, loopback or pod address on 9001-9003, a proxy with random inbound knobs, a service
    VIP on 9001 whose endpoints are this pod (and maybe a remote host), and an istio-init-shaped nat
    table whose ``ISTIO_OUTPUT`` is up to six rules built from the matches capture turns on
    (``-o lo``, ``-d``/``-s`` loopback and pod CIDRs, owner uid/gid 1337 either way, ``--dport``,
    a mark), optionally with a mangle ``OUTPUT`` rule marking the proxy's loopback traffic.
    These are the worlds the solver is checked against exhaustive interpretation on."""
    small_fams: tuple[Family, ...] = ("ipv4", "ipv4", "ipv6")
    fam = draw(st.sampled_from(small_fams))
    a = SMALL_WORLD_ADDRS[fam]
    ports = SMALL_WORLD_PORTS
    binds_ = [a["any"], a["lo"], a["pod"]]
    socks = draw(st.lists(st.tuples(st.sampled_from(binds_), st.sampled_from(ports)), max_size=3,
                          unique_by=lambda t: t[1]))
    app = App("app", uid=defaults.APP_UID, gid=defaults.APP_GID, sockets=tuple(Socket(b, p) for b, p in socks))
    inbound_port = draw(st.sampled_from([_INBOUND, None]))
    proxy = ProxyBehavior(
        uid=_PROXY_UID, gid=_PROXY_GID, outbound_port=_OUTBOUND, inbound_port=inbound_port,
        virtual_inbound_dispatch=inbound_port is None or draw(st.booleans()),
        inbound_ports=draw(st.sampled_from([None, ports, ports[:1]])),
        inbound_endpoint=draw(st.sampled_from(["localhost", "original_dst"])),
        inbound_source_v4=draw(st.sampled_from([None, SMALL_WORLD_ADDRS["ipv4"]["src6"]])),
        inbound_source_v6=draw(st.sampled_from([None, SMALL_WORLD_ADDRS["ipv6"]["src6"]])),
    )
    eps = draw(st.sampled_from([(Endpoint(a["pod"], 9001),),
                                (Endpoint(a["pod"], 9003), Endpoint(a["remote"], 80))]))
    svc = Service("svc", a["vip"], 9001, eps)
    in_port = inbound_port or _OUTBOUND

    proxy_id = str(_PROXY_UID), str(_PROXY_GID)
    match_choices = st.sampled_from([
        OutInterface("lo"), OutInterface("lo", True), Destination(a["lonet"]), Destination(a["lonet"], True),
        Source(a["srcnet"]), Destination(a["podnet"]), OwnerMatch(uid=proxy_id[0]),
        OwnerMatch(uid=proxy_id[0], uid_negated=True), OwnerMatch(gid=proxy_id[1]), PortMatch("tcp", dport=9002),
        PortMatch("tcp", dport=9001, dport_negated=True), MarkMatch(0x53A),
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
    nat_chains = [
        Chain("PREROUTING", (Rule((Protocol("tcp"),), Jump("ISTIO_INBOUND")),) if draw(st.booleans()) else (),
              "ACCEPT"),
        Chain("OUTPUT", (Rule((Protocol("tcp"),), Jump("ISTIO_OUTPUT")),), "ACCEPT"),
        Chain("ISTIO_INBOUND", tuple(inbound_rules)),
        Chain("ISTIO_OUTPUT", tuple(out_rules)),
        Chain("ISTIO_REDIRECT", (Rule((Protocol("tcp"),), Redirect(_OUTBOUND)),)),
        Chain("ISTIO_IN_REDIRECT", (Rule((Protocol("tcp"),), Redirect(in_port)),)),
    ]
    tables = [Table("nat", tuple(nat_chains))]
    if draw(st.booleans()):  # mangle OUTPUT marks the proxy's lo traffic (seen by nat's mark match)
        mark = Rule((OutInterface("lo"), Protocol("tcp"), OwnerMatch(uid=proxy_id[0])), SetMark(0x53A))
        tables.append(Table("mangle", (Chain("OUTPUT", (mark,), "ACCEPT"),)))
    rs = Ruleset(fam, tuple(tables))
    rules_ = Rulesets(ipv4=rs) if fam == "ipv4" else Rulesets(ipv6=rs)
    return World(pod_ips=(a["pod"],), peer_ips=(a["peer"],), apps=(app,), proxy=proxy, services=(svc,),
                 rules=rules_)
