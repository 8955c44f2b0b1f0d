"""Round trips over generated rulesets: parse(render(r)) == r in save, restore and JSON form, and
through the real kernel (iptables-restore → iptables-save in a throw-away namespace)."""

from __future__ import annotations

import pytest
from conftest import campaign_examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from iptables_kernel import kernel_roundtrip

from meshsolve.iptables import (
    from_json,
    parse_rule,
    parse_text,
    render_restore,
    render_save,
    rule_text,
    to_json,
)
from meshsolve.model import Destination, Rule, Ruleset, Rulesets, Source
from meshsolve.strategies import rules, rulesets, rulesets_pair

#: Rulesets per family through iptables-restore/-save: CI profile (20), all 60 with --run-slow or the variable.
KERNEL_EXAMPLES = campaign_examples("MESHSOLVE_IPT_KERNEL_EXAMPLES", ci=20, full=60)
_FAST = settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))


@_FAST
@given(rulesets_pair())
def test_save_restore_json_roundtrip(r: Rulesets) -> None:
    """One generated ruleset pair through every text form (generation is the slow part)."""
    assert parse_text(render_save(r)) == r
    assert parse_text(render_restore(r)) == r
    assert parse_text(render_save(r, counters=True)) == r  # iptables-save -c form
    text = to_json(r)
    assert from_json(text) == r
    assert to_json(from_json(text)) == text  # stable keys


@_FAST
@given(st.sampled_from(["ipv4", "ipv6"]).flatmap(lambda f: rulesets(f)))  # type: ignore[arg-type]
def test_single_family_render_roundtrip(r: Ruleset) -> None:
    """A single ruleset rendered alone (no '# ipv6' marker) is read back with its family when it
    has addresses; render_save(Ruleset) is exactly what iptables-save prints."""
    back = parse_text(render_save(r))
    has_addr = any(isinstance(m, Source | Destination) for t in r.tables for c in t.chains
                   for x in c.rules for m in x.matches)
    if r.family == "ipv4" or has_addr:
        assert back.for_family(r.family) == r
    assert parse_text(f"# {r.family}\n" + render_save(r)).for_family(r.family) == r


@_FAST
@given(st.sampled_from(["ipv4", "ipv6"]).flatmap(lambda f: st.tuples(st.just(f), rules(f))))
def test_rule_text_roundtrip(fr: tuple[str, Rule]) -> None:
    family, r = fr
    assert parse_rule(rule_text(r, family)) == r  # type: ignore[arg-type]


def _kernel_check(r: Ruleset) -> None:
    ours = render_save(r)
    theirs, back = kernel_roundtrip(ours, r.family)
    assert theirs == ours
    assert back == r
    _, back2 = kernel_roundtrip(render_restore(r), r.family)
    assert back2 == r


@pytest.mark.kernel
@settings(max_examples=KERNEL_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(rulesets("ipv4", kernel=True))
def test_kernel_roundtrip_ipv4(r: Ruleset) -> None:
    _kernel_check(r)


@pytest.mark.kernel
@settings(max_examples=KERNEL_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(rulesets("ipv6", kernel=True))
def test_kernel_roundtrip_ipv6(r: Ruleset) -> None:
    _kernel_check(r)


@pytest.mark.kernel
@pytest.mark.slow
@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(["ipv4", "ipv6"]).flatmap(lambda f: rulesets(f, kernel=True, max_rules=6)))
def test_kernel_roundtrip_campaign(r: Ruleset) -> None:
    _kernel_check(r)
