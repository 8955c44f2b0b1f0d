"""Traversals built once over template variables and substituted per packet (``smt.encode.Templates``).

An instance must be the traversal built directly for the same packet, with its own opaque choices
(the same reasons, new constants), and checks must answer the same with templates as without.
"""

from __future__ import annotations

import pytest
import z3
from z3terms import constants

import meshsolve.smt.encode as E
from benchmarks.kubeproxy import ISTIO_CONFIG, kube_dump
from meshsolve.analysis.check import check
from meshsolve.analysis.properties import CaptureOutbound, NoLoops
from meshsolve.analysis.worlds import world_from_rules
from meshsolve.iptables import parse_text
from meshsolve.istio import proxy_behavior
from meshsolve.model.world import World
from meshsolve.semantics import kernel as K

FIELDS = ("kind", "addr", "port", "mark", "ctmark", "zone")


def _kube_world(n: int = 60) -> World:
    # kube-proxy's KUBE-SVC chains pick endpoints with -m statistic: opaque choices on the path
    return world_from_rules(parse_text(kube_dump(n)), proxy_behavior(ISTIO_CONFIG.version, ISTIO_CONFIG))


def _nat_output(world: World) -> tuple[E.Ctx, object, object, object]:
    ctx = E.Ctx(world, "ipv4")
    rs = world.rules.for_family("ipv4")
    stage = next(s for s in ctx.env.stages("OUTPUT") if s.table == "nat")
    return ctx, rs.table("nat"), rs.start(stage), stage


def _pkt(n: int, uid: int | None) -> K.Pkt:
    own = z3.BitVec(f"uid{n}", 32) if uid is None else z3.BitVecVal(uid, 32)
    return K.Pkt(protocol="tcp", src=z3.BitVec(f"src{n}", 32), dst=z3.BitVec(f"dst{n}", 32),
                 sport=z3.BitVec(f"sport{n}", 16), dport=z3.BitVec(f"dport{n}", 16), iif=None,
                 oif_lo=z3.Bool(f"lo{n}"), uid=own, gid=own, mark=z3.BitVecVal(0, 32),
                 ctmark=z3.BitVecVal(0, 32), natted=False, zone=z3.BitVecVal(0, 16))


@pytest.mark.parametrize("uid", [None, 1337])
def test_an_instance_is_the_direct_traversal_with_new_choices(uid: int | None) -> None:
    world = _kube_world()
    ctx, table, chain, stage = _nat_output(world)
    d = ctx.d
    pkt = _pkt(0, uid)
    a = len(d.choices)
    direct = E._direct(ctx, table, chain, stage, pkt)  # type: ignore[arg-type]
    b = len(d.choices)
    ctx.eager = True
    inst = E.Templates().decision(ctx, table, chain, stage, pkt)  # type: ignore[arg-type]
    own, renewed = d.choices[a:b], d.choices[b:]
    assert own, "the kube-proxy chains should make opaque choices (-m statistic)"
    assert [why for why, _ in renewed] == [why for why, _ in own]
    assert not {c.get_id() for _, c in own} & {c.get_id() for _, c in renewed}
    # the same function of the packet once the instance's choices are the direct build's
    back = [(new, old) for (_, new), (_, old) in zip(renewed, own, strict=True)]
    s = z3.Solver()
    s.add(z3.Not(z3.And(*(z3.substitute(getattr(inst, f), *back) == getattr(direct, f) for f in FIELDS))))
    assert s.check() == z3.unsat
    # and not trivially so: the decision depends on the packet
    assert not z3.is_bv_value(z3.simplify(direct.kind))


def test_instances_for_two_packets_have_their_own_choices() -> None:
    world = _kube_world()
    ctx, table, chain, stage = _nat_output(world)
    ctx.eager = True
    tpl = E.Templates()
    d = ctx.d
    a = len(d.choices)
    one = tpl.decision(ctx, table, chain, stage, _pkt(1, 1337))  # type: ignore[arg-type]
    b = len(d.choices)
    two = tpl.decision(ctx, table, chain, stage, _pkt(2, 1337))  # type: ignore[arg-type]
    first, second = d.choices[a:b], d.choices[b:]
    assert len(tpl.built) == 1  # one template, two instances
    assert first and [w for w, _ in first] == [w for w, _ in second]
    assert not {c.get_id() for _, c in first} & {c.get_id() for _, c in second}
    # each instance speaks of its own packet only
    names_one = {str(x) for x in constants(one.kind)}
    names_two = {str(x) for x in constants(two.kind)}
    assert "dst1" in names_one and "dst2" not in names_one
    assert "dst2" in names_two and "dst1" not in names_two
    assert not any(n.startswith("template!") for n in names_one | names_two)


@pytest.mark.parametrize("prop", [NoLoops(), CaptureOutbound()])
def test_checks_answer_the_same_without_templates(prop: object, monkeypatch: pytest.MonkeyPatch) -> None:
    with_tpl = check(_kube_world(), prop)  # type: ignore[arg-type]
    monkeypatch.setattr(E, "TEMPLATED", False)
    without = check(_kube_world(), prop)  # type: ignore[arg-type]
    assert type(with_tpl) is type(without)
    assert str(with_tpl) == str(without)
    assert getattr(with_tpl, "assumes", None) == getattr(without, "assumes", None)


def test_one_template_serves_a_constant_and_a_free_uid() -> None:
    """The proxy's connection (uid 1337) and any process's (a free uid) traverse the same large
    chains: one template serves both, and each instance is that packet's own traversal."""
    world = _kube_world()
    ctx, table, chain, stage = _nat_output(world)
    ctx.eager = True
    tpl = E.Templates()
    fixed = tpl.decision(ctx, table, chain, stage, _pkt(1, 1337))  # type: ignore[arg-type]
    free = tpl.decision(ctx, table, chain, stage, _pkt(2, None))  # type: ignore[arg-type]
    assert len(tpl.built) == 1
    names = {str(x) for x in constants(free.kind)}
    assert "uid2" in names and not any(n.startswith("template!") for n in names)
    assert "uid2" not in {str(x) for x in constants(fixed.kind)}


def test_a_set_of_properties_templates_from_its_first_encoding() -> None:
    """A single question builds its one traversal directly; a set of questions (``check_all``)
    builds the first as a template, which the next encodings instantiate, with the same verdicts."""
    from meshsolve.analysis.check import check_all, check_each

    def built(world: World) -> int:
        return sum(len(t.built) for w, _k, t in E._TEMPLATES if w is world)

    alone = _kube_world()
    one = check(alone, CaptureOutbound())
    assert built(alone) == 0
    several = _kube_world()
    each = check_each(several, [CaptureOutbound(), NoLoops()])
    first = next(each)
    assert built(several) >= 1  # before the second property is asked
    assert str(first) == str(one)
    assert str(next(each)) == str(check(_kube_world(), NoLoops()))
    assert [str(v) for v in check_all(_kube_world(), [CaptureOutbound(), NoLoops()])] == \
        [str(one), str(check(_kube_world(), NoLoops()))]

