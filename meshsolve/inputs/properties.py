"""The small languages of the command line: ``--property`` specs and ``diff`` sides."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from meshsolve.analysis.properties import (
    Bypass,
    CaptureInbound,
    CaptureOutbound,
    NoExposure,
    NoLoops,
    Observation,
    Property,
    Reachable,
    default_properties,
)
from meshsolve.errors import SpecError, WorldError
from meshsolve.istio import normalise_version
from meshsolve.model.net import family_of
from meshsolve.model.world import World

__all__ = ["check_defaults", "family_label", "parse_properties", "parse_property", "parse_side", "property_ports"]


# ------------------------------------------------------------------------------------------------
# diff sides


def parse_side(spec: str) -> dict[str, str]:
    """One side of ``meshsolve diff``: ``A``..``E`` or ``setup:X``; an Istio version (``1.2``,
    ``current``) or ``istio:V``; ``rules:PATH`` or ``pod:PATH``; or a file (``.yaml``/``.yml`` is a
    pod manifest, anything else a rules dump). Returns ``load_configuration`` keyword arguments."""
    text = spec.strip()
    kind, sep, rest = text.partition(":")
    if sep and kind in ("setup", "istio", "rules", "pod"):
        return {kind: rest}
    if text.upper() in ("A", "B", "C", "D", "E"):
        return {"setup": text.upper()}
    try:
        return {"istio": normalise_version(text)}
    except SpecError:
        pass
    if Path(text).is_file():
        return {"pod": text} if text.endswith((".yaml", ".yml", ".json")) else {"rules": text}
    raise SpecError(f"{spec!r} is not a set-up (A..E), an Istio version, or a file", source="diff")


# ------------------------------------------------------------------------------------------------
# properties


def _fields(text: str) -> list[str]:
    """Split on ':' outside brackets (``observe:app:[2001:db8::1]:9001``)."""
    out, cur, depth = [], "", 0
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == ":" and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [f.strip().strip("[]") for f in out]


def _port(value: str, spec: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise SpecError(f"property {spec!r}: {value!r} is not a port", source="--property")
    return int(value)


def parse_property(spec: str, world: World, *, representative: int | None = None,
                   excluded: Sequence[int] = ()) -> tuple[Property, ...]:
    """One ``--property`` value (see ``docs/cli.md``):

    ``default`` · ``capture-out`` · ``capture-in[:PORT,PORT]`` · ``bypass`` · ``no-loops`` ·
    ``no-exposure`` · ``reach:CLIENT:PORT[:DST]`` · ``observe:CLIENT:DST:PORT[:SIDES]`` where CLIENT
    is ``peer``, ``proxy`` or an app name, and SIDES is ``out,in`` (default), ``out`` or ``in``.
    """
    f = _fields(spec)
    head, args = f[0].lower(), f[1:]

    def need(lo: int, hi: int, usage: str) -> None:
        if not lo <= len(args) <= hi:
            raise SpecError(f"property {spec!r}: expected {usage}", source="--property")

    try:
        if head == "default":
            need(0, 0, "default")
            return check_defaults(world, representative=representative, excluded=excluded)
        if head in ("capture-out", "capture-outbound"):
            need(0, 0, "capture-out")
            return (CaptureOutbound(),)
        if head in ("capture-in", "capture-inbound"):
            need(0, 1, "capture-in[:PORT,PORT...]")
            if args:
                return (CaptureInbound(ports=tuple(_port(p, spec) for p in args[0].split(","))),)
            return (CaptureInbound(),)
        if head == "bypass":
            need(0, 0, "bypass")
            return (Bypass(),)
        if head in ("no-loops", "noloops"):
            need(0, 0, "no-loops")
            return (NoLoops(),)
        if head == "no-exposure":
            need(0, 0, "no-exposure")
            return (NoExposure(),)
        if head == "reach":
            need(2, 3, "reach:CLIENT:PORT[:DST]")
            _client(args[0], world, spec)
            return (Reachable(args[0], _port(args[1], spec), dst=args[2] if len(args) > 2 else None),)
        if head in ("observe", "observed"):
            need(3, 4, "observe:CLIENT:DST:PORT[:SIDES]")
            _client(args[0], world, spec)
            sides = tuple(s.strip() for s in (args[3] if len(args) > 3 else "out,in").split(","))
            if not sides or any(s not in ("out", "in") for s in sides):
                raise SpecError(f"property {spec!r}: sides are out, in or out,in", source="--property")
            return (Observation(args[0], args[1], _port(args[2], spec), sides=sides),)  # type: ignore[arg-type]
    except WorldError as exc:
        raise SpecError(f"property {spec!r}: {exc}", source="--property") from None
    raise SpecError(f"property {spec!r}: unknown kind {head!r} (default, capture-out, capture-in, bypass, "
                    "no-loops, no-exposure, reach, observe)", source="--property")


def _client(name: str, world: World, spec: str) -> None:
    if name not in ("peer", "proxy") and name not in {a.name for a in world.apps}:
        apps = ", ".join(a.name for a in world.apps) or "none"
        raise SpecError(f"property {spec!r}: no client {name!r} (peer, proxy or an app: {apps})",
                        source="--property")


def check_defaults(world: World, *, representative: int | None = None, excluded: Sequence[int] = (),
                   defaults: tuple[Property, ...] | None = None) -> tuple[Property, ...]:
    """What ``check`` proves when not told: the world's own ``defaults`` when its kind of capture has
    them (an ambient pod's A1–A5, ``Loaded.defaults``), else ``analysis.properties.default_properties``
    (capture both ways, bypass, no loops, no exposure) and, for each app port not bound to loopback
    only, that a peer reaches it via the pod IP (the seed's question). ``representative`` is a port
    that stands for every port no rule names: its property says so in its title. When inbound
    capture is asked of every port (a representative, or no app port at all), ``excluded`` (the
    ports the rules leave alone on purpose) are left out of it."""
    if defaults is not None:
        return defaults
    ports = sorted({s.port for a in world.apps for s in a.sockets if not s.bind.is_loopback})
    props = default_properties(world)
    every_port = representative is not None or not ports
    if every_port and excluded:  # every port is asked: but those the rules leave alone on purpose
        props = tuple(CaptureInbound(exclude_ports=tuple(excluded)) if isinstance(p, CaptureInbound) else p
                      for p in props)
    reach = tuple(Reachable("peer", p, name=(f"peer reaches a listener on port {p}, which stands for every "
                                             "port no rule names" if p == representative else ""))
                  for p in ports)
    return (*props, *reach)


def parse_properties(specs: Sequence[str], world: World, *, representative: int | None = None,
                     excluded: Sequence[int] = (), defaults: tuple[Property, ...] | None = None
                     ) -> tuple[Property, ...]:
    """All ``--property`` values (none, or ``default``: ``check_defaults``), duplicates removed."""
    if not specs:
        return check_defaults(world, representative=representative, excluded=excluded, defaults=defaults)
    out: list[Property] = []
    for s in specs:
        got = (check_defaults(world, representative=representative, excluded=excluded, defaults=defaults)
               if s.strip().lower() == "default" else
               parse_property(s, world, representative=representative, excluded=excluded))
        for p in got:
            if p not in out:
                out.append(p)
    return tuple(out)


def family_label(world: World) -> str:
    return ",".join(family_of(a) for a in world.pod_ips)


def property_ports(specs: Sequence[str]) -> tuple[int, ...]:
    """The app ports ``reach``/``observe`` specs name (where a listener must be for them to mean
    anything), read from the text alone."""
    out: list[int] = []
    for spec in specs:
        f = _fields(spec)
        head = f[0].lower()
        port = f[2] if head == "reach" and len(f) >= 3 else f[3] if head in ("observe", "observed") and len(f) >= 4 \
            else None
        if port is not None and port.isdigit() and 0 < int(port) < 65536 and int(port) not in out:
            out.append(int(port))
    return tuple(out)
