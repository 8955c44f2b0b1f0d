"""Native nftables base chains run where the kernel runs them: at their hook, ordered by priority
among each other and among iptables' tables, nat-type chains only for a connection's first packet.
(The reader and the lowering of nft text into this model are tested with the nftables package.)"""

from __future__ import annotations

import attrs

from meshsolve import Flow, Proved, Reachable, Refuted, check, interpret, setup_world
from meshsolve.model.rules import (
    BaseChain,
    Chain,
    Drop,
    NftTable,
    PortMatch,
    Protocol,
    Redirect,
    Rule,
    Ruleset,
    Rulesets,
    Table,
)
from meshsolve.semantics import Dropped


def _nft(*bases: tuple[str, str, int, str, tuple[Rule, ...]]) -> NftTable:
    chains = tuple(Chain(name, rules, "ACCEPT") for name, _h, _p, _t, rules in bases)
    return NftTable("inet", "t", Table("inet t", chains, nft=True),
                    tuple(BaseChain(name, hook, prio, typ) for name, hook, prio, typ, _r in bases))  # type: ignore[arg-type]


def test_a_filter_base_chain_before_iptables_nat_sees_the_original_port() -> None:
    e = setup_world("E")
    drop_9001 = Rule((Protocol("tcp"), PortMatch("tcp", dport=9001)), Drop())
    nft = _nft(("pre", "PREROUTING", -300, "filter", (drop_9001,)))
    w = attrs.evolve(e, rules=Rulesets(attrs.evolve(e.rules.ipv4, nft=(nft,)), e.rules.ipv6))
    res = interpret(w, Flow("peer", "192.0.2.10", 9001))
    assert isinstance(res.outcome, Dropped) and str(res.outcome.rule) == "inet t::pre#1"
    assert isinstance(check(w, Reachable("peer", 9001)), Refuted)
    assert isinstance(check(w, Reachable("peer", 9003)), Proved)


def test_an_nft_nat_chain_redirects_and_runs_once_per_connection() -> None:
    e = setup_world("E")
    redirect = Rule((Protocol("tcp"), PortMatch("tcp", dport=9999)), Redirect(9001))
    nft = _nft(("out", "OUTPUT", -110, "nat", (redirect,)))
    rules = Rulesets(Ruleset("ipv4", (), (nft,)), Ruleset("ipv6"))
    w = attrs.evolve(e, rules=rules)
    res = interpret(w, Flow("app", "127.0.0.1", 9999))
    assert res.summary == "app<-127.0.0.1"
    assert "inet t::out#1" in [str(h) for h in res.rule_hits]
    assert isinstance(check(w, Reachable("app", 9001, dst="127.0.0.1")), Proved)
