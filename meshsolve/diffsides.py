"""The two sides of ``meshsolve diff``, loaded onto one pod.

A difference ``diff`` reports should come from the capture set-ups, not from two different pods (a
default app on 8080 on one side, apps on 9001–9003 on the other; the solver even tells apps apart
by name). The rule:

1. ``--binds`` gives both sides its apps, services and pod IPs (``meshsolve.inputs``).
2. Otherwise each side's pod has a rank: a pod manifest (``pod:PATH``, or any side but a built-in
   set-up when ``--pod`` is given: its containers' apps and the pod IPs of its status) ranks
   highest, being the pod the question is about; a built-in set-up (``A``..``E``: one app on
   9001–9003, three services, documentation addresses) next; an Istio version or a rules dump
   alone names no pod and has meshsolve's defaults (one app on 8080).
3. The side of lower rank takes the other's pod: its apps, services, pod and peer addresses and
   interface. It keeps its rules, derived again for that pod as they would be for those apps given
   with ``--binds``: an Istio version's injector defaults (which up to 1.2 list the apps' ports)
   and a rules dump's proxy (whose 1.0–1.2 inbound listeners are the apps' ports); an IPv6 pod
   enables istio-iptables' IPv6 rules. A built-in set-up keeps its rules and proxy as they are.
4. Of two sides that name no pod, B takes A's (meshsolve's defaults, which differ in small ways:
   1.2's IPv6 rules make the default app listen on ``::``). Two built-in set-ups or two manifests
   keep their own pods: the same pod for two built-in set-ups; two manifests may differ, and
   ``Sides.same_pod`` says so (the command then prints both pods).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

import meshsolve.defaults as defaults
from meshsolve.analysis.worlds import world_from_config
from meshsolve.inputs import Configuration, default_config, load_configuration, parse_side
from meshsolve.istio import proxy_behavior
from meshsolve.model.world import World

__all__ = ["Sides", "describe_pod", "load_sides", "pod_of", "pod_to_dict"]

_KINDS = {"setup": "a built-in set-up", "pod": "a pod manifest", "istio": "an Istio version's injector defaults",
          "rules": "a rules dump"}
_RANK = {"pod": 2, "setup": 1, "istio": 0, "rules": 0}


def pod_of(world: World) -> tuple[object, ...]:
    """What a world says about the pod itself, apart from its capture set-up."""
    return (world.pod_ips, world.peer_ips, world.apps, world.services, world.interface)


def describe_pod(world: World) -> list[str]:
    """The pod in a few lines: addresses, apps with ids and sockets, services."""
    lines = [f"pod IP {', '.join(map(str, world.pod_ips))}; peer {', '.join(map(str, world.peer_ips))}; "
             f"interface {world.interface}"]
    for a in world.apps:
        lines.append(f"app {a.name} (uid {a.uid}, gid {a.gid}) listening on "
                     + (", ".join(map(str, a.sockets)) or "nothing"))
    for s in world.services:
        host = f"[{s.vip}]" if s.vip.version == 6 else str(s.vip)
        lines.append(f"service {s.name} {host}:{s.port} -> {', '.join(map(str, s.endpoints))}")
    return lines


def pod_to_dict(world: World) -> dict[str, Any]:
    return {"podIPs": [str(a) for a in world.pod_ips], "peerIPs": [str(a) for a in world.peer_ips],
            "interface": world.interface,
            "apps": [{"name": a.name, "uid": a.uid, "gid": a.gid, "listen": [str(s) for s in a.sockets]}
                     for a in world.apps],
            "services": [{"name": s.name, "vip": str(s.vip), "port": s.port,
                          "endpoints": [str(e) for e in s.endpoints]} for s in world.services]}


@attrs.frozen
class Sides:
    """Both sides' configurations and where their pod came from (``pod_from``: ``A``, ``B``,
    ``--binds``, ``own``: each its own, or ``defaults``), with the sentence that says so."""

    a: Configuration
    b: Configuration
    pod_from: str
    rule: str

    @property
    def same_pod(self) -> bool:
        return pod_of(self.a.require_world()) == pod_of(self.b.require_world())


def _kind(kw: Mapping[str, str]) -> str:
    return next(k for k in ("setup", "pod", "rules", "istio") if k in kw)


def _take_pod(side: Configuration, kw: Mapping[str, str], giver: World, version: str | None,
              family: str | None) -> Configuration:
    """``side`` on ``giver``'s pod (rule 3 of the module docstring)."""
    def on_pod(world: World) -> World:
        return attrs.evolve(world, pod_ips=giver.pod_ips, peer_ips=giver.peer_ips, apps=giver.apps,
                            services=giver.services, interface=giver.interface)

    if "setup" in kw:
        return attrs.evolve(side, world=on_pod(side.require_world()))
    ports = sorted({s.port for a in giver.apps for s in a.sockets}) or [defaults.APP_PORT]
    config = default_config(kw.get("istio") or version or "current", ports)
    if not config.enable_ipv6 and (family == "ipv6" or giver.pod_ips[0].version == 6):
        config = config.evolve(enable_ipv6=True)
    if "rules" in kw:
        world = on_pod(attrs.evolve(side.require_world(), proxy=proxy_behavior(config.version, config)))
        return attrs.evolve(side, world=world)
    world = world_from_config(config, apps=giver.apps, services=giver.services, pod_ips=giver.pod_ips,
                              name=side.require_world().name, namespace=side.require_world().namespace)
    world = attrs.evolve(world, peer_ips=giver.peer_ips, interface=giver.interface)
    return attrs.evolve(side, world=world, label=f"{side.label} for ports {','.join(map(str, ports))}")


