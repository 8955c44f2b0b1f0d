"""Packet traces T1–T13 of istio-capture-facts.md §7, and the other outcome kinds.

The §7 traces use pod 10.0.0.5; here the pod is 192.0.2.5 (remote client 192.0.2.9, another pod
192.0.2.7, service VIP 198.51.100.20:80), with the Era I rules of set-up E.
"""

from __future__ import annotations

import attrs
import pytest

from meshsolve.iptables import parse_text
from meshsolve.model import (
    App,
    Chain,
    Endpoint,
    Flow,
    Masquerade,
    OpaqueMatch,
    ProxyBehavior,
    Redirect,
    Rule,
    Ruleset,
    Rulesets,
    Service,
    Snat,
    Socket,
    Table,
    World,
    to_address,
)
from meshsolve.model.routing import Routing
from meshsolve.semantics import (
    Delivered,
    Dropped,
    Egress,
    Loop,
    Refused,
    Rejected,
    Result,
    Undetermined,
    interpret,
    setup_world,
)
from meshsolve.semantics.setups import setup_rules_text
from tests.conftest import GOLDENS

POD, PEER, OTHER, VIP = "192.0.2.5", "192.0.2.9", "192.0.2.7", "198.51.100.20"
ERA_I = setup_world("E")


def t_world(**kw: object) -> World:
    base: dict[str, object] = dict(
        pod_ips=(POD,), peer_ips=(PEER,),
        apps=(App("app", 1000, 1000, (Socket("0.0.0.0", 8080),)),
              App("agent", 1337, 1337, (Socket("0.0.0.0", 15020),)),
              App("hbone", 1337, 1337, (Socket(POD, 15008),)),
              App("app2", 1000, 1337)),
        services=(Service("svc", VIP, 80, (Endpoint(OTHER, 8080), Endpoint(POD, 8080))),),
        proxy=ERA_I.proxy, rules=ERA_I.rules, name="traces")
    base.update(kw)
    return World(**base)  # type: ignore[arg-type]


W = t_world()


def hits(res: Result, leg: int | None = None) -> list[str]:
    """The rules that held and the policies applied (index 0), optionally of connection ``leg`` only."""
    return [str(h.rule) for h in res.trace if h.kind in ("rule", "policy") and (leg is None or h.leg == leg)]


def texts(res: Result) -> list[str]:
    return [h.text for h in res.trace]


def test_t1_remote_to_app_port_is_redirected_to_15006() -> None:
    res = interpret(W, Flow("peer", POD, 8080))
    assert hits(res, 1) == ["nat::PREROUTING#1", "nat::ISTIO_INBOUND#5", "nat::ISTIO_IN_REDIRECT#1"]
    assert f"dst {POD}:8080 -> {POD}:15006" in texts(res)
    assert f"proxy listener 0.0.0.0:15006 accepts, original destination {POD}:8080" in texts(res)
    # T8: the inbound side forwards from 127.0.0.6, returned by the first ISTIO_OUTPUT rule
    assert hits(res, 2) == ["nat::OUTPUT#1", "nat::ISTIO_OUTPUT#1", "nat::OUTPUT#0"]
    assert res.summary == "in, app<-127.0.0.6"


def test_t2_status_port_is_not_captured() -> None:
    res = interpret(W, Flow("peer", POD, 15020))
    assert hits(res) == ["nat::PREROUTING#1", "nat::ISTIO_INBOUND#4", "nat::PREROUTING#0"]
    assert res.outcome == Delivered("agent", Socket("0.0.0.0", 15020), to_address(PEER))
    assert res.observed == ()


def test_t3_t4_app_to_vip_goes_to_15001_then_leaves_for_another_pod() -> None:
    res = interpret(W, Flow("app", VIP, 80, endpoint=0))
    assert hits(res, 1) == ["nat::OUTPUT#1", "nat::ISTIO_OUTPUT#9", "nat::ISTIO_REDIRECT#1"]
    assert f"dst {VIP}:80 -> 127.0.0.1:15001" in texts(res)
    # T4: Envoy -> 192.0.2.7:8080 over eth0, returned by --uid-owner 1337
    assert hits(res, 2) == ["nat::OUTPUT#1", "nat::ISTIO_OUTPUT#4", "nat::OUTPUT#0"]
    assert res.outcome == Egress(to_address(OTHER), 8080, to_address(POD))
    assert res.summary == f"out, egress {OTHER}:8080"


def test_t5_t8_vip_self_call_passes_both_sides() -> None:
    res = interpret(W, Flow("app", VIP, 80, endpoint=1))
    assert "nat::ISTIO_OUTPUT#2" in hits(res, 2)           # T5: lo + uid 1337 -> ISTIO_IN_REDIRECT
    assert f"dst {POD}:8080 -> 127.0.0.1:15006" in texts(res)
    assert hits(res, 3) == ["nat::OUTPUT#1", "nat::ISTIO_OUTPUT#1", "nat::OUTPUT#0"]  # T8
    assert res.summary == "out, in, app<-127.0.0.6"


