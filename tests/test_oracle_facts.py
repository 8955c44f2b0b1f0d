"""The twelve classes of kernel facts meshsolve once got wrong, each run on the kernel and through
meshsolve, which must agree.

For every class a small world (pod 192.0.2.10 / 2001:db8::10, peer .20 / ::20; apps ``any`` on
0.0.0.0:9001 and [::]:9001, ``local`` on 127.0.0.1:9002 and [::1]:9002, ``podip`` on the pod IPs at
9003) gets the rules of that class; the kernel oracle (``meshsolve.oracle``) materialises it once and
runs its flows for real, and each kernel result is compared with the interpreter's
(``meshsolve.oracle.compare.differences``: outcome kind and errno, app, socket and source seen,
observed proxy sides). Where ``check`` used to prove something the kernel refutes, the solver's
verdict is asserted too: never ``Proved``; a ``Refuted`` witness is replayed on the kernel and must
end there as the interpreter said, violating the property there too.

Tests marked ``xfail(strict=True)`` pin disagreements still open in the semantics: the reason names
the flow, the world and both results, and the mark must go when the semantics learn the fact.
``docs/kernel-facts.md`` names the agreement test of each class.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import attrs
import pytest
from iptables_kernel import restore
from iptables_loader_cases import LOADER_PLACEMENT_CASES, LOADER_SYNTAX_CASES, LoaderCase
from test_iptables_parse import UNSORTED_RESTORE

from meshsolve.analysis.check import Proved, Refuted, Unknown, Verdict, check, holds
from meshsolve.analysis.properties import (
    CaptureInbound,
    CaptureOutbound,
    LeavesPod,
    Observation,
    Property,
    Reachable,
)
from meshsolve.errors import OracleError, ParseError, WorldError
from meshsolve.iproute import parse_routing
from meshsolve.iptables import parse_text
from meshsolve.model.net import to_address
from meshsolve.model.rules import RuleRef
from meshsolve.model.world import App, Flow, Socket, World
from meshsolve.oracle.compare import differences, errno_of, explain, replay_command
from meshsolve.oracle.run import KernelWorld, OracleConfig
from meshsolve.semantics.interpret import interpret
from meshsolve.semantics.trace import Delivered, Dropped, Egress, Failed, Refused, Rejected, Result

pytestmark = pytest.mark.kernel

POD4, POD6, PEER4, PEER6 = "192.0.2.10", "2001:db8::10", "192.0.2.20", "2001:db8::20"
PODS = ((POD4, "127.0.0.1"), (POD6, "::1"))
# the handshake's ACK or the request is what a rule drops in some worlds: the client connects, then
# waits for an answer; an app on the veth answers in milliseconds, so a short read bound is enough
ACK_CONFIG = OracleConfig(read_timeout=1.0)
# an ICMPv6 error reaches a connecting socket with its first SYN retransmission, about 1 s after the SYN
REJECT_CONFIG = OracleConfig(connect_timeout=1.6)


def world(v4: str = "", v6: str = "", **kw: object) -> World:
    """The classes' pod with the given restore text per family (``# ipv6`` is added)."""
    text = v4 + ("# ipv6\n" + v6 if v6 else "")
    rules = {"rules": parse_text(text, source="test")} if text else {}
    apps = (App("any", sockets=(Socket("0.0.0.0", 9001), Socket("::", 9001, v6only=True))),
            App("local", sockets=(Socket("127.0.0.1", 9002), Socket("::1", 9002))),
            App("podip", sockets=(Socket(POD4, 9003), Socket(POD6, 9003))))
    return World(pod_ips=(POD4, POD6), peer_ips=(PEER4, PEER6), apps=apps, **rules, **kw)  # type: ignore[arg-type]


def same(v4: str) -> World:
    """A world whose IPv6 rules are its IPv4 rules (they name no address)."""
    return world(v4, v4)


def run(kw: KernelWorld, flows: Iterable[Flow]) -> dict[Flow, Result]:
    """Each flow on the kernel, asserting that the interpreter agrees; the kernel's results."""
    out: dict[Flow, Result] = {}
    bad: list[str] = []
    for flow in flows:
        expected, actual = interpret(kw.world, flow), kw.run(flow)
        if differences(expected, actual):
            bad.append(explain(kw.world, flow, expected, actual, replay_command(flow)))
        out[flow] = actual
    assert not bad, f"{len(bad)} flows disagree\n\n" + "\n\n".join(bad)
    return out


def not_proved(kw: KernelWorld, prop: Property, ran: dict[Flow, Result] | None = None) -> Verdict:
    """``check`` must not prove ``prop`` (the kernel refutes it): ``Unknown``, or ``Refuted`` with a
    witness that, replayed on the kernel, ends as the interpreter said and violates the property
    (a witness among the flows ``ran`` already is not run again)."""
    verdict = check(kw.world, prop)
    assert not isinstance(verdict, Proved), str(verdict)
    if isinstance(verdict, Refuted):
        assert verdict.world == kw.world
        actual = (ran or {}).get(verdict.flow) or kw.run(verdict.flow)
        diffs = differences(verdict.result, actual)
        assert not diffs, explain(kw.world, verdict.flow, verdict.result, actual, replay_command(verdict.flow))
        assert not holds(verdict.expected, actual), f"the kernel satisfies the property on {verdict.flow}:\n{actual}"
    else:
        assert isinstance(verdict, Unknown)
    return verdict


