"""The values the input door hands out: a loaded world with its provenance, and input problems."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from meshsolve.model.provenance import Assumed, Part, Provenance, assumed_parts
from meshsolve.model.world import World

if TYPE_CHECKING:
    from meshsolve.analysis.properties import Property

__all__ = ["Loaded", "Problem", "address_parts"]


@attrs.frozen
class Problem:
    """Something the inputs themselves show is wrong, reported as a finding (``code`` is a catalog
    code): a failed istio-init, rules not installed whole, a version contradiction. ``blocking``
    problems leave nothing to analyse."""

    code: str
    message: str
    reference: str | None = None  # file:line
    blocking: bool = False


@attrs.frozen
class Loaded:
    """The world built from what a user gave, and how: ``label`` in words, ``notes`` (what was read,
    skipped or assumed), ``parts`` (each part of the world with its provenance), ``problems``.
    ``world`` is ``None`` when a blocking problem leaves nothing to analyse. ``defaults``: what
    ``check`` proves when not told, when the world's kind of capture has its own (an ambient pod's
    A1–A5), else None (``meshsolve.inputs.properties.check_defaults``)."""

    world: World | None
    label: str
    notes: tuple[str, ...] = ()
    app_references: tuple[tuple[str, str], ...] = ()  # (app name, file:line)
    parts: tuple[Part, ...] = ()
    problems: tuple[Problem, ...] = ()
    version: str | None = None  # the Istio version whose sidecar the world has
    representative: int | None = None  # the port standing for every port no rule names, if any
    excluded: tuple[int, ...] = ()  # with it: the inbound ports the rules leave to the app on purpose
    defaults: tuple[Property, ...] | None = None

    @property
    def assumptions(self) -> tuple[Part, ...]:
        return assumed_parts(self.parts)

    @property
    def blocked(self) -> bool:
        return self.world is None

    def require_world(self) -> World:
        """The world; a ``SpecError`` naming the blocking problem when there is none."""
        if self.world is None:
            from meshsolve.errors import SpecError

            first = next((p for p in self.problems if p.blocking), None)
            raise SpecError(first.message if first else "nothing to analyse", source=self.label)
        return self.world


def address_parts(world: World, given: Provenance | None) -> list[Part]:
    """The parts for the world's pod IPs (``given``, else assumed) and its stand-in peer."""
    out = []
    for a in world.pod_ips:
        prov = given or Assumed("the inputs give no pod IP: a documentation address stands for it",
                                "give status.podIPs (--pod) or pod_ips (--binds)")
        out.append(Part("pod-ip", f"the pod IP {a}", prov, (str(a),)))
    for a in world.peer_ips:
        # a stand-in for every remote peer, as the properties' scope says; not pinned on each finding
        out.append(Part("peer-ip", f"a remote peer at {a}",
                        Assumed("a documentation address stands for any remote peer")))
    return out


# kept for callers of the earlier name
Configuration = Loaded
