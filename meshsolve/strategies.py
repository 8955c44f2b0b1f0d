"""Hypothesis strategies for meshsolve values (public: import them in your own property tests).

Rule model (this section): ``matches()``, ``targets()``, ``rules()``, ``chains()``, ``tables()``,
``rulesets()``, ``rulesets_pair()``. Every value they generate is in the *normal form* the parser
produces (see ``meshsolve.iptables.parse``), so ``parse(render(x)) == x`` holds for all of them.

With ``kernel=True`` the values are also accepted by the real kernel (iptables 1.8.9, nf_tables):
matches and targets are only used in the chains/tables whose hooks allow them (owner in
OUTPUT/POSTROUTING, ``-i`` not on output hooks, TPROXY in mangle PREROUTING, REDIRECT in nat
PREROUTING/OUTPUT, CT in raw, REJECT in filter INPUT/FORWARD/OUTPUT, ports only with ``-p tcp|udp``),
user chains hold only hook-independent rules, and jumps never form a loop (a user chain only jumps
to chains after it in name order). Owner ids are numbers (names would need /etc/passwd).

World/flow strategies may be added by other layers at the end of this file.

Everything public, by what it generates (all addresses are documentation or loopback addresses):

* addresses and ports: ``addresses(family)``, ``networks(family)``, ``port_ranges()``;
* binds: ``binds(family)`` (wildcard, loopback, pod IP), ``sockets(family)``;
* rules: ``matches()``, ``targets()``, ``rules()``, ``chains()``, ``tables()``;
* rulesets: ``rulesets(family)``, ``rulesets_pair()`` (IPv4 + IPv6), ``capture_rulesets()``
  (istio-init-shaped nat tables);
* worlds: ``worlds()`` (the kernel oracle's: one to three apps, dual-stack possible),
  ``small_worlds()`` (one app, one family: the solver differential test's), ``proxy_behaviors()``;
* flows: ``flows(world)`` (any flow that can start in a given world), ``world_flows(world)`` (the
  bind matrix, not a strategy), ``worlds_and_flows()``.

A user's own property test::

    from hypothesis import given, strategies as st
    from meshsolve import interpret
    from meshsolve.strategies import flows, small_worlds

    @given(st.data())
    def test_no_flow_is_undetermined(data):
        world = data.draw(small_worlds())
        result = interpret(world, data.draw(flows(world)))
        assert result.outcome.token != "undetermined", str(result)
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Any

import attrs
from hypothesis import strategies as st

from meshsolve.model.net import Family, IPAddress, IPNetwork, PortRange, to_address
from meshsolve.model.rules import (
    BUILTIN_CHAINS,
    Accept,
    AddrtypeMatch,
    Chain,
    CommentMatch,
    ConnmarkMatch,
    ConnmarkTarget,
    ConntrackMatch,
    CtTarget,
    Destination,
    Drop,
    Goto,
    InInterface,
    Jump,
    Log,
    MarkMatch,
    Match,
    MultiportMatch,
    OpaqueMatch,
    OpaqueTarget,
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
    StateMatch,
    Table,
    Target,
    Tproxy,
)
from meshsolve.model.world import App, Endpoint, Flow, ProxyBehavior, Service, Socket, World

__all__ = [
    "chain_names",
    "chains",
    "matches",
    "networks",
    "port_ranges",
    "rules",
    "rulesets",
    "rulesets_pair",
    "tables",
    "targets",
]

M32 = 0xFFFFFFFF
_DOC_V4 = [ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24",
                                             "127.0.0.0/8")]
# (the IPv4-mapped/-compatible ones exercise inet_ntop's dotted forms: ::ffff:192.0.2.1)
_DOC_V6 = [ipaddress.ip_network(n) for n in ("2001:db8::/32", "::1/128", "::6/128", "::ffff:192.0.2.0/120",
                                             "::192.0.2.0/120")]
_INPUT_HOOKS = {"PREROUTING", "INPUT", "FORWARD"}
_OUTPUT_HOOKS = {"OUTPUT", "FORWARD", "POSTROUTING"}
_STATES = ("INVALID", "NEW", "RELATED", "ESTABLISHED", "UNTRACKED")
_ADDRTYPES = ("UNSPEC", "UNICAST", "LOCAL", "BROADCAST", "ANYCAST", "MULTICAST", "BLACKHOLE",
              "UNREACHABLE", "PROHIBIT")


@functools.cache
def networks(family: Family) -> st.SearchStrategy[IPNetwork]:
    """Networks inside documentation/loopback space (never /0, which iptables-save omits)."""
    bases = _DOC_V4 if family == "ipv4" else _DOC_V6
    maxlen = 32 if family == "ipv4" else 128

    @st.composite
    def build(draw: st.DrawFn) -> IPNetwork:
        base = draw(st.sampled_from(bases))
        plen = draw(st.integers(base.prefixlen, maxlen))
        host = draw(st.integers(0, base.num_addresses - 1))
        addr = base.network_address + host
        return ipaddress.ip_network(f"{addr}/{plen}", strict=False)

    return build()


@functools.cache
def port_ranges(*, single_ok: bool = True, full_ok: bool = False) -> st.SearchStrategy[PortRange]:
    """Port ranges; never 0:65535 unless ``full_ok`` (iptables-nft drops that match)."""

    @st.composite
    def build(draw: st.DrawFn) -> PortRange:
        lo = draw(st.integers(0, 65535))
        if single_ok and draw(st.booleans()):
            return PortRange(lo, lo)
        hi = draw(st.integers(min(lo + 1, 65535), 65535))
        if (lo, hi) == (0, 65535) and not full_ok:
            hi = 65534
        if hi <= lo:
            lo, hi = 1, 2
        return PortRange(lo, hi)

    return build()


# (built from small pieces: from_regex strategies are slow to draw)
_iface = st.builds(lambda stem, num, plus: f"{stem}{num}{'+' if plus else ''}",
                   st.sampled_from(["eth", "lo", "veth", "ens", "wg", "cni", "nic-x"]),
                   st.sampled_from(["", "0", "1", "12"]), st.booleans())
_owner_id = st.one_of(st.integers(0, 70000).map(str),
                      st.tuples(st.integers(0, 5000), st.integers(1, 5000)).map(
                          lambda t: f"{t[0]}-{t[0] + t[1]}"))
_mark = st.one_of(st.integers(0, M32), st.sampled_from([0x539, 0x53A, 0xFF, 0]))
_mask = st.one_of(st.just(M32), st.integers(0, M32))
_comment = st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=29)
_opaque_token = st.one_of(st.sampled_from(["10:20", "a,b", "x.y/z", "LOCAL", "_q-"]),
                          st.integers(0, 10**6).map(str))


@functools.cache
def _owner() -> st.SearchStrategy[OwnerMatch]:
    @st.composite
    def build(draw: st.DrawFn) -> OwnerMatch:
        uid = draw(st.none() | _owner_id)
        gid = draw(st.none() | _owner_id)
        se = draw(st.sampled_from([None, True, False]))
        if uid is None and gid is None and se is None:
            uid = "1337"
        return OwnerMatch(uid=uid, uid_negated=uid is not None and draw(st.booleans()),
                          gid=gid, gid_negated=gid is not None and draw(st.booleans()),
                          socket_exists=se, suppl_groups=gid is not None and draw(st.booleans()))

    return build()


# tcp options kept raw in PortMatch.extra, in the normal form (kernel flag order, option first)
_TCP_EXTRAS: tuple[tuple[str, ...], ...] = (
    (), (), ("--tcp-flags", "FIN,SYN,RST,ACK", "SYN"), ("!", "--tcp-flags", "SYN,ACK", "SYN"),
    ("--tcp-option", "5", "--tcp-flags", "FIN,SYN,RST,PSH,ACK,URG", "NONE"))
_LOG_EXTRAS = st.lists(st.sampled_from(["--log-tcp-sequence", "--log-tcp-options", "--log-ip-options",
                                        "--log-uid", "--log-macdecode"]), unique=True).map(
    lambda xs: tuple(sorted(xs, key=["--log-tcp-sequence", "--log-tcp-options", "--log-ip-options",
                                     "--log-uid", "--log-macdecode"].index)))


@functools.cache
def _port_match(proto: str) -> st.SearchStrategy[PortMatch]:
    @st.composite
    def build(draw: st.DrawFn) -> PortMatch:
        sport = draw(st.none() | port_ranges())
        dport = draw(st.none() | port_ranges())
        if sport is None and dport is None:
            dport = draw(port_ranges())
        def negatable(r: PortRange | None) -> bool:  # else iptables-nft stores the complement
            return r is not None and r.lo > 0 and r.hi < 65535

        extra = draw(st.sampled_from(_TCP_EXTRAS)) if proto == "tcp" else ()
        return PortMatch(proto, sport, dport,  # type: ignore[arg-type]
                         negatable(sport) and draw(st.booleans()),
                         negatable(dport) and draw(st.booleans()), extra)

    return build()


@functools.cache
def _multiport() -> st.SearchStrategy[MultiportMatch]:
    item = st.one_of(st.integers(0, 65535).map(lambda p: PortRange(p, p)),
                     port_ranges(single_ok=False))
    return st.builds(MultiportMatch, st.sampled_from(["sports", "dports", "ports"]),
                     st.lists(item, min_size=1, max_size=7).map(tuple), st.booleans())


@functools.cache
def _module_matches(chain: str, builtin: bool, table: str, kernel: bool, proto: str | None,
                    family: Family = "ipv4") -> st.SearchStrategy[Match]:
    # the kernel refuses BROADCAST/BLACKHOLE/PROHIBIT address types for IPv6
    types = _ADDRTYPES if family == "ipv4" else tuple(
        t for t in _ADDRTYPES if t not in ("BROADCAST", "BLACKHOLE", "PROHIBIT"))
    opts: list[st.SearchStrategy[Any]] = [
        st.builds(MarkMatch, _mark, _mask, st.booleans()),
        st.builds(ConnmarkMatch, _mark, _mask, st.booleans()),
        st.builds(ConntrackMatch, st.lists(st.sampled_from(_STATES), min_size=1, unique=True).map(tuple),
                  st.booleans()),
        st.builds(StateMatch, st.lists(st.sampled_from(_STATES[:4]), min_size=1, unique=True).map(tuple),
                  st.booleans()),
        st.builds(CommentMatch, _comment),
        st.builds(lambda src, sn, dst, dn: AddrtypeMatch(src, sn and src is not None, dst, dn),
                  st.none() | st.sampled_from(types), st.booleans(),
                  st.sampled_from(types), st.booleans()),
        st.builds(OpaqueMatch, st.sampled_from(["length", "limit", "pkttype"]),
                  st.lists(_opaque_token, max_size=3).map(tuple)),
    ]
    if kernel:
        opts[-1] = st.just(OpaqueMatch("length", ("--length", "10:20")))
    if proto in ("tcp", "udp"):
        opts += [_port_match(proto), _multiport()]
    if not kernel or (builtin and chain in ("OUTPUT", "POSTROUTING")):
        opts.append(_owner())
    return st.one_of(*opts)


def matches(family: Family = "ipv4", table: str = "filter", chain: str = "INPUT",
            kernel: bool = False) -> st.SearchStrategy[Match]:
    """One match (basic or module) of the normal form, valid in ``table``/``chain``."""
    builtin = chain in BUILTIN_CHAINS.get(table, ())
    basic: list[st.SearchStrategy[Any]] = [
        st.builds(Source, networks(family), st.booleans()),
        st.builds(Destination, networks(family), st.booleans()),
        st.builds(Protocol, st.sampled_from(["tcp", "udp"])),
    ]
    if not kernel or (builtin and chain in _INPUT_HOOKS):
        basic.append(st.builds(InInterface, _iface, st.booleans()))
    if not kernel or (builtin and chain in _OUTPUT_HOOKS):
        basic.append(st.builds(OutInterface, _iface, st.booleans()))
    return st.one_of(*basic, _module_matches(chain, builtin, table, kernel, None, family))


@st.composite
def rules(draw: st.DrawFn, family: Family = "ipv4", table: str = "filter", chain: str = "INPUT",
          jumpable: tuple[str, ...] = (), kernel: bool = False) -> Rule:
    """One rule valid in ``table``/``chain``; jumps only to ``jumpable`` chains."""
    builtin = chain in BUILTIN_CHAINS.get(table, ())
    ms: list[Match] = []
    if draw(st.booleans()):
        ms.append(Source(draw(networks(family)), draw(st.booleans())))
    if draw(st.booleans()):
        ms.append(Destination(draw(networks(family)), draw(st.booleans())))
    if (not kernel or (builtin and chain in _INPUT_HOOKS)) and draw(st.booleans()):
        ms.append(InInterface(draw(_iface), draw(st.booleans())))
    if (not kernel or (builtin and chain in _OUTPUT_HOOKS)) and draw(st.booleans()):
        ms.append(OutInterface(draw(_iface), draw(st.booleans())))
    icmp = "icmp" if family == "ipv4" else "ipv6-icmp"
    proto: str | None = draw(st.sampled_from([None, "tcp", "udp", icmp]))
    if proto is not None:
        neg = proto not in ("tcp", "udp") and draw(st.booleans())
        ms.append(Protocol(proto, neg))
    n = draw(st.integers(0, 3))
    seen: set[type] = set()
    for _ in range(n):
        m = draw(_module_matches(chain, builtin, table, kernel, proto, family))
        if kernel and type(m) in seen:
            continue  # iptables-nft may merge repeated native matches
        seen.add(type(m))
        ms.append(m)
    target = draw(st.none() | targets(family, table, chain, jumpable, kernel, proto))
    return Rule(tuple(ms), target)


def targets(family: Family = "ipv4", table: str = "filter", chain: str = "INPUT",
            jumpable: tuple[str, ...] = (), kernel: bool = False, proto: str | None = None
            ) -> st.SearchStrategy[Target]:
    """A target valid for ``table``/``chain`` (all targets when ``kernel`` is False)."""
    return _targets(family, table, chain, tuple(jumpable), kernel, proto)


@functools.cache
def _targets(family: Family, table: str, chain: str, jumpable: tuple[str, ...], kernel: bool,
             proto: str | None) -> st.SearchStrategy[Target]:
    builtin = chain in BUILTIN_CHAINS.get(table, ())
    opts: list[st.SearchStrategy[Any]] = [st.just(Accept()), st.just(Return()),
                                          st.builds(Log, st.none() | _comment,
                                                    st.none() | st.sampled_from(["0", "3", "6", "7"]),
                                                    _LOG_EXTRAS)]
    if not kernel or table != "nat":
        opts.append(st.just(Drop()))
    if jumpable:
        opts += [st.sampled_from(jumpable).map(Jump), st.sampled_from(jumpable).map(Goto)]
    if not kernel or table == "mangle":
        opts += [st.builds(SetMark, _mark, _mask),
                 st.builds(ConnmarkTarget, st.just("set-xmark"), _mark, _mask),
                 st.builds(lambda a, m1, m2: ConnmarkTarget(a, 0, M32, m1, m2),
                           st.sampled_from(["save-mark", "restore-mark"]), _mask, _mask)]
    if not kernel or (table == "mangle" and chain == "PREROUTING" and proto in ("tcp", "udp")):
        v6 = family == "ipv6"
        on_ip = st.none() | (st.just(ipaddress.ip_address("2001:db8::1")) if v6
                             else st.just(ipaddress.ip_address("192.0.2.1")))
        opts.append(st.one_of(
            st.builds(Tproxy, st.integers(0, 65535), on_ip, st.none()),
            st.builds(Tproxy, st.integers(0, 65535), on_ip, _mark, _mask).filter(
                lambda t: (t.mark, t.mask) != (0, 0))))
    if not kernel or (table == "nat" and builtin and chain in ("PREROUTING", "OUTPUT")
                      and proto in ("tcp", "udp")):
        opts.append(st.builds(Redirect, st.none() | port_ranges(full_ok=True), st.booleans()))
    if not kernel or table == "raw":
        opts.append(st.one_of(st.builds(CtTarget, st.integers(1, 65535)), st.just(CtTarget(None, True))))
    if not kernel or (table == "filter" and builtin and chain in ("INPUT", "FORWARD", "OUTPUT")):
        types = ["icmp-host-prohibited", "icmp-net-unreachable"] if family == "ipv4" else [
            "icmp6-adm-prohibited", "icmp6-no-route"]
        if proto == "tcp" or not kernel:
            types.append("tcp-reset")
        opts.append(st.builds(Reject, st.none() | st.sampled_from(types)))
    opts.append(st.builds(OpaqueTarget, st.just("NFLOG"),
                          st.integers(1, 100).map(lambda g: ("--nflog-group", str(g)))))
    return st.one_of(*opts)


chain_names = st.builds(lambda stem, num: f"{stem}{num}",
                        st.sampled_from(["ISTIO_", "A", "KUBE-", "Z_", "X", "ISTIO_IN_", "ISTIO_OUT"]),
                        st.sampled_from(["", "1", "2", "B", "REDIRECT", "OUTPUT", "DNS"]))


@st.composite
def chains(draw: st.DrawFn, family: Family = "ipv4", table: str = "filter", name: str | None = None,
           jumpable: tuple[str, ...] = (), kernel: bool = False, max_rules: int = 4) -> Chain:
    """A chain: a user chain (random name unless given) or, for a built-in ``name``, that chain
    with a policy."""
    cname = name or draw(chain_names)
    builtin = cname in BUILTIN_CHAINS.get(table, ())
    rs = draw(st.lists(rules(family, table, cname, jumpable, kernel), max_size=max_rules))
    policy = (draw(st.sampled_from(["ACCEPT", "DROP"])) if table == "filter" else "ACCEPT") if builtin \
        else None
    return Chain(cname, tuple(rs), policy)


@st.composite
def tables(draw: st.DrawFn, family: Family = "ipv4", name: str | None = None,
           kernel: bool = False, max_rules: int = 4) -> Table:
    """A table with built-in chains (random policy in filter) and up to three user chains."""
    tname = name or draw(st.sampled_from(["filter", "mangle", "nat", "raw"]))
    users = sorted(draw(st.lists(chain_names, max_size=3, unique=True)))
    out: list[Chain] = []
    for k, u in enumerate(users):
        out.append(draw(chains(family, tname, u, tuple(users[k + 1:]), kernel, max_rules)))
    for b in BUILTIN_CHAINS[tname]:
        out.append(draw(chains(family, tname, b, tuple(users), kernel, max_rules)))
    return Table(tname, tuple(out))


@st.composite
def rulesets(draw: st.DrawFn, family: Family = "ipv4", kernel: bool = False,
             max_rules: int = 4) -> Ruleset:
    """A ruleset of one family with zero to four distinct tables."""
    names = draw(st.lists(st.sampled_from(["filter", "mangle", "nat", "raw"]), unique=True, max_size=4))
    return Ruleset(family, tuple(draw(tables(family, n, kernel, max_rules)) for n in names))


def rulesets_pair(kernel: bool = False, max_rules: int = 4) -> st.SearchStrategy[Rulesets]:
    """IPv4 + IPv6 ``Rulesets``."""
    return st.builds(Rulesets, rulesets("ipv4", kernel, max_rules), rulesets("ipv6", kernel, max_rules))


# --- world / flow strategies (other layers) go below ---------------------------------------------


# --- world / flow strategies for the kernel oracle (meshsolve/oracle, issue #4) -------------------
# A random world has one address family, one to three apps (uids/gids around 1000 and 1337) with
# sockets on ports 9001-9003 bound to the wildcard, loopback or pod address, a proxy with random knobs
# (inbound port or none, virtual dispatch, inbound port list, endpoint, inbound source, passthrough or
# blackhole), one service VIP with endpoints in the pod and outside it, and a nat table in the shape
# istio-init writes: PREROUTING -> ISTIO_INBOUND (per-port RETURN / redirect rules) and OUTPUT ->
# ISTIO_OUTPUT (an Istio-era template mutated by random rules over -o lo, -s/-d CIDRs, owner
# uid/gid, --dport; RETURN or a jump to ISTIO_REDIRECT / ISTIO_IN_REDIRECT). Flows: the bind matrix.

__all__ += ["WORLD_ADDRS", "capture_rulesets", "world_flows", "worlds", "worlds_and_flows"]

WORLD_APP_PORTS = (9001, 9002, 9003)
WORLD_SERVICE_PORT = 80

# Per family: the pod, the peer, loopback, the wildcard, the proxy's passthrough source, a service VIP,
# an address outside the pod, and the CIDRs rules may name (all documentation or loopback addresses).
WORLD_ADDRS: dict[str, dict[str, Any]] = {
    "ipv4": {
        "pod": "192.0.2.10", "peer": "192.0.2.20", "lo": "127.0.0.1", "wild": "0.0.0.0",
        "six": "127.0.0.6", "vip": "198.51.100.1", "out": "203.0.113.9",
        "cidrs": ("127.0.0.1/32", "127.0.0.6/32", "127.0.0.0/8", "192.0.2.10/32", "192.0.2.0/24",
                  "198.51.100.0/24", "203.0.113.0/24"),
    },
    "ipv6": {
        "pod": "2001:db8::10", "peer": "2001:db8::20", "lo": "::1", "wild": "::",
        "six": "::6", "vip": "2001:db8:1::1", "out": "2001:db8:2::9",
        "cidrs": ("::1/128", "::6/128", "2001:db8::10/128", "2001:db8::/64", "2001:db8:1::/48",
                  "2001:db8:2::/48", "2001:db8::/32"),
    },
}

WORLD_IDS = (1000, 1001, 1337)


def _w_overlap(a: Socket, b: Socket) -> bool:
    """Whether two listening sockets claim a common (address, port)."""
    if a.port != b.port:
        return False

    def covers(w: Socket, o: Socket) -> bool:
        return w.bind.is_unspecified and (w.bind.version == o.bind.version
                                          or (w.bind.version == 6 and not w.v6only))

    return a.bind == b.bind or covers(a, b) or covers(b, a)


@st.composite
def _w_apps(draw: st.DrawFn, fams: tuple[Family, ...]) -> tuple[App, ...]:
    """One to three apps. Binds on one port overlap only within one app: the kernel lets a wildcard
    and a specific listener share a port only with SO_REUSEPORT and the same uid (and never two
    wildcards that both take IPv4)."""
    binds = tuple(WORLD_ADDRS[f][k] for f in fams for k in ("wild", "lo", "pod"))
    n = draw(st.integers(1, 3))
    placed: list[tuple[int, Socket]] = []
    apps = []
    for i in range(n):
        socks = []
        for port in WORLD_APP_PORTS:
            for bind in draw(st.lists(st.sampled_from(binds), max_size=2, unique=True)):
                v6only = ":" in bind and bind == "::" and draw(st.booleans())
                sock = Socket(bind, port, v6only)
                clash = any(_w_overlap(sock, other) and (j != i or other.bind == sock.bind
                                                         or (sock.bind.is_unspecified
                                                             and other.bind.is_unspecified))
                            for j, other in placed)
                if not clash:
                    placed.append((i, sock))
                    socks.append(sock)
        # an app shares a port between a wildcard and a specific bind with SO_REUSEPORT on both
        socks = [attrs.evolve(s, reuseport=True) if any(o is not s and _w_overlap(s, o) for o in socks) else s
                 for s in socks]
        uid = draw(st.sampled_from(WORLD_IDS[:2])) if i == 0 else draw(st.sampled_from(WORLD_IDS))
        gid = draw(st.sampled_from(WORLD_IDS))
        apps.append(App(f"app{i}", uid=uid, gid=gid, sockets=tuple(socks)))
    return tuple(apps)


@st.composite
def _w_proxy(draw: st.DrawFn, fams: tuple[Family, ...]) -> ProxyBehavior:
    inbound_port = draw(st.sampled_from((15006, None)))
    ports = draw(st.one_of(st.none(), st.sets(st.sampled_from(WORLD_APP_PORTS), max_size=3).map(tuple)))
    with_source = draw(st.booleans())
    uid, gid = draw(st.sampled_from(((1337, 1337), (1337, 1337), (0, 1337))))  # (0, 1337): TPROXY style
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


def _w_jump(name: str) -> Target:
    return Jump(name)


@st.composite
def _w_output_rule(draw: st.DrawFn, fam: Family) -> Rule:
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
    target = draw(st.sampled_from((Return(), Return(), _w_jump("ISTIO_REDIRECT"),
                                   _w_jump("ISTIO_IN_REDIRECT"))))
    return Rule(tuple(matches), target)


@st.composite
def _w_inbound_rule(draw: st.DrawFn) -> Rule:
    port = draw(st.sampled_from(WORLD_APP_PORTS))
    target = draw(st.sampled_from((Return(), _w_jump("ISTIO_IN_REDIRECT"))))
    return Rule((Protocol("tcp"), PortMatch("tcp", dport=port)), target)


def _w_templates(fam: Family, proxy: ProxyBehavior) -> tuple[tuple[Rule, ...], ...]:
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
def _w_output_chain(draw: st.DrawFn, fam: Family, proxy: ProxyBehavior) -> tuple[Rule, ...]:
    """A template ISTIO_OUTPUT mutated by a few random deletions and insertions."""
    chain_rules = list(draw(st.sampled_from(_w_templates(fam, proxy))))
    for _ in range(draw(st.integers(0, 4))):
        delete: bool = draw(st.booleans())
        if chain_rules and delete:
            del chain_rules[draw(st.integers(0, len(chain_rules) - 1))]
        else:
            chain_rules.insert(draw(st.integers(0, len(chain_rules))), draw(_w_output_rule(fam)))
    return tuple(chain_rules)


@st.composite
def capture_rulesets(draw: st.DrawFn, fams: tuple[Family, ...], proxy: ProxyBehavior) -> Rulesets:
    """A random istio-init-shaped nat table per family in ``fams`` (other families stay empty)."""
    inbound_to = proxy.inbound_port if proxy.inbound_port is not None else proxy.outbound_port
    out: dict[str, Ruleset] = {}
    for fam in fams:
        inbound = draw(st.lists(_w_inbound_rule(), max_size=3))
        if draw(st.booleans()):
            inbound.append(Rule((Protocol("tcp"),), _w_jump("ISTIO_IN_REDIRECT")))
        output = draw(_w_output_chain(fam, proxy))
        nat = Table("nat", (
            Chain("PREROUTING", (Rule((Protocol("tcp"),), _w_jump("ISTIO_INBOUND")),), "ACCEPT"),
            Chain("OUTPUT", (Rule((Protocol("tcp"),), _w_jump("ISTIO_OUTPUT")),), "ACCEPT"),
            Chain("ISTIO_INBOUND", tuple(inbound)),
            Chain("ISTIO_OUTPUT", output),
            Chain("ISTIO_REDIRECT", (Rule((Protocol("tcp"),), Redirect(proxy.outbound_port)),)),
            Chain("ISTIO_IN_REDIRECT", (Rule((Protocol("tcp"),), Redirect(inbound_to)),)),
        ))
        tables = [nat]
        if draw(st.integers(0, 3)) == 0:
            tables.append(draw(_w_filter_table(fam)))
        out[fam] = Ruleset(fam, tuple(tables))
    return Rulesets(**out)


@st.composite
def _w_filter_table(draw: st.DrawFn, fam: Family) -> Table:
    """A filter table that rejects (rarely drops) some first packets: OUTPUT by port, loopback,
    destination or owner; INPUT by port (after nat: the proxy's ports too) and interface. Rules never
    match reply packets (their destination port is the client's ephemeral port)."""
    a = WORLD_ADDRS[fam]
    # DROP costs the client's whole connect timeout: keep it rare
    verdicts: tuple[Target, ...] = (*(Reject(),) * 10, *(Accept(),) * 3, Drop())
    verdict = st.sampled_from(verdicts)
    ports = (*WORLD_APP_PORTS, WORLD_SERVICE_PORT, 15001, 15006)
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
def worlds(draw: st.DrawFn, families: tuple[Family, ...] = ("ipv4", "ipv6")) -> World:
    """A random pod world, IPv4, IPv6 or (when both are allowed) dual-stack; see the section comment."""
    choices: list[tuple[Family, ...]] = [(f,) for f in families]
    if len(families) == 2:
        choices.append(("ipv4", "ipv6"))
    fams = draw(st.sampled_from(choices))
    proxy = draw(_w_proxy(fams))
    services = []
    for fam in fams:
        a = WORLD_ADDRS[fam]
        eps = (*(Endpoint(a["pod"], p) for p in WORLD_APP_PORTS), Endpoint(a["out"], WORLD_APP_PORTS[0]))
        services.append(Service(f"svc-{fam}", a["vip"], WORLD_SERVICE_PORT, eps))
    return World(
        pod_ips=tuple(WORLD_ADDRS[f]["pod"] for f in fams),
        peer_ips=tuple(WORLD_ADDRS[f]["peer"] for f in fams),
        apps=draw(_w_apps(fams)), proxy=proxy, services=tuple(services),
        rules=draw(capture_rulesets(fams, proxy)),
    )


def world_flows(world: World, *, endpoint: int = 0) -> tuple[Flow, ...]:
    """Every flow of the bind matrix for ``world``, per family: the peer and each app to the pod IP,
    loopback, the service VIP (through ``endpoint``) and an outside address, on every app port; the
    proxy itself to the pod IP, loopback and outside."""
    flows = []
    for fam in world.families:
        a = WORLD_ADDRS[fam]
        flows += [Flow("peer", a["pod"], p) for p in WORLD_APP_PORTS]
        for app in world.apps:
            for p in WORLD_APP_PORTS:
                flows.append(Flow(app.name, a["lo"], p))
                flows.append(Flow(app.name, a["pod"], p))
            flows.append(Flow(app.name, a["out"], WORLD_APP_PORTS[0]))
            flows.append(Flow(app.name, a["vip"], WORLD_SERVICE_PORT, endpoint=endpoint))
        flows += [Flow("proxy", a[k], WORLD_APP_PORTS[0]) for k in ("pod", "lo", "out")]
    return tuple(flows)


@st.composite
def worlds_and_flows(draw: st.DrawFn) -> tuple[World, tuple[Flow, ...]]:
    """A random world and its bind-matrix flows (one endpoint choice for the service VIPs)."""
    world = draw(worlds())
    endpoint = draw(st.integers(0, len(world.services[0].endpoints) - 1))
    return world, world_flows(world, endpoint=endpoint)


# --- public world / flow strategies (the Python API, issue #9) -------------------------------------
# Building blocks for users' own property tests: addresses, binds/sockets, proxy behaviours, the
# small solver-shaped worlds the project's solver-vs-interpreter differential test runs on, and
# flows valid for any given world.

__all__ += ["SMALL_WORLD_ADDRS", "SMALL_WORLD_PORTS", "addresses", "binds", "flows", "proxy_behaviors",
            "small_worlds", "sockets"]


# addresses a pod world's flows and binds use (not the parser-oriented IPv4-mapped forms of _DOC_V6)
_ADDRESS_SPACE: dict[str, tuple[IPNetwork, ...]] = {
    "ipv4": tuple(ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24",
                                                    "127.0.0.0/8")),
    "ipv6": tuple(ipaddress.ip_network(n) for n in ("2001:db8::/32", "::1/128", "::6/128")),
}


@functools.cache
def addresses(family: Family = "ipv4") -> st.SearchStrategy[IPAddress]:
    """Single addresses of ``family`` inside documentation or loopback space (192.0.2.0/24,
    198.51.100.0/24, 203.0.113.0/24, 127.0.0.0/8; 2001:db8::/32, ::1, ::6)."""
    bases = _ADDRESS_SPACE[family]

    @st.composite
    def build(draw: st.DrawFn) -> IPAddress:
        base = draw(st.sampled_from(bases))
        offset = draw(st.integers(0, min(base.num_addresses - 1, 2**16)))
        return base.network_address + offset

    return build()


def binds(family: Family = "ipv4", pod: str | IPAddress | None = None) -> st.SearchStrategy[IPAddress]:
    """The addresses an app can bind in a pod: the wildcard, loopback or the pod IP (``pod``,
    default the ``WORLD_ADDRS`` pod address of the family) — the columns of the bind matrix."""
    a = WORLD_ADDRS[family]
    return st.sampled_from([to_address(a["wild"]), to_address(a["lo"]), to_address(pod or a["pod"])])


def sockets(family: Family = "ipv4", ports: tuple[int, ...] = WORLD_APP_PORTS,
            pod: str | IPAddress | None = None) -> st.SearchStrategy[Socket]:
    """A listening socket: one of :func:`binds` on one of ``ports`` (``::`` with or without V6ONLY)."""
    return st.builds(lambda bind, port, v6only: Socket(bind, port, v6only and bind == to_address("::")),
                     binds(family, pod), st.sampled_from(ports), st.booleans())


def proxy_behaviors(families: tuple[Family, ...] = ("ipv4",)) -> st.SearchStrategy[ProxyBehavior]:
    """Sidecar behaviours with random knobs (inbound port or shared listener, virtual inbound
    dispatch, inbound port list, localhost or original-destination forwarding, inbound source,
    passthrough or blackhole, TPROXY-style uid 0) — the ones :func:`worlds` draws."""
    return _w_proxy(families)


# The addresses of the small worlds (the solver differential test's scopes use the same ones).
SMALL_WORLD_ADDRS: dict[str, dict[str, str]] = {
    "ipv4": dict(pod="192.0.2.10", peer="192.0.2.20", vip="198.51.100.1", remote="203.0.113.5",
                 lo="127.0.0.1", src6="127.0.0.6", any="0.0.0.0", lonet="127.0.0.1/32",
                 srcnet="127.0.0.6/32", podnet="192.0.2.10/32"),
    "ipv6": dict(pod="2001:db8::10", peer="2001:db8::20", vip="2001:db8:100::1", remote="2001:db8:203::5",
                 lo="::1", src6="::6", any="::", lonet="::1/128", srcnet="::6/128",
                 podnet="2001:db8::10/128"),
}
SMALL_WORLD_PORTS: tuple[int, ...] = (9001, 9002, 9003)


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
    app = App("app", uid=1000, gid=1000, sockets=tuple(Socket(b, p) for b, p in socks))
    inbound_port = draw(st.sampled_from([15006, None]))
    proxy = ProxyBehavior(
        uid=1337, gid=1337, outbound_port=15001, inbound_port=inbound_port,
        virtual_inbound_dispatch=inbound_port is None or draw(st.booleans()),
        inbound_ports=draw(st.sampled_from([None, ports, ports[:1]])),
        inbound_endpoint=draw(st.sampled_from(["localhost", "original_dst"])),
        inbound_source_v4=draw(st.sampled_from([None, "127.0.0.6"])),
        inbound_source_v6=draw(st.sampled_from([None, "::6"])),
    )
    eps = draw(st.sampled_from([(Endpoint(a["pod"], 9001),),
                                (Endpoint(a["pod"], 9003), Endpoint(a["remote"], 80))]))
    svc = Service("svc", a["vip"], 9001, eps)
    in_port = inbound_port or 15001

    match_choices = st.sampled_from([
        OutInterface("lo"), OutInterface("lo", True), Destination(a["lonet"]), Destination(a["lonet"], True),
        Source(a["srcnet"]), Destination(a["podnet"]), OwnerMatch(uid="1337"),
        OwnerMatch(uid="1337", uid_negated=True), OwnerMatch(gid="1337"), PortMatch("tcp", dport=9002),
        PortMatch("tcp", dport=9001, dport_negated=True), MarkMatch(0x53A),
        OwnerMatch(gid="1337", gid_negated=True),
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
        Chain("ISTIO_REDIRECT", (Rule((Protocol("tcp"),), Redirect(15001)),)),
        Chain("ISTIO_IN_REDIRECT", (Rule((Protocol("tcp"),), Redirect(in_port)),)),
    ]
    tables = [Table("nat", tuple(nat_chains))]
    if draw(st.booleans()):  # mangle OUTPUT marks the proxy's lo traffic (seen by nat's mark match)
        mark = Rule((OutInterface("lo"), Protocol("tcp"), OwnerMatch(uid="1337")), SetMark(0x53A))
        tables.append(Table("mangle", (Chain("OUTPUT", (mark,), "ACCEPT"),)))
    rs = Ruleset(fam, tuple(tables))
    rules_ = Rulesets(ipv4=rs) if fam == "ipv4" else Rulesets(ipv6=rs)
    return World(pod_ips=(a["pod"],), peer_ips=(a["peer"],), apps=(app,), proxy=proxy, services=(svc,),
                 rules=rules_)


_PROXY_PORTS = (15001, 15006, 15008, 15020, 15021, 15090)


@st.composite
def flows(draw: st.DrawFn, world: World, *, clients: tuple[str, ...] | None = None,
          ports: tuple[int, ...] = ()) -> Flow:
    """A first TCP connection that can start in ``world`` (``interpret`` accepts it).

    The client is the peer, the proxy or one of the world's apps (or one of ``clients``); a peer
    connects to the pod IP of one of the world's families (a peer flow to any other address would be
    forwarded, which is not modelled); a process in the pod connects to the pod IP, loopback,
    127.0.0.6/::6, a service VIP, an endpoint, the peer or an outside documentation address. The
    port is one the world mentions (app sockets, services, endpoints, the proxy's ports), one of
    ``ports``, or any port; a VIP:port destination picks one of the service's endpoints.
    """
    who = clients if clients is not None else ("peer", "proxy", *(a.name for a in world.apps))
    client = draw(st.sampled_from(who))
    fam: Family = draw(st.sampled_from(world.families))
    pod = world.pod_ip(fam)
    assert pod is not None
    if client == "peer" and world.peer_ip(fam) is not None:
        dst = pod
    else:
        if client == "peer":  # no peer address in this family: let the flow start from an app instead
            client = world.apps[0].name if world.apps else "proxy"
        a = WORLD_ADDRS[fam]
        local = [pod, to_address(a["lo"]), to_address(a["six"]), to_address(a["out"])]
        local += [s.vip for s in world.services if s.vip.version == pod.version]
        local += [e.address for s in world.services for e in s.endpoints if e.address.version == pod.version]
        local += [p for p in world.peer_ips if p.version == pod.version]
        dst = draw(st.sampled_from(local) | addresses(fam))
    known = {s.port for app in world.apps for s in app.sockets}
    known |= {s.port for s in world.services} | {e.port for s in world.services for e in s.endpoints}
    known |= {world.proxy.outbound_port, *_PROXY_PORTS, *ports}
    if world.proxy.inbound_port is not None:
        known.add(world.proxy.inbound_port)
    app_ports = sorted({s.port for app in world.apps for s in app.sockets})
    port_choices = [st.sampled_from(sorted(known)), st.integers(1, 65535)]
    if app_ports:  # deliveries are the interesting ends: favour ports something listens on
        port_choices[:0] = [st.sampled_from(app_ports)] * 2
    dport = draw(st.one_of(port_choices))
    svc = world.service_at(dst, dport)
    endpoint = draw(st.integers(0, len(svc.endpoints) - 1)) if svc is not None and svc.endpoints else 0
    return Flow(client, dst, dport, endpoint=endpoint)
