"""The kernel oracle re-establishes the kernel facts the model relies on (reference/kernel-facts.md).

These run raw iptables-restore text through the harness (no renderer needed), so they check the
harness and the kernel themselves; the differential tests compare the interpreter against it.
"""

from __future__ import annotations

import subprocess

import attrs
import pytest

from meshsolve.iptables import parse_text
from meshsolve.model.net import to_address
from meshsolve.model.routing import Route, Routing, RoutingRule
from meshsolve.model.rules import MarkMatch, RuleRef
from meshsolve.model.world import App, Endpoint, Flow, ProxyBehavior, Service, Socket, World
from meshsolve.oracle.compare import differences
from meshsolve.oracle.run import NO_ERRNO, KernelWorld, OracleConfig
from meshsolve.semantics.interpret import interpret
from meshsolve.semantics.trace import Delivered, Dropped, Egress, Failed, Loop, Refused, Rejected

pytestmark = pytest.mark.kernel

FAMILIES = {
    "ipv4": dict(pod="192.0.2.10", peer="192.0.2.20", lo="127.0.0.1", wild="0.0.0.0", out="203.0.113.9",
                 vip="198.51.100.1", six="127.0.0.6"),
    "ipv6": dict(pod="2001:db8::10", peer="2001:db8::20", lo="::1", wild="::", out="2001:db8:2::9",
                 vip="2001:db8:1::1", six="::6"),
}


