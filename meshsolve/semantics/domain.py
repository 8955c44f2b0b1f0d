"""The value domains the kernel semantics is written over.

``meshsolve.semantics.kernel`` defines what the kernel does with a connection once, as Python code
over a *domain*: Booleans, addresses, ports, ids and marks, and a handful of operations on them
(``and_``, ``ite``, ``in_net``, ...). Run over :class:`Concrete` values it is the interpreter — one
flow, one path, a readable trace. Run over the solver's domain (``meshsolve.smt.domain``, Z3 terms)
the same code is the encoding — every flow at once. Neither backend has its own copy of a kernel
fact, so they cannot drift; what remains backend-specific is this small set of operations, and a
test checks them pointwise against each other.

The concrete domain is three-valued where the model cannot decide (an unmodelled match, a port
the kernel picks): such a value is an :class:`Unk` carrying the reason, and Kleene logic keeps a
decided ``False`` decided (a rule that fails on a modelled match is skipped whatever the
unmodelled part says).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import attrs

from meshsolve.model.net import IPAddress, IPNetwork
from meshsolve.model.path import EPHEMERAL_PORTS

__all__ = ["Concrete", "Domain", "Unk", "merge_records"]

T = TypeVar("T")


@attrs.frozen
class Unk:
    """A concrete value the model cannot decide, and why."""

    why: str


class Domain(Protocol):
    """The operations the kernel semantics uses. ``B`` Booleans, ``A`` addresses, ``V`` bit-vector
    values (ports 16 bits, ids and marks 32 bits); plain Python ints and bools are accepted as
    constants everywhere."""

    symbolic: bool

    def const(self, v: bool) -> Any: ...
    def and_(self, *xs: Any) -> Any: ...
    def or_(self, *xs: Any) -> Any: ...
    def not_(self, x: Any) -> Any: ...
    def ite(self, c: Any, a: Any, b: Any) -> Any: ...
    def eq(self, a: Any, b: Any) -> Any: ...
    def in_range(self, x: Any, lo: int, hi: int, what: str) -> Any: ...
    def in_net(self, x: Any, net: IPNetwork) -> Any: ...
    def addr(self, a: IPAddress) -> Any: ...
    def port(self, p: int) -> Any: ...
    def u32(self, v: int) -> Any: ...
    def kind(self, k: int) -> Any: ...
    def opaque(self, why: str) -> Any: ...
    def is_true(self, x: Any) -> bool: ...
    def is_false(self, x: Any) -> bool: ...
    def branch(self, c: Any, then: Callable[[], T], other: Callable[[], T]) -> T: ...
    def note(self, kind: str, text: Callable[[], str], rule: Any = None) -> None: ...
    def require(self, c: Any) -> None: ...


def merge_records(d: Domain, c: Any, a: T, b: T) -> T:
    """Field-wise ``ite`` of two attrs records of the same class (None fields stay None)."""
    if d.is_true(c):
        return a
    if d.is_false(c):
        return b
    values = {}
    for f in attrs.fields(type(a)):  # type: ignore[arg-type]
        x, y = getattr(a, f.name), getattr(b, f.name)
        if f.metadata.get("meta"):  # concrete-only bookkeeping: not part of the symbolic value
            values[f.name] = x if x is not None else y
        elif x is None or y is None:
            if x is not y:
                raise TypeError(f"cannot merge {f.name}: one side is None")
            values[f.name] = None
        elif attrs.has(type(x)):
            values[f.name] = merge_records(d, c, x, y)
        elif isinstance(x, str | tuple) or (isinstance(x, bool) and isinstance(y, bool) and x == y):
            if x != y:
                raise TypeError(f"cannot merge {f.name}: {x!r} vs {y!r}")
            values[f.name] = x
        else:
            values[f.name] = d.ite(c, x, y)
    return type(a)(**values)


def _flatten_and(xs: tuple[Any, ...]) -> Any:
    unknown: Unk | None = None
    for x in xs:
        if x is False:
            return False
        if isinstance(x, Unk):
            unknown = unknown or x
    return unknown if unknown is not None else True


class Concrete:
    """Python values: ``bool``/``Unk`` Booleans, ``IPv4Address``/``IPv6Address`` addresses, ``int``
    bit-vectors. ``note`` collects the readable trace through ``on_note``."""

    symbolic = False

    def __init__(self, on_note: Callable[[str, str, Any], None] | None = None) -> None:
        self._on_note = on_note

    def const(self, v: bool) -> Any:
        return bool(v)

    def and_(self, *xs: Any) -> Any:
        return _flatten_and(xs)

    def or_(self, *xs: Any) -> Any:
        unknown: Unk | None = None
        for x in xs:
            if x is True:
                return True
            if isinstance(x, Unk):
                unknown = unknown or x
        return unknown if unknown is not None else False

    def not_(self, x: Any) -> Any:
        return x if isinstance(x, Unk) else not x

    def ite(self, c: Any, a: Any, b: Any) -> Any:
        if isinstance(c, Unk):
            raise AssertionError(f"a decision on an undecided value: {c.why}")
        return a if c else b

    def eq(self, a: Any, b: Any) -> Any:
        for x in (a, b):
            if isinstance(x, Unk):
                return x
        if a is None or b is None:
            return a is b
        return bool(a == b)

    def in_range(self, x: Any, lo: int, hi: int, what: str) -> Any:
        if x is None:  # a port the kernel picks, from the ephemeral range
            e_lo, e_hi = EPHEMERAL_PORTS
            if lo <= e_lo and e_hi <= hi:
                return True
            if hi < e_lo or lo > e_hi:
                return False
            return Unk(f"the {what} is chosen by the kernel (from {e_lo}-{e_hi})")
        if isinstance(x, Unk):
            return x
        return lo <= x <= hi

    def in_net(self, x: Any, net: IPNetwork) -> Any:
        return x.version == net.version and x in net

    def addr(self, a: IPAddress) -> Any:
        return a

    def port(self, p: int) -> Any:
        return p

    def u32(self, v: int) -> Any:
        return v & 0xFFFFFFFF

    def kind(self, k: int) -> Any:
        return k

    def opaque(self, why: str) -> Any:
        return Unk(why)


    def is_true(self, x: Any) -> bool:
        return x is True

    def is_false(self, x: Any) -> bool:
        return x is False

    def branch(self, c: Any, then: Callable[[], T], other: Callable[[], T]) -> T:
        if isinstance(c, Unk):
            raise AssertionError(f"a branch on an undecided value: {c.why}")
        return then() if c else other()

    def note(self, kind: str, text: Callable[[], str], rule: Any = None) -> None:
        if self._on_note is not None:
            self._on_note(kind, text(), rule)

    def require(self, c: Any) -> None:
        """A condition every run must meet (the symbolic domain adds it as a constraint)."""


def loopback_net(version: int) -> IPNetwork:
    return ipaddress.ip_network("127.0.0.0/8" if version == 4 else "::1/128")
