"""A world written as JSON reads back as the same world, so that the replay command a disagreement
prints works: random iptables worlds, random nft capture worlds (base chains of every type, whose
``type`` field must not clash with the JSON's class key) and Istio's native nft sidecar."""

from __future__ import annotations

import json

import attrs
from hypothesis import HealthCheck, given, settings
from nft_worlds import nft_worlds_and_flows

from meshsolve.analysis.worlds import world_from_config
from meshsolve.istio.config import CaptureConfig
from meshsolve.model.rules import BaseChain, NftTable
from meshsolve.model.world import App, Flow, World
from meshsolve.oracle.worldio import dump_world, world_from_json
from meshsolve.strategies import worlds


def _round_trip(world: World) -> None:
    text = dump_world(world)
    assert world_from_json(text) == world
    assert dump_world(world_from_json(text)) == text


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds(extended=True))
def test_random_worlds_round_trip(world: World) -> None:
    _round_trip(world)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nft_worlds_and_flows())
def test_random_nft_worlds_round_trip(case: tuple[World, tuple[Flow, ...]]) -> None:
    _round_trip(case[0])


def test_every_base_chain_type_keeps_its_type() -> None:
    world = world_from_config(CaptureConfig(native_nftables=True, mode="TPROXY"))
    tables = [t for t in world.rules.ipv4.nft]
    types = {b.type for t in tables for b in t.bases}
    assert {"nat", "route"} <= types, types
    _round_trip(world)
    data = json.loads(dump_world(world))
    chains = [b for t in data["rules"]["ipv4"]["nft"] for b in t["bases"]]
    assert {c["type"] for c in chains} == {"BaseChain"} and {c["type_"] for c in chains} == types
    back = world_from_json(dump_world(world))
    assert all(isinstance(t, NftTable) and all(isinstance(b, BaseChain) for b in t.bases)
               for t in back.rules.ipv4.nft)


def test_an_apps_mark_round_trips() -> None:
    world = world_from_config(CaptureConfig())
    marked = attrs.evolve(world, apps=(*world.apps, App("marked", uid=4242, gid=4242, mark=0x539)))
    _round_trip(marked)
    assert world_from_json(dump_world(marked)).app("marked").mark == 0x539
    assert '"mark": 1337' in dump_world(marked) and world_from_json(dump_world(world)).apps[0].mark is None


def test_address_sets_and_set_lookups_round_trip() -> None:
    """A world's address sets (``ip_sets``) and the rules that look them up (``-m set``, nft ``@NAME``)
    come back from JSON as they were."""
    from meshsolve.iptables import parse_text
    from meshsolve.model.world import IpSet
    from meshsolve.nftables import parse_text as parse_nft
    from meshsolve.nftables.lower import lower

    sets = (IpSet("probes-v4", "ipv4", ("192.0.2.10", "198.51.100.0/24")), IpSet("probes-v6", "ipv6", ("2001:db8::10",)))
    ipt = parse_text("*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -p tcp -m set --match-set probes-v4 dst "
                     "-j SNAT --to-source 203.0.113.127\nCOMMIT\n")
    nft = lower(parse_nft("table inet t {\n chain p {\n  type nat hook postrouting priority 100;\n"
                          "  ip6 daddr != @probes-v6 snat ip6 to 2001:db8:7127::1\n }\n}\n"))
    for rules in (ipt, nft):
        w = World(pod_ips=("192.0.2.1", "2001:db8::1"), peer_ips=(), rules=rules, ip_sets=sets)
        back = world_from_json(dump_world(w))
        assert back == w and back.ip_sets == sets
