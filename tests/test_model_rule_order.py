"""``Rule`` keeps its basic matches first, in iptables-save's order (-s -d -i -o -p), each at most once,
then the module matches in the order given — also on its shortcut for matches already in order."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshsolve.errors import WorldError
from meshsolve.model import Rule
from meshsolve.model.rules import Destination, InInterface, OutInterface, Protocol, Source
from meshsolve.strategies import rules

_RANK = {Source: 0, Destination: 1, InInterface: 2, OutInterface: 3, Protocol: 4}


def _expected(matches: list[object]) -> tuple[object, ...] | None:
    """The order the model promises (None: a basic kind given twice, refused)."""
    basic = [m for m in matches if type(m) in _RANK]
    if len({type(m) for m in basic}) != len(basic):
        return None
    return (*sorted(basic, key=lambda m: _RANK[type(m)]), *(m for m in matches if type(m) not in _RANK))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(["ipv4", "ipv6"]).flatmap(rules), st.randoms(use_true_random=False))
def test_rule_orders_matches_in_any_given_order(r: Rule, rnd: random.Random) -> None:
    given_orders = [list(r.matches)]
    shuffled = list(r.matches)
    rnd.shuffle(shuffled)
    given_orders.append(shuffled)
    if r.matches:
        k = rnd.randrange(len(r.matches))
        given_orders.append([*r.matches[:k], r.matches[k], *r.matches[k:]])  # one doubled
    for ms in given_orders:
        want = _expected(ms)
        if want is None:
            with pytest.raises(WorldError):
                Rule(tuple(ms), r.target)
        else:
            assert Rule(tuple(ms), r.target).matches == want
            assert Rule(iter(ms), r.target).matches == want
