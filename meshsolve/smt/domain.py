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


# Z3's C library directly (z3-solver is pinned): the Python wrappers (z3.If, z3.And, ==) check and
# coerce their arguments and ask Z3 for its error code after every call, which was most of an
# encoding's time. Here the sorts are right by construction; a constructor that fails anyway
# returns a null term, and then the checked wrapper is called again so that Z3's error is raised.


def _raw(checked: Any) -> Any:
    """The C function a ``z3core`` wrapper calls (it keeps it with its error check as a default)."""
    return checked.__defaults__[0].f


_GET_BOOL = _raw(z3.Z3_get_bool_value)
_IS_NUMERAL = _raw(z3.Z3_is_numeral_ast)
_IS_EQ = _raw(z3.Z3_is_eq_ast)
_INC_REF = _raw(z3.Z3_inc_ref)
_L_TRUE, _L_FALSE = z3.Z3_L_TRUE, z3.Z3_L_FALSE
_BoolRef, _BitVecRef = z3.BoolRef, z3.BitVecRef


def _const_bool(x: Any) -> bool | None:
    """True/False for a Python bool or a Z3 ``true``/``false`` constant, else None (one C call)."""
    if x is True or x is False:
        return bool(x)
    if isinstance(x, _BoolRef):
        v = _GET_BOOL(x.ctx.ref(), x.ast)
        if v == _L_TRUE:
            return True
        if v == _L_FALSE:
            return False
    return None


def _numeral(x: Any) -> bool:
    return isinstance(x, _BitVecRef) and bool(_IS_NUMERAL(x.ctx.ref(), x.ast))


def _same(a: Any, b: Any) -> bool:
    """The same Z3 term (hash-consed: structurally equal terms are one)."""
    return bool(_IS_EQ(a.ctx.ref(), a.ast, b.ast))


def _wrap(cls: Any, ast: Any, ctx: Any, checked: Callable[[], Any]) -> Any:
    """``cls(ast, ctx)`` without the wrapper's checks; ``checked`` rebuilds it through the checked
    API when Z3 gave no term (so that Z3's error is raised)."""
    if not ast:
        checked()
        raise AssertionError("Z3 returned no term and no error")  # pragma: no cover
    r = cls.__new__(cls)
    r.ast = ast
    r.ctx = ctx
    _INC_REF(ctx.ref(), ast)
    return r


_ast_array = z3.z3._to_ast_array
_MK_ITE, _MK_EQ, _MK_NOT = _raw(z3.Z3_mk_ite), _raw(z3.Z3_mk_eq), _raw(z3.Z3_mk_not)


def _mk_ite(c: Any, a: Any, b: Any) -> Any:
    ctx = c.ctx
    return _wrap(type(a), _MK_ITE(ctx.ref(), c.ast, a.ast, b.ast), ctx,
                 lambda: z3.Z3_mk_ite(ctx.ref(), c.ast, a.ast, b.ast))


def _mk_eq(a: Any, b: Any) -> Any:
    ctx = a.ctx
    return _wrap(_BoolRef, _MK_EQ(ctx.ref(), a.ast, b.ast), ctx, lambda: z3.Z3_mk_eq(ctx.ref(), a.ast, b.ast))


def _mk_not(x: Any) -> Any:
    ctx = x.ctx
    return _wrap(_BoolRef, _MK_NOT(ctx.ref(), x.ast), ctx, lambda: z3.Z3_mk_not(ctx.ref(), x.ast))


def _mk_bv2(fn: Any, a: Any, b: Any) -> Any:
    """A bit-vector operation of two same-width bit-vectors (``fn`` from the C API)."""
    ctx = a.ctx
    return z3.BitVecRef(fn(ctx.ref(), a.as_ast(), b.as_ast()), ctx)


def _mk_cmp(fn: Any, a: Any, b: Any) -> Any:
    """A bit-vector comparison (``fn`` from the C API)."""
    ctx = a.ctx
    return z3.BoolRef(fn(ctx.ref(), a.as_ast(), b.as_ast()), ctx)


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
        self._open: Any = None  # the last condition ``ite`` found undecided
        self.where = ""  # the rule being encoded (named in the reasons of its opaque choices)

    @property
    def made(self) -> int:
        """How many fresh constants this domain has made (a term built without making one is
        the same term each time it is built again)."""
        return self._n

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
        return (not c) if c is not None else _mk_not(x)

    def ite(self, c: Any, a: Any, b: Any) -> Any:
        if c is self._open:  # a record merges field by field on one condition: asked once
            k = None
        else:
            k = _const_bool(c)
            if k is not None:
                return a if k else b
            self._open = c
        if a is b:
            return a
        if isinstance(a, bool) or isinstance(b, bool):
            ka, kb = _const_bool(a), _const_bool(b)
            if ka is True and kb is False:
                return c
            if ka is False and kb is True:
                return _mk_not(c)
            return z3.If(c, _lift(a), _lift(b))
        if isinstance(a, int):
            a = self._bv(a, b.size())
        elif isinstance(b, int):
            b = self._bv(b, a.size())
        if _same(a, b):
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
        return _mk_bool(z3.Z3_mk_and, [_mk_cmp(z3.Z3_mk_bvuge, x, self._bv(lo, w)),
                                       _mk_cmp(z3.Z3_mk_bvule, x, self._bv(hi, w))])

    def in_net(self, x: Any, net: IPNetwork) -> Any:
        if (32 if net.version == 4 else 128) != self.w:
            return False
        if net.prefixlen == 0:
            return True
        mask = ((1 << net.prefixlen) - 1) << (self.w - net.prefixlen)
        if _numeral(x):
            return (x.as_long() & mask) == int(net.network_address)
        if net.prefixlen == self.w:
            return _mk_eq(x, self._bv(int(net.network_address), self.w))
        return _mk_eq(_mk_bv2(z3.Z3_mk_bvand, x, self._bv(mask, self.w)), self._bv(int(net.network_address), self.w))

    def addr(self, a: IPAddress) -> Any:
        if (32 if a.version == 4 else 128) != self.w:
            raise ValueError(f"{a} is not an address of this {self.w}-bit family")
        return self._bv(int(a), self.w)

    def addr_bits(self, v: int) -> Any:
        """The address whose bits are ``v`` (a cached constant)."""
        return self._bv(v, self.w)

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

    def renew(self, why: str, sort: Any) -> Any:
        """A new opaque choice for the same reason as another (``why`` as ``choices`` lists it)."""
        b = self.fresh("opaque", sort)
        self.choices.append((why, b))
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
