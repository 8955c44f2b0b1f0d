"""The flows a person asks about first: a peer to each app port, each app to each service.

``meshsolve diff`` prints how each of them ends on both sides next to the solver's witnesses,
which are *some* differing connection and may well be one nobody makes (a port nobody listens on).
"""

from __future__ import annotations

from meshsolve.model.world import Flow, World
from meshsolve.semantics.interpret import interpret
from meshsolve.semantics.trace import Result

__all__ = ["app_flows", "compare_app_flows"]


def app_flows(world: World) -> tuple[Flow, ...]:
    """Peer → pod IP on each app socket's port (each family); the first app → each service
    endpoint choice."""
    out: list[Flow] = []
    ports = sorted({s.port for a in world.apps for s in a.sockets})
    for fam in world.families:
        pod = world.pod_ip(fam)
        if pod is not None and world.peer_ip(fam) is not None:
            out.extend(Flow("peer", pod, p) for p in ports)
    if world.apps:
        client = world.apps[0].name
        for svc in world.services:
            if svc.vip.version in {a.version for a in world.pod_ips}:
                out.extend(Flow(client, svc.vip, svc.port, endpoint=e) for e in range(len(svc.endpoints)))
    return tuple(dict.fromkeys(out))


def compare_app_flows(a: World, b: World) -> list[tuple[Flow, Result, Result]]:
    """Each flow of ``app_flows(a)`` (also valid in ``b``) with its result in both worlds."""
    names_b = {x.name for x in b.apps}
    rows = []
    for flow in app_flows(a):
        if flow.client not in ("peer", "proxy") and flow.client not in names_b:
            continue
        rows.append((flow, interpret(a, flow), interpret(b, flow)))
    return rows
