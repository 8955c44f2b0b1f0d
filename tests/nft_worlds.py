"""Random pod worlds whose capture is native nftables (shared by the nft oracle and solver tests): the
kernel oracle's ``worlds()`` with their rules replaced by a lowered ``capture_rulesets()`` — or, one
time in four, kept beside them (iptables' nat table and nft nat chains on one hook). Drawn to cover
the kernel's base-chain order (``tests/test_nftables_kernel_order.py`` pins each case): nat chains at
priorities off the nat hook's, a second nat table on the same hooks (before or after the capture's,
at its priority or another), filter chains at iptables' filter priority and at the nat hook's (ties:
the chain registered last runs first). Two open disagreements of their own (``tests/test_oracle_open_disagreements.py``) are
left out: beside iptables' TPROXY no nft nat prerouting chain is drawn, and an output filter chain
at or before the nat hook, or beside iptables' rules, drops instead of rejecting (its RST would meet
nat chains); a rule
with more than two port compares is left out (``test_two_port_pairs_in_one_rule``)."""

from __future__ import annotations

import attrs
from hypothesis import strategies as st

from meshsolve.model.rules import Ruleset, Rulesets, Tproxy
from meshsolve.model.world import Flow, World
from meshsolve.nftables import Match, Reject, Verdict
from meshsolve.nftables import Ruleset as NftRuleset
from meshsolve.nftables.lower import lower
from meshsolve.nftables.strategies import capture_rulesets
from meshsolve.strategies import WORLD_ADDRS, world_flows, worlds

WORLD_IDS = (1000, 1001, 1337)


@st.composite
def nft_worlds(draw: st.DrawFn) -> tuple[World, NftRuleset]:
    world = draw(worlds())
    p = world.proxy
    mixed = draw(st.integers(0, 3)) == 0
    nft = draw(capture_rulesets(world.families, WORLD_ADDRS, proxy_uid=p.uid, proxy_gid=p.gid, ids=WORLD_IDS,
                                outbound_port=p.outbound_port, inbound_port=p.inbound_port,
                                filter_priorities=(0, 0, 10, -10, -100, 100),
                                nat_priorities=(-100, -100, -110, -90, 0, 100, -150), extra_nat=True))
    if mixed and any(isinstance(r.target, Tproxy) for rs in (world.rules.ipv4, world.rules.ipv6)
                     for t in rs.tables for c in t.chains for r in c.rules):
        # the kernel resets a connection that TPROXY and a prerouting REDIRECT both act on, which the
        # model does not know yet (tests/test_oracle_open_disagreements.py): no nat prerouting beside it
        nft = NftRuleset(tuple(attrs.evolve(t, chains=tuple(
            attrs.evolve(c, hook=None) if c.hook is not None and (c.hook.type, c.hook.hook) == ("nat", "prerouting")
            else c for c in t.chains)) for t in nft.tables))
    # a reject's RST meets the nat chains its connection has not passed yet (output ones when the
    # reject comes before the nat hook, iptables' postrouting ones), which the model does not know yet
    # (tests/test_oracle_open_disagreements.py): such chains, and all beside iptables' rules, drop
    nft = NftRuleset(tuple(attrs.evolve(t, chains=tuple(
        attrs.evolve(c, rules=tuple(attrs.evolve(r, items=tuple(Verdict("drop") if isinstance(i, Reject) else i
                                                                for i in r.items)) for r in c.rules))
        if c.hook is not None and c.hook.type == "filter" and c.hook.hook == "output" and (mixed or c.hook.priority <= -100)
        else c for c in t.chains)) for t in nft.tables))
    # two port pairs in one rule: the model joins other compares into pairs than the kernel does (open:
    # tests/test_nftables_oracle.py::test_two_port_pairs_in_one_rule): such rules are left out
    nft = NftRuleset(tuple(attrs.evolve(t, chains=tuple(attrs.evolve(c, rules=tuple(
        r for r in c.rules if sum(isinstance(i, Match) and i.selector.key in ("sport", "dport") for i in r.items) < 3))
        for c in t.chains)) for t in nft.tables))
    low = lower(nft)
    if mixed:
        rules = Rulesets(Ruleset("ipv4", world.rules.ipv4.tables, low.ipv4.nft),
                         Ruleset("ipv6", world.rules.ipv6.tables, low.ipv6.nft))
    else:
        rules = low
    return attrs.evolve(world, rules=rules), nft


@st.composite
def nft_worlds_and_flows(draw: st.DrawFn) -> tuple[World, tuple[Flow, ...]]:
    world, _ = draw(nft_worlds())
    endpoint = draw(st.integers(0, len(world.services[0].endpoints) - 1))
    return world, world_flows(world, endpoint=endpoint)