def proved(kw: KernelWorld, prop: Property, flows: Iterable[Flow]) -> None:
    """``check`` proves ``prop``, and the kernel satisfies it on ``flows`` (members of its scope)."""
    verdict = check(kw.world, prop)
    assert isinstance(verdict, Proved), str(verdict)
    for flow in flows:
        actual = kw.run(flow)
        assert any(holds(pred, actual) for _, pred in prop.checks(kw.world)), f"{prop.title()} on {flow}:\n{actual}"


def hit(result: Result, table: str, chain: str, index: int) -> bool:
    return RuleRef(table, chain, index) in result.rule_hits


# -------------------------------------------------------------------------------------------- class 1
DNAT_TO_LOOPBACK = world("*nat\n-A PREROUTING -p tcp --dport 9002 -j DNAT --to-destination 127.0.0.1:9002\nCOMMIT\n",
                         "*nat\n-A PREROUTING -p tcp --dport 9002 -j DNAT --to-destination [::1]:9002\nCOMMIT\n")


def test_class01_dnat_to_loopback_from_outside_is_dropped() -> None:
    """The peer's SYN is DNATed to 127.0.0.1 / ::1 and then dropped at the input route (IPv4: a
    martian; IPv6: a loopback destination is not routed in from outside, and with the pod's default
    route it is a silent drop, no ICMPv6). The local app still answers on loopback."""
    with KernelWorld(DNAT_TO_LOOPBACK) as kw:
        got = run(kw, [Flow("peer", pod, 9002) for pod, _ in PODS] + [Flow("any", lo, 9002) for _, lo in PODS]
                  + [Flow("peer", POD4, 9001)])
        for pod, lo in PODS:
            outside = got[Flow("peer", pod, 9002)]
            assert isinstance(outside.outcome, Failed) and hit(outside, "nat", "PREROUTING", 1), outside
            assert errno_of(outside.outcome) is None  # IPv6 too: no ICMPv6 error with a default route
            assert isinstance(got[Flow("any", lo, 9002)].outcome, Delivered)
        not_proved(kw, Reachable("peer", 9002), got)


# -------------------------------------------------------------------------------------------- class 2
def _output_dnat(filter_target: str) -> World:
    """nat OUTPUT DNATs a connection to the loopback port 9101 to the peer; filter OUTPUT has a rule
    for port 9101 (``filter_target``: "" counts, "-j REJECT" rejects)."""
    filt = f"*filter\n-A OUTPUT -p tcp --dport 9101 {filter_target}\nCOMMIT\n"
    return world(filt + "*nat\n-A OUTPUT -d 127.0.0.1/32 -p tcp --dport 9101 -j DNAT --to-destination 192.0.2.20\n"
                 "COMMIT\n", filt + "*nat\n-A OUTPUT -d ::1/128 -p tcp --dport 9101 -j DNAT --to-destination "
                 "2001:db8::20\nCOMMIT\n")


def test_class02_dnat_of_a_loopback_connection_to_the_outside_fails() -> None:
    """The re-route after nat OUTPUT: IPv4 drops the SYN right there (filter OUTPUT never sees it);
    IPv6 sends it out with source ::1, which nobody answers. ``LeavesPod`` is not proved."""
    with KernelWorld(_output_dnat("")) as kw:
        got = run(kw, [Flow("any", lo, 9101) for _, lo in PODS] + [Flow("any", PEER4, 9101)])
        v4, v6 = got[Flow("any", "127.0.0.1", 9101)], got[Flow("any", "::1", 9101)]
        assert isinstance(v4.outcome, Failed) and isinstance(v6.outcome, Failed)
        assert hit(v4, "nat", "OUTPUT", 1) and not hit(v4, "filter", "OUTPUT", 1)
        assert hit(v6, "filter", "OUTPUT", 1)
        assert isinstance(got[Flow("any", PEER4, 9101)].outcome, Egress)
        for _, lo in PODS:
            not_proved(kw, LeavesPod("any", lo, 9101, sides=()), got)


def test_class02_filter_output_does_not_see_the_rerouted_ipv4_syn() -> None:
    """The IPv4 SYN is dropped at the re-route right after nat OUTPUT: a REJECT in filter OUTPUT
    never sees it, so the client gets no answer (not ECONNREFUSED), and the solver agrees."""
    flow = Flow("any", "127.0.0.1", 9101)
    with KernelWorld(_output_dnat("-j REJECT")) as kw:
        got = run(kw, [flow])
        for res in (got[flow], interpret(kw.world, flow)):
            assert isinstance(res.outcome, Failed) and errno_of(res.outcome) is None, res
            assert hit(res, "nat", "OUTPUT", 1) and not hit(res, "filter", "OUTPUT", 1), res
        not_proved(kw, LeavesPod("any", "127.0.0.1", 9101, sides=()), got)


def test_class02_filter_output_sees_the_ipv6_syn_from_a_loopback_source() -> None:
    """IPv6 does reach filter OUTPUT after the DNAT: its REJECT answers the client."""
    with KernelWorld(_output_dnat("-j REJECT"), REJECT_CONFIG) as kw:
        got = run(kw, [Flow("any", "::1", 9101)])
    assert got[Flow("any", "::1", 9101)].outcome == Rejected(RuleRef("filter", "OUTPUT", 1), "ECONNREFUSED")