def _bind_world(f: dict[str, str], **kw: object) -> World:
    return World(pod_ips=(f["pod"],), peer_ips=(f["peer"],),
                 apps=(App("any", sockets=(Socket(f["wild"], 9001),)),
                       App("local", sockets=(Socket(f["lo"], 9002),)),
                       App("podip", sockets=(Socket(f["pod"], 9003),))), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_socket_bind_matrix_without_iptables(family: str) -> None:
    """kernel-facts.md, 'who accepts a connection': wildcard everywhere, loopback only via loopback,
    pod IP only via the pod IP (even locally)."""
    f = FAMILIES[family]
    accepted = {  # (client, destination) -> ports accepted
        ("peer", f["pod"]): {9001, 9003},
        ("any", f["lo"]): {9001, 9002},
        ("any", f["pod"]): {9001, 9003},
    }
    with KernelWorld(_bind_world(f)) as kw:
        for (client, dst), ok in accepted.items():
            for port, app in ((9001, "any"), (9002, "local"), (9003, "podip")):
                res = kw.run(Flow(client, dst, port))
                assert res.observed == ()
                if port in ok:
                    assert isinstance(res.outcome, Delivered), (client, dst, port, res)
                    assert res.outcome.app == app
                    assert res.outcome.socket == kw.world.app(app).sockets[0]
                    src = f["peer"] if client == "peer" else (f["lo"] if dst == f["lo"] else f["pod"])
                    assert str(res.outcome.source) == src
                else:
                    assert res.outcome == Refused(), (client, dst, port, res)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_owner_match_needs_only_numeric_ids(family: str) -> None:
    """uid 4242 has no passwd entry; ``--uid-owner 4242`` still matches its sockets, not uid 4243's."""
    assert subprocess.run(["getent", "passwd", "4242"], capture_output=True).returncode != 0
    f = FAMILIES[family]
    rules = "*nat\n-A OUTPUT -p tcp -m owner --uid-owner 4242 -j REDIRECT --to-ports 15001\nCOMMIT\n"
    world = World(pod_ips=(f["pod"],), peer_ips=(f["peer"],),
                  apps=(App("captured", uid=4242, gid=4242), App("free", uid=4243, gid=4242)))
    with KernelWorld(world, restore_text={family: rules}) as kw:
        cap = kw.run(Flow("captured", f["out"], 8080))
        free = kw.run(Flow("free", f["out"], 8080))
    pod = to_address(f["pod"])
    assert cap.observed == ("out",) and cap.outcome == Egress(cap.flow.dst, 8080, pod)
    assert free.observed == () and free.outcome == Egress(free.flow.dst, 8080, pod)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_prerouting_is_not_evaluated_for_local_connections(family: str) -> None:
    """A PREROUTING REDIRECT catches the peer's connection to the pod IP, not the pod's own."""
    f = FAMILIES[family]
    rules = "*nat\n-A PREROUTING -p tcp --dport 9001 -j REDIRECT --to-ports 15006\nCOMMIT\n"
    world = _bind_world(f, proxy=ProxyBehavior(inbound_endpoint="original_dst"))
    with KernelWorld(world, restore_text={family: rules}) as kw:
        remote = kw.run(Flow("peer", f["pod"], 9001))
        local = kw.run(Flow("any", f["pod"], 9001))
    assert remote.observed == ("in",)
    assert isinstance(remote.outcome, Delivered) and str(remote.outcome.source) == f["pod"]
    assert local.observed == ()
    assert isinstance(local.outcome, Delivered) and str(local.outcome.source) == f["pod"]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_redirect_of_the_proxy_itself_is_cut_as_a_loop(family: str) -> None:
    f = FAMILIES[family]
    rules = "*nat\n-A OUTPUT -p tcp -j REDIRECT --to-ports 15001\nCOMMIT\n"
    world = World(pod_ips=(f["pod"],), peer_ips=(f["peer"],), apps=(App("client"),))
    cfg = OracleConfig(loop_limit=3)
    with KernelWorld(world, cfg, restore_text={family: rules}) as kw:
        res = kw.run(Flow("client", f["out"], 8080))
    assert isinstance(res.outcome, Loop)
    assert res.observed == ("out",)
    assert sum(1 for h in res.trace if h.kind == "proxy") == cfg.loop_limit + 1


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_service_endpoint_choice_and_inbound_source(family: str) -> None:
    """The stand-in load-balances to the endpoint the flow names and binds the inbound source."""
    f = FAMILIES[family]
    rules = ("*nat\n-N IN\n-N OUT\n-A IN -p tcp -j REDIRECT --to-ports 15006\n"
             "-A OUT -p tcp -j REDIRECT --to-ports 15001\n"
             "-A PREROUTING -p tcp -j IN\n"
             f"-A OUTPUT -o lo -s {f['six']} -j RETURN\n"
             f"-A OUTPUT -o lo ! -d {f['lo']} -m owner --uid-owner 1337 -j IN\n"
             "-A OUTPUT -m owner --uid-owner 1337 -j RETURN\n"
             "-A OUTPUT -o lo -j RETURN\n-A OUTPUT -j OUT\nCOMMIT\n")
    svc = Service("svc", f["vip"], 80, (Endpoint(f["pod"], 9001), Endpoint(f["out"], 9001)))
    world = _bind_world(f, services=(svc,), proxy=ProxyBehavior(inbound_source_v4="127.0.0.6",
                                                                inbound_source_v6="::6"))
    with KernelWorld(world, restore_text={family: rules}) as kw:
        self_call = kw.run(Flow("any", f["vip"], 80, endpoint=0))
        away = kw.run(Flow("any", f["vip"], 80, endpoint=1))
        inbound = kw.run(Flow("peer", f["pod"], 9003))
        local_only = kw.run(Flow("peer", f["pod"], 9002))
    assert self_call.observed == ("out", "in")
    assert isinstance(self_call.outcome, Delivered) and str(self_call.outcome.source) == f["six"]
    assert away.observed == ("out",) and away.outcome == Egress(to_address(f["out"]), 9001, to_address(f["pod"]))
    assert inbound.observed == ("in",)
    assert isinstance(inbound.outcome, Delivered) and inbound.outcome.app == "podip"
    assert local_only.observed == ("in",) and local_only.outcome == Refused()


# --- outcome kinds, the stand-in's TPROXY behaviour, policy routing ---------------------------------


def _filter_world(f: dict[str, str]) -> World:
    return World(pod_ips=(f["pod"],), peer_ips=(f["peer"],),
                 apps=(App("web", sockets=(Socket(f["wild"], 9001), Socket(f["wild"], 9002),
                                           Socket(f["wild"], 9003))),))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_reject_drop_refused_and_delivered_are_told_apart(family: str) -> None:
    """kernel-facts.md fact 8: a REJECT rule refuses the client (its counter moved: Rejected, whatever
    the errno and however late an ICMPv6 error arrives), a DROP rule leaves it waiting (Dropped),
    nothing listening answers RST (Refused)."""
    f = FAMILIES[family]
    rules = ("*filter\n-A INPUT -p tcp --dport 9001 -j REJECT\n-A INPUT -p tcp --dport 9002 -j DROP\n"
             "-A INPUT -p tcp --dport 9005 -j REJECT --reject-with tcp-reset\nCOMMIT\n")
    with KernelWorld(_filter_world(f), restore_text={family: rules}) as kw:
        rejected = kw.run(Flow("peer", f["pod"], 9001))
        dropped = kw.run(Flow("peer", f["pod"], 9002))
        delivered = kw.run(Flow("peer", f["pod"], 9003))
        refused = kw.run(Flow("peer", f["pod"], 9004))
        reset = kw.run(Flow("peer", f["pod"], 9005))
    assert isinstance(rejected.outcome, Rejected) and rejected.outcome.rule == RuleRef("filter", "INPUT", 1)
    assert rejected.outcome.errno in ("ECONNREFUSED", NO_ERRNO)  # IPv6: the errno comes after ~1 s
    assert dropped.outcome == Dropped(RuleRef("filter", "INPUT", 2))
    assert isinstance(delivered.outcome, Delivered) and str(delivered.outcome.source) == f["peer"]
    assert refused.outcome == Refused()
    assert reset.outcome == Rejected(RuleRef("filter", "INPUT", 3))
    assert "refused ECONNREFUSED" in reset.trace[-1].text


@pytest.mark.parametrize(("family", "dst", "errno"), [
    ("ipv4", "224.0.0.1", "ENETUNREACH"), ("ipv4", "255.255.255.255", "ENETUNREACH"),
    ("ipv6", "ff02::1", "ENETUNREACH"), ("ipv6", "fe80::1", "EINVAL"),
])
def test_connect_errors_are_kernel_failures_naming_the_errno(family: str, dst: str, errno: str) -> None:
    """kernel-facts.md fact 3: connect() refuses these destinations before any packet; the kernel's
    result is a failure naming the errno, as the interpreter's is."""
    f = FAMILIES[family]
    world = World(pod_ips=(f["pod"],), peer_ips=(f["peer"],), apps=(App("app"),))
    flow = Flow("app", dst, 80)
    with KernelWorld(world) as kw:
        res = kw.run(flow)
    assert isinstance(res.outcome, Failed) and f"({errno})" in res.outcome.reason
    assert differences(interpret(world, flow), res) == ()


def _tproxy_world(f: dict[str, str], **proxy: object) -> World:
    rules = ("*mangle\n-A PREROUTING -i eth0 -p tcp --dport 9001 -j TPROXY --on-port 15006 "
             "--tproxy-mark 0x539/0xffffffff\nCOMMIT\n")
    fam = "ipv4" if f is FAMILIES["ipv4"] else "ipv6"
    return World(pod_ips=(f["pod"],), peer_ips=(f["peer"],),
                 apps=(App("web", sockets=(Socket(f["wild"], 9001),)),),
                 proxy=ProxyBehavior(uid=0, gid=1337, inbound_endpoint="localhost", **proxy),  # type: ignore[arg-type]
                 rules=parse_text(rules if fam == "ipv4" else "# ipv6\n" + rules, source="test"),
                 routing=Routing.tproxy(0x539, families=(fam,)))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_tproxy_hands_connections_to_a_transparent_stand_in_only(family: str) -> None:
    """kernel-facts.md fact 13: with IP_TRANSPARENT listeners the stand-in takes the TPROXYed
    connection and reads its original destination from its own local address; without, TPROXY drops."""
    f = FAMILIES[family]
    with KernelWorld(_tproxy_world(f, transparent=True)) as kw:
        taken = kw.run(Flow("peer", f["pod"], 9001))
    with KernelWorld(_tproxy_world(f, transparent=False)) as kw:
        dropped = kw.run(Flow("peer", f["pod"], 9001))
    assert taken.observed == ("in",)
    assert "original destination" in taken.trace[1].text and "(local)" in taken.trace[1].text
    assert isinstance(taken.outcome, Delivered) and str(taken.outcome.source) == f["lo"]
    assert dropped.observed == () and dropped.outcome == Dropped(RuleRef("mangle", "PREROUTING", 1))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_original_source_upstream_is_marked_and_answered_through_policy_routing(family: str) -> None:
    """Envoy's original_src as the current Istio TPROXY sidecar uses it: the inbound upstream leaves
    from the client's own address, with SO_MARK 1337 (mangle OUTPUT's mark rule counts it), and the
    app's answer comes back through CONNMARK and the mark's local route: the app sees the peer."""
    from meshsolve.analysis.worlds import world_from_config
    from meshsolve.istio import parse_flags

    f = FAMILIES[family]
    cfg = parse_flags(["-m", "TPROXY", "-b", "*", "-u", "1337"], version="current")
    if family == "ipv6":
        cfg = cfg.evolve(enable_ipv6=True)
    world = attrs.evolve(world_from_config(cfg, pod_ips=(to_address(f["pod"]),)),
                         apps=(App("web", sockets=(Socket(f["wild"], 9001),)),))
    assert world.proxy.inbound_original_source and world.proxy.upstream_mark == 1337
    plain = attrs.evolve(world, proxy=attrs.evolve(world.proxy, inbound_original_source=False, upstream_mark=None))
    six = world.proxy.inbound_source(family)  # type: ignore[arg-type]
    with KernelWorld(world) as kw:
        res = kw.run(Flow("peer", f["pod"], 9001))
    with KernelWorld(plain) as kw:
        without = kw.run(Flow("peer", f["pod"], 9001))
    assert res.observed == ("in",)
    assert isinstance(res.outcome, Delivered) and str(res.outcome.source) == f["peer"]
    rs = world.rules.for_family(family)  # type: ignore[arg-type]
    marked = [r for r in res.rule_hits if r.table == "mangle" and r.chain == "OUTPUT"
              and any(isinstance(m, MarkMatch) for m in rs.rule(r).matches)]
    assert marked, res.rule_hits
    # without original_src the upstream leaves from 127.0.0.6 / ::6 (the rules let it through)
    assert isinstance(without.outcome, Delivered) and without.outcome.source == six


def test_reuseport_lets_a_wildcard_and_a_specific_bind_share_a_port() -> None:
    """kernel-facts.md fact 7: both listen with SO_REUSEPORT on both and one uid; the specific one
    takes connections to its address."""
    world = World(pod_ips=("192.0.2.10",), peer_ips=("192.0.2.20",),
                  apps=(App("any", sockets=(Socket("0.0.0.0", 9001, reuseport=True),)),
                        App("local", sockets=(Socket("127.0.0.1", 9001, reuseport=True),))))
    flows = (Flow("any", "127.0.0.1", 9001), Flow("any", "192.0.2.10", 9001))
    with KernelWorld(world) as kw:
        got = [kw.run(fl) for fl in flows]
    assert [r.outcome.token for r in got] == ["local<-127.0.0.1", "any<-192.0.2.10"]
    assert all(differences(interpret(world, fl), r) == () for fl, r in zip(flows, got, strict=True))


@pytest.mark.parametrize(("kind", "errno"), [("unreachable", "EHOSTUNREACH"), ("prohibit", "EACCES")])
def test_the_worlds_policy_routing_is_installed_as_given(kind: str, errno: str) -> None:
    """world.routing goes to the kernel unchanged: a rule sending every lookup to table 7, whose
    route for 203.0.113.0/24 refuses, makes connect() fail with that route type's errno."""
    world = World(pod_ips=("192.0.2.10",), peer_ips=("192.0.2.20",), apps=(App("app"),),
                  routing=Routing((RoutingRule("ipv4", 100, 7),), (Route("203.0.113.0/24", kind, None, 7),)))  # type: ignore[arg-type]
    with KernelWorld(world) as kw:
        blocked = kw.run(Flow("app", "203.0.113.9", 80))
        other = kw.run(Flow("app", "198.51.100.9", 80))
    assert isinstance(blocked.outcome, Failed) and f"({errno})" in blocked.outcome.reason
    assert other.outcome == Egress(to_address("198.51.100.9"), 80, to_address("192.0.2.10"))
