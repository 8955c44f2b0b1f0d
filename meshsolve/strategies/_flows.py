"""Flows: any first connection that can start in a given world, and the bind matrix of a world."""

from __future__ import annotations

from hypothesis import strategies as st

import meshsolve.defaults as defaults
from meshsolve.model.net import Family, to_address
from meshsolve.model.world import Flow, World
from meshsolve.strategies._addresses import SPECIAL_DESTINATIONS, WORLD_ADDRS, addresses
from meshsolve.strategies._worlds import WORLD_APP_PORTS, WORLD_SERVICE_PORT, worlds

__all__ = ["flows", "world_flows", "worlds_and_flows"]

# Special destinations the bind matrix leaves out: 169.254.1.1 is no address of the kernel oracle's
# remote server (it owns only the addresses a world names).
_NOT_ON_THE_KERNEL = frozenset({"169.254.1.1"})

# the sidecar's listeners and admin ports: a flow to one of them is worth drawing
_PROXY_PORTS = (defaults.PROXY_OUTBOUND_PORT, defaults.PROXY_INBOUND_PORT, 15008, 15020, 15021, 15090)


@st.composite
def flows(draw: st.DrawFn, world: World, *, clients: tuple[str, ...] | None = None,
          ports: tuple[int, ...] = ()) -> Flow:
    """A first TCP connection that can start in ``world`` (``interpret`` accepts it).

    The client is the peer, the proxy or one of the world's apps (or one of ``clients``); a peer
    connects to the pod IP of one of the world's families (a peer flow to any other address would be
    forwarded, which is not modelled); a process in the pod connects to the pod IP, loopback,
    127.0.0.6/::6, a service VIP, an endpoint, the peer, an outside documentation address or one of
    ``SPECIAL_DESTINATIONS`` (0.0.0.0, broadcast, multicast, link-local). The
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
        special = [to_address(x) for x in SPECIAL_DESTINATIONS[fam]]
        dst = draw(st.sampled_from(local) | addresses(fam) | st.sampled_from(special))
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


def world_flows(world: World, *, endpoint: int = 0) -> tuple[Flow, ...]:
    """Every flow of the bind matrix for ``world``, per family: the peer and each app to the pod IP,
    loopback, the service VIP (through ``endpoint``) and an outside address, on every app port, and
    the first app to the special destinations (``SPECIAL_DESTINATIONS``: what ``connect()`` rewrites
    or refuses) the model and the kernel agree on; the proxy itself to the pod IP, loopback and
    outside."""
    out = []
    for fam in world.families:
        a = WORLD_ADDRS[fam]
        out += [Flow("peer", a["pod"], p) for p in WORLD_APP_PORTS]
        for app in world.apps:
            for p in WORLD_APP_PORTS:
                out.append(Flow(app.name, a["lo"], p))
                out.append(Flow(app.name, a["pod"], p))
            out.append(Flow(app.name, a["out"], WORLD_APP_PORTS[0]))
            out.append(Flow(app.name, a["vip"], WORLD_SERVICE_PORT, endpoint=endpoint))
        if world.apps:
            out += [Flow(world.apps[0].name, d, WORLD_APP_PORTS[0]) for d in SPECIAL_DESTINATIONS[fam]
                    if d not in _NOT_ON_THE_KERNEL]
        out += [Flow("proxy", a[k], WORLD_APP_PORTS[0]) for k in ("pod", "lo", "out")]
    return tuple(out)


@st.composite
def worlds_and_flows(draw: st.DrawFn) -> tuple[World, tuple[Flow, ...]]:
    """A random world and its bind-matrix flows (one endpoint choice for the service VIPs)."""
    world = draw(worlds())
    endpoint = draw(st.integers(0, len(world.services[0].endpoints) - 1))
    return world, world_flows(world, endpoint=endpoint)
