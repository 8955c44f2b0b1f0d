"""The Z3 domain: the kernel semantics' operations over bit-vector terms (see
``meshsolve.semantics.domain``). Addresses are bit-vectors of the family's width, ports 16 bits,
ids and marks 32 bits, decision and outcome codes 8 bits. Constant conditions fold, so a branch on
a decided condition builds only one side; an undecided branch builds both and merges them field
by field with if-then-else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import attrs
import z3

from meshsolve.model.net import IPAddress, IPNetwork
from meshsolve.semantics.domain import merge_records

__all__ = ["Z3Domain"]

T = TypeVar("T")


def _lift(x: Any) -> Any:
    return z3.BoolVal(x) if isinstance(x, bool) else x


_GET_BOOL = z3.Z3_get_bool_value
_IS_NUMERAL = z3.Z3_is_numeral_ast
_L_TRUE, _L_FALSE = z3.Z3_L_TRUE, z3.Z3_L_FALSE


def _const_bool(x: Any) -> bool | None:
    """True/False for a Python bool or a Z3 ``true``/``false`` constant, else None (one C call)."""
    if x is True or x is False:
        return bool(x)
    if isinstance(x, z3.BoolRef):
        v = _GET_BOOL(x.ctx_ref(), x.as_ast())
        if v == _L_TRUE:
            return True
        if v == _L_FALSE:
            return False
    return None


def _numeral(x: Any) -> bool:
    return isinstance(x, z3.BitVecRef) and bool(_IS_NUMERAL(x.ctx_ref(), x.as_ast()))


# Z3's C API directly: the Python wrappers (z3.If, z3.And, ==) check and coerce their arguments,
# which is most of an encoding's time; here the sorts are right by construction.
_ast_array = z3.z3._to_ast_array


def _mk_ite(c: Any, a: Any, b: Any) -> Any:
    ctx = c.ctx
    return type(a)(z3.Z3_mk_ite(ctx.ref(), c.as_ast(), a.as_ast(), b.as_ast()), ctx)


def _mk_eq(a: Any, b: Any) -> Any:
    ctx = a.ctx
    return z3.BoolRef(z3.Z3_mk_eq(ctx.ref(), a.as_ast(), b.as_ast()), ctx)


def _mk_bool(fn: Any, parts: list[Any]) -> Any:
    ctx = parts[0].ctx
    arr, n = _ast_array(parts)
    return z3.BoolRef(fn(ctx.ref(), n, arr), ctx)


class Z3Domain:
    """Z3 terms for one address family (``width`` 32 or 128). Decided Booleans stay Python bools, so
    constant conditions fold without asking Z3. Opaque choices and the kernel's free picks are
    fresh constants named with ``tag``; ``choices`` lists them with the reason, and ``constraints``
    collects what every run must meet."""

    symbolic = True

    def __init__(self, width: int, tag: str = "") -> None:
        self.w = width
        self.tag = tag
        self.choices: list[tuple[str, Any]] = []
        self.constraints: list[Any] = []
        self._n = 0
        self._vals: dict[tuple[int, int], Any] = {}
        self.where = ""  # the rule being encoded (named in the reasons of its opaque choices)

    def fresh(self, prefix: str, sort: Any) -> Any:
        self._n += 1
        return z3.Const(f"{self.tag}{prefix}!{self._n}", sort)

    def _bv(self, v: int, w: int) -> Any:
        key = (v, w)
        hit = self._vals.get(key)
        if hit is None:
            hit = self._vals[key] = z3.BitVecVal(v, w)
        return hit

    # Booleans --------------------------------------------------------------------------------

    def const(self, v: bool) -> Any:
        return bool(v)

    def and_(self, *xs: Any) -> Any:
        parts = []
        for x in xs:
            c = _const_bool(x)
            if c is False:
                return False
            if c is None:
                parts.append(x)
        if not parts:
            return True
        return parts[0] if len(parts) == 1 else _mk_bool(z3.Z3_mk_and, parts)

    def or_(self, *xs: Any) -> Any:
        parts = []
        for x in xs:
            c = _const_bool(x)
            if c is True:
                return True
            if c is None:
                parts.append(x)
        if not parts:
            return False
        return parts[0] if len(parts) == 1 else _mk_bool(z3.Z3_mk_or, parts)

    def not_(self, x: Any) -> Any:
        c = _const_bool(x)
        return (not c) if c is not None else z3.Not(x)

    def ite(self, c: Any, a: Any, b: Any) -> Any:
        k = _const_bool(c)
        if k is not None:
            return a if k else b
        if a is b:
            return a
        if isinstance(a, bool) or isinstance(b, bool):
            ka, kb = _const_bool(a), _const_bool(b)
            if ka is True and kb is False:
                return c
            if ka is False and kb is True:
                return z3.Not(c)
            return z3.If(c, _lift(a), _lift(b))
        if isinstance(a, int):
            a = self._bv(a, b.size())
        elif isinstance(b, int):
            b = self._bv(b, a.size())
        if a.eq(b):
            return a
        return _mk_ite(c, a, b)

    def is_true(self, x: Any) -> bool:
        return _const_bool(x) is True

    def is_false(self, x: Any) -> bool:
        return _const_bool(x) is False

    # values ------------------------------------------------------------------------------------

    def eq(self, a: Any, b: Any) -> Any:
        if isinstance(a, int) and isinstance(b, int):
            return a == b
        if isinstance(b, int):
            if _numeral(a):
                return a.as_long() == b
            return _mk_eq(a, self._bv(b, a.size()))
        if isinstance(a, int):
            return self.eq(b, a)
        if _numeral(a) and _numeral(b):
            return bool(a.eq(b))
        return _mk_eq(a, b)

    def in_range(self, x: Any, lo: int, hi: int, what: str) -> Any:
        w = x.size()
        if lo == 0 and hi >= (1 << w) - 1:
            return True
        if lo == hi:
            return self.eq(x, lo)
        if _numeral(x):
            return lo <= x.as_long() <= hi
        return z3.And(z3.UGE(x, self._bv(lo, w)), z3.ULE(x, self._bv(hi, w)))

    def in_net(self, x: Any, net: IPNetwork) -> Any:
        if (32 if net.version == 4 else 128) != self.w:
            return False
        if net.prefixlen == 0:
            return True
        mask = ((1 << net.prefixlen) - 1) << (self.w - net.prefixlen)
        if _numeral(x):
            return (x.as_long() & mask) == int(net.network_address)
        if net.prefixlen == self.w:
            return x == self._bv(int(net.network_address), self.w)
        return (x & self._bv(mask, self.w)) == self._bv(int(net.network_address), self.w)

    def addr(self, a: IPAddress) -> Any:
        if (32 if a.version == 4 else 128) != self.w:
            raise ValueError(f"{a} is not an address of this {self.w}-bit family")
        return self._bv(int(a), self.w)

    def port(self, p: int) -> Any:
        return self._bv(p, 16)

    def u32(self, v: int) -> Any:
        return self._bv(v & 0xFFFFFFFF, 32)

    def kind(self, k: int) -> Any:
        return self._bv(k, 8)

    # choices -----------------------------------------------------------------------------------

    def opaque(self, why: str) -> Any:
        b = self.fresh("opaque", z3.BoolSort())
        self.choices.append((f"{self.where}: {why}" if self.where else why, b))
        return b

    def require(self, c: Any) -> None:
        if _const_bool(c) is not True:
            self.constraints.append(_lift(c))

    # control -----------------------------------------------------------------------------------

    def branch(self, c: Any, then: Callable[[], T], other: Callable[[], T]) -> T:
        if self.is_true(c):
            return then()
        if self.is_false(c):
            return other()
        a, b = then(), other()
        if attrs.has(type(a)):
            return merge_records(self, c, a, b)
        out: T = self.ite(c, a, b)
        return out

    def note(self, kind: str, text: Callable[[], str], rule: Any = None) -> None:
        """The symbolic run keeps no trace (the interpreter's replay of a witness does)."""
