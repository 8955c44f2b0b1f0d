"""Malformed worlds and flows give a WorldError with a clear message."""

from __future__ import annotations

import attrs
import pytest

from meshsolve.errors import MeshsolveError, WorldError
from meshsolve.model import (
    App,
    Chain,
    Endpoint,
    Flow,
    Goto,
    Jump,
    OwnerMatch,
    ProxyBehavior,
    Redirect,
    Return,
    Rule,
    Ruleset,
    Rulesets,
    Service,
    Socket,
    Table,
    World,
)
from meshsolve.semantics import interpret, setup_world


def world(**kw: object) -> World:
    base: dict[str, object] = {"pod_ips": ("192.0.2.10",), "peer_ips": ("192.0.2.20",),
                               "apps": (App("app", sockets=(Socket("0.0.0.0", 9001),)),)}
    base.update(kw)
    return World(**base)  # type: ignore[arg-type]


def nat_rules(*chains: Chain) -> Rulesets:
    return Rulesets(Ruleset("ipv4", (Table("nat", chains),)))


def test_a_valid_world_builds() -> None:
    w = world()
    assert w.families == ("ipv4",)
    assert w.proxy_sockets() == (Socket("0.0.0.0", 15001), Socket("0.0.0.0", 15006))


@pytest.mark.parametrize("make", [
    lambda: Socket("0.0.0.0", 70000),
    lambda: Socket("0.0.0.0", -1),
    lambda: ProxyBehavior(outbound_port=65536),
    lambda: ProxyBehavior(inbound_port=99999),
    lambda: Endpoint("192.0.2.10", 100000),
    lambda: Flow("app", "192.0.2.10", 65536),
])
def test_port_out_of_range(make: object) -> None:
    with pytest.raises(WorldError, match="out of range"):
        make()  # type: ignore[operator]


def test_two_sockets_on_the_same_address_and_port() -> None:
    with pytest.raises(WorldError, match="already bound"):
        world(apps=(App("app", sockets=(Socket("127.0.0.1", 9001), Socket("127.0.0.1", 9001))),))
    with pytest.raises(WorldError, match="already bound by app 'a'"):
        world(apps=(App("a", sockets=(Socket("192.0.2.10", 80),)),
                    App("b", sockets=(Socket("192.0.2.10", 80),))))
    with pytest.raises(WorldError, match="also takes IPv4"):
        world(pod_ips=("192.0.2.10", "2001:db8::10"),
              apps=(App("a", sockets=(Socket("0.0.0.0", 80),)), App("b", sockets=(Socket("::", 80),))))
    # :: with V6ONLY next to 0.0.0.0 is fine
    world(pod_ips=("192.0.2.10", "2001:db8::10"),
          apps=(App("a", sockets=(Socket("0.0.0.0", 80), Socket("::", 80, v6only=True))),))
    # a specific bind next to a wildcard needs SO_REUSEPORT on both, and the same uid (seen on the
    # kernel: tests/test_oracle_kernel_facts.py, the bind fact)
    with pytest.raises(WorldError, match="SO_REUSEPORT"):
        world(apps=(App("a", sockets=(Socket("0.0.0.0", 80), Socket("127.0.0.1", 80))),))
    with pytest.raises(WorldError, match="SO_REUSEPORT"):
        world(apps=(App("a", uid=1000, sockets=(Socket("0.0.0.0", 80, reuseport=True),)),
                    App("b", uid=1001, sockets=(Socket("127.0.0.1", 80, reuseport=True),))))
    with pytest.raises(WorldError, match="SO_REUSEPORT"):
        world(pod_ips=("192.0.2.10", "2001:db8::10"),
              apps=(App("a", sockets=(Socket("::", 80), Socket("2001:db8::10", 80, reuseport=True))),))
    world(apps=(App("a", sockets=(Socket("0.0.0.0", 80, reuseport=True), Socket("127.0.0.1", 80, reuseport=True))),
                App("b", sockets=(Socket("192.0.2.10", 80, reuseport=True),))))


def test_socket_on_a_proxy_port_or_a_foreign_address() -> None:
    with pytest.raises(WorldError, match="collides with a proxy listener on port 15001"):
        world(apps=(App("app", sockets=(Socket("127.0.0.1", 15001),)),))
    with pytest.raises(WorldError, match="not an address of the pod"):
        world(apps=(App("app", sockets=(Socket("203.0.113.9", 80),)),))


def test_service_without_endpoints() -> None:
    with pytest.raises(WorldError, match=r"service 'svc' .* has no endpoints"):
        world(services=(Service("svc", "198.51.100.1", 80),))


