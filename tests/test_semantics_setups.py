"""The bind matrices of set-ups A–E (kernel-facts.md), pinned cell by cell, IPv4 and IPv6.

The tables below are the reference facts of kernel-facts.md written in its cell notation
(``observed sides, outcome``). Where the reference leaves the source of a delivered connection out
("app", "in, app"), the source is the one the same table states for the same path elsewhere or the
one that follows from the kernel's source choice (noted per table); B's cells say "loop" where the
reference says "every flow that reaches the inbound side loops".
"""

from __future__ import annotations

import pytest

from meshsolve.model import Flow
from meshsolve.semantics import (
    Delivered,
    Loop,
    Refused,
    interpret,
    matrix,
    setup_addresses,
    setup_world,
)
from meshsolve.semantics.matrix import ROW_KINDS

PEER, LO, POD, VIP = ROW_KINDS

# Reference tables (IPv4), columns 9001 (0.0.0.0) | 9002 (127.0.0.1) | 9003 (pod IP).
EXPECTED_V4: dict[str, dict[str, tuple[str, str, str]]] = {
    # A: the shipped 1.2 set-up. The localhost-only app (9002) is exposed; the pod-IP app (9003) is
    # refused (the seed's bug); app -> pod IP is seen on the server side only; the VIP self-call on
    # both sides (the seed's two spans). Sources: the inbound side forwards from 127.0.0.1.
    "A": {
        PEER: ("in, app<-127.0.0.1", "in, app<-127.0.0.1", "in, refused"),
        LO: ("app<-127.0.0.1", "app<-127.0.0.1", "refused"),
        POD: ("in, app<-127.0.0.1", "in, app<-127.0.0.1", "in, refused"),
        VIP: ("out, in, app<-127.0.0.1", "out, in, app<-127.0.0.1", "out, in, refused"),
    },
    # B: every flow that reaches the inbound side loops; app -> 127.0.0.1 still bypasses.
    "B": {
        PEER: ("in, loop", "in, loop", "in, loop"),
        LO: ("app<-127.0.0.1", "app<-127.0.0.1", "refused"),
        POD: ("in, loop", "in, loop", "in, loop"),
        VIP: ("out, in, loop", "out, in, loop", "out, in, loop"),
    },
    # C: the seed's plan 2. 9002 not exposed; the VIP self-call is seen on the client side only.
    "C": {
        PEER: ("in, app<-192.0.2.10", "in, refused", "in, app<-192.0.2.10"),
        LO: ("app<-127.0.0.1", "app<-127.0.0.1", "refused"),
        POD: ("in, app<-192.0.2.10", "in, refused", "in, app<-192.0.2.10"),
        VIP: ("out, app<-192.0.2.10", "out, refused", "out, app<-192.0.2.10"),
    },
    # D: only DISABLE_REDIRECTION_ON_LOCAL_LOOPBACK. 9002 exposed, 9003 refused inbound,
    # VIP self-call client side only.
    "D": {
        PEER: ("in, app<-127.0.0.1", "in, app<-127.0.0.1", "in, refused"),
        LO: ("app<-127.0.0.1", "app<-127.0.0.1", "refused"),
        POD: ("in, app<-127.0.0.1", "in, app<-127.0.0.1", "in, refused"),
        VIP: ("out, app<-192.0.2.10", "out, refused", "out, app<-192.0.2.10"),
    },
    # E: Istio >= 1.10 / current: pod-IP listeners work, the self-call is seen on both sides,
    # app -> pod IP bypasses the proxy entirely, no loop anywhere.
    "E": {
        PEER: ("in, app<-127.0.0.6", "in, refused", "in, app<-127.0.0.6"),
        LO: ("app<-127.0.0.1", "app<-127.0.0.1", "refused"),
        POD: ("app<-192.0.2.10", "refused", "app<-192.0.2.10"),
        VIP: ("out, in, app<-127.0.0.6", "out, in, refused", "out, in, app<-127.0.0.6"),
    },
}

_V6_NAMES = {"127.0.0.1": "::1", "127.0.0.6": "::6", "192.0.2.10": "2001:db8::10"}


def _to_v6(cell: str) -> str:
    """The analogous IPv6 expectation: the same path with ::1, ::6 and the pod's IPv6 address."""
    for v4, v6 in _V6_NAMES.items():
        cell = cell.replace(v4, v6)
    return cell


