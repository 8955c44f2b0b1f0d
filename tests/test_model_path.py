"""The order the kernel runs a hook's base chains in (``model.path.kernel_order``,
``Ruleset.stages``) and the order the oracle registers native tables in (``Rulesets.nft_load_order``);
what each order does to a packet is pinned on the kernel in ``tests/test_nftables_kernel_order.py``."""

from __future__ import annotations

import pytest

from meshsolve.errors import WorldError
from meshsolve.model.path import NAT_HOOK_PRIORITY, Stage, kernel_order, stages
from meshsolve.model.rules import BaseChain, Chain, NftTable, Ruleset, Rulesets, Table


def _names(out: tuple[Stage, ...]) -> list[str]:
    return [str(s) for s in out]


def test_iptables_tables_alone_keep_their_fixed_order() -> None:
    for hook in ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"):
        assert Ruleset("ipv4").stages(hook) == stages(hook)  # type: ignore[arg-type]
        assert kernel_order(hook, [s for h in ("OUTPUT", "PREROUTING", "INPUT", "POSTROUTING")  # type: ignore[arg-type]
                                   for s in stages(h)]) == stages(hook)  # type: ignore[arg-type]


def test_a_nat_stage_runs_at_the_nat_hook_place_whatever_its_priority() -> None:
    nat = Stage("ip t", "OUTPUT", 50, "out", "nat")
    flt = Stage("ip t", "OUTPUT", -105, "f", "filter")
    assert nat.place == NAT_HOOK_PRIORITY["OUTPUT"] == -100
    assert Stage("ip t", "INPUT", -300, "in", "nat").place == 100
    assert flt.place == -105
    assert kernel_order("OUTPUT", [nat, flt]) == (flt, nat)


def test_nat_stages_run_together_by_their_own_priority() -> None:
    a = Stage("ip a", "OUTPUT", 10, "out", "nat")
    b = Stage("ip b", "OUTPUT", -150, "out", "nat")
    f = Stage("ip f", "OUTPUT", 0, "f", "filter")
    ipt = stages("OUTPUT")
    out = kernel_order("OUTPUT", [*ipt, a, f, b])
    assert _names(out) == ["raw OUTPUT", "mangle OUTPUT", "ip b out", "nat OUTPUT", "ip a out", "ip f f",
                           "filter OUTPUT", "security OUTPUT"]


def test_on_a_tie_the_later_registration_runs_first() -> None:
    x, y = Stage("ip x", "OUTPUT", 0, "f", "filter"), Stage("ip y", "OUTPUT", 0, "f", "filter")
    assert kernel_order("OUTPUT", [x, y]) == (y, x)
    assert kernel_order("OUTPUT", [y, x]) == (x, y)
    nx, ny = Stage("ip x", "OUTPUT", -100, "n", "nat"), Stage("ip y", "OUTPUT", -100, "n", "nat")
    assert kernel_order("OUTPUT", [nx, ny]) == (ny, nx)


@pytest.mark.parametrize("nat_first", [True, False])
def test_the_nat_hook_ties_as_registered_with_the_familys_first_nat_chain(nat_first: bool) -> None:
    flt = Stage("ip t", "OUTPUT", -100, "f", "filter")
    nat = Stage("ip t", "OUTPUT", -100, "n", "nat")
    pre = Stage("ip t", "PREROUTING", -100, "p", "nat")  # registers the nat hooks of every hook
    order = [pre, flt, nat] if nat_first else [flt, nat]
    assert kernel_order("OUTPUT", order) == ((flt, nat) if nat_first else (nat, flt))


def test_an_absent_nat_stage_does_not_register_the_nat_hook() -> None:
    flt = Stage("ip t", "OUTPUT", -100, "f", "filter")
    nat = Stage("ip t", "OUTPUT", -100, "n", "nat")
    ipt_nat = Stage("nat", "OUTPUT", -100)
    # iptables' nat table registered the nat hook before the filter chain: the filter chain runs first
    assert kernel_order("OUTPUT", [ipt_nat, flt, nat]) == (flt, nat, ipt_nat)
    # without it, the nft nat chain registers the nat hook after the filter chain: nat runs first
    assert kernel_order("OUTPUT", [ipt_nat, flt, nat], lambda s: s is not ipt_nat) == (nat, ipt_nat, flt)


def _nft(family: str, name: str, *bases: BaseChain) -> NftTable:
    return NftTable(family, name, Table(f"{family} {name}", tuple(Chain(b.chain) for b in bases), nft=True),  # type: ignore[arg-type]
                    bases)


def test_ruleset_stages_put_iptables_first_in_registration() -> None:
    out = BaseChain("f", "OUTPUT", 0, "filter")
    rs = Ruleset("ipv4", (Table("filter", (Chain("OUTPUT"),)),), (_nft("ip", "a", out), _nft("ip", "b", out)))
    assert _names(rs.stages("OUTPUT"))[-4:] == ["ip b f", "ip a f", "filter OUTPUT", "security OUTPUT"]


def test_the_load_order_keeps_both_families_orders() -> None:
    i4, i6 = _nft("ip", "four", BaseChain("f", "OUTPUT", 0)), _nft("ip6", "six", BaseChain("f", "OUTPUT", 0))
    n1, n2 = _nft("inet", "one", BaseChain("f", "OUTPUT", 0)), _nft("inet", "two", BaseChain("f", "OUTPUT", 0))
    rules = Rulesets(Ruleset("ipv4", (), (n1, i4, n2)), Ruleset("ipv6", (), (i6, n1, n2)))
    got = [t.key for t in rules.nft_load_order()]
    assert got == ["ip6 six", "inet one", "ip four", "inet two"]
    for fam in ("ipv4", "ipv6"):
        keys = [t.key for t in rules.for_family(fam).nft]  # type: ignore[arg-type]
        assert [k for k in got if k in keys] == keys
    with pytest.raises(WorldError, match="different order"):
        Rulesets(Ruleset("ipv4", (), (n1, n2)), Ruleset("ipv6", (), (n2, n1))).nft_load_order()