# -------------------------------------------------------------------------------------------- class 3
CAPTURE_9101 = "*nat\n-A OUTPUT -p tcp --dport 9101 -m owner ! --uid-owner 1337 -j REDIRECT --to-ports 15001\nCOMMIT\n"


def test_class03_destinations_connect_refuses_or_maps() -> None:
    """Broadcast, multicast and 127.255.255.255 give ENETUNREACH, link-local without a scope EINVAL,
    before any rule; ``::ffff:a.b.c.d`` is an IPv4 connection (the IPv4 capture rule takes it, and
    the local app sees the pod's IPv4 address)."""
    refused = ("255.255.255.255", "224.0.0.1", "230.51.100.1", "127.255.255.255", "ff02::1", "ff0e::db8:1",
               "fe80::1")
    with KernelWorld(world(CAPTURE_9101)) as kw:
        got = run(kw, [Flow("any", d, 9101) for d in refused]
                  + [Flow("any", "::ffff:192.0.2.20", 9101), Flow("any", "::ffff:192.0.2.10", 9003),
                     Flow("any", "::ffff:192.0.2.10", 9002)])
        for d in refused:
            res = got[Flow("any", d, 9101)]
            assert isinstance(res.outcome, Failed) and not res.rule_hits and res.observed == (), res
        mapped = got[Flow("any", "::ffff:192.0.2.20", 9101)]
        assert mapped.observed == ("out",) and mapped.outcome == Egress(to_address(PEER4), 9101, to_address(POD4))
        local = got[Flow("any", "::ffff:192.0.2.10", 9003)].outcome
        assert isinstance(local, Delivered) and str(local.source) == POD4
        assert got[Flow("any", "::ffff:192.0.2.10", 9002)].outcome == Refused()
        # 0.0.0.0/8 is no connect() error when the default route covers it; the SYN is captured
        zero = run(kw, [Flow("any", "0.1.2.3", 9101)])[Flow("any", "0.1.2.3", 9101)]
        assert zero.observed == ("out",) and isinstance(zero.outcome, Failed) and errno_of(zero.outcome) is None


def test_class03_no_witness_connect_refuses() -> None:
    """``CaptureOutbound`` with multicast / broadcast / link-local left uncaptured: what connect()
    refuses is no counterexample (the solver's address domain leaves it out), so it is proved; with a
    documentation range left out instead, the witness is an address the kernel really connects to."""
    holes = "*nat\n-A OUTPUT -p tcp -d {} -j RETURN\n" + CAPTURE_9101.removeprefix("*nat\n").replace(
        "--dport 9101 ", "")
    for v4, v6, is_proved in (("224.0.0.0/4", "ff00::/8", True), ("127.255.255.255/32", "fe80::/10", True),
                              ("198.51.100.0/24", "2001:db8:5::/48", False)):
        w = world(holes.format(v4), holes.format(v6))
        with KernelWorld(w) as kw:
            if is_proved:
                proved(kw, CaptureOutbound(), [Flow("any", "203.0.113.9", 80), Flow("any", "2001:db8:2::9", 80)])
            else:
                verdict = not_proved(kw, CaptureOutbound())
                assert isinstance(verdict, Refuted)


def test_class03_zero_address_means_loopback() -> None:
    with KernelWorld(world()) as kw:
        run(kw, [Flow("any", "0.0.0.0", p) for p in (9001, 9002, 9003)])


def test_class03_unspecified_ipv6_address_means_loopback() -> None:
    """connect() to :: goes to ::1 and completes: the handshake's ACK goes to ::1 too. Once with no
    rules, once with a filter OUTPUT rule that makes the model follow every handshake packet."""
    counter = "*filter\n-A OUTPUT -p tcp\nCOMMIT\n"
    for w in (world(), world(counter, counter)):
        with KernelWorld(w) as kw:
            run(kw, [Flow("any", "::", p) for p in (9001, 9002)])


def test_class03_zero_network_is_sent_with_a_default_route() -> None:
    """connect() to 0.0.0.0/8 (not 0.0.0.0) is no error when the pod's default route covers it: the
    SYN meets the rules (the capture rule sends port 80 to the proxy, whose upstream is sent too)
    and leaves the pod, and nobody answers it. ``LeavesPod`` is not proved, ``CaptureOutbound`` is
    refuted with a witness the kernel really sends (port 443 is not captured)."""
    counter = "*filter\n-A OUTPUT -p tcp -d 0.0.0.0/8\nCOMMIT\n"
    flows = [Flow("any", "0.1.2.3", 80), Flow("any", "0.1.2.3", 443)]
    with KernelWorld(world(counter + CAPTURE_9101.replace("9101", "80"))) as kw:
        got = run(kw, flows)
        for flow in flows:
            res = got[flow]
            assert isinstance(res.outcome, Failed) and errno_of(res.outcome) is None, res
            assert hit(res, "filter", "OUTPUT", 1), res
        assert got[flows[0]].observed == ("out",) and got[flows[1]].observed == ()
        not_proved(kw, LeavesPod("any", "0.1.2.3", 443, sides=()), got)
        assert isinstance(not_proved(kw, CaptureOutbound(), got), Refuted)


