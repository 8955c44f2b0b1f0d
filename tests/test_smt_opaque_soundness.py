"""Soundness under the unknown: a rule meshsolve does not model (``-m bpf``, ``-m set`` of a set whose
members the world does not give, ``-m statistic``, ``-j NFQUEUE``, any ``OpaqueMatch``/``OpaqueTarget``) never yields ``Proved`` for a
property it could affect.

Set-up E gets one opaque rule at a position; each default property is checked. The test does not
trust the verdict: it builds *concretisations* of the opaque rule — never matches (rule removed),
always matches (opaque match dropped) with its target, and for an opaque target each of ACCEPT,
DROP and RETURN — and checks each of those fully modelled worlds. Then:

- ``Proved`` is allowed only if every concretisation is ``Proved`` too (else the rule could matter
  and the proof was wrong: a solver bug);
- ``Unknown`` must name the rule (``table::CHAIN#n``);
- at least the positions that obviously matter must give ``Unknown`` (not vacuous), and positions
  where the rule cannot matter (unreferenced chain, after an unconditional jump or REDIRECT) must
  still give ``Proved`` (no loss of precision there).
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from meshsolve.analysis.check import Proved, Refuted, Unknown, check
from meshsolve.analysis.properties import (
    Bypass,
    CaptureInbound,
    CaptureOutbound,
    NoExposure,
    NoLoops,
    Property,
    Reachable,
    default_properties,
)
from meshsolve.iptables import parse_rule, parse_text, render_save
from meshsolve.model.rules import (
    Accept,
    Chain,
    Drop,
    OpaqueMatch,
    OpaqueTarget,
    Return,
    Rule,
    RuleRef,
    SetMatch,
    Table,
)
from meshsolve.model.world import World
from meshsolve.semantics.setups import setup_world

BPF = "-m bpf --bytecode '4,48 0 0 9,21 0 1 6,6 0 0 1,6 0 0 0' -j RETURN"
SET = "-m set --match-set blocked dst -j ACCEPT"
STAT = "-p tcp -m statistic --mode random --probability 0.5 -j RETURN"
NFQ = "-p tcp -j NFQUEUE --queue-num 3"
OPAQUE_OBJ = Rule((OpaqueMatch("u32", ("--u32", "0>>22&0x3C@12>>26&0x3F=0x10")),), OpaqueTarget("MSRBX", ("--x",)))


def insert(world: World, table: str, chain: str, pos: int, rule: Rule) -> tuple[World, RuleRef]:
    """``world`` with ``rule`` at 1-based ``pos`` of ``table::chain`` (0 = appended; the chain and
    table are created when missing), and the rule's reference."""
    rs = world.rules.ipv4
    t = rs.table(table) or Table(table)
    c = t.chain(chain) or Chain(chain)
    rules = list(c.rules)
    index = len(rules) if pos == 0 else pos - 1
    rules.insert(index, rule)
    new_chain = attrs.evolve(c, rules=tuple(rules))
    chains = tuple(new_chain if x.name == chain else x for x in t.chains)
    if t.chain(chain) is None:
        chains += (new_chain,)
    new_rs = attrs.evolve(rs, tables=(*tuple(x for x in rs.tables if x.name != table), Table(table, chains)))
    return attrs.evolve(world, rules=attrs.evolve(world.rules, ipv4=new_rs)), RuleRef(table, chain, index + 1)


def concretisations(rule: Rule, table: str = "filter") -> list[Rule | None]:
    """Fully modelled stand-ins for ``rule``: None (never matches), and always-matching versions
    (no DROP in nat, where the kernel's loader refuses it)."""
    matches = tuple(m for m in rule.matches if not isinstance(m, OpaqueMatch | SetMatch))  # (no set members)
    if isinstance(rule.target, OpaqueTarget):
        verdicts = (Accept(), Return()) if table == "nat" else (Accept(), Drop(), Return())
        return [None, *(Rule(matches, t) for t in verdicts)]
    return [None, Rule(matches, rule.target)]


def replace(world: World, ref: RuleRef, rule: Rule | None) -> World:
    rs = world.rules.ipv4
    t = rs.table(ref.table)
    assert t is not None
    c = t.chain(ref.chain)
    assert c is not None
    rules = list(c.rules)
    if rule is None:
        del rules[ref.index - 1]
    else:
        rules[ref.index - 1] = rule
    chains = tuple(attrs.evolve(c, rules=tuple(rules)) if x.name == c.name else x for x in t.chains)
    new_rs = attrs.evolve(rs, tables=(*tuple(x for x in rs.tables if x.name != t.name), Table(t.name, chains)))
    return attrs.evolve(world, rules=attrs.evolve(world.rules, ipv4=new_rs))


def props(world: World) -> tuple[Property, ...]:
    return (*default_properties(world), Reachable("peer", 9001), Reachable("app", 9002, dst="127.0.0.1"))


def verdicts_sound(world: World, ref: RuleRef, rule: Rule) -> dict[str, str]:
    """Check every property; assert the soundness rules above; return {property title: kind}."""
    out: dict[str, str] = {}
    for prop in props(world):
        v = check(world, prop, timeout_ms=60_000)
        out[prop.title()] = v.kind
        if isinstance(v, Unknown):
            assert str(ref) in v.reason, f"Unknown does not name {ref}: {v.reason}"
        elif isinstance(v, Refuted):
            assert v.result.outcome.__class__.__name__ != "Undetermined"
        else:
            assert isinstance(v, Proved)
            for alt in concretisations(rule, ref.table):
                cv = check(replace(world, ref, alt), prop, timeout_ms=60_000)
                assert isinstance(cv, Proved), (
                    f"SOLVER BUG: '{prop.title()}' PROVED with opaque {ref} ({rule}), but with it as "
                    f"{alt} the answer is {cv}")
    return out


