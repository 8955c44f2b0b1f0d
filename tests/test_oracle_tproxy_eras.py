"""What each TPROXY era of Istio's sidecar does on the real kernel (docs/tproxy.md).

Default sidecar of each version in TPROXY mode (rules from meshsolve.istio, the proxy of
``proxy_behavior``: transparent listeners, original_src from 1.6, mark 1337 from 1.9, istio-init's
policy routing), set-up E's binds (app on 0.0.0.0:9001, 127.0.0.1:9002, the pod IP:9003) and
service VIP. These pin the kernel's verdicts themselves, not the interpreter's.
"""

from __future__ import annotations

import attrs
import pytest

from meshsolve.analysis.worlds import istio_routing
from meshsolve.istio import CaptureConfig, generate, proxy_behavior
from meshsolve.model.world import Flow
from meshsolve.oracle.run import KernelWorld
from meshsolve.semantics.setups import APP_PORTS, setup_addresses, setup_world

pytestmark = pytest.mark.kernel

# flows: peer -> pod:9001, peer -> pod:9003 (pod-IP listener), app -> VIP:9001 (self-call), app -> outside:80
ERAS = {
    # -m socket: the 15001 listener dispatches to the inbound side; a pod-IP listener matches
    # -m socket, so its connections are DIVERTed past the proxy
    "1.1": ("in, app<-127.0.0.1", "app<-{peer}", "out, in, app<-127.0.0.1", "out, egress {out}:80"),
    "1.4": ("in, app<-127.0.0.1", "app<-{peer}", "out, in, app<-127.0.0.1", "out, egress {out}:80"),
    # the 15001 listener no longer dispatches: TPROXYed connections pass through to the pod IP again
    "1.5": ("out, loop", "app<-{peer}", "out, out, loop", "out, egress {out}:80"),
    # conntrack instead of -m socket: every inbound connection loops
    "1.6": ("out, loop", "out, loop", "out, out, loop", "out, egress {out}:80"),
    "1.8": ("out, loop", "out, loop", "out, out, loop", "out, egress {out}:80"),
    # TPROXY to 15006, original_src with mark 1337 back through CONNMARK: the app sees the client
    "1.9": ("in, app<-{peer}", "in, app<-{peer}", "out, in, app<-{pod}", "out, egress {out}:80"),
    "1.10": ("in, app<-{peer}", "in, app<-{peer}", "out, in, app<-{pod}", "out, egress {out}:80"),
    "current": ("in, app<-{peer}", "in, app<-{peer}", "out, in, app<-{pod}", "out, egress {out}:80"),
}
V6 = ("1.5", "1.6", "1.10", "current")  # before 1.5 meshsolve does not model the IPv6 rules


def _world(version: str, family: str) -> object:
    minor = 99 if version == "current" else int(version.split(".")[1])
    base = setup_world("E", family)  # type: ignore[arg-type]
    cfg = CaptureConfig(version=version, mode="TPROXY", outbound_cidrs="*",
                        inbound_ports="*" if minor >= 3 else APP_PORTS,
                        inbound_ports_exclude=(15090, 15021, 15020), enable_ipv6=family == "ipv6")
    return attrs.evolve(base, rules=generate(cfg), proxy=proxy_behavior(version, cfg),
                        routing=istio_routing(cfg, base.families))


@pytest.mark.parametrize(("version", "family"), [(v, "ipv4") for v in ERAS] + [(v, "ipv6") for v in V6])
def test_tproxy_era_on_the_kernel(version: str, family: str) -> None:
    a = setup_addresses(family)  # type: ignore[arg-type]
    out = "203.0.113.5" if family == "ipv4" else "2001:db8:2::5"
    peer = "192.0.2.20" if family == "ipv4" else "2001:db8::20"
    world = _world(version, family)
    flows = (Flow("peer", a["pod"], 9001), Flow("peer", a["pod"], 9003), Flow("app", a["vip"], 9001),
             Flow("app", out, 80))
    with KernelWorld(world) as kw:  # type: ignore[arg-type]
        got = tuple(kw.run(f).summary for f in flows)
    hp = f"[{out}]" if family == "ipv6" else out
    want = tuple(s.format(peer=peer, pod=a["pod"], out=hp) for s in ERAS[version])
    assert got == want
