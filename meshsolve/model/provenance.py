"""Where each part of a world came from: *given* by an input, *inferred* from one, or *assumed*.

A world built from partial inputs (a rules dump without the pod, a manifest without bind addresses)
has parts nobody gave. Each part is recorded as a :class:`Part` with its provenance, so an answer
that rests on an assumption can name it, and an assumption is never printed as a fact.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

__all__ = ["Assumed", "Given", "Inferred", "Part", "Provenance", "assumed_parts"]


@attrs.frozen
class Given:
    """Taken from an input: ``source`` is a file (with ``line``) or a command-line option."""

    source: str
    line: int | None = None

    def __str__(self) -> str:
        return f"given in {self.source}" + (f":{self.line}" if self.line is not None else "")


@attrs.frozen
class Inferred:
    """Worked out from an input: ``basis`` says from what (``nat::ISTIO_INBOUND#1 (rules.txt:12)``)."""

    basis: str

    def __str__(self) -> str:
        return f"inferred from {self.basis}"


@attrs.frozen
class Assumed:
    """Supposed because no input says: ``why`` (what is missing), ``remedy`` (how to give it)."""

    why: str
    remedy: str = ""

    def __str__(self) -> str:
        return f"assumed: {self.why}" + (f"; {self.remedy}" if self.remedy else "")


Provenance = Given | Inferred | Assumed


def _strs(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


@attrs.frozen
class Part:
    """One part of a world (``kind``: pod-ip, peer-ip, app, listener, proxy, version, rules, routing,
    services) described in words, with its provenance. ``mentions`` are the strings (an address, an
    app name, ``ip:port``) whose appearance in a finding's witness means the finding rests on it;
    ``everywhere`` marks a part every answer rests on (the proxy's behaviour)."""

    kind: str
    what: str
    provenance: Provenance
    mentions: tuple[str, ...] = attrs.field(default=(), converter=_strs)
    everywhere: bool = False

    @property
    def assumed(self) -> bool:
        return isinstance(self.provenance, Assumed)

    def __str__(self) -> str:
        return f"{self.what} ({self.provenance})"


def assumed_parts(parts: Iterable[Part]) -> tuple[Part, ...]:
    """The parts that rest on an assumption."""
    return tuple(p for p in parts if p.assumed)