E = setup_world("E")

# (table, chain, position, rule text or Rule, properties that must come out Unknown)
MATTERS: list[tuple[str, str, int, Any, set[type]]] = [
    ("nat", "ISTIO_OUTPUT", 1, STAT, {CaptureOutbound}),
    ("nat", "OUTPUT", 1, BPF, {CaptureOutbound}),
    ("nat", "ISTIO_INBOUND", 1, SET, {CaptureInbound}),
    ("nat", "PREROUTING", 1, BPF, {CaptureInbound}),
    ("mangle", "OUTPUT", 1, NFQ, {CaptureOutbound}),
    ("filter", "INPUT", 1, NFQ, {CaptureInbound}),
    ("nat", "ISTIO_OUTPUT", 4, OPAQUE_OBJ, {CaptureOutbound}),
]


def _rule(r: Any) -> Rule:
    return r if isinstance(r, Rule) else parse_rule(r)


@pytest.mark.parametrize(("table", "chain", "pos", "rule", "unknown"), MATTERS,
                         ids=[f"{t}-{c}-{p}" for t, c, p, _r, _u in MATTERS])
def test_opaque_rule_that_matters_is_never_proved(table: str, chain: str, pos: int, rule: Any,
                                                  unknown: set[type]) -> None:
    world, ref = insert(E, table, chain, pos, _rule(rule))
    kinds = verdicts_sound(world, ref, _rule(rule))
    for prop in props(world):
        if type(prop) in unknown:
            assert kinds[prop.title()] == "unknown", (prop.title(), kinds)


CANNOT_MATTER: list[tuple[str, str, int, Any]] = [
    ("nat", "MSRB_UNUSED", 1, STAT),          # a chain nothing jumps to
    ("nat", "ISTIO_OUTPUT", 0, BPF),          # after the unconditional -j ISTIO_REDIRECT
    ("nat", "ISTIO_REDIRECT", 0, NFQ),        # after the unconditional REDIRECT of tcp
    ("nat", "ISTIO_IN_REDIRECT", 0, SET),     # after the unconditional REDIRECT of tcp
]


@pytest.mark.parametrize(("table", "chain", "pos", "rule"), CANNOT_MATTER,
                         ids=[f"{t}-{c}-{p or 'end'}" for t, c, p, _r in CANNOT_MATTER])
def test_opaque_rule_that_cannot_matter_keeps_the_proofs(table: str, chain: str, pos: int, rule: Any) -> None:
    baseline = {p.title(): check(E, p).kind for p in props(E)}
    assert set(baseline.values()) == {"proved"}, baseline
    world, ref = insert(E, table, chain, pos, _rule(rule))
    kinds = verdicts_sound(world, ref, _rule(rule))
    assert kinds == baseline, kinds


def test_opaque_rules_parsed_from_text_are_opaque_and_unknown() -> None:
    """The same through the parser: iptables-save text with unmodelled modules and targets."""
    text = render_save(E.rules.ipv4).replace(
        "-A ISTIO_OUTPUT -j ISTIO_REDIRECT",
        "-A ISTIO_OUTPUT -p tcp -m statistic --mode nth --every 2 --packet 0 -j RETURN\n"
        "-A ISTIO_OUTPUT -j ISTIO_REDIRECT")
    assert "statistic" in text
    rules = parse_text(text)
    world = attrs.evolve(E, rules=attrs.evolve(E.rules, ipv4=rules.ipv4))
    ruleset = world.rules.ipv4
    chain = ruleset.chain("nat", "ISTIO_OUTPUT")
    assert chain is not None
    n = next(i for i, r in enumerate(chain.rules, 1) if any(isinstance(m, OpaqueMatch) for m in r.matches))
    ref = RuleRef("nat", "ISTIO_OUTPUT", n)
    v = check(world, CaptureOutbound())
    assert isinstance(v, Unknown) and str(ref) in v.reason, v
    # the proxy's own traffic RETURNs before that rule: Bypass is still proved
    assert isinstance(check(world, Bypass()), Proved)


@pytest.mark.slow
@pytest.mark.parametrize("rule", [BPF, SET, STAT, NFQ], ids=["bpf", "set", "statistic", "nfqueue"])
def test_opaque_rule_at_every_position_is_sound(rule: str) -> None:
    """Every position of every chain of E's nat table (and the built-ins of mangle/filter)."""
    r = parse_rule(rule)
    nat = E.rules.ipv4.table("nat")
    assert nat is not None
    spots = [(c.name, p) for c in nat.chains for p in range(1, len(c.rules) + 2)]
    for table, chain, pos in [("nat", c, p) for c, p in spots] + [("mangle", "OUTPUT", 1), ("filter", "INPUT", 1)]:
        if r.target is not None and isinstance(r.target, OpaqueTarget) and table == "nat" and chain == "POSTROUTING":
            continue
        world, ref = insert(E, table, chain, pos, r)
        verdicts_sound(world, ref, r)


def test_noexposure_and_loops_sound_with_opaque_target_in_inbound_path() -> None:
    """An opaque target where inbound traffic to the localhost socket is decided."""
    world, ref = insert(E, "nat", "ISTIO_INBOUND", 1, parse_rule("-p tcp --dport 9002 -j NFQUEUE"))
    kinds = verdicts_sound(world, ref, parse_rule("-p tcp --dport 9002 -j NFQUEUE"))
    assert kinds[NoExposure().title()] in ("proved", "unknown")
    assert kinds[NoLoops().title()] in ("proved", "unknown")
    assert kinds[CaptureInbound(ports=(9001, 9002, 9003)).title()] == "unknown"
