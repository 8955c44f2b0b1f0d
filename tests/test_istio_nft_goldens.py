"""Istio's 28 native-nftables sidecar goldens regenerated from their configurations (the iptables
twins' MANIFEST.yaml entries, plus the nft-only ``inbound-ports-empty-tproxy``) and compared rule for
rule: the command stream (every ``add``/``insert ... index`` in order) and the final ruleset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import REFERENCE
from istio_vectors import BASE, MASTER

from meshsolve.errors import UnsupportedError
from meshsolve.istio.config import from_go_fields
from meshsolve.istio.nft import nft_emission, nft_generate
from meshsolve.nftables import Ruleset, parse_text, read_commands, render

NFT = REFERENCE / "frontier" / "istio-nftables-sidecar"
#: The configurations: the iptables twins', and the one nft-only case (frontier/INDEX.md).
CASES: dict[str, dict[str, Any]] = {g["name"]: g["set"] for g in MASTER if g["name"] != "logging"}
CASES["inbound-ports-empty-tproxy"] = {"InboundInterceptionMode": "TPROXY", "InboundPortsInclude": ""}


def _config(name: str) -> Any:
    return from_go_fields({**BASE, **CASES[name]}, source=f"nft golden {name}")


def _diff(got: Ruleset, want: Ruleset) -> str:
    return f"--- generated\n{render(got)}--- golden\n{render(want)}"


def test_the_28_goldens_and_their_configurations() -> None:
    files = sorted(p.stem for p in NFT.glob("*.golden"))
    assert len(files) == 28
    assert sorted(CASES) == files


@pytest.mark.parametrize("name", sorted(CASES))
def test_nft_golden(name: str) -> None:
    text = (NFT / f"{name}.golden").read_text(encoding="utf-8")
    want_commands, _ = read_commands(text, source=f"{name}.golden")
    want = parse_text(text, source=f"{name}.golden")
    config = _config(name)
    got = nft_generate(config)
    assert got.rule_count() > 0
    assert got == want, _diff(got, want)
    assert nft_emission(config) == want_commands  # every command, in Istio's order


def test_a_different_configuration_does_not_match() -> None:
    """The comparison can fail: the wildcard golden is not the include-ports one, and IPv6 matters."""
    want = parse_text((NFT / "inbound-ports-wildcard.golden").read_text(encoding="utf-8"))
    assert nft_generate(_config("inbound-ports-include")) != want
    tproxy = parse_text((NFT / "tproxy.golden").read_text(encoding="utf-8"))
    assert nft_generate(_config("tproxy").evolve(enable_ipv6=False)) != tproxy


def test_ipv6_off_still_captures_ipv6_tcp() -> None:
    """With IPv6 off only the ``ip6`` rules go: the family-free redirects still apply to IPv6."""
    r = nft_generate(_config("kube-virt-interfaces"))
    assert not any(m.selector.base == "ip6" for t in r.tables for c in t.chains for x in c.rules
                   for m in x.matches())
    output = r.table("inet", "istio-proxy-nat").chain("istio-output")  # type: ignore[union-attr]
    assert output.rules[-1].verdict is not None and output.rules[-1].verdict.chain == "istio-redirect"
    assert output.rules[-1].matches() == ()


def test_versions_before_1_27_have_no_native_nftables() -> None:
    with pytest.raises(UnsupportedError, match=r"1\.27"):
        nft_emission(_config("empty").evolve(version="1.26"))
    assert nft_generate(_config("empty").evolve(version="1.27")) == nft_generate(_config("empty"))
    assert nft_generate(_config("empty").evolve(mode="NONE")) == Ruleset()


def test_generated_text_reads_back(tmp_path: Path) -> None:
    r = nft_generate(_config("tproxy"))
    f = tmp_path / "tproxy.nft"
    f.write_text(render(r), encoding="utf-8")
    from meshsolve.nftables import parse_file

    assert parse_file(f) == r


def test_cli_generate_nft_prints_the_golden(capsys: pytest.CaptureFixture[str]) -> None:
    from meshsolve.cli import main

    argv = ["generate", "-o", "nft", "--ipv6", "--dns-server", "127.0.0.53", "--", "-m", "TPROXY", "-b", "*",
            "-x", "1.1.0.0/16", "-i", "9.9.0.0/16", "--redirect-dns=true", "-g", "1337", "-u", "1337",
            "-c", "not-istio-nic"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert parse_text(out, source="stdout") == parse_text((NFT / "tproxy.golden").read_text(encoding="utf-8"))
    assert main(["generate", "--istio", "1.26", "-o", "nft", "--", "-b", "*"]) == 65
