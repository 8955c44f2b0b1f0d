"""Concrete chain traversal: one packet through one table at one hook, rule by rule.

What a match or a target means is defined once in ``meshsolve.semantics.kernel`` (``match``,
``effect``); this module only walks a chain forward, the way the kernel does for one packet: the
first rule whose matches all hold applies its target; ``-j CHAIN`` pushes the return point, ``-g``
does not (a RETURN from a goto'd chain goes back to the last ``-j``), ``RETURN`` pops, falling off
a user chain returns, and a built-in chain ends in its policy (a RETURN in a built-in chain too).
A rule whose matches the model cannot decide makes the traversal undetermined only when its
target has an effect; a rule that fails on a decided match is skipped.
"""

from __future__ import annotations

import attrs

from meshsolve.errors import WorldError
from meshsolve.model.path import Stage
from meshsolve.model.rules import Chain, Rule, RuleRef, Ruleset
from meshsolve.semantics.domain import Concrete, Unk
from meshsolve.semantics.kernel import CONT, DROP, NAT, TPROXY, UNK, Decision, Env, Pkt, effect, match

__all__ = ["Step", "evaluate_rule", "traverse"]

_MAX_DEPTH = 64  # the kernel's own limit on nested jumps is in this order
_D = Concrete()


@attrs.frozen
class Step:
    """A rule whose matches held (``rule`` set) or a built-in chain's policy (``rule`` None, index 0)."""

    ref: RuleRef
    rule: Rule | None
    policy: str | None = None


def evaluate_rule(rule: Rule, pkt: Pkt, env: Env) -> bool | Unk:
    """Whether all of ``rule``'s matches hold: True, False, or ``Unk`` (why the model cannot tell)."""
    out: bool | Unk = _D.and_(*[match(_D, m, pkt, env) for m in rule.matches])
    return out


def traverse(ruleset: Ruleset, stage: Stage, pkt: Pkt, env: Env) -> Decision:
    """Run ``pkt`` through the built-in chain ``stage.hook`` of table ``stage.table`` (an absent
    table accepts). Raises ``WorldError`` for a jump to a missing chain or a jump nesting deeper
    than 64 (a cycle)."""
    table = stage.table
    tbl = ruleset.table(table)
    chain = ruleset.start(stage)
    if tbl is None or chain is None:
        return Decision(CONT, None, None, pkt.mark, pkt.ctmark, pkt.zone, steps=())
    builtin = chain
    steps: list[Step] = []
    stack: list[tuple[Chain, int]] = []
    i = 0

    def done(kind: int, ref: RuleRef | None = None, addr: object = None, port: object = None,
             reason: str = "") -> Decision:
        return Decision(kind, addr, port, pkt.mark, pkt.ctmark, pkt.zone, steps=tuple(steps), rule=ref, reason=reason)

    def policy() -> Decision:
        pol = builtin.policy or "ACCEPT"
        ref = RuleRef(table, builtin.name, 0)
        if pol != "ACCEPT" or steps:
            steps.append(Step(ref, None, pol))
        if pol == "ACCEPT":
            return done(CONT)
        if pol == "DROP":
            return done(DROP, ref)
        return done(UNK, ref, reason=f"policy {pol} is not modelled")

    def enter(name: str, ref: RuleRef) -> Chain:
        target = tbl.chain(name) if tbl is not None else None
        if target is None:
            raise WorldError(f"{ref} jumps to chain {name}, which does not exist in table {table}")
        if len(stack) > _MAX_DEPTH:
            raise WorldError(f"{ref}: jumps nest deeper than {_MAX_DEPTH} (a jump cycle?)")
        return target

    taken = 0
    while True:
        taken += 1
        if taken > 100_000:
            raise WorldError(f"{table}::{stage.hook}: traversal does not end (a goto cycle?)")
        if i >= len(chain.rules):
            if stack:
                chain, i = stack.pop()
                continue
            return policy()
        rule = chain.rules[i]
        ref = RuleRef(table, chain.name, i + 1)
        i += 1
        held = evaluate_rule(rule, pkt, env)
        if held is False:
            continue
        eff = effect(_D, rule.target, pkt, env, stage)
        if isinstance(held, Unk):
            if eff.kind == "next":
                continue
            return done(UNK, ref, reason=held.why)
        steps.append(Step(ref, rule))
        match eff.kind:
            case "next":
                continue
            case "marks":
                pkt = attrs.evolve(pkt, mark=eff.mark, ctmark=eff.ctmark, zone=eff.zone)
                continue
            case "return":
                if stack:
                    chain, i = stack.pop()
                    continue
                return policy()
            case "jump":
                nxt = enter(eff.chain, ref)
                stack.append((chain, i))
                chain, i = nxt, 0
                continue
            case "goto":
                chain, i = enter(eff.chain, ref), 0
                continue
            case "verdict":
                if eff.code == UNK:
                    return done(UNK, ref, reason=eff.why)
                if isinstance(eff.port, Unk):
                    return done(UNK, ref, reason=eff.port.why)
                if eff.code == TPROXY:
                    pkt = attrs.evolve(pkt, mark=eff.mark)
                if eff.code in (NAT, TPROXY):
                    return done(eff.code, ref, eff.addr, eff.port)
                return done(eff.code, ref)
        raise AssertionError(f"unknown effect {eff.kind}")  # pragma: no cover
