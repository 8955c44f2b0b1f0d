"""Load failures as findings, before the rules are loaded: the three Istio's native nftables backend has
hit — an insert at an index into an empty chain, group names the loading host lacks, IPv6 rules with
IPv6 off — each found by ``meshsolve check`` from the rules alone, and (kernel tests) each premise
checked against the real ``nft``."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REFERENCE
from nft_kernel import kernel_load, nft_unavailable_reason

from meshsolve.analysis.worlds import read_rules
from meshsolve.cli import main
from meshsolve.inputs import load_configuration
from meshsolve.report.findings import lint_world

NFT = REFERENCE / "frontier" / "istio-nftables-sidecar"
_reason = nft_unavailable_reason()
needs_nft = pytest.mark.skipif(_reason is not None, reason=f"kernel test skipped: {_reason}")


def _buggy_empty_chain_insert() -> str:
    """``inbound-ports-empty-tproxy`` as Istio wrote it before its fix: the mangle ``istio-inbound``
    rules inserted at indexes 0, 1, 2 of a chain that is still empty (the fix made them ``add``)."""
    lines = (NFT / "inbound-ports-empty-tproxy.golden").read_text(encoding="utf-8").splitlines()
    k = 0
    for i, line in enumerate(lines):
        prefix = "add rule inet istio-proxy-mangle istio-inbound "
        if line.startswith(prefix):
            lines[i] = f"insert rule inet istio-proxy-mangle istio-inbound index {k} " + line[len(prefix):]
            k += 1
    assert k == 3
    return "\n".join(lines) + "\n"


def _codes(path: Path, family: str | None = None) -> dict[str, list[str]]:
    cfg = load_configuration(rules=str(path), family=family)
    out: dict[str, list[str]] = {}
    for f in lint_world(cfg.world):
        out.setdefault(f.code, []).append(f.line())
    return out


# --- 1. an insert at an index into an empty chain ------------------------------------------------------


def test_an_insert_into_an_empty_chain_is_a_refused_transaction(tmp_path: Path) -> None:
    path = tmp_path / "istio-init.nft"
    path.write_text(_buggy_empty_chain_insert(), encoding="utf-8")
    rules = read_rules(str(path))
    (problem,) = rules.load_problems
    assert problem.kind == "refused" and problem.lineno == 30 and "index 0" in problem.message
    assert rules.ipv4.empty and rules.ipv6.empty  # nothing of the transaction is loaded
    codes = _codes(path)
    assert list(codes) == ["MSH0150"] and f"{path}:30" in codes["MSH0150"][0]


def test_the_fixed_emission_loads(tmp_path: Path) -> None:
    path = tmp_path / "istio-init.nft"
    path.write_text((NFT / "inbound-ports-empty-tproxy.golden").read_text(encoding="utf-8"), encoding="utf-8")
    rules = read_rules(str(path))
    assert rules.load_problems == () and rules.ipv4.rule_count() > 0


@pytest.mark.kernel
@needs_nft
@pytest.mark.parametrize("fixed", [False, True])
def test_kernel_refuses_the_insert_into_an_empty_chain(fixed: bool) -> None:
    text = (NFT / "inbound-ports-empty-tproxy.golden").read_text(encoding="utf-8") if fixed \
        else _buggy_empty_chain_insert()
    loaded = kernel_load(text)
    assert (loaded.error is None) == fixed, loaded.error


# --- 2. group names nft resolves on the loading host ---------------------------------------------------


def test_group_names_are_found_before_loading() -> None:
    codes = _codes(NFT / "outbound-owner-groups.golden")
    assert set(codes) == {"MSH0151"} and any("'java'" in line for line in codes["MSH0151"])
    assert not _codes(NFT / "dns-uid-gid.golden").get("MSH0151")  # numeric ids need no name service


@pytest.mark.kernel
@needs_nft
def test_kernel_refuses_an_unknown_group_name() -> None:
    loaded = kernel_load((NFT / "outbound-owner-groups.golden").read_text(encoding="utf-8"))
    assert loaded.error is not None and "Group does not exist" in loaded.error


# --- 3. IPv6 rules with IPv6 off -------------------------------------------------------------------------


def test_ipv6_rules_in_a_pod_without_ipv6() -> None:
    codes = _codes(NFT / "tproxy.golden", family="ipv4")
    assert list(codes) == ["MSH0152"] and "ip6 saddr ::6" in codes["MSH0152"][0]
    assert not _codes(NFT / "tproxy.golden", family="dual")  # the pod has IPv6: nothing to say
    assert not _codes(NFT / "kube-virt-interfaces.golden", family="ipv4")  # IPv6 off, and no IPv6 rules


def test_check_reports_load_failures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "istio-init.nft"
    path.write_text(_buggy_empty_chain_insert(), encoding="utf-8")
    assert main(["check", "--rules", str(path), "-p", "bypass"]) == 79
    out = capsys.readouterr().out
    assert "[MSH0150]" in out and "nothing of it is loaded" in out