EXPECTED = {
    (name, fam): {row: tuple(_to_v6(c) if fam == "ipv6" else c for c in cells)
                  for row, cells in table.items()}
    for name, table in EXPECTED_V4.items() for fam in ("ipv4", "ipv6")
}


@pytest.mark.parametrize(("name", "family"), sorted(EXPECTED))
def test_matrix_matches_reference(name: str, family: str) -> None:
    table = matrix(setup_world(name, family))  # type: ignore[arg-type]
    assert table.rows == ROW_KINDS
    assert [s.port for s in table.columns] == [9001, 9002, 9003]
    got = dict(zip(table.rows, table.summaries(), strict=True))
    want = EXPECTED[(name, family)]
    mismatches = [f"{row} / {table.columns[i]}: got {g!r}, want {w!r}"
                  for row in ROW_KINDS
                  for i, (g, w) in enumerate(zip(got[row], want[row], strict=True)) if g != w]
    assert not mismatches, f"set-up {name} {family}:\n" + "\n".join(mismatches) + "\n" + table.render()


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
@pytest.mark.parametrize("name", ["A", "B", "C", "D", "E"])
def test_delivered_cells_land_on_the_column_socket(name: str, family: str) -> None:
    table = matrix(setup_world(name, family))  # type: ignore[arg-type]
    for row in table.cells:
        for sock, cell in zip(table.columns, row, strict=True):
            assert cell is not None
            if isinstance(cell.outcome, Delivered):
                assert cell.outcome.socket == sock
                assert cell.outcome.app == "app"


def test_seed_bug_pod_ip_listener_refused_in_A() -> None:
    a = setup_addresses("ipv4")
    res = interpret(setup_world("A"), Flow("peer", a["pod"], 9003))
    assert isinstance(res.outcome, Refused)
    assert res.observed == ("in",)
    # the proxy's connection went to 127.0.0.1:9003 where nothing listens
    assert "nothing listens on 127.0.0.1:9003/tcp: refused" in [h.text for h in res.trace]


def test_B_loops_on_the_same_original_destination() -> None:
    a = setup_addresses("ipv4")
    res = interpret(setup_world("B"), Flow("peer", a["pod"], 9001))
    assert isinstance(res.outcome, Loop)
    assert "192.0.2.10:9001" in res.outcome.reason
    # the inbound side's connection is sent back to 15001 by rule 1 (before the uid RETURN)
    assert any(str(r) == "nat::ISTIO_OUTPUT#1" for r in res.rule_hits)
    assert max(h.leg for h in res.trace) == 2


def test_only_E_has_working_pod_ip_listeners_and_two_sided_self_calls() -> None:
    winners = []
    for name in ("A", "B", "C", "D", "E"):
        cells = matrix(setup_world(name))
        peer_9003 = cells.cell(PEER, 9003)
        vip_9001 = cells.cell(VIP, 9001)
        assert peer_9003 is not None and vip_9001 is not None
        if isinstance(peer_9003.outcome, Delivered) and vip_9001.observed == ("out", "in") \
                and isinstance(vip_9001.outcome, Delivered):
            winners.append(name)
    assert winners == ["E"]


def test_vip_self_call_trace_E() -> None:
    res = interpret(setup_world("E"), Flow("app", "198.51.100.1", 9001))
    texts = [h.text for h in res.trace]
    assert "dst 198.51.100.1:9001 -> 127.0.0.1:15001" in texts
    assert "dst 192.0.2.10:9001 -> 127.0.0.1:15006" in texts
    assert [str(r) for r in res.rule_hits] == [
        "nat::OUTPUT#1", "nat::ISTIO_OUTPUT#9", "nat::ISTIO_REDIRECT#1",
        "nat::OUTPUT#1", "nat::ISTIO_OUTPUT#2", "nat::ISTIO_IN_REDIRECT#1",
        "nat::OUTPUT#1", "nat::ISTIO_OUTPUT#1",
    ]
    text = str(res)
    assert text.splitlines()[0] == "flow app -> 198.51.100.1:9001/tcp"
    assert "nat::ISTIO_OUTPUT#2 " in text and "-j ISTIO_IN_REDIRECT" in text
    assert text.splitlines()[-2] == "outcome: delivered to app on 0.0.0.0:9001, source 127.0.0.6"
    assert res.summary == "out, in, app<-127.0.0.6"