def test_class03_leaving_the_pod_to_0_0_0_0_is_not_proved() -> None:
    with KernelWorld(world()) as kw:
        assert isinstance(kw.run(Flow("any", "0.0.0.0", 9101)).outcome, Refused)
        not_proved(kw, LeavesPod("any", "0.0.0.0", 9101, sides=()))


# -------------------------------------------------------------------------------------------- class 4
def test_class04_conntrack_state_in_raw() -> None:
    """raw PREROUTING sees the peer's SYN as INVALID (no entry yet), a local connection's re-entry
    as NEW; raw OUTPUT sees every packet the pod sends as INVALID, the SYN-ACK included."""
    rules = ("*raw\n-A PREROUTING -p tcp --dport 9001 -m conntrack --ctstate INVALID -j DROP\n"
             "-A PREROUTING -p tcp --dport 9003 -m state --state NEW -j DROP\n"
             "-A OUTPUT -p tcp --dport 9002 -m conntrack --ctstate INVALID -j DROP\nCOMMIT\n")
    flows = [f for pod, lo in PODS for f in (Flow("peer", pod, 9001), Flow("any", pod, 9001), Flow("peer", pod, 9003),
                                             Flow("any", pod, 9003), Flow("any", lo, 9002))]
    with KernelWorld(same(rules)) as kw:
        got = run(kw, flows)
        for pod, lo in PODS:
            assert got[Flow("peer", pod, 9001)].outcome == Dropped(RuleRef("raw", "PREROUTING", 1))
            assert isinstance(got[Flow("any", pod, 9001)].outcome, Delivered)
            assert isinstance(got[Flow("peer", pod, 9003)].outcome, Delivered)
            assert got[Flow("any", pod, 9003)].outcome == Dropped(RuleRef("raw", "PREROUTING", 2))
            assert got[Flow("any", lo, 9002)].outcome == Dropped(RuleRef("raw", "OUTPUT", 1))
        not_proved(kw, Reachable("peer", 9001), got)
        # a local client whose source port is 9002: its SYN-ACK meets the raw OUTPUT rule
        not_proved(kw, Reachable("any", 9001), got)


def test_class04_connmark_needs_an_entry() -> None:
    """``-m connmark`` reads the packet's conntrack entry: in raw a first packet has none, so even
    ``! --mark 0x1`` does not match (raw OUTPUT, and raw PREROUTING for the peer's SYN); the
    loopback re-entry carries its entry, and a ``CT --zone`` target gives a template (mark 0), and
    there it matches; the template's state is NEW, not INVALID. (Found by the kernel campaign once it drew CT zones: a raw OUTPUT
    ``-m connmark ! --mark ... -j CT --zone 6`` never fires.)"""
    rules = ("*raw\n-A OUTPUT -p tcp --dport 9001 -m connmark ! --mark 0x1 -j DROP\n"
             "-A OUTPUT -p tcp --dport 9003 -j CT --zone 5\n"
             "-A OUTPUT -p tcp --dport 9003 -m state --state INVALID -j DROP\n"
             "-A OUTPUT -p tcp --dport 9003 -m connmark ! --mark 0x1 -j DROP\n"
             "-A PREROUTING -p tcp --dport 9002 -m connmark ! --mark 0x1 -j DROP\nCOMMIT\n")
    flows = [f for pod, lo in PODS for f in (Flow("any", pod, 9001), Flow("peer", pod, 9001), Flow("any", lo, 9002),
                                             Flow("peer", pod, 9003), Flow("any", pod, 9003))]
    with KernelWorld(same(rules)) as kw:
        got = run(kw, flows)
        for pod, lo in PODS:
            for flow in (Flow("any", pod, 9001), Flow("peer", pod, 9001), Flow("peer", pod, 9003)):
                assert isinstance(got[flow].outcome, Delivered), got[flow]
            assert got[Flow("any", lo, 9002)].outcome == Dropped(RuleRef("raw", "PREROUTING", 1))
            assert got[Flow("any", pod, 9003)].outcome == Dropped(RuleRef("raw", "OUTPUT", 4))
        not_proved(kw, Reachable("any", 9003), got)


# -------------------------------------------------------------------------------------------- class 5
def test_class05_restore_input_with_tables_out_of_order() -> None:
    """``*nat`` without ``:CHAIN`` lines, then ``*filter`` with ``:INPUT DROP``: the loader puts both
    into IPv4, and so does the parser; the pod's IPv4 INPUT drops, its IPv6 side is open."""
    done = restore(UNSORTED_RESTORE)
    assert done.returncode == 0, done.stderr
    assert done.ipv6_dump == ""
    kernel = parse_text("# ipv4\n" + done.ipv4_dump, source="iptables-save")
    ours = parse_text(UNSORTED_RESTORE, source="test")
    assert ours.ipv6.empty and ours.ipv4 == kernel.ipv4
    w = attrs.evolve(world(), rules=ours)
    with KernelWorld(w, restore_text={"ipv4": UNSORTED_RESTORE}) as kw:
        got = run(kw, [Flow("peer", POD4, 9001), Flow("peer", POD6, 9001), Flow("any", "127.0.0.1", 9002)])
        assert got[Flow("peer", POD4, 9001)].outcome == Dropped(RuleRef("filter", "INPUT", 0))
        assert isinstance(got[Flow("peer", POD6, 9001)].outcome, Delivered)
        not_proved(kw, Reachable("peer", 9001), got)


