"""What the mesh profiles share: the set-up value they produce, a command-line reader for their init
tools' flags (pflag's ``--name value`` / ``--name=value`` and Go flag's ``-name``), and value readers
that name the flag and what was expected."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import attrs

from meshsolve.errors import SpecError
from meshsolve.model.net import Family, IPNetwork, PortRange
from meshsolve.model.rules import Chain, CommentMatch, Rule, Ruleset, Rulesets, Table
from meshsolve.model.world import ProxyBehavior

__all__ = [
    "FlagKind",
    "MeshSetup",
    "bool_value",
    "cidrs",
    "int_value",
    "port",
    "port_ranges",
    "read_flags",
    "without_comments",
]


def _notes(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


def _ints(values: Iterable[int]) -> tuple[int, ...]:
    return tuple(dict.fromkeys(int(v) for v in values))


@attrs.frozen
class MeshSetup:
    """One pod's capture set-up under a mesh: the rules its init step writes, what its proxy does with
    the connections they hand it, and where the settings came from.

    ``mesh`` is ``istio``, ``linkerd``, ``kuma`` or ``consul``; ``basis`` says what the settings were
    read from (an init container's arguments, annotations, the mesh's defaults); ``notes`` what was
    assumed on the way. ``exempt_*`` are what the mesh's own rules leave uncaptured on purpose: the
    processes (the proxy's uid, its gid where the rules exempt it, excluded uids; a uid excluded for
    some ports only counts as excluded) and the outbound ports and CIDRs."""

    mesh: str
    version: str
    rules: Rulesets
    proxy: ProxyBehavior
    basis: str
    notes: tuple[str, ...] = attrs.field(default=(), converter=_notes)
    exempt_uids: tuple[int, ...] = attrs.field(default=(), converter=_ints)
    exempt_gids: tuple[int, ...] = attrs.field(default=(), converter=_ints)
    exempt_ports: tuple[int, ...] = attrs.field(default=(), converter=_ints)
    exempt_cidrs: tuple[str, ...] = attrs.field(default=(), converter=_notes)

    @property
    def label(self) -> str:
        return f"{self.mesh} {self.version} ({self.basis})"


FlagKind = Literal["str", "list", "multi", "bool", "int"]


def read_flags(argv: Sequence[str], spec: Mapping[str, FlagKind], *, aliases: Mapping[str, str] | None = None,
               source: str = "<flags>", single_dash: bool = False,
               ignore: Iterable[str] = ()) -> dict[str, Any]:
    """``argv`` → ``{flag: value}`` for the flags of ``spec`` (the long names, without dashes).

    ``--name value``, ``--name=value`` (and ``-name`` with ``single_dash``, as Go's flag package
    reads it); ``aliases`` maps short or old names to long ones. A ``list`` flag may repeat; its
    comma-separated values accumulate. A ``multi`` flag may repeat; each value is one item.
    A ``bool`` flag takes no value unless written ``--name=false``.
    Flags in ``ignore`` (with their value when they take one: ``name=str``) are skipped; any other
    flag, and a word that is not a flag, is a ``SpecError`` naming it."""
    aliases = aliases or {}
    skip: dict[str, bool] = {}
    for item in ignore:
        name, _, kind = item.partition("=")
        skip[name] = bool(kind)
    out: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        word = argv[i]
        i += 1
        m = re.fullmatch(r"(--?)([A-Za-z0-9][\w.-]*)(?:=(.*))?", word, re.DOTALL)
        if m is None or (m.group(1) == "-" and not single_dash and len(m.group(2)) > 1):
            raise SpecError(f"{word!r}: expected a flag (--name value)", source=source)
        name = aliases.get(m.group(2), m.group(2))
        inline = m.group(3)
        if name in skip:
            if skip[name] and inline is None:
                i += 1
            continue
        if name not in spec:
            raise SpecError(f"unknown flag {word!r} (known: {', '.join('--' + k for k in spec)})", source=source)
        kind = spec[name]
        if kind == "bool":
            out[name] = bool_value(inline, f"--{name}", source) if inline is not None else True
            continue
        if inline is None:
            if i >= len(argv):
                raise SpecError(f"flag --{name} needs a value", source=source)
            inline = argv[i]
            i += 1
        if kind == "list":
            out.setdefault(name, [])
            out[name].extend(v.strip() for v in inline.split(",") if v.strip())
        elif kind == "multi":
            out.setdefault(name, []).append(inline)
        elif kind == "int":
            out[name] = int_value(inline, f"--{name}", source)
        else:
            out[name] = inline
    return out


def bool_value(text: str | bool, what: str, source: str) -> bool:
    if isinstance(text, bool):
        return text
    low = str(text).strip().lower()
    if low in ("1", "t", "true", "yes", "on", "enabled"):
        return True
    if low in ("0", "f", "false", "no", "off", "disabled", ""):
        return False
    raise SpecError(f"{what}: expected true or false, got {text!r}", source=source)


def int_value(text: str | int, what: str, source: str, *, lo: int = 0, hi: int = 2**32 - 1) -> int:
    try:
        value = int(str(text).strip(), 10)
    except ValueError:
        raise SpecError(f"{what}: expected a number, got {text!r}", source=source) from None
    if not lo <= value <= hi:
        raise SpecError(f"{what}: {value} is outside {lo}..{hi}", source=source)
    return value


def port(text: str | int, what: str, source: str) -> int:
    return int_value(text, what, source, lo=1, hi=65535)


def port_ranges(values: Iterable[str | int], what: str, source: str) -> tuple[PortRange, ...]:
    """``"4190"``, ``"4000-5000"`` or ``"4000:5000"`` items → port ranges (order kept, repeats dropped)."""
    out: list[PortRange] = []
    for v in values:
        text = str(v).strip()
        if not text:
            continue
        first, sep, last = text.replace(":", "-").partition("-")
        lo = port(first, what, source)
        hi = port(last, what, source) if sep else lo
        if lo > hi:
            raise SpecError(f"{what}: empty port range {text!r}", source=source)
        r = PortRange(lo, hi)
        if r not in out:
            out.append(r)
    return tuple(out)


def cidrs(values: Iterable[str], what: str, source: str) -> tuple[IPNetwork, ...]:
    """Addresses or CIDRs (host bits allowed, as iptables stores them: ``172.32.16.8/16`` →
    ``172.32.0.0/16``)."""
    out: list[IPNetwork] = []
    for v in values:
        text = str(v).strip()
        if not text:
            continue
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise SpecError(f"{what}: expected an address or CIDR, got {text!r}", source=source) from None
        if net not in out:
            out.append(net)
    return tuple(out)


def of_family(nets: Iterable[IPNetwork], family: Family) -> tuple[IPNetwork, ...]:
    want = 4 if family == "ipv4" else 6
    return tuple(n for n in nets if n.version == want)


def without_comments(rulesets: Rulesets) -> Rulesets:
    """The same rules without ``-m comment`` (for comparing with outputs whose comments were
    stripped, or written in other words): comments do not change what a rule does."""
    def ruleset(rs: Ruleset) -> Ruleset:
        tables = []
        for t in rs.tables:
            chains = [Chain(c.name, tuple(Rule(tuple(m for m in r.matches if not isinstance(m, CommentMatch)),
                                               r.target) for r in c.rules), c.policy) for c in t.chains]
            tables.append(Table(t.name, tuple(chains), nft=t.nft))
        return Ruleset(rs.family, tuple(tables), rs.nft)
    return Rulesets(ruleset(rulesets.ipv4), ruleset(rulesets.ipv6))
