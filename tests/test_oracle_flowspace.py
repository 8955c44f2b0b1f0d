"""The class-complete flow space of a world (no kernel needed)."""

from __future__ import annotations

from meshsolve.iptables import parse_text
from meshsolve.model.net import to_address
from meshsolve.model.world import App, Endpoint, ProxyBehavior, Service, Socket, World
from meshsolve.oracle.flowspace import (
    UNNAMED_ADDRESS,
    UNNAMED_PORT,
    flow_space,
    named_ports,
    remote_addresses,
)

RULES = """*nat
:OUTPUT ACCEPT [0:0]
:ISTIO_OUTPUT - [0:0]
-A OUTPUT -p tcp -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -d 10.0.0.0/8 -j RETURN
-A ISTIO_OUTPUT -p tcp --dport 3306 -j RETURN
-A ISTIO_OUTPUT -p tcp -m multiport --dports 7000:7002,8080 -j RETURN
-A ISTIO_OUTPUT -p tcp -j DNAT --to-destination 203.0.113.7:8443
COMMIT
"""


def _world() -> World:
    return World(pod_ips=("192.0.2.10",), peer_ips=("192.0.2.20",),
                 apps=(App("web", 1000, 1000, (Socket("0.0.0.0", 9001),)), App("db", 1000, 1000),
                       App("batch", 2000, 2000)),
                 proxy=ProxyBehavior(inbound_source_v4="127.0.0.6"),
                 services=(Service("svc", "198.51.100.1", 80, (Endpoint("192.0.2.10", 9001),
                                                               Endpoint("203.0.113.9", 9001))),),
                 rules=parse_text(RULES, source="test"))


def test_ports_name_every_class() -> None:
    ports = set(named_ports(_world()))
    assert {9001, 15001, 15006, 80, UNNAMED_PORT} <= ports
    assert {3305, 3306, 3307} <= ports          # a single port and the ports just outside it
    assert {6999, 7000, 7002, 7003, 8079, 8080, 8081} <= ports  # a range's ends and beyond
    assert 8443 in ports                         # a DNAT target port


def test_remote_addresses_are_what_the_outside_world_answers_for() -> None:
    remote = set(map(str, remote_addresses(_world())))
    assert {"192.0.2.20", "198.51.100.1", "203.0.113.9", "203.0.113.7", "10.0.0.1",
            str(UNNAMED_ADDRESS["ipv4"])} <= remote
    assert not remote & {"192.0.2.10", "127.0.0.1", "127.0.0.6"}


def test_flow_space_covers_every_client_kind_destination_and_endpoint() -> None:
    world = _world()
    flows = flow_space(world)
    clients = {f.client for f in flows}
    assert clients == {"peer", "web", "batch", "proxy"}  # db shares web's ids: one representative
    assert {str(f.dst) for f in flows if f.client == "peer"} == {"192.0.2.10"}
    web_dsts = {str(f.dst) for f in flows if f.client == "web"}
    assert {"127.0.0.1", "127.0.0.6", "127.0.0.9", "192.0.2.10", "192.0.2.20", "198.51.100.1",
            "10.0.0.1", "203.0.113.7", str(UNNAMED_ADDRESS["ipv4"])} <= web_dsts
    vip = [f for f in flows if f.client == "web" and f.dst == to_address("198.51.100.1") and f.dport == 80]
    assert sorted(f.endpoint for f in vip) == [0, 1]
    assert len(flows) == len(set(flows))


def test_a_socket_mark_is_a_client_class_of_its_own() -> None:
    """Two apps with one uid/gid are one client class, unless their sockets carry different marks."""
    w = _world()
    clients = {f.client for f in flow_space(w)}
    assert "web" in clients and "db" not in clients
    marked = World(pod_ips=w.pod_ips, peer_ips=w.peer_ips, apps=(*w.apps[:1], App("db", 1000, 1000, mark=0x10),
                                                                  *w.apps[2:]), proxy=w.proxy, rules=w.rules)
    assert {"web", "db"} <= {f.client for f in flow_space(marked)}