def test_jump_or_goto_to_a_missing_chain() -> None:
    with pytest.raises(WorldError, match="jumps to chain ISTIO_NOPE, which does not exist"):
        world(rules=nat_rules(Chain("OUTPUT", (Rule((), Jump("ISTIO_NOPE")),), "ACCEPT")))
    with pytest.raises(WorldError, match="nat::X#1 jumps to chain Y"):
        world(rules=nat_rules(Chain("X", (Rule((), Goto("Y")),))))


@pytest.mark.parametrize("chains", [
    (Chain("A", (Rule((), Jump("A")),)),),
    (Chain("A", (Rule((), Jump("B")),)), Chain("B", (Rule((), Return()), Rule((), Goto("A"))))),
    (Chain("OUTPUT", (Rule((), Jump("A")),), "ACCEPT"), Chain("A", (Rule((), Jump("B")),)),
     Chain("B", (Rule((), Jump("C")),)), Chain("C", (Rule((), Jump("A")),))),
])
def test_jump_cycles(chains: tuple[Chain, ...]) -> None:
    with pytest.raises(WorldError, match="jump cycle"):
        world(rules=nat_rules(*chains))


def test_rules_the_kernel_refuses_at_load() -> None:
    with pytest.raises(WorldError, match=r"owner is only valid in OUTPUT/POSTROUTING.*PREROUTING"):
        world(rules=nat_rules(Chain("PREROUTING", (Rule((), Jump("C")),), "ACCEPT"),
                              Chain("C", (Rule((OwnerMatch(uid="1337"),), Return()),))))
    with pytest.raises(WorldError, match="REDIRECT is only valid"):
        world(rules=Rulesets(Ruleset("ipv4", (Table("mangle", (Chain("OUTPUT", (Rule((), Redirect(1)),),
                                                                     "ACCEPT"),)),))))


def test_misc_world_errors() -> None:
    with pytest.raises(WorldError, match="no pod IP"):
        world(pod_ips=())
    with pytest.raises(WorldError, match="more than one ipv4 pod IP"):
        world(pod_ips=("192.0.2.10", "192.0.2.11"))
    with pytest.raises(WorldError, match="two apps are named"):
        world(apps=(App("x"), App("x")))
    with pytest.raises(WorldError, match="may not be named 'peer'"):
        world(apps=(App("peer"),))
    with pytest.raises(WorldError, match="equals outbound_port"):
        world(proxy=ProxyBehavior(inbound_port=15001))
    with pytest.raises(WorldError, match=r"inbound source 192\.0\.2\.99 is not local"):
        world(proxy=ProxyBehavior(inbound_source_v4="192.0.2.99"))


def test_flow_errors() -> None:
    w = setup_world("E")
    with pytest.raises(WorldError, match="flow client 'nobody' is not one of: peer, proxy, 'app'"):
        interpret(w, Flow("nobody", "192.0.2.10", 9001))
    with pytest.raises(WorldError, match="the pod has no ipv6 address"):
        interpret(w, Flow("app", "2001:db8::10", 9001))
    with pytest.raises(WorldError, match="no ipv6 peer IP"):
        interpret(attrs.evolve(setup_world("E", "ipv6"), peer_ips=()), Flow("peer", "2001:db8::10", 9001))
    with pytest.raises(WorldError, match="picks endpoint #3, but service 'svc-9001' has 1"):
        interpret(w, Flow("app", "198.51.100.1", 9001, endpoint=3))


def test_world_errors_are_meshsolve_and_value_errors() -> None:
    with pytest.raises(MeshsolveError):
        world(services=(Service("svc", "198.51.100.1", 80),))
    with pytest.raises(ValueError):
        world(services=(Service("svc", "198.51.100.1", 80),))


@pytest.mark.parametrize(("given", "mark"), [(None, None), (0, None), ("0", None), (0x539, 0x539), ("0x539", 0x539),
                                             ("1337", 1337), (0xFFFFFFFF, 0xFFFFFFFF)])
def test_an_apps_mark_is_a_32_bit_value_and_0_is_none(given: int | str | None, mark: int | None) -> None:
    assert App("a", mark=given).mark == mark  # type: ignore[arg-type]


@pytest.mark.parametrize("given", [-1, 1 << 32, "x10", True])
def test_a_bad_mark_names_itself(given: object) -> None:
    with pytest.raises(WorldError, match="socket mark"):
        App("a", mark=given)  # type: ignore[arg-type]
