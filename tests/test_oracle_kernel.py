"""The kernel oracle re-establishes the kernel facts the model relies on (reference/kernel-facts.md).

These run raw iptables-restore text through the harness (no renderer needed), so they check the
harness and the kernel themselves; the differential tests compare the interpreter against it.
"""

from __future__ import annotations

import subprocess

import pytest

from meshsolve.model.net import to_address
from meshsolve.model.world import App, Endpoint, Flow, ProxyBehavior, Service, Socket, World
from meshsolve.oracle.run import KernelWorld, OracleConfig
from meshsolve.semantics.trace import Delivered, Egress, Loop, Refused

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
