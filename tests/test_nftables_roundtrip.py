"""Round trips over generated nftables rulesets: parse(render(x)) == x, the kernel normal form is
idempotent, and the command stream of a render replays to the same value."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from meshsolve.nftables import Ruleset, kernel_form, parse_text, read_commands, render, replay
from meshsolve.nftables.strategies import rulesets

_FAST = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


@_FAST
@given(rulesets())
def test_render_parse_roundtrip(r: Ruleset) -> None:
    text = render(r)
    assert parse_text(text, "render") == r, text
    commands, lines = read_commands(text)
    assert replay(commands, lines=lines) == r
    assert render(parse_text(text)) == text  # the canonical text is a fixed point


@_FAST
@given(rulesets())
def test_kernel_form_renders_and_keeps_the_rule_count(r: Ruleset) -> None:
    k = kernel_form(r)
    assert parse_text(render(k)) == k
    assert k.rule_count() == r.rule_count()
    assert [len(c.rules) for t in k.tables for c in t.chains] == [len(c.rules) for t in r.tables for c in t.chains]


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(rulesets(kernel=True))
def test_kernel_strategy_values_roundtrip(r: Ruleset) -> None:
    assert parse_text(render(r)) == r
