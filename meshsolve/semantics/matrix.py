"""The bind matrix: every client kind against every listening socket of an app, as in kernel-facts.md.

Rows (client → destination): ``peer -> pod IP``, ``app -> loopback``, ``app -> pod IP`` and
``app -> VIP`` (a service whose endpoint is this pod at the socket's port: the self-call). Columns:
the app's sockets of the family, in the order the app lists them. A cell is the ``Result`` of that
flow (``None`` when no service lands on that port); ``Matrix.summaries`` gives the cell notation.
"""

from __future__ import annotations

from typing import Any

import attrs

from meshsolve.errors import WorldError
from meshsolve.model.net import Family, IPAddress, family_of, to_address
from meshsolve.model.world import Flow, Socket, World
from meshsolve.semantics.interpret import interpret
from meshsolve.semantics.trace import Result

__all__ = ["ROW_KINDS", "Matrix", "matrix"]

ROW_KINDS: tuple[str, ...] = ("peer -> pod IP", "app -> loopback", "app -> pod IP", "app -> VIP")


@attrs.frozen
class Matrix:
    """A computed bind matrix (rows × columns of ``Result | None``)."""

    world: str
    family: Family
    app: str
    rows: tuple[str, ...]
    columns: tuple[Socket, ...]
    cells: tuple[tuple[Result | None, ...], ...]

    def summaries(self) -> tuple[tuple[str, ...], ...]:
        """Each cell in kernel-facts notation (``-`` where there is no flow)."""
        return tuple(tuple("-" if c is None else c.summary for c in row) for row in self.cells)

    def cell(self, row: str, port: int) -> Result | None:
        """The cell of row label ``row`` and the column whose socket listens on ``port``."""
        r = self.rows.index(row)
        for c, sock in enumerate(self.columns):
            if sock.port == port:
                return self.cells[r][c]
        raise KeyError(port)

    def column_labels(self) -> tuple[str, ...]:
        return tuple(f"{s.port} ({s.bind})" for s in self.columns)

    def render(self) -> str:
        """A plain text table (stable, for terminals and golden tests)."""
        header = ("client -> destination", *self.column_labels())
        body = [(row, *cells) for row, cells in zip(self.rows, self.summaries(), strict=True)]
        widths = [max(len(line[i]) for line in (header, *body)) for i in range(len(header))]

        def fmt(line: tuple[str, ...]) -> str:
            return " | ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip()

        rule = "-+-".join("-" * w for w in widths)
        return "\n".join([f"{self.world} ({self.family}, client app {self.app!r})", fmt(header), rule,
                          *(fmt(b) for b in body)])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: rows, columns, and per cell the flow, summary, outcome and observed sides."""
        cells: list[list[dict[str, Any] | None]] = []
        for row in self.cells:
            out: list[dict[str, Any] | None] = []
            for c in row:
                out.append(None if c is None else {
                    "flow": str(c.flow), "summary": c.summary, "outcome": type(c.outcome).__name__,
                    "observed": list(c.observed), "detail": str(c.outcome)})
            cells.append(out)
        return {"world": self.world, "family": self.family, "app": self.app, "rows": list(self.rows),
                "columns": [{"bind": str(s.bind), "port": s.port} for s in self.columns], "cells": cells}


def _self_call(world: World, pod: IPAddress, port: int) -> tuple[IPAddress, int, int] | None:
    """A service VIP:port with an endpoint at ``pod:port`` → (vip, service port, endpoint index)."""
    for svc in world.services:
        for i, ep in enumerate(svc.endpoints):
            if ep.address == pod and ep.port == port and svc.vip.version == pod.version:
                return svc.vip, svc.port, i
    return None


def matrix(world: World, *, family: Family | None = None, app: str | None = None) -> Matrix:
    """Run every client kind against every socket of ``app`` (default: the first app) in ``family``."""
    fam: Family = family or (world.families[0] if world.families else "ipv4")
    pod = world.pod_ip(fam)
    if pod is None:
        raise WorldError(f"world {world.name!r} has no {fam} pod IP")
    if not world.apps:
        raise WorldError(f"world {world.name!r} has no app to build a matrix for")
    the_app = world.app(app) if app is not None else world.apps[0]
    columns = tuple(s for s in the_app.sockets if family_of(s.bind) == fam)
    loop = to_address("127.0.0.1" if fam == "ipv4" else "::1")
    rows: list[tuple[Result | None, ...]] = []
    for kind in ROW_KINDS:
        row: list[Result | None] = []
        for sock in columns:
            flow: Flow | None
            if kind == "peer -> pod IP":
                flow = Flow("peer", pod, sock.port)
            elif kind == "app -> loopback":
                flow = Flow(the_app.name, loop, sock.port)
            elif kind == "app -> pod IP":
                flow = Flow(the_app.name, pod, sock.port)
            else:
                hit = _self_call(world, pod, sock.port)
                flow = None if hit is None else Flow(the_app.name, hit[0], hit[1], endpoint=hit[2])
            row.append(None if flow is None else interpret(world, flow))
        rows.append(tuple(row))
    return Matrix(world.name, fam, the_app.name, ROW_KINDS, columns, tuple(rows))