@pytest.mark.parametrize("dst", [POD, "127.0.0.1"])
def test_t6_t7_app_to_itself_bypasses_the_proxy(dst: str) -> None:
    res = interpret(W, Flow("app", dst, 8080))
    assert hits(res) == ["nat::OUTPUT#1", "nat::ISTIO_OUTPUT#3", "nat::OUTPUT#0"]
    assert res.observed == ()
    assert isinstance(res.outcome, Delivered) and res.outcome.source == to_address(dst)


def test_t8_prime_localhost_endpoint_returned_by_uid_rule() -> None:
    old = t_world(proxy=attrs.evolve(ERA_I.proxy, inbound_endpoint="localhost", inbound_source_v4=None))
    res = interpret(old, Flow("peer", POD, 8080))
    assert hits(res, 2) == ["nat::OUTPUT#1", "nat::ISTIO_OUTPUT#4", "nat::OUTPUT#0"]
    assert res.summary == "in, app<-127.0.0.1"


def test_t9_validation_probe_reaches_15006_with_original_port_15002() -> None:
    res = interpret(W, Flow("proxy", "127.0.0.6", 15002))
    assert hits(res, 1) == ["nat::OUTPUT#1", "nat::ISTIO_OUTPUT#2", "nat::ISTIO_IN_REDIRECT#1"]
    assert "proxy (uid 1337, gid 1337) connects 127.0.0.1 -> 127.0.0.6:15002/tcp via lo" in texts(res)
    assert "proxy listener 0.0.0.0:15006 accepts, original destination 127.0.0.6:15002" in texts(res)
    assert res.observed == ("in",)


def test_t10_envoy_to_own_hbone_port_is_not_redirected() -> None:
    res = interpret(W, Flow("proxy", POD, 15008))
    assert hits(res) == ["nat::OUTPUT#1", "nat::ISTIO_OUTPUT#4", "nat::OUTPUT#0"]
    assert res.outcome == Delivered("hbone", Socket(POD, 15008), to_address(POD))


def test_t11_app_with_gid_1337_is_treated_like_envoy() -> None:
    res = interpret(W, Flow("app2", VIP, 80))
    assert hits(res) == ["nat::OUTPUT#1", "nat::ISTIO_OUTPUT#7", "nat::OUTPUT#0"]
    assert res.outcome == Egress(to_address(VIP), 80, to_address(POD)) and res.observed == ()
    over_lo = interpret(W, Flow("app2", POD, 8080))
    assert hits(over_lo)[1] == "nat::ISTIO_OUTPUT#3"   # the uid rule over lo fires first


def test_t12_istio_1_3_app_to_own_pod_ip_goes_inbound_only() -> None:
    v13 = parse_text("\n".join([
        "iptables -t nat -N ISTIO_REDIRECT",
        "iptables -t nat -A ISTIO_REDIRECT -p tcp -j REDIRECT --to-port 15001",
        "iptables -t nat -N ISTIO_IN_REDIRECT",
        "iptables -t nat -A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-port 15006",
        "iptables -t nat -N ISTIO_OUTPUT", "iptables -t nat -A OUTPUT -p tcp -j ISTIO_OUTPUT",
        "iptables -t nat -A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN",
        "iptables -t nat -A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -j ISTIO_IN_REDIRECT",
        "iptables -t nat -A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN",
        "iptables -t nat -A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN",
        "iptables -t nat -A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN",
        "iptables -t nat -A ISTIO_OUTPUT -j ISTIO_REDIRECT", ""]))
    w = t_world(rules=v13, proxy=ProxyBehavior(inbound_endpoint="localhost"))
    res = interpret(w, Flow("app", POD, 8080))
    assert hits(res, 1) == ["nat::OUTPUT#1", "nat::ISTIO_OUTPUT#2", "nat::ISTIO_IN_REDIRECT#1"]
    assert f"dst {POD}:8080 -> 127.0.0.1:15006" in texts(res)
    assert res.summary == "in, app<-127.0.0.1"


def test_t13_istio_1_2_envoy_to_own_pod_ip_loops_without_a_listener() -> None:
    a = setup_world("A")
    res = interpret(a, Flow("proxy", "192.0.2.10", 9004))      # no inbound listener for 9004
    assert hits(res, 1)[:2] == ["nat::OUTPUT#1", "nat::ISTIO_OUTPUT#1"]
    assert isinstance(res.outcome, Loop) and res.observed == ("out",)
    served = interpret(a, Flow("proxy", "192.0.2.10", 9001))    # 9001 is an inbound port
    assert served.summary == "in, app<-127.0.0.1"


# --- other outcome kinds ---------------------------------------------------------------------


def test_blackhole_and_passthrough() -> None:
    res = interpret(W, Flow("app", "203.0.113.50", 443))
    assert res.outcome == Egress(to_address("203.0.113.50"), 443, to_address(POD)) and res.observed == ("out",)
    closed = t_world(proxy=attrs.evolve(ERA_I.proxy, outbound="blackhole"))
    res = interpret(closed, Flow("app", "203.0.113.50", 443))
    assert isinstance(res.outcome, Refused) and res.summary == "out, refused"