# -------------------------------------------------------------------------------------------- class 6
def test_class06_redirect_to_a_port_range() -> None:
    """A destination port inside the range is kept, one outside goes to the range's first port; a
    range covering the proxy's ports sends some connections to the other side."""
    with KernelWorld(same("*nat\n-A PREROUTING -p tcp -j REDIRECT --to-ports 9001-9003\nCOMMIT\n")) as kw:
        got = run(kw, [Flow("peer", pod, p) for pod, _ in PODS for p in (9001, 9002, 9003, 9100)])
        for pod, _ in PODS:
            kept = got[Flow("peer", pod, 9003)].outcome
            assert isinstance(kept, Delivered) and kept.app == "podip"
            assert got[Flow("peer", pod, 9002)].outcome == Refused()  # kept: 9002 is loopback-only
            low = got[Flow("peer", pod, 9100)].outcome
            assert isinstance(low, Delivered) and low.app == "any"
        proved(kw, Reachable("peer", 9003), [Flow("peer", POD4, 9003), Flow("peer", POD6, 9003)])
        not_proved(kw, Reachable("peer", 9100), got)
    both = same("*nat\n-A PREROUTING -p tcp -j REDIRECT --to-ports 15001-15006\n"
                "-A OUTPUT -p tcp -m owner ! --uid-owner 1337 -j REDIRECT --to-ports 15001-15006\nCOMMIT\n")
    with KernelWorld(both) as kw:
        got = run(kw, [Flow("peer", POD4, 9003), Flow("any", "203.0.113.9", 15006), Flow("any", "2001:db8:2::9", 443)])
        assert got[Flow("peer", POD4, 9003)].observed == ("out",)
        assert got[Flow("any", "203.0.113.9", 15006)].observed == ("in",)
        assert got[Flow("any", "2001:db8:2::9", 443)].observed == ("out",)
        not_proved(kw, CaptureInbound(), got)
        not_proved(kw, CaptureOutbound(), got)


# -------------------------------------------------------------------------------------------- class 7
ZONES = {  # raw PREROUTING rule, raw OUTPUT rule
    "zone 5 in PREROUTING": ("-A PREROUTING -p tcp -j CT --zone 5", ""),
    "zone 5 in OUTPUT": ("", "-A OUTPUT -p tcp -j CT --zone 5"),
    "zone 5 in, zone 6 out": ("-A PREROUTING -p tcp -j CT --zone 5", "-A OUTPUT -p tcp -j CT --zone 6"),
    "zone 5 both ways": ("-A PREROUTING -p tcp -j CT --zone 5", "-A OUTPUT -p tcp -j CT --zone 5"),
}


def _zone_world(name: str) -> World:
    raw = "*raw\n" + "".join(r + "\n" for r in ZONES[name] if r) + "COMMIT\n"
    nat = "*nat\n-A PREROUTING -p tcp --dport 9003 -j REDIRECT --to-ports 15006\nCOMMIT\n"
    return same(raw + nat)


@pytest.mark.parametrize("name", sorted(ZONES))
def test_class07_conntrack_zones(name: str) -> None:
    """A plain connection completes in every zone set-up; a REDIRECTed one never does when its two
    directions are in different zones (replies are not un-NATed), and when both are in zone 5 the
    proxy cannot read SO_ORIGINAL_DST (default zone only) and closes it."""
    with KernelWorld(_zone_world(name)) as kw:
        plain = [Flow("peer", pod, 9001) for pod, _ in PODS] + [Flow("any", POD4, 9001), Flow("any", "::1", 9002)]
        got = run(kw, plain)
        assert all(isinstance(got[f].outcome, Delivered) for f in plain)
        if name == "zone 5 both ways":
            return  # the redirected connection: test_class07_the_proxy_cannot_read_the_destination_in_a_zone
        got = run(kw, [Flow("peer", pod, 9003) for pod, _ in PODS])
        assert all(isinstance(r.outcome, Failed) for r in got.values())
        not_proved(kw, Reachable("peer", 9003), got)
        not_proved(kw, CaptureInbound(ports=(9003,)), got)
        not_proved(kw, Observation("peer", POD4, 9003, sides=("in",)), got)


def test_class07_the_proxy_cannot_read_the_destination_in_a_zone() -> None:
    """Both directions in zone 5: the REDIRECTed connection completes and the proxy's inbound side
    accepts it (an observation), but SO_ORIGINAL_DST fails (ENOENT), so the proxy closes it: the
    client is refused. Reachability and inbound capture of port 9003 are not proved; the solver's
    observation of the inbound side is."""
    flows = [Flow("peer", pod, 9003) for pod, _ in PODS]
    with KernelWorld(_zone_world("zone 5 both ways")) as kw:
        got = run(kw, flows)
        for flow in flows:
            for res in (got[flow], interpret(kw.world, flow)):
                assert res.outcome == Refused() and res.observed == ("in",), res
        not_proved(kw, Reachable("peer", 9003), got)
        proved(kw, Observation("peer", POD4, 9003, sides=("in",), delivered=False), flows[:1])


