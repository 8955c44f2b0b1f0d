"""nftables against the real kernel: every golden is loaded with ``nft -f`` in a throw-away network
namespace, listed back with ``nft list ruleset`` and ``nft -j list ruleset``, and the three forms
must parse to the same model (the ``-f`` form through ``kernel_form``), handles included. Generated
rulesets (random ones and Istio's nft generation) go through the same loop."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REFERENCE, campaign_examples
from hypothesis import HealthCheck, given, settings
from istio_vectors import BASE, MASTER
from nft_kernel import MERGE_CASES, kernel_load, merge_case_text, nft_unavailable_reason

from meshsolve.istio.config import from_go_fields
from meshsolve.istio.nft import nft_generate
from meshsolve.nftables import Opaque, Ruleset, kernel_form, parse_text, render
from meshsolve.nftables.strategies import rulesets

FRONTIER = REFERENCE / "frontier"
GOLDENS = sorted((FRONTIER / "istio-nftables-sidecar").glob("*.golden")) + \
    sorted((FRONTIER / "istio-ambient-nftables").glob("*.golden"))

#: Goldens the kernel refuses, and why (nft 1.0.6, kernel 6.18): measured, see the test below.
REFUSED = {
    "istio-nftables-sidecar/outbound-owner-groups.golden": "Group does not exist",  # skgid java
    "istio-nftables-sidecar/outbound-owner-groups-exclude.golden": "Group does not exist",  # skgid ftp
    "istio-nftables-sidecar/ipv6-dns-outbound-owner-groups.golden": "Group does not exist",
    "istio-nftables-sidecar/ipv6-dns-outbound-owner-groups-exclude.golden": "Group does not exist",
    # the rule looks up @istio-inpod-probes-v4/v6, which istio-cni creates in another transaction
    "istio-ambient-nftables/hostprobe.golden": "No such file or directory",
    "istio-ambient-nftables/hostprobe_ipv6.golden": "No such file or directory",
}

#: The random rulesets through the kernel: CI profile (15), all 40 with --run-slow or the variable.
RANDOM_RULESETS = campaign_examples("MESHSOLVE_NFT_KERNEL_EXAMPLES", ci=15, full=40)

_reason = nft_unavailable_reason()
pytestmark = [pytest.mark.kernel,
              pytest.mark.skipif(_reason is not None, reason=f"kernel test skipped: {_reason}")]


def _name(p: Path) -> str:
    return f"{p.parent.name}/{p.name}"


def _handles(r: Ruleset) -> list[tuple[str, str, int | None]]:
    return [(t.name, c.name, x.handle) for t in r.tables for c in t.chains for x in c.rules]


def test_the_goldens_are_there() -> None:
    assert len(GOLDENS) == 42, [_name(p) for p in GOLDENS]


@pytest.mark.parametrize("path", GOLDENS, ids=_name)
def test_golden_in_three_forms(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    model = parse_text(text, source=_name(path))
    loaded = kernel_load(text)
    if _name(path) in REFUSED:
        assert loaded.error is not None and REFUSED[_name(path)] in loaded.error, loaded.error
        return
    assert loaded.error is None, loaded.error
    listed = parse_text(loaded.listing, source="nft list ruleset")
    as_json = parse_text(loaded.json, source="nft -j list ruleset")
    assert listed == as_json
    assert kernel_form(model) == listed
    assert kernel_form(listed) == listed
    assert _handles(model) == _handles(as_json)  # the replay numbers handles as the kernel does
    assert model.rule_count() == listed.rule_count() > 0


def test_refused_goldens_load_once_the_cause_is_removed() -> None:
    """The owner-group goldens load when the group names are numbers: the names were the cause."""
    for name in ("outbound-owner-groups", "outbound-owner-groups-exclude"):
        text = (FRONTIER / "istio-nftables-sidecar" / f"{name}.golden").read_text(encoding="utf-8")
        fixed = text.replace("skgid != java", "skgid != 5000").replace("skgid ftp", "skgid 5001")
        assert kernel_load(fixed).error is None
    sets = ("add table inet istio-ambient-nat\n"
            "add set inet istio-ambient-nat istio-inpod-probes-v4 { type ipv4_addr ; }\n"
            "add set inet istio-ambient-nat istio-inpod-probes-v6 { type ipv6_addr ; }\n")
    text = (FRONTIER / "istio-ambient-nftables" / "hostprobe_ipv6.golden").read_text(encoding="utf-8")
    loaded = kernel_load(sets + text)
    assert loaded.error is None, loaded.error
    assert parse_text(loaded.json) == kernel_form(parse_text(sets + text))


@settings(max_examples=RANDOM_RULESETS, deadline=None, suppress_health_check=list(HealthCheck))
@given(rulesets(kernel=True))
def test_random_rulesets_through_the_kernel(r: Ruleset) -> None:
    loaded = kernel_load(render(r))
    assert loaded.error is None, loaded.error
    listed = parse_text(loaded.listing)
    assert listed == parse_text(loaded.json)
    assert listed == kernel_form(r)


@pytest.mark.parametrize(("family", "written", "listed"), MERGE_CASES, ids=[f"{f}:{w}" for f, w, _ in MERGE_CASES])
def test_port_compares_join_where_the_kernel_joins_them(family: str, written: str, listed: str) -> None:
    """nft joins a port pair at the source port's place, across statements only while it has
    collected fewer than two header compares: the kernel listing is ``MERGE_CASES``' and
    ``kernel_form``'s."""
    loaded = kernel_load(merge_case_text(family, written))
    assert loaded.error is None, loaded.error
    got = parse_text(loaded.listing)
    assert got == parse_text(merge_case_text(family, listed))
    assert got == kernel_form(parse_text(merge_case_text(family, written)))


