"""What the differential tests' world strategies draw, counted over as many worlds as the CI profile
draws: every registered match and target kind (``meshsolve.model.kinds``), every table, and every
table at every hook a connection meets (``meshsolve.model.path``) must be drawn, and so must the
world features the semantics has (policy routing, transparent proxies, SO_REUSEPORT pairs, apps'
socket marks...).

A kind added to the registry without a strategy entry, or an entry that never fits anywhere the
worlds put rules, fails here."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from test_smt_campaign_vs_enumeration import EXAMPLES

from meshsolve.model.kinds import MATCH_KINDS, TARGET_KINDS
from meshsolve.model.path import PATHS, TABLE_HOOKS
from meshsolve.model.rules import Rule
from meshsolve.model.world import World
from meshsolve.strategies import rules, small_worlds
from meshsolve.strategies._worlds import NFT_ONLY_KINDS, SET_KINDS

# the CI profile draws EXAMPLES worlds in each of the two differential tests
CI_WORLDS = 2 * EXAMPLES
NFT_RULES = 600
HOOKS_MET = frozenset(h for hooks, _ in PATHS.values() for h in hooks)


def _rules(world: World) -> Iterator[tuple[str, str, bool, Rule]]:
    for rs in (world.rules.ipv4, world.rules.ipv6):
        for table in rs.tables:
            for chain in table.chains:
                for rule in chain.rules:
                    yield table.name, chain.name, chain.builtin, rule


def _count(worlds: list[World]) -> Counter[object]:
    seen: Counter[object] = Counter()
    for w in worlds:
        for table, chain, builtin, rule in _rules(w):
            seen[("table", table)] += 1
            if builtin:
                seen[("hook", table, chain)] += 1
            for m in rule.matches:
                seen[type(m)] += 1
            if rule.target is not None:
                seen[type(rule.target)] += 1
        p = w.proxy
        seen.update(name for name, on in (
            ("routing rule", bool(w.routing.rules)), ("local route", any(r.kind == "local" for r in w.routing.routes)),
            ("unicast route", any(r.kind == "unicast" for r in w.routing.routes)),
            ("fwmark rule", any(r.fwmark is not None for r in w.routing.rules)),
            ("transparent proxy", p.transparent), ("original source", p.inbound_original_source),
            ("upstream mark", p.upstream_mark is not None), ("blackhole", p.outbound == "blackhole"),
            ("reuseport pair", sum(s.reuseport for a in w.apps for s in a.sockets) >= 2),
            ("ipv6", "ipv6" in w.families), ("no rules", not any(True for _ in _rules(w))),
            ("app mark", any(a.mark is not None for a in w.apps)),
        ) if on)
    return seen


@pytest.fixture(scope="module")
def drawn() -> Counter[object]:
    worlds: list[World] = []

    @settings(max_examples=CI_WORLDS, derandomize=True, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(small_worlds())
    def collect(world: World) -> None:
        worlds.append(world)

    collect()
    assert len(worlds) == CI_WORLDS
    return _count(worlds)


def test_every_registered_kind_is_drawn(drawn: Counter[object]) -> None:
    """Every kind iptables can hold, in the iptables worlds (but a set lookup, which needs a set the
    random worlds do not give: ``rules()`` draws it, ``test_api_strategies``); the nftables-only kinds
    in rules of an nft place (``rules(..., nft=True)``), which the nft worlds are made of."""
    missing = [k.__name__ for k in (*MATCH_KINDS, *TARGET_KINDS)
               if k not in NFT_ONLY_KINDS and k not in SET_KINDS and not drawn[k]]
    assert not missing, f"never drawn in {CI_WORLDS} worlds: {missing}"
    assert NFT_ONLY_KINDS and not any(drawn[k] for k in NFT_ONLY_KINDS)
    seen: Counter[object] = Counter()

    @settings(max_examples=NFT_RULES, derandomize=True, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(st.sampled_from([("nat", "OUTPUT"), ("nat", "PREROUTING"), ("mangle", "PREROUTING"), ("filter", "INPUT")])
           .flatmap(lambda place: rules("ipv4", place[0], place[1], nft=True)))
    def collect(rule: Rule) -> None:
        seen.update(type(m) for m in rule.matches)
        if rule.target is not None:
            seen[type(rule.target)] += 1

    collect()
    missing_nft = [k.__name__ for k in NFT_ONLY_KINDS if not seen[k]]
    assert not missing_nft, f"never drawn in {NFT_RULES} nft rules: {missing_nft}"


def test_every_table_and_hook_is_drawn(drawn: Counter[object]) -> None:
    missing = [t for t in TABLE_HOOKS if not drawn[("table", t)]]
    missing += [f"{t} {h}" for t, hooks in TABLE_HOOKS.items() for h in hooks
                if h in HOOKS_MET and not drawn[("hook", t, h)]]
    assert not missing, f"no rule drawn in {CI_WORLDS} worlds: {missing}"


def test_every_world_feature_is_drawn(drawn: Counter[object]) -> None:
    features = ("routing rule", "local route", "unicast route", "fwmark rule", "transparent proxy",
                "original source", "upstream mark", "blackhole", "reuseport pair", "ipv6", "app mark")
    missing = [f for f in features if not drawn[f]]
    assert not missing, f"never drawn in {CI_WORLDS} worlds: {missing}"


def test_the_count_can_fail() -> None:
    """The counter sees a missing kind: worlds without rules cover nothing."""
    empty = World(pod_ips=("192.0.2.10",), peer_ips=("192.0.2.20",))
    seen = _count([empty])
    assert not any(seen[k] for k in MATCH_KINDS) and seen["no rules"] == 1