def test_class07_a_blind_proxy_dispatches_by_its_own_address() -> None:
    """Zone 5 both ways, the peer's connection REDIRECTed to the outbound listener with the 1.0-1.2
    virtual inbound dispatch for port 9003: without SO_ORIGINAL_DST the proxy has only its local
    address (port 15001, not an inbound port), so the outbound side takes it, then closes it. (Found by the kernel
    campaign: the model dispatched by the destination the proxy could not read.)"""
    raw = "*raw\n-A PREROUTING -p tcp -j CT --zone 5\n-A OUTPUT -p tcp -j CT --zone 5\nCOMMIT\n"
    nat = "*nat\n-A PREROUTING -p tcp --dport 9003 -j REDIRECT --to-ports 15001\nCOMMIT\n"
    w = same(raw + nat)
    w = attrs.evolve(w, proxy=attrs.evolve(w.proxy, virtual_inbound_dispatch=True, inbound_ports=(9003,)))
    flows = [Flow("peer", pod, 9003) for pod, _ in PODS]
    with KernelWorld(w) as kw:
        got = run(kw, flows)
        for flow in flows:
            assert got[flow].outcome == Refused() and got[flow].observed == ("out",), got[flow]
        not_proved(kw, Observation("peer", POD4, 9003, sides=("in",), delivered=False), got)


# -------------------------------------------------------------------------------------------- class 8
@attrs.frozen
class _Unchecked(World):
    """A world as given, without meshsolve's validation (to put before the kernel what it refuses)."""

    def __attrs_post_init__(self) -> None:
        pass


BIND_PAIRS = (("0.0.0.0", "127.0.0.1"), ("::", "::1"), ("0.0.0.0", POD4))


@pytest.mark.parametrize(("wild", "specific"), BIND_PAIRS)
def test_class08_wildcard_and_specific_bind_on_one_port(wild: str, specific: str) -> None:
    """meshsolve accepts a wildcard and a specific listener on one port exactly when the kernel lets
    both listen (SO_REUSEPORT on both, same uid); then the specific one takes connections to its
    address, the wildcard the rest."""
    for wild_rp, spec_rp, spec_uid in ((True, True, 1000), (True, False, 1000), (False, True, 1000),
                                       (False, False, 1000), (True, True, 1001)):
        apps = (App("wild", uid=1000, gid=1000, sockets=(Socket(wild, 9001, v6only=True, reuseport=wild_rp),)),
                App("spec", uid=spec_uid, gid=1000, sockets=(Socket(specific, 9001, reuseport=spec_rp),)))
        addrs = {"pod_ips": (POD4, POD6), "peer_ips": (PEER4, PEER6)}
        try:
            checked: World | None = World(apps=apps, **addrs)  # type: ignore[arg-type]
        except WorldError:
            checked = None
        case = (wild, specific, wild_rp, spec_rp, spec_uid)
        if checked is None:
            with pytest.raises(OracleError, match="Address already in use"), \
                    KernelWorld(_Unchecked(apps=apps, **addrs)):  # type: ignore[arg-type]
                pass
            continue
        assert (wild_rp, spec_rp, spec_uid) == (True, True, 1000), case  # fact 7: the only one that binds
        pod, lo = (POD6, "::1") if ":" in wild else (POD4, "127.0.0.1")
        with KernelWorld(checked) as kw:
            got = run(kw, [Flow("wild", pod, 9001), Flow("wild", lo, 9001), Flow("peer", pod, 9001)])
        for flow, res in got.items():
            assert isinstance(res.outcome, Delivered), (case, flow, res)
            assert res.outcome.app == ("spec" if flow.dst == to_address(specific) else "wild"), (case, flow, res)


# -------------------------------------------------------------------------------------------- class 9
def test_class09_reject_is_refused_drop_hangs() -> None:
    """REJECT answers the client with the errno of its ``--reject-with`` (IPv6: with the SYN's first
    retransmission); DROP leaves it waiting."""
    v4 = ("*filter\n-A INPUT -p tcp --dport 9001 -j REJECT\n-A INPUT -p tcp --dport 9003 -j DROP\n"
          "-A OUTPUT -p tcp -d 203.0.113.1 -j REJECT --reject-with icmp-host-unreachable\n"
          "-A OUTPUT -p tcp -d 203.0.113.2 -j REJECT --reject-with tcp-reset\n"
          "-A OUTPUT -p tcp -d 203.0.113.3 -j DROP\nCOMMIT\n")
    v6 = (v4.replace("icmp-host-unreachable", "icmp6-adm-prohibited").replace("203.0.113.", "2001:db8:3::"))
    outside = {"ipv4": "203.0.113.", "ipv6": "2001:db8:3::"}
    flows = [Flow("peer", pod, p) for pod, _ in PODS for p in (9001, 9003)]
    flows += [Flow("any", f"{prefix}{n}", 80) for prefix in outside.values() for n in (1, 2, 3)]
    with KernelWorld(world(v4, v6), REJECT_CONFIG) as kw:
        got = run(kw, flows)
        for pod, _ in PODS:
            assert got[Flow("peer", pod, 9001)].outcome == Rejected(RuleRef("filter", "INPUT", 1), "ECONNREFUSED")
            assert got[Flow("peer", pod, 9003)].outcome == Dropped(RuleRef("filter", "INPUT", 2))
        for fam, errno in (("ipv4", "EHOSTUNREACH"), ("ipv6", "EACCES")):
            p = outside[fam]
            assert got[Flow("any", f"{p}1", 80)].outcome == Rejected(RuleRef("filter", "OUTPUT", 1), errno)
            assert got[Flow("any", f"{p}2", 80)].outcome == Rejected(RuleRef("filter", "OUTPUT", 2), "ECONNREFUSED")
            assert got[Flow("any", f"{p}3", 80)].outcome == Dropped(RuleRef("filter", "OUTPUT", 3))
        not_proved(kw, Reachable("peer", 9001), got)


