"""Round trips over generated rulesets: parse(render(r)) == r in save, restore and JSON form, and
through the real kernel (iptables-restore → iptables-save in a throw-away namespace)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from iptables_kernel import kernel_roundtrip

from meshsolve.iptables import from_json, parse_rule, parse_text, render_restore, render_save, rule_text, to_json
from meshsolve.model import Rule, Ruleset, Rulesets
from meshsolve.strategies import rules, rulesets, rulesets_pair

_FAST = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


@_FAST
@given(rulesets_pair())
def test_save_roundtrip(r: Rulesets) -> None:
    assert parse_text(render_save(r)) == r


@_FAST
@given(rulesets_pair())
def test_restore_roundtrip(r: Rulesets) -> None:
    assert parse_text(render_restore(r)) == r


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(rulesets_pair())
def test_json_roundtrip(r: Rulesets) -> None:
    text = to_json(r)
    assert from_json(text) == r
    assert to_json(from_json(text)) == text  # stable keys


@_FAST
@given(st.sampled_from(["ipv4", "ipv6"]).flatmap(lambda f: st.tuples(st.just(f), rules(f))))
def test_rule_text_roundtrip(fr: tuple[str, Rule]) -> None:
    family, r = fr
    assert parse_rule(rule_text(r, family)) == r  # type: ignore[arg-type]


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(rulesets_pair())
def test_counters_form_roundtrip(r: Rulesets) -> None:
    """iptables-save -c form parses to the same model (counters are not part of equality)."""
    assert parse_text(render_save(r, counters=True)) == r


def _kernel_check(r: Ruleset) -> None:
    ours = render_save(r)
    theirs, back = kernel_roundtrip(ours, r.family)
    assert theirs == ours
    assert back == r
    _, back2 = kernel_roundtrip(render_restore(r), r.family)
    assert back2 == r


@pytest.mark.kernel
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(rulesets("ipv4", kernel=True))
def test_kernel_roundtrip_ipv4(r: Ruleset) -> None:
    _kernel_check(r)


@pytest.mark.kernel
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(rulesets("ipv6", kernel=True))
def test_kernel_roundtrip_ipv6(r: Ruleset) -> None:
    _kernel_check(r)


@pytest.mark.kernel
@pytest.mark.slow
@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(["ipv4", "ipv6"]).flatmap(lambda f: rulesets(f, kernel=True, max_rules=6)))
def test_kernel_roundtrip_campaign(r: Ruleset) -> None:
    _kernel_check(r)
