"""The one semantics runs over two domains; what can still differ between them is each domain's
handful of operations. Here every operation the semantics uses is checked pointwise: the Z3 domain
applied to constants, simplified, must give what the concrete domain gives. With that, a kernel
fact written once in ``meshsolve.semantics`` means the same to the interpreter and to the solver.

Also here: the kind registry (``meshsolve.model.kinds``) is the key set of every backend."""

from __future__ import annotations

import ipaddress
from typing import Any

import z3
from hypothesis import given, settings
from hypothesis import strategies as st

from meshsolve.iptables import render as render_mod
from meshsolve.model.kinds import COARSENINGS, MATCH_KINDS, TARGET_KINDS
from meshsolve.model.path import EPHEMERAL_PORTS
from meshsolve.semantics.domain import Concrete, Unk
from meshsolve.semantics.tables import EFFECTS, MATCHES
from meshsolve.smt.domain import Z3Domain

C = Concrete()
Z4 = Z3Domain(32)
Z6 = Z3Domain(128)


def value(x: Any) -> Any:
    """A Z3 domain result as a Python value (after simplification)."""
    if isinstance(x, bool | int):
        return x
    s = z3.simplify(x)
    if z3.is_true(s):
        return True
    if z3.is_false(s):
        return False
    assert z3.is_bv_value(s), s
    return s.as_long()


bools = st.booleans()
ports = st.integers(0, 65535)
u32 = st.integers(0, 0xFFFFFFFF)


@given(st.lists(bools, max_size=4), st.lists(bools, max_size=4))
def test_and_or_not(xs: list[bool], ys: list[bool]) -> None:
    zs = [z3.BoolVal(x) for x in xs]
    assert value(Z4.and_(*zs)) == C.and_(*xs)
    assert value(Z4.or_(*zs)) == C.or_(*xs)
    for x, zx in zip(xs, zs, strict=True):
        assert value(Z4.not_(zx)) == C.not_(x)
    assert value(Z4.and_(*zs, *ys)) == C.and_(*xs, *ys)  # Python constants mix in


@given(bools, ports, ports)
def test_ite_and_eq(c: bool, a: int, b: int) -> None:
    za, zb = Z4.port(a), Z4.port(b)
    assert value(Z4.ite(z3.BoolVal(c), za, zb)) == C.ite(c, a, b)
    assert value(Z4.eq(za, zb)) == C.eq(a, b)
    assert value(Z4.eq(za, b)) == C.eq(a, b)
    assert value(Z4.eq(z3.BitVec("x", 16) + 0 - z3.BitVec("x", 16) + za, zb)) == C.eq(a, b)


@given(ports, ports, ports)
def test_in_range(x: int, lo: int, hi: int) -> None:
    lo, hi = min(lo, hi), max(lo, hi)
    assert value(Z4.in_range(Z4.port(x), lo, hi, "port")) == C.in_range(x, lo, hi, "port")
    free = z3.BitVec("p", 16)  # symbolic: the same answer once the variable is pinned
    assert value(z3.substitute(z3.simplify(z3.And(True, Z4.in_range(free, lo, hi, "port"))),
                               (free, Z4.port(x)))) == C.in_range(x, lo, hi, "port")


@given(ports, ports)
def test_a_port_the_kernel_picks_is_from_the_ephemeral_range(lo: int, hi: int) -> None:
    lo, hi = min(lo, hi), max(lo, hi)
    got = C.in_range(None, lo, hi, "source port")
    e_lo, e_hi = EPHEMERAL_PORTS
    inside = [lo <= p <= hi for p in (e_lo, e_hi, (e_lo + e_hi) // 2)]
    if isinstance(got, Unk):
        assert not (lo <= e_lo and e_hi <= hi) and not (hi < e_lo or lo > e_hi)
    else:
        assert all(v == got for v in inside)


@given(st.integers(0, 2**32 - 1), st.integers(0, 32), st.integers(0, 2**32 - 1))
def test_in_net_ipv4(addr: int, plen: int, base: int) -> None:
    net = ipaddress.ip_network((base, plen), strict=False)
    a = ipaddress.IPv4Address(addr)
    assert value(Z4.in_net(Z4.addr(a), net)) == C.in_net(a, net)
    sym = z3.BitVec("a", 32)
    assert value(z3.substitute(Z4.in_net(sym, net) if plen else z3.BoolVal(True), (sym, Z4.addr(a)))) == \
        C.in_net(a, net)


@given(st.integers(0, 2**128 - 1), st.integers(0, 128), st.integers(0, 2**128 - 1))
def test_in_net_ipv6_and_other_families(addr: int, plen: int, base: int) -> None:
    net = ipaddress.ip_network((base, plen), strict=False)
    a = ipaddress.IPv6Address(addr)
    assert value(Z6.in_net(Z6.addr(a), net)) == C.in_net(a, net)
    v4 = ipaddress.ip_network("192.0.2.0/24")
    assert value(Z6.in_net(Z6.addr(a), v4)) == C.in_net(a, v4) is False


@given(u32, u32, u32)
@settings(max_examples=200)
def test_mark_arithmetic(mark: int, value_: int, mask: int) -> None:
    # MARK --set-xmark and CONNMARK: (mark & ~mask) ^ value, written once for both domains
    concrete = (C.u32(mark) & (~mask & 0xFFFFFFFF)) ^ C.u32(value_)
    symbolic = (Z4.u32(mark) & (~mask & 0xFFFFFFFF)) ^ Z4.u32(value_)
    assert value(symbolic) == concrete
    assert value(Z4.eq(Z4.u32(mark) & mask, Z4.u32(value_ & mask))) == C.eq(C.u32(mark) & mask, C.u32(value_ & mask))


def test_branch_takes_one_side_when_decided_and_merges_otherwise() -> None:
    calls: list[str] = []

    def side(name: str, v: int) -> Any:
        def f() -> Any:
            calls.append(name)
            return Z4.port(v)
        return f

    assert value(Z4.branch(True, side("a", 1), side("b", 2))) == 1 and calls == ["a"]
    c = z3.Bool("c")
    merged = Z4.branch(c, side("a", 1), side("b", 2))
    assert value(z3.substitute(merged, (c, z3.BoolVal(False)))) == 2 and calls == ["a", "a", "b"]
    assert C.branch(False, lambda: 1, lambda: 2) == 2


def test_opaque_choices_are_unknown_concretely_and_free_symbolically() -> None:
    u = C.opaque("why")
    assert isinstance(u, Unk) and u.why == "why"
    assert C.and_(False, u) is False and C.or_(True, u) is True and isinstance(C.and_(True, u), Unk)
    z = Z3Domain(32)
    b = z.opaque("why")
    assert isinstance(b, z3.BoolRef) and not z3.is_true(b) and not z3.is_false(b)
    assert [w for w, _ in z.choices] == ["why"]


# --- the kind registry is every backend's key set ------------------------------------------------


def test_semantics_cover_the_registry_exactly() -> None:
    assert set(MATCHES) == set(MATCH_KINDS)
    assert set(EFFECTS) == set(TARGET_KINDS)


def test_coarsenings_are_registered_kinds() -> None:
    assert {c.kind for c in COARSENINGS} <= set(MATCH_KINDS) | set(TARGET_KINDS)


def test_renderer_covers_the_registry() -> None:
    assert set(render_mod.MATCH_RENDERERS) == set(MATCH_KINDS)
    assert set(render_mod.TARGET_RENDERERS) == set(TARGET_KINDS)
