"""Option words as iptables' getopt reads them: a loaded module's options wherever they stand in the
rule, and unambiguous abbreviations of long options (kumactl writes ``-m multiport -p tcp --dport
1900,1902`` and ``--uid-owner 106:108``); checked against the real loader."""

from __future__ import annotations

import pytest
from iptables_kernel import kernel_roundtrip

from meshsolve.errors import ParseError
from meshsolve.iptables import parse_rule, parse_text
from meshsolve.model import MultiportMatch, OwnerMatch, PortMatch, Protocol, Return
from meshsolve.model.net import PortRange

# (as written, as iptables-save prints it back: measured with iptables 1.8.9 (nf_tables))
CASES = [
    ("-m multiport -p tcp --dport 1900,1902,1000:2000 -m owner --uid-owner 106:108 -j RETURN",
     "-p tcp -m multiport --dports 1900,1902,1000:2000 -m owner --uid-owner 106-108 -j RETURN"),
    ("-p tcp -m multiport --dport 7,8 -j RETURN", "-p tcp -m multiport --dports 7,8 -j RETURN"),
    ("-m multiport -p udp --dport 1:65535 -m owner --uid-owner 0 -j RETURN",
     "-p udp -m multiport --dports 1:65535 -m owner --uid-owner 0 -j RETURN"),
    ("-p tcp -m owner --uid 5 -j RETURN", "-p tcp -m owner --uid-owner 5 -j RETURN"),
    ("-p tcp -j REDIRECT --to-port 15001", "-p tcp -j REDIRECT --to-ports 15001"),
]


def test_multiport_takes_an_abbreviated_dports_after_the_protocol() -> None:
    r = parse_rule(CASES[0][0])
    assert Protocol("tcp") in r.matches
    assert MultiportMatch("dports", (1900, 1902, PortRange(1000, 2000))) in r.matches
    assert OwnerMatch(uid="106-108") in r.matches
    assert not any(isinstance(m, PortMatch) for m in r.matches)
    assert r.target == Return()


def test_an_exact_option_of_a_loaded_module_wins_over_an_abbreviation() -> None:
    r = parse_rule("-p tcp -m tcp --dport 80 -m multiport --dports 1,2 -j RETURN")
    assert PortMatch("tcp", dport=80) in r.matches
    assert MultiportMatch("dports", (1, 2)) in r.matches


def test_without_a_loaded_module_the_protocol_takes_dport() -> None:
    r = parse_rule("-m owner --uid-owner 0 -p tcp --dport 80 -j RETURN")
    assert PortMatch("tcp", dport=80) in r.matches


@pytest.mark.parametrize("text", ["-p tcp -m multiport --d 1,2 -j RETURN", "-p tcp -m owner --s 1 -j RETURN"])
def test_an_ambiguous_abbreviation_is_refused(text: str) -> None:
    with pytest.raises(ParseError):
        parse_rule(text)


@pytest.mark.parametrize(("given", "saved"), CASES)
def test_abbreviations_read_like_their_save_form(given: str, saved: str) -> None:
    assert parse_rule(given) == parse_rule(saved)


@pytest.mark.kernel
@pytest.mark.parametrize(("given", "saved"), CASES)
def test_the_loader_reads_the_same_rule(given: str, saved: str) -> None:
    dump, back = kernel_roundtrip(f"*nat\n-A OUTPUT {given}\nCOMMIT\n", "ipv4")
    assert f"-A OUTPUT {saved}\n" in dump
    want = parse_text(f"*nat\n-A OUTPUT {given}\nCOMMIT\n").ipv4
    assert back.table("nat") == want.table("nat")