def load_sides(a: str, b: str, *, family: str | None = None, pod: str | None = None, istio: str | None = None,
               binds: str | None = None) -> Sides:
    """Load ``meshsolve diff A B``'s sides onto one pod where the rule allows (module docstring)."""
    kws: list[dict[str, str]] = []
    for spec in (a, b):
        kw = dict(parse_side(spec))
        if "setup" not in kw:
            if pod is not None and "pod" not in kw:
                kw["pod"] = pod
            if istio is not None and "istio" not in kw:
                kw["istio"] = istio
        kws.append(kw)
    sides = [load_configuration(family=family, binds=binds, **kw) for kw in kws]  # type: ignore[arg-type]
    if binds is not None:
        return Sides(sides[0], sides[1], "--binds", f"both sides take the apps, services and pod IPs of {binds}")
    kinds = [_kind(kw) for kw in kws]
    rank = [_RANK[k] for k in kinds]
    if rank[0] != rank[1]:
        giver, taker = (0, 1) if rank[0] > rank[1] else (1, 0)
        names = "AB"
        sides[taker] = _take_pod(sides[taker], kws[taker], sides[giver].require_world(), istio, family)
        return Sides(sides[0], sides[1], names[giver],
                     f"{names[taker]} ({_KINDS[kinds[taker]]}) takes the pod of {names[giver]} "
                     f"({_KINDS[kinds[giver]]}): its apps, services and addresses")
    if rank[0] == 0:  # the defaults can differ in small ways (1.2's IPv6 rules bind the app to ::)
        sides[1] = _take_pod(sides[1], kws[1], sides[0].require_world(), istio, family)
        return Sides(sides[0], sides[1], "defaults",
                     "neither side names apps, services or addresses: B takes A's, meshsolve's defaults")
    plural = {"setup": "built-in set-ups", "pod": "pod manifests"}[kinds[0]]
    same = " (the same)" if pod_of(sides[0].require_world()) == pod_of(sides[1].require_world()) else ""
    return Sides(sides[0], sides[1], "own", f"both sides are {plural}: each keeps its own pod{same}")
