"""Random ambient pods for the kernel oracle: a configuration of any era and mode (either backend),
apps with random binds, sometimes a mark spoofer or HBONE's inner connection as a variant, and flows
over what ambient capture tells apart (the probe source and its neighbours, HBONE's port and its
tunnel, ztunnel's listeners, DNS, the pod's own address, loopback, remote addresses, ztunnel's own
connections). Documentation addresses only; the node's probe SNAT address is a documentation
address too (it is a setting: ``HOST_PROBE_SNAT_ADDRESS``)."""

from __future__ import annotations

from typing import Any

from hypothesis import assume
from hypothesis import strategies as st

from meshsolve.analysis.ambient_properties import SPOOFER, hbone_inner, with_spoofer
from meshsolve.errors import WorldError
from meshsolve.istio.ambient import AmbientConfig
from meshsolve.istio.ambient.profile import ambient_world
from meshsolve.model.world import App, Flow, Socket, World

PROBE_V4, PROBE_V6 = "203.0.113.127", "2001:db8:7127::1"
POD = {"ipv4": "192.0.2.10", "ipv6": "2001:db8::10"}
PEER = {"ipv4": "192.0.2.20", "ipv6": "2001:db8::20"}
REMOTE = {"ipv4": "198.51.100.7", "ipv6": "2001:db8:2::7"}
NEAR = {"ipv4": "203.0.113.128", "ipv6": "2001:db8:7127::2"}
PORTS = (8080, 9090, 53, 15009)
VIRTUAL = "vnet0"


@st.composite
def ambient_configs(draw: Any, backend: str = "iptables") -> AmbientConfig:
    """A configuration of any era and mode; ``backend="nftables"``: of the releases that have istio-cni's
    native nftables backend (1.28 on)."""
    eras = ["1.28", "current"] if backend == "nftables" else ["1.21", "1.24", "1.24-tproxy", "1.26", "1.28", "current"]
    version = draw(st.sampled_from(eras))
    tproxy = version == "1.24-tproxy"
    version = version.removesuffix("-tproxy")
    kw: dict[str, Any] = {"version": version, "probe_snat_v4": PROBE_V4, "probe_snat_v6": PROBE_V6,
                          "redirect_dns": draw(st.booleans()), "enable_ipv6": draw(st.booleans())}
    if tproxy:
        kw["tproxy"] = True
    if version not in ("1.21",) and not tproxy:
        kw["ingress"] = draw(st.booleans())
        if version != "1.24":
            kw["dns_override"] = draw(st.sampled_from(["unset", "enabled", "disabled"]))
            kw["virtual_interfaces"] = draw(st.sampled_from([(), (VIRTUAL,)]))
    return AmbientConfig(backend=backend, **kw)  # type: ignore[arg-type]


def _sockets(draw: Any, fams: tuple[str, ...]) -> tuple[Socket, ...]:
    out: list[Socket] = []
    for port in draw(st.lists(st.sampled_from(PORTS), min_size=1, max_size=2, unique=True)):
        how = draw(st.sampled_from(["wildcard", "pod", "loopback"]))
        for fam in fams:
            if how == "wildcard":
                bind = "0.0.0.0" if fam == "ipv4" else "::"
            elif how == "pod":
                bind = POD[fam]
            else:
                bind = "127.0.0.1" if fam == "ipv4" else "::1"
            out.append(Socket(bind, port, v6only=fam == "ipv6"))
    return tuple(out)


@st.composite
def ambient_cases(draw: Any, backend: str = "iptables") -> tuple[AmbientConfig, World, tuple[Flow, ...]]:
    """A configuration of ``backend``, its pod (or a variant of it) and 3–6 flows."""
    c = draw(ambient_configs(backend))
    fams: tuple[str, ...] = ("ipv4", "ipv6") if c.enable_ipv6 else ("ipv4",)
    if c.enable_ipv6 and draw(st.booleans()):
        fams = ("ipv6",)
    apps = [App("app", uid=draw(st.sampled_from([1000, 0])), gid=1000, sockets=_sockets(draw, fams))]
    interface = draw(st.sampled_from(["eth0", *c.virtual_interfaces]))
    try:
        world = ambient_world(c, apps=tuple(apps), pod_ips=tuple(POD[f] for f in fams),
                              peer_ips=tuple(PEER[f] for f in fams), interface=interface)
    except WorldError:
        assume(False)
        raise
    variant = draw(st.sampled_from(["pod", "pod", "spoofer", "hbone"]))
    if variant == "spoofer":
        world = with_spoofer(world, 0x539)
    elif variant == "hbone" and not c.is_tproxy:
        world = hbone_inner(world)
    fam = draw(st.sampled_from(fams))
    pod, ports = POD[fam], sorted({s.port for s in apps[0].sockets})
    lo = "127.0.0.1" if fam == "ipv4" else "::1"
    probe = PROBE_V4 if fam == "ipv4" else PROBE_V6
    inbound = [*ports, 12345]  # the ports ztunnel's inbound side may connect to, one nobody listens on
    candidates = [Flow("peer", pod, p) for p in (*inbound, 15008, 15006)]
    candidates += [Flow("peer", pod, 15008, inner=p) for p in inbound]
    candidates += [Flow("peer", pod, p, src=probe) for p in ports]
    candidates += [Flow("peer", pod, p, src=NEAR[fam]) for p in ports]
    candidates += [Flow("app", REMOTE[fam], p) for p in (80, 53, 15008)]
    candidates += [Flow("app", pod, p) for p in ports] + [Flow("app", lo, p) for p in ports]
    candidates += [Flow("app", probe, 80), Flow("proxy", REMOTE[fam], 80), Flow("proxy", pod, ports[0])]
    if any(a.name == SPOOFER[0] for a in world.apps):
        candidates += [Flow(SPOOFER[0], REMOTE[fam], 80), Flow(SPOOFER[0], REMOTE[fam], 53)]
    flows = draw(st.lists(st.sampled_from(candidates), min_size=3, max_size=6, unique=True))
    return c, world, tuple(flows)

