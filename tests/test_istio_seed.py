"""The seed report, end to end: generated rules + the version's proxy behaviour, run through the
concrete interpreter, reproduce what the field report (seed/SUMMARY.md) and the 1.10 blog state."""

from __future__ import annotations

import attrs
import pytest

from meshsolve.istio import CaptureConfig, generate, parse_flags, proxy_behavior
from meshsolve.model import App, Endpoint, Flow, ProxyBehavior, Service, Socket, World
from meshsolve.semantics import interpret

POD, PEER, VIP = "192.0.2.10", "198.51.100.7", "203.0.113.20"
INJECTED = {
    "1.2": ["-p", "15001", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-x", "", "-b", "8080", "-d", "15020"],
    "1.10": ["-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-x", "", "-b", "*",
             "-d", "15090,15021,15020"],
}
INJECTED["current"] = INJECTED["1.10"]


def _world(config: CaptureConfig, bind: str, proxy: ProxyBehavior | None = None) -> World:
    return World(pod_ips=(POD,), peer_ips=(PEER,), apps=(App("app", sockets=(Socket(bind, 8080),)),),
                 proxy=proxy or proxy_behavior(config.version, config), rules=generate(config),
                 services=(Service("self", VIP, 80, (Endpoint(POD, 8080),)),))


@pytest.mark.parametrize(("version", "bind", "summary"), [
    # seed point 1: before 1.10 the inbound side forwards to 127.0.0.1 — a pod-IP listener is unreachable
    ("1.2", "0.0.0.0", "in, app<-127.0.0.1"),
    ("1.2", POD, "in, refused"),
    ("1.2", "127.0.0.1", "in, app<-127.0.0.1"),
    # 1.10 and later: forwarded to the pod IP from 127.0.0.6; localhost-only apps stop being exposed
    ("1.10", "0.0.0.0", "in, app<-127.0.0.6"),
    ("1.10", POD, "in, app<-127.0.0.6"),
    ("1.10", "127.0.0.1", "in, refused"),
    ("current", POD, "in, app<-127.0.0.6"),
    ("current", "127.0.0.1", "in, refused"),
])
def test_inbound_bind_matrix(version: str, bind: str, summary: str) -> None:
    config = parse_flags(INJECTED[version], version=version)
    assert interpret(_world(config, bind), Flow("peer", POD, 8080)).summary == summary


def test_seed_fixes_on_1_2() -> None:
    stock = parse_flags(INJECTED["1.2"], version="1.2")
    patched_proxy = attrs.evolve(proxy_behavior("1.2", stock), inbound_endpoint="original_dst")
    # self-call through the service passes both proxy sides with the stock set-up
    assert interpret(_world(stock, "0.0.0.0"), Flow("app", VIP, 80)).summary == "out, in, app<-127.0.0.1"
    # first fix (pilot sends inbound to the pod IP, loopback rule kept): an endless loop
    assert interpret(_world(stock, POD, patched_proxy), Flow("peer", POD, 8080)).summary == "in, loop"
    # second fix (+ DISABLE_REDIRECTION_ON_LOCAL_LOOPBACK): works, but the self-call keeps only the
    # client side
    fixed = parse_flags(INJECTED["1.2"], {"DISABLE_REDIRECTION_ON_LOCAL_LOOPBACK": "true"}, version="1.2")
    world = _world(fixed, POD, patched_proxy)
    assert interpret(world, Flow("peer", POD, 8080)).summary == f"in, app<-{POD}"
    assert interpret(world, Flow("app", VIP, 80)).summary == f"out, app<-{POD}"


def test_self_call_keeps_both_sides_from_1_10() -> None:
    config = parse_flags(INJECTED["1.10"], version="1.10")
    assert interpret(_world(config, POD), Flow("app", VIP, 80)).summary == "out, in, app<-127.0.0.6"
