"""What keeps large rulesets fast without changing an answer: a MARK's new mark simplified apart
from the marks the packet came in with (``smt.encode.Traversal.simple``), and Z3's rewriter
settings scoped to a search (``smt.solve.rewriting``)."""

from __future__ import annotations

import pytest
import z3
from z3terms import constants, subterms

import meshsolve.smt.encode as E
from benchmarks.kubeproxy import ISTIO_CONFIG, kube_dump
from meshsolve.analysis.check import Proved, check
from meshsolve.analysis.properties import CaptureOutbound
from meshsolve.analysis.worlds import world_from_rules
from meshsolve.iptables import parse_text
from meshsolve.istio import proxy_behavior
from meshsolve.model.world import World
from meshsolve.semantics import kernel as K
from meshsolve.smt import solve as S

FIELDS = ("kind", "addr", "port", "mark", "ctmark", "zone")


def _kube_world(n: int = 60) -> World:
    return world_from_rules(parse_text(kube_dump(n)), proxy_behavior(ISTIO_CONFIG.version, ISTIO_CONFIG))


def _pkt(mark: z3.BitVecRef) -> K.Pkt:
    return K.Pkt(protocol="tcp", src=z3.BitVec("src", 32), dst=z3.BitVec("dst", 32), sport=z3.BitVec("sport", 16),
                 dport=z3.BitVec("dport", 16), iif=None, oif_lo=z3.Bool("lo"), uid=z3.BitVec("uid", 32),
                 gid=z3.BitVec("gid", 32), mark=mark, ctmark=z3.BitVecVal(0, 32), natted=False,
                 zone=z3.BitVecVal(0, 16))


def _postrouting(world: World) -> tuple[E.Ctx, object, object, object]:
    ctx = E.Ctx(world, "ipv4")
    rs = world.rules.for_family("ipv4")
    stage = next(s for s in ctx.env.stages("POSTROUTING") if s.table == "nat")
    return ctx, rs.table("nat"), rs.start(stage), stage


def test_a_mark_rule_keeps_the_incoming_mark_and_means_the_same() -> None:
    """KUBE-POSTROUTING tests kube-proxy's mark and sets it anew (``MARK --set-xmark``). A packet
    whose mark is a compound term (as after an earlier table's cascade) gets a decision whose mark
    holds that term unchanged (Z3's simplifier would rewrite it), and which is the same function
    as the decision for a plain mark variable with the compound term put in its place."""
    world = _kube_world()
    m = z3.BitVec("m", 32)
    incoming = (m & 0xFF) | (m & 0xFF00)  # the simplifier rewrites this one (into a concatenation)
    assert not z3.simplify(incoming).eq(incoming)
    ctx, table, chain, stage = _postrouting(world)
    got = E._direct(ctx, table, chain, stage, _pkt(incoming))  # type: ignore[arg-type]
    assert incoming.get_id() in {x.get_id() for x in subterms(got.mark)}
    assert not any(str(c).startswith("marks!in") for c in constants(got.mark))  # no placeholder left
    plain = z3.BitVec("plain", 32)
    ctx2, table2, chain2, stage2 = _postrouting(world)
    ref = E._direct(ctx2, table2, chain2, stage2, _pkt(plain))  # type: ignore[arg-type]
    s = z3.Solver()
    s.add(z3.Not(z3.And(*(getattr(got, f) == z3.substitute(getattr(ref, f), (plain, incoming)) for f in FIELDS))))
    assert s.check() == z3.unsat
    # and the chain does change the mark: the test would not notice a rule left out otherwise
    assert not z3.is_bv_value(z3.simplify(got.mark - incoming))


def test_simple_rewrites_what_the_chain_did_not_what_came_in() -> None:
    """``simple`` folds the chain's own steps (a mark set twice is one term, the memo's key) and
    leaves the incoming compound mark as it is, meaning the same."""
    world = _kube_world()
    ctx, table, _chain, stage = _postrouting(world)
    m = z3.BitVec("m", 32)
    incoming = (m & 0xFF) | (m & 0xFF00)
    tr = E.Traversal(ctx, table, stage, _pkt(incoming))  # type: ignore[arg-type]
    once = tr.simple((incoming & 0xFFFFBFFF) ^ 0x4000, incoming)
    twice = tr.simple((once & 0xFFFFBFFF) ^ 0x4000, once)
    assert incoming.get_id() in {x.get_id() for x in subterms(once)}
    assert once.eq(twice)
    s = z3.Solver()
    s.add(once != (incoming & 0xFFFFBFFF) ^ 0x4000)
    assert s.check() == z3.unsat
    assert tr.simple(incoming, incoming) is incoming


def test_rewriting_sets_the_kinds_settings_and_puts_the_old_ones_back() -> None:
    before = z3.get_param("rewriter.flat_and_or")
    assert S.REWRITER["smt-core"] == {"flat_and_or": False}
    with S.rewriting("smt-core"):
        assert z3.get_param("rewriter.flat_and_or") == "false"
    assert z3.get_param("rewriter.flat_and_or") == before
    with pytest.raises(RuntimeError), S.rewriting("smt-core"):
        raise RuntimeError("stop")
    assert z3.get_param("rewriter.flat_and_or") == before
    with S.rewriting("qf_bv"):  # a kind without settings leaves Z3's alone
        assert z3.get_param("rewriter.flat_and_or") == before


def test_the_flattening_setting_changes_no_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same verdict, assumptions included, with and without the scoped rewriter settings."""
    got = check(_kube_world(), CaptureOutbound())
    monkeypatch.setattr(S, "REWRITER", {})
    plain = check(_kube_world(), CaptureOutbound())
    assert isinstance(got, Proved)
    assert got == plain