_CASES = {g["name"]: g["set"] for g in MASTER}


@pytest.mark.parametrize("name", ["empty", "tproxy", "ipv6-uid-gid", "dns-uid-gid", "inbound-ports-wildcard-tproxy"])
def test_istio_nft_generation_loads(name: str) -> None:
    generated = nft_generate(from_go_fields({**BASE, **_CASES[name]}))
    loaded = kernel_load(render(generated))
    assert loaded.error is None, loaded.error
    assert parse_text(loaded.listing) == kernel_form(generated)


def test_iptables_nft_tables_read_from_the_listing() -> None:
    """Hosts where iptables-nft wrote rules (Linkerd, Kuma) list them as nft tables; xt leftovers
    stay opaque."""
    import shutil
    import subprocess

    if not shutil.which("iptables-nft"):
        pytest.skip("iptables-nft is not installed")
    script = ("iptables-nft -t nat -N PROXY_INIT_REDIRECT && "
              "iptables-nft -t nat -A PROXY_INIT_REDIRECT -p tcp -m multiport --dports 4190,4191 -j RETURN && "
              "iptables-nft -t nat -A PROXY_INIT_REDIRECT -p tcp -j REDIRECT --to-port 4143 && "
              "iptables-nft -t nat -A PREROUTING -j PROXY_INIT_REDIRECT && "
              "iptables-nft -t nat -A OUTPUT -m owner --uid-owner 2102 -j RETURN && "
              "iptables-nft -t mangle -A PREROUTING -p tcp -m socket --transparent -j MARK --set-mark 1 && "
              "nft list ruleset")
    proc = subprocess.run(["unshare", "-n", "sh", "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    rs = parse_text(proc.stdout, source="nft list ruleset")
    nat = rs.table("ip", "nat")
    assert nat is not None and nat.chain("PREROUTING").hook.priority == -100  # type: ignore[union-attr]
    assert [str(r.verdict) for r in nat.chain("PROXY_INIT_REDIRECT").rules][:1] == ["Verdict(kind='return', chain=None)"]  # type: ignore[union-attr]
    assert any(isinstance(i, Opaque) and i.text.startswith("xt match") for t in rs.tables for c in t.chains
               for r in c.rules for i in r.items)