def test_max_hops_bounds_the_flow() -> None:
    res = interpret(setup_world("B"), Flow("app", "198.51.100.1", 9001), max_hops=2)
    assert isinstance(res.outcome, Loop) and "more than 2 connections" in res.outcome.reason


def test_ip6tables_filter_of_the_1_2_era_rejects_ipv6() -> None:
    text = setup_rules_text("A", "ipv4")  # IPv4 nat + the ip6tables filter INPUT rules
    w = World(pod_ips=("192.0.2.10", "2001:db8::10"), peer_ips=("192.0.2.20", "2001:db8::20"),
              apps=(App("app", sockets=(Socket("::", 9001, v6only=True), Socket("0.0.0.0", 9001))),),
              rules=parse_text(text))
    peer = interpret(w, Flow("peer", "2001:db8::10", 9001))
    # REJECT: the client is refused at once (a DROP would leave it waiting)
    assert isinstance(peer.outcome, Rejected) and str(peer.outcome.rule) == "filter::INPUT#3"
    assert interpret(w, Flow("app", "::1", 9001)).summary == "app<-::1"          # -i lo -d ::1 ACCEPT
    own = interpret(w, Flow("app", "2001:db8::10", 9001))
    assert isinstance(own.outcome, Rejected) and str(own.outcome.rule) == "filter::INPUT#3"


def test_opaque_and_snat_are_undetermined_not_guessed() -> None:
    opaque = Rulesets(Ruleset("ipv4", (Table("nat", (
        Chain("OUTPUT", (Rule((OpaqueMatch("statistic", ("--probability", "0.5")),), Redirect(15001)),),
              "ACCEPT"),)),)))
    res = interpret(t_world(rules=opaque), Flow("app", VIP, 80))
    assert isinstance(res.outcome, Undetermined) and str(res.outcome.rule) == "nat::OUTPUT#1"
    snat = Rulesets(Ruleset("ipv4", (Table("nat", (
        Chain("POSTROUTING", (Rule((), Snat("192.0.2.5-192.0.2.6")),), "ACCEPT"),)),)))
    res = interpret(t_world(rules=snat), Flow("app", OTHER, 80))  # a range: the kernel picks an address
    assert isinstance(res.outcome, Undetermined) and "SNAT" in res.outcome.reason
    masq = Rulesets(Ruleset("ipv4", (Table("nat", (Chain("POSTROUTING", (Rule((), Masquerade()),), "ACCEPT"),)),)))
    res = interpret(t_world(rules=masq), Flow("app", OTHER, 80))
    assert isinstance(res.outcome, Undetermined) and "MASQUERADE" in res.outcome.reason
    one = Rulesets(Ruleset("ipv4", (Table("nat", (
        Chain("POSTROUTING", (Rule((), Snat("192.0.2.5")),), "ACCEPT"),)),)))
    res = interpret(t_world(rules=one), Flow("app", OTHER, 80))  # one address: decided, the source changes
    assert isinstance(res.outcome, Egress) and str(res.outcome.source) == "192.0.2.5"
    assert f"src {POD}:* -> 192.0.2.5:*" in texts(res)


def test_tproxy_golden_inbound_and_self_call() -> None:
    """HEAD inbound-ports-wildcard-tproxy.golden + the outbound REDIRECT; proxy uid 0, gid 1337."""
    golden = (GOLDENS / "inbound-ports-wildcard-tproxy.golden").read_text()
    last = "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN\nCOMMIT"
    assert golden.count(last) == 1
    text = golden.replace(last, last.replace("COMMIT", "-A ISTIO_OUTPUT -j ISTIO_REDIRECT\nCOMMIT"))
    rules = parse_text(text)
    # TPROXY needs transparent listeners and the policy route for its mark
    w = t_world(rules=rules, proxy=attrs.evolve(ERA_I.proxy, uid=0, gid=1337, transparent=True),
                routing=Routing.tproxy(1337))
    inbound = interpret(w, Flow("peer", POD, 8080))
    assert "mangle::ISTIO_TPROXY#1" in hits(inbound, 1)
    assert f"proxy listener 0.0.0.0:15006 accepts, original destination {POD}:8080" in texts(inbound)
    assert inbound.summary == "in, app<-127.0.0.6"
    # #31165: Envoy (gid 1337) -> own pod IP is marked 1338 and diverted to 15006 on lo
    self_call = interpret(w, Flow("app", VIP, 80, endpoint=1))
    assert "mangle::OUTPUT#3" in hits(self_call, 2) and "mangle::ISTIO_TPROXY#1" in hits(self_call, 2)
    assert self_call.summary == "out, in, app<-127.0.0.6"
    direct = interpret(w, Flow("app", POD, 8080))
    assert direct.summary == f"app<-{POD}"
    # without IP_TRANSPARENT on the listener, TPROXY drops the SYN (seen on the kernel)
    opaque_listener = attrs.evolve(w, proxy=attrs.evolve(w.proxy, transparent=False))
    dropped = interpret(opaque_listener, Flow("peer", POD, 8080))
    assert isinstance(dropped.outcome, Dropped) and str(dropped.outcome.rule) == "mangle::ISTIO_TPROXY#1"