# ------------------------------------------------------------------------------------------- class 10
def _refused_line(text: str) -> int | None:
    """The line meshsolve refuses ``text`` at (parser or world validation), or None if it accepts it."""
    try:
        rules = parse_text(text, source="restore")
    except ParseError as exc:
        assert exc.lineno is not None, str(exc)
        return exc.lineno
    try:
        World(pod_ips=(POD4, POD6), peer_ips=(PEER4, PEER6), rules=rules)
    except WorldError as exc:
        m = re.search(r"\(line restore:(\d+)\)", str(exc))
        assert m, f"the refusal does not name the line: {exc}"
        return int(m.group(1))
    return None


def _loader_line(case: LoaderCase) -> int | None:
    """The line the real iptables-restore refuses ``case`` at, or None if it loads it."""
    done = restore(case.text, case.tool)
    if done.returncode == 0:
        return None
    m = re.search(r"Error occurred at line: (\d+)|line (\d+): ", done.stderr)
    assert m, f"{case.tool} refused without naming a line (exit {done.returncode}): {done.stderr}"
    return int(m.group(1) or m.group(2))


def _extra(name: str, table: str, rule: str, *, ipv6: bool = False) -> LoaderCase:
    return LoaderCase(name, ("# ipv6\n" if ipv6 else "") + f"*{table}\n{rule}\nCOMMIT\n")


EXTRA_LOADER_CASES = (  # the rest of docs/kernel-facts.md fact 12, refused and accepted
    _extra("owner-in-nat-prerouting", "nat", "-A PREROUTING -p tcp -m owner --uid-owner 1337 -j RETURN"),
    _extra("owner-in-filter-input", "filter", "-A INPUT -p tcp -m owner --uid-owner 1337 -j ACCEPT"),
    _extra("owner-in-filter-input-ipv6", "filter", "-A INPUT -p tcp -m owner --uid-owner 1337 -j ACCEPT",
           ipv6=True),
    _extra("tproxy-in-nat", "nat", "-A PREROUTING -p tcp -j TPROXY --on-port 15006 --tproxy-mark 0x1/0x1"),
    _extra("tproxy-in-mangle", "mangle", "-A PREROUTING -p tcp -j TPROXY --on-port 15006 --tproxy-mark 0x1/0x1"),
    _extra("socket-in-nat-output", "nat", "-A OUTPUT -p tcp -m socket -j RETURN"),
    _extra("socket-in-raw-output", "raw", "-A OUTPUT -p tcp -m socket -j RETURN"),
    _extra("socket-in-filter-input", "filter", "-A INPUT -p tcp -m socket -j ACCEPT"),
    _extra("nat-policy-drop", "nat", ":OUTPUT DROP [0:0]\n-A OUTPUT -p tcp -j RETURN"),
    _extra("reject-in-filter-input", "filter", "-A INPUT -p tcp -j REJECT --reject-with tcp-reset"),
)


def test_class10_meshsolve_refuses_what_the_loader_refuses() -> None:
    """Every measured loader case (and the rest of fact 12): meshsolve refuses a ruleset exactly when
    the real iptables-restore does, naming the same line."""
    bad = []
    for case in (*LOADER_SYNTAX_CASES, *LOADER_PLACEMENT_CASES, *EXTRA_LOADER_CASES):
        kernel, ours = _loader_line(case), _refused_line(case.text)
        if kernel != ours:
            bad.append(f"{case.name}: iptables-restore refuses at line {kernel}, meshsolve at line {ours}")
    assert not bad, "\n".join(bad)


# ------------------------------------------------------------------------------------------- class 11
REPLY_RULES = ("*filter\n-A INPUT -p tcp --dport 9003 -m conntrack --ctstate ESTABLISHED -j DROP\n"
               "-A OUTPUT -p tcp --sport 9001 -j DROP\nCOMMIT\n")


def test_class11_rules_on_the_reply_and_the_handshake_ack() -> None:
    """A DROP on the app's SYN-ACK (filter OUTPUT ``--sport 9001``) and on the handshake's ACK
    (filter INPUT ``--ctstate ESTABLISHED``, port 9003): no connection completes, locally or not."""
    flows = [f for pod, lo in PODS for f in (Flow("peer", pod, 9001), Flow("peer", pod, 9003), Flow("any", pod, 9003),
                                             Flow("any", lo, 9002), Flow("any", lo, 9002, sport=9003))]
    with KernelWorld(same(REPLY_RULES), ACK_CONFIG) as kw:
        got = run(kw, flows)
        for pod, lo in PODS:
            assert got[Flow("peer", pod, 9001)].outcome == Dropped(RuleRef("filter", "OUTPUT", 1))
            assert got[Flow("peer", pod, 9003)].outcome == Dropped(RuleRef("filter", "INPUT", 1))
            assert got[Flow("any", pod, 9003)].outcome == Dropped(RuleRef("filter", "INPUT", 1))
            assert isinstance(got[Flow("any", lo, 9002)].outcome, Delivered)
            # a client on source port 9003: the INPUT rule drops its SYN-ACK, over lo too
            assert got[Flow("any", lo, 9002, sport=9003)].outcome == Dropped(RuleRef("filter", "INPUT", 1))
        not_proved(kw, Reachable("peer", 9001), got)
        not_proved(kw, Reachable("peer", 9003), got)


def test_class11_a_source_port_a_listener_holds_is_no_witness() -> None:
    """A client cannot bind a source port a listener of the pod holds (here the wildcard 9001 and
    the proxy's 15001; 9002 only on loopback, so the pod IP's port 9002 is free): bind() fails
    with EADDRINUSE, on the kernel and in the interpreter. Such a flow is outside every question's
    scope, so the solver's witness for ``Reachable`` uses a port the kernel lets it bind."""
    held = [Flow("any", lo, 9002, sport=p) for _, lo in PODS for p in (9001, 15001)]
    free = [Flow("any", POD4, 9001, sport=9002), Flow("any", "127.0.0.1", 9002, sport=9003)]
    with KernelWorld(same(REPLY_RULES), ACK_CONFIG) as kw:
        got = run(kw, held + free)
        for flow in held:
            assert isinstance(got[flow].outcome, Failed) and errno_of(got[flow].outcome) == "EADDRINUSE", got[flow]
        for flow in free:
            assert errno_of(got[flow].outcome) is None, got[flow]
        verdict = not_proved(kw, Reachable("any", 9002, dst="127.0.0.1"), got)
        assert isinstance(verdict, Refuted)
        assert errno_of(verdict.result.outcome) != "EADDRINUSE", verdict


# ------------------------------------------------------------------------------------------- class 12
def test_class12_syn_and_tcp_flags() -> None:
    """``--syn`` / ``--tcp-flags`` are decided for every packet: nat sees only the SYN (``! --syn``
    never matches there), filter INPUT ``! --syn`` drops the handshake's ACK."""
    rules = ("*nat\n-A PREROUTING -p tcp --syn --dport 9001 -j REDIRECT --to-ports 15006\n"
             "-A PREROUTING -p tcp ! --syn --dport 9003 -j REDIRECT --to-ports 15006\nCOMMIT\n"
             "*filter\n-A INPUT -p tcp --dport 9003 ! --syn -j DROP\n"
             "-A INPUT -p tcp --tcp-flags SYN,ACK SYN --dport 9002\nCOMMIT\n"
             "*mangle\n-A PREROUTING -p tcp --tcp-flags SYN,RST,ACK SYN --dport 9001 -j MARK --set-mark 7\nCOMMIT\n")
    flows = [f for pod, lo in PODS for f in (Flow("peer", pod, 9001), Flow("peer", pod, 9003), Flow("any", lo, 9002))]
    with KernelWorld(same(rules), ACK_CONFIG) as kw:
        got = run(kw, flows)
        for pod, lo in PODS:
            captured = got[Flow("peer", pod, 9001)]
            assert captured.observed == ("in",) and isinstance(captured.outcome, Delivered)
            assert hit(captured, "mangle", "PREROUTING", 1)
            assert got[Flow("peer", pod, 9003)].outcome == Dropped(RuleRef("filter", "INPUT", 1))
            assert hit(got[Flow("any", lo, 9002)], "filter", "INPUT", 2)
        proved(kw, CaptureInbound(ports=(9001,)), [Flow("peer", POD4, 9001), Flow("peer", POD6, 9001)])
        not_proved(kw, Reachable("peer", 9003), got)


# ------------------------------------------------------------------------------------------- class 17
def test_class17_the_refusing_rst_is_a_reply_of_the_pod() -> None:
    """The RST that refuses a connection nothing listens for passes filter OUTPUT: a DROP that matches
    it leaves the client waiting (dropped by that rule), the same port without the rule is refused;
    a connection whose ``CONNMARK --restore-mark`` marks its RST for the local table never gets it
    back to the peer (the RST stays in the pod: the client waits too)."""
    rules = ("*mangle\n-A PREROUTING -p tcp --dport 9010 -j CONNMARK --set-mark 0x111\n"
             "-A OUTPUT -p tcp --tcp-flags RST RST -j CONNMARK --restore-mark\nCOMMIT\n"
             "*filter\n-A OUTPUT -p tcp --sport 9008 --tcp-flags RST RST -j DROP\nCOMMIT\n")
    routing = parse_routing("ip rule add fwmark 0x111/0xfff lookup 100\nip route add local 0.0.0.0/0 dev lo table 100\n"
                            "ip -6 rule add fwmark 0x111/0xfff lookup 100\nip -6 route add local ::/0 dev lo table 100\n")
    flows = [Flow("peer", pod, p) for pod, _ in PODS for p in (9008, 9009, 9010)]
    with KernelWorld(world(rules, rules, routing=routing), ACK_CONFIG) as kw:
        got = run(kw, flows)
        for pod, _ in PODS:
            assert got[Flow("peer", pod, 9008)].outcome == Dropped(RuleRef("filter", "OUTPUT", 1))
            assert isinstance(got[Flow("peer", pod, 9009)].outcome, Refused)
            assert isinstance(got[Flow("peer", pod, 9010)].outcome, Failed)
        not_proved(kw, Reachable("peer", 9008), got)
