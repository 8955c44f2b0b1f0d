"""Kernel facts meshsolve's model must honour, pinned on the real kernel (docs/kernel-facts.md).

Each test establishes one fact in throw-away namespaces (pod 192.0.2.10 / 2001:db8::10, peer
192.0.2.20 / 2001:db8::20; see ``kernel_lab``) with the real ``iptables-restore``, real sockets and
counting rules, and asserts what the kernel did, so it fails on a kernel that behaves otherwise.
Nothing here reads meshsolve's model: these are the ground truth the model is checked against.
Tests named ``factNN`` follow the numbering of docs/kernel-facts.md.
"""

from __future__ import annotations

import collections
import errno
import itertools
import socket
from collections.abc import Callable

import pytest
from kernel_lab import PEER4, PEER6, POD4, POD6, Attempt, Lab, lab, original_dst

pytestmark = pytest.mark.kernel

ANY4, ANY6 = "0.0.0.0", "::"
SLOW = 2.5  # connect timeout where an answer may come only after the first SYN retransmission (1 s)


def pod(v6: bool) -> str:
    return POD6 if v6 else POD4


def peer(v6: bool) -> str:
    return PEER6 if v6 else PEER4


def wildcard(v6: bool) -> str:
    return ANY6 if v6 else ANY4


def loopback(v6: bool) -> str:
    return "::1" if v6 else "127.0.0.1"


def ct_on(v6: bool) -> str:
    """A rule (for any table's OUTPUT) that never matches our traffic but makes the namespace track
    connections: with the nf_tables backend, conntrack runs only once a rule needs it (fact 0)."""
    return f"-A OUTPUT -d {'2001:db8:ffff::1/128' if v6 else '203.0.113.1/32'} -p udp -m conntrack --ctstate NEW"


def table(name: str, chains: str, *rules: str) -> str:
    head = "".join(f":{c} ACCEPT [0:0]\n" for c in chains.split())
    return f"*{name}\n{head}" + "".join(r + "\n" for r in rules) + "COMMIT\n"


def moved(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


def per_family(check: Callable[[bool], None]) -> None:
    """Run ``check(False)`` (IPv4) and ``check(True)`` (IPv6) in parallel, each in its own lab."""
    Lab.concurrently(lambda: check(False), lambda: check(True))


# ----------------------------------------------------------------------------------------- fact 0
def test_fact00_nat_chains_run_only_when_conntrack_is_on() -> None:
    """nat chains are evaluated only for tracked connections; with iptables-nft, a namespace tracks
    connections only once some rule needs conntrack (a NAT target, -m conntrack/state, CT)."""
    def check(v6: bool) -> None:
        far, far_to = ("2001:db8:ffff::1/128", "[2001:db8:ffff::2]") if v6 else ("203.0.113.1/32", "203.0.113.2")
        unrelated = f"-d {far} -p udp"  # rules that never match the test's traffic
        extras = {  # what else is loaded -> does the nat OUTPUT counter move?
            "nothing": ("", 0),
            "a RETURN rule in nat": (f"-A OUTPUT {unrelated} -j RETURN", 0),
            "-m conntrack": (f"-A OUTPUT {unrelated} -m conntrack --ctstate NEW", 1),
            "-m state": (f"-A OUTPUT {unrelated} -m state --state NEW", 1),
            "a DNAT target": (f"-A OUTPUT {unrelated} -j DNAT --to-destination {far_to}", 1),
            "a CT target in raw": ("raw", 1),
        }
        for what, (extra, expect) in extras.items():
            with lab() as L:
                text = table("nat", "OUTPUT", "-A OUTPUT -p tcp --dport 9001 -m comment --comment nat-seen",
                             *([extra] if extra and extra != "raw" else []))
                if extra == "raw":
                    text += table("raw", "OUTPUT", f"-A OUTPUT {unrelated} -j CT --zone 1")
                L.restore(L.pod, text, v6=v6)
                listener = L.listen(L.pod, wildcard(v6), 9001)
                assert L.completion(L.connect(L.pod, pod(v6), 9001), listener).completes
                assert L.counters(L.pod, v6=v6)["nat-seen"] == expect, what
                tracked = int(L.sh(L.pod, ["cat", "/proc/sys/net/netfilter/nf_conntrack_count"]).stdout)
                assert (tracked > 0) == bool(expect), what
    per_family(check)


# ----------------------------------------------------------------------------------------- fact 1
def test_fact01_dnat_to_loopback_from_outside() -> None:
    """nat PREROUTING DNAT to 127.0.0.1 for a packet from eth0: silently dropped (martian) unless
    route_localnet=1 on eth0 (or all); then it completes. IPv6 DNAT to [::1]: dropped as 'no route',
    the pod answers ICMPv6 unreachable and the client gets ENETUNREACH."""
    rules = (table("raw", "PREROUTING", "-A PREROUTING -i eth0 -p tcp --dport 9002 -m comment --comment raw-in"),
             table("mangle", "INPUT", "-A INPUT -p tcp --dport 9002 -m comment --comment mangle-in"))

    def check(v6: bool) -> None:
        to = "[::1]:9002" if v6 else "127.0.0.1:9002"
        nat = table("nat", "PREROUTING",
                    f"-A PREROUTING -p tcp --dport 9002 -m comment --comment dnat -j DNAT --to-destination {to}")
        with lab() as L:
            L.restore(L.pod, "".join(rules) + nat, v6=v6)
            listener = L.listen(L.pod, loopback(v6), 9002)
            before = L.snmp(L.pod)
            attempt = L.connect(L.peer, pod(v6), 9002, timeout=SLOW)
            done = L.completion(attempt, listener)
            c, stats = L.counters(L.pod, v6=v6), moved(before, L.snmp(L.pod))
            assert not done.accepted
            # every SYN (the first and its retransmission) is NATed anew: the entry is never confirmed
            assert c["dnat"] == c["raw-in"] >= 2 and c["mangle-in"] == 0
            if v6:
                assert attempt.outcome == "ENETUNREACH"
                assert stats.get("Ip6InNoRoutes", 0) >= 1 and stats.get("Icmp6OutDestUnreachs", 0) >= 1
                return
            assert attempt.outcome == "timeout"
            assert stats.get("Icmp.OutMsgs", 0) == 0 and stats.get("Ip.InDelivers", 0) == 0
            for scope in ("eth0", "all"):
                with lab() as L2:
                    L2.restore(L2.pod, "".join(rules) + nat)
                    L2.sysctl(L2.pod, f"net.ipv4.conf.{scope}.route_localnet", "1")
                    listener = L2.listen(L2.pod, "127.0.0.1", 9002)
                    attempt = L2.connect(L2.peer, POD4, 9002)
                    done = L2.completion(attempt, listener)
                    assert done.completes, scope
                    assert attempt.remote == (POD4, 9002)  # the reply is un-DNATed
                    assert done.server is not None
                    assert done.server.getsockname() == ("127.0.0.1", 9002)
                    assert done.server.getpeername()[0] == PEER4
    per_family(check)


# ----------------------------------------------------------------------------------------- fact 2
def test_fact02_nat_output_dnat_from_a_loopback_source() -> None:
    """nat OUTPUT DNAT of a connection to 127.0.0.1 towards the peer: the re-route after NAT drops
    it (source 127.0.0.1); the SYN never reaches filter OUTPUT. IPv6 (::1): the SYN *does* leave
    the pod with source ::1, and the peer drops it on arrival (Ip6InHdrErrors)."""
    def check(v6: bool) -> None:
        lo = "::1/128" if v6 else "127.0.0.1/32"
        to = "2001:db8::20" if v6 else "192.0.2.20"
        rules = (table("nat", "OUTPUT POSTROUTING",
                       f"-A OUTPUT -d {lo} -p tcp --dport 9101 -m comment --comment dnat -j DNAT --to-destination {to}",
                       "-A POSTROUTING -p tcp --dport 9101 -m comment --comment nat-post")
                 + table("filter", "OUTPUT", "-A OUTPUT -p tcp --dport 9101 -m comment --comment filter-out")
                 + table("mangle", "POSTROUTING", "-A POSTROUTING -p tcp --dport 9101 -m comment --comment mangle-post"))
        with lab() as L:
            L.restore(L.pod, rules, v6=v6)
            L.restore(L.peer, table("raw", "PREROUTING",
                                    "-A PREROUTING -p tcp --dport 9101 -m comment --comment peer-raw-in"), v6=v6)
            listener = L.listen(L.peer, wildcard(v6), 9101)
            peer_before = L.snmp(L.peer)
            attempt = L.connect(L.pod, loopback(v6), 9101)
            assert attempt.outcome == "timeout"
            assert not L.completion(attempt, listener).accepted
            c, peer_stats = L.counters(L.pod, v6=v6), moved(peer_before, L.snmp(L.peer))
            assert c["dnat"] >= 1
            assert L.counters(L.peer, v6=v6)["peer-raw-in"] == 0
            if v6:
                assert c["filter-out"] >= 1 and c["mangle-post"] >= 1 and c["nat-post"] == 1
                assert peer_stats.get("Ip6InHdrErrors", 0) >= 1
            else:
                assert c["filter-out"] == 0 and c["mangle-post"] == 0 and c["nat-post"] == 0
                assert peer_stats.get("Ip.InReceives", 0) == 0
    per_family(check)


# ----------------------------------------------------------------------------------------- fact 3
def test_fact03_destinations_the_kernel_rewrites_or_refuses() -> None:
    """connect() to 0.0.0.0 goes to 127.0.0.1 (or to the socket's bound address), to :: goes to
    ::1; broadcast, multicast and 0.0.0.0/8 give ENETUNREACH; a link-local destination without a
    scope id gives EINVAL; ::ffff:a.b.c.d from an AF_INET6 socket is IPv4 (iptables, not ip6tables)."""
    def probes(v6: bool) -> str:
        # ip6tables also gets a rule for ::ffff:192.0.2.20, which must never count
        dsts = (("lo", "::1"), ("any", "::"), ("pod", POD6), ("peer", PEER6), ("mpeer", "::ffff:192.0.2.20")) \
            if v6 else (("lo", "127.0.0.1"), ("any", "0.0.0.0"), ("pod", POD4), ("peer", PEER4))
        fam = 6 if v6 else 4
        rules = [f"-A OUTPUT -p tcp --syn -d {d} -m comment --comment out{fam}-{n}" for n, d in dsts]
        return (table("filter", "OUTPUT", *rules)
                + table("nat", "OUTPUT", ct_on(v6), *(r.replace(f"out{fam}-", f"nat{fam}-") for r in rules))
                + table("raw", "OUTPUT", f"-A OUTPUT -p tcp --syn -m comment --comment raw{fam}-all"))

    with lab() as L:
        L.restore(L.pod, probes(False))
        L.restore(L.pod, probes(True), v6=True)

        def step(dst: str, port: int, **kw: object) -> tuple[Attempt, dict[str, int]]:
            b4, b6 = L.counters(L.pod), L.counters(L.pod, v6=True)
            attempt = L.connect(L.pod, dst, port, **kw)  # type: ignore[arg-type]
            return attempt, {**moved(b4, L.counters(L.pod)), **moved(b6, L.counters(L.pod, v6=True))}

        # 0.0.0.0 and :: are loopback: a 127.0.0.1 (::1) or wildcard listener takes it, a pod-IP one does not
        for v6, fam in ((False, 4), (True, 6)):
            lo_l = L.listen(L.pod, loopback(v6), 9001)
            any_l = L.listen(L.pod, wildcard(v6), 9002)
            L.listen(L.pod, pod(v6), 9003)
            attempt, seen = step(wildcard(v6), 9001)
            assert attempt.remote == (loopback(v6), 9001)
            assert L.completion(attempt, lo_l).completes
            assert seen == {f"out{fam}-lo": 1, f"nat{fam}-lo": 1, f"raw{fam}-all": 1}
            attempt, _ = step(wildcard(v6), 9002)
            assert L.completion(attempt, any_l).completes
            attempt, _ = step(wildcard(v6), 9003)
            assert attempt.outcome == "ECONNREFUSED"
        # bound to the pod IP: IPv4 sends 0.0.0.0 to the bound address, IPv6 still sends :: to ::1
        attempt, seen = step("0.0.0.0", 9003, src=POD4)
        assert attempt.remote == (POD4, 9003) and seen["out4-pod"] == 1
        attempt, seen = step("::", 9003, src=POD6)
        assert attempt.outcome == "ECONNREFUSED" and seen["out6-lo"] == 1
        attempt, seen = step("::", 9002, src=POD6)
        assert attempt.remote == ("::1", 9002) and seen["out6-lo"] == 1

        # refused before anything is sent (no raw OUTPUT count), even with a route that covers them
        L.ip(L.pod, "route add 224.0.0.0/4 dev eth0")
        refused = {"255.255.255.255": "ENETUNREACH", "127.255.255.255": "ENETUNREACH",
                   "192.0.2.255": "ENETUNREACH", "233.252.0.1": "ENETUNREACH", "224.0.0.1": "ENETUNREACH",
                   "0.0.0.1": "ENETUNREACH", "ff02::1": "ENETUNREACH", "ff0e::db8:1": "ENETUNREACH",
                   "fe80::1": "EINVAL"}
        for dst, expect in refused.items():
            attempt, seen = step(dst, 9004)
            assert (attempt.outcome, seen) == (expect, {}), dst

        # link-local: the peer's own fe80:: address is EINVAL without a scope id, fine with one
        ll = L.link_local(L.peer, "vpeer")
        ll_listener = L.listen(L.peer, "::", 9005)
        assert L.connect(L.pod, ll, 9005).outcome == "EINVAL"
        attempt = L.connect(L.pod, ll, 9005, scope_id=L.ifindex(L.pod, "eth0"))
        assert L.completion(attempt, ll_listener).completes

        # ::ffff:192.0.2.20 from an AF_INET6 socket is an IPv4 connection; with IPV6_V6ONLY: ENETUNREACH
        v4_listener = L.listen(L.peer, "0.0.0.0", 9006)
        dual_listener = L.listen(L.peer, "::", 9007, v6only=False)
        attempt, seen = step("::ffff:192.0.2.20", 9006, family=socket.AF_INET6, v6only=False)
        assert seen == {"out4-peer": 1, "nat4-peer": 1, "raw4-all": 1}
        done = L.completion(attempt, v4_listener)
        assert done.completes and done.server is not None and done.server.getpeername()[0] == POD4
        assert attempt.local is not None and attempt.local[0] == "::ffff:192.0.2.10"
        attempt, _ = step("::ffff:192.0.2.20", 9007, family=socket.AF_INET6, v6only=False)
        done = L.completion(attempt, dual_listener)
        assert done.completes and done.server is not None and done.server.getpeername()[0] == "::ffff:192.0.2.10"
        attempt, seen = step("::ffff:192.0.2.20", 9006, family=socket.AF_INET6, v6only=True)
        assert (attempt.outcome, seen) == ("ENETUNREACH", {})


# ----------------------------------------------------------------------------------------- fact 4
_STATE_CHAINS = {"raw": "PREROUTING OUTPUT", "mangle": "PREROUTING INPUT OUTPUT POSTROUTING",
                 "nat": "PREROUTING INPUT OUTPUT POSTROUTING", "filter": "INPUT OUTPUT"}
_STATES = ("INVALID", "NEW", "ESTABLISHED", "RELATED", "UNTRACKED")
# what each chain sees for the first packet (the SYN); a chain not listed does not see it at all
_FIRST_PACKET = {
    "from the peer": {"raw.PREROUTING": "INVALID", "mangle.PREROUTING": "NEW", "nat.PREROUTING": "NEW",
                      "mangle.INPUT": "NEW", "nat.INPUT": "NEW", "filter.INPUT": "NEW"},
    "local, over lo": {"raw.OUTPUT": "INVALID", "mangle.OUTPUT": "NEW", "nat.OUTPUT": "NEW",
                       "filter.OUTPUT": "NEW", "mangle.POSTROUTING": "NEW", "nat.POSTROUTING": "NEW",
                       "raw.PREROUTING": "NEW", "mangle.PREROUTING": "NEW", "mangle.INPUT": "NEW",
                       "filter.INPUT": "NEW"},
}


def test_fact04_conntrack_state_of_the_first_packet() -> None:
    """raw runs before conntrack: a first packet is INVALID there (both -m conntrack and -m state),
    NEW in every later table; the loopback re-entry of a local connection is NEW in raw PREROUTING
    (it carries the entry made in OUTPUT) and skips nat PREROUTING and nat INPUT. A raw PREROUTING
    `--ctstate INVALID -j DROP` drops the peer's SYN but not the local connection's re-entry."""
    def rules(v6: bool) -> str:
        out = ""
        for name, chains in _STATE_CHAINS.items():
            lines = []
            for chain in chains.split():
                tag = f"{name}.{chain}"
                lines += [f"-A {chain} -p tcp --syn --dport 9001:9003 -m conntrack --ctstate {s} "
                          f"-m comment --comment {tag}:ct:{s}" for s in _STATES]
                lines += [f"-A {chain} -p tcp --syn --dport 9001:9003 -m state --state {s} "
                          f"-m comment --comment {tag}:state:{s}" for s in _STATES]
                lines.append(f"-A {chain} -p tcp --syn --dport 9001:9003 -m comment --comment {tag}:all")
            out += table(name, chains, *lines)
        return out

    def check(v6: bool) -> None:
        with lab() as L:
            L.restore(L.pod, rules(v6), v6=v6)
            flows = (("from the peer", L.peer, pod(v6), 9001), ("local, over lo", L.pod, pod(v6), 9002),
                     ("local, over lo", L.pod, loopback(v6), 9003))
            for kind, ns, dst, port in flows:
                listener = L.listen(L.pod, wildcard(v6), port)
                before = L.counters(L.pod, v6=v6)
                assert L.completion(L.connect(ns, dst, port), listener).completes
                seen = moved(before, L.counters(L.pod, v6=v6))
                expect = {}
                for where, state in _FIRST_PACKET[kind].items():
                    expect.update({f"{where}:ct:{state}": 1, f"{where}:state:{state}": 1, f"{where}:all": 1})
                assert seen == expect, (kind, dst)
        with lab() as L:
            L.restore(L.pod, table("raw", "PREROUTING", "-A PREROUTING -p tcp --dport 9001 -m conntrack "
                                   "--ctstate INVALID -m comment --comment drop-invalid -j DROP"), v6=v6)
            listener = L.listen(L.pod, wildcard(v6), 9001)
            attempt = L.connect(L.peer, pod(v6), 9001)
            assert attempt.outcome == "timeout" and L.accept(listener) is None
            assert L.counters(L.pod, v6=v6)["drop-invalid"] >= 1
            assert L.completion(L.connect(L.pod, pod(v6), 9001), listener).completes
    per_family(check)


# ----------------------------------------------------------------------------------------- fact 5
def test_fact05_redirect_to_a_port_range() -> None:
    """REDIRECT --to-ports LO-HI keeps a destination port inside the range; a port outside it
    becomes LO, every time (no randomness without --random), or the next port up when the tuple
    with LO is taken. PREROUTING redirects to the pod IP, OUTPUT to 127.0.0.1 / ::1."""
    def check(v6: bool) -> None:
        for flags in ("", " --random"):
            rules = table("nat", "PREROUTING OUTPUT",
                          f"-A PREROUTING -p tcp -m multiport --dports 9002,9003,9100:9102 -j REDIRECT --to-ports 9001-9004{flags}",
                          f"-A OUTPUT -d {peer(v6)} -p tcp -m multiport --dports 9002,9003,9100 "
                          f"-j REDIRECT --to-ports 9001-9004{flags}")
            with lab() as L:
                L.restore(L.pod, rules, v6=v6)
                ports = (9001, 9002, 9003, 9004)
                listeners = [L.listen(L.pod, wildcard(v6), p) for p in ports]
                for ns, dst, local in ((L.peer, pod(v6), pod(v6)), (L.pod, peer(v6), loopback(v6))):
                    landed: dict[int, collections.Counter[int]] = collections.defaultdict(collections.Counter)
                    for dport in (9002, 9003) * 4 + (9100,) * 24:
                        attempt = L.connect(ns, dst, dport)
                        got = L.accept_any(listeners)
                        assert attempt.connected and attempt.sock is not None and got is not None
                        assert got[1].getsockname()[0] == local
                        landed[dport][ports[got[0]]] += 1
                        attempt.sock.close()
                        got[1].close()
                    if flags:
                        assert len(landed[9100]) > 1, landed  # 24 draws from 4 ports: one port would be a 4**-23 chance
                    else:
                        assert landed == {9002: {9002: 4}, 9003: {9003: 4}, 9100: {9001: 24}}
                if flags:
                    continue
                # LO is "the first free port from LO": open connections from one source port to
                # 9100, 9101, 9102 (their NATed tuples would clash) land on 9001, 9002, 9003
                seen = []
                for dport in (9100, 9101, 9102):
                    s = L.socket(L.peer, socket.AF_INET6 if v6 else socket.AF_INET, reuseaddr=True)
                    s.bind((peer(v6), 40000))
                    s.settimeout(1.0)
                    s.connect((pod(v6), dport))
                    got = L.accept_any(listeners)
                    assert got is not None
                    seen.append(ports[got[0]])
                assert seen == [9001, 9002, 9003]
    per_family(check)


# ----------------------------------------------------------------------------------------- fact 6
# zone rules (raw PREROUTING, raw OUTPUT) -> (plain completes, plain SO_ORIGINAL_DST ok,
#                                             REDIRECTed completes, REDIRECTed SO_ORIGINAL_DST ok)
_ZONES: dict[str, tuple[str, str, tuple[bool, bool, bool, bool]]] = {
    "no zone": ("", "", (True, True, True, True)),
    "--zone 5 both ways": ("--zone 5", "--zone 5", (True, False, True, False)),
    "--zone 5 in PREROUTING only": ("--zone 5", "", (True, False, False, False)),
    "--zone 5 in OUTPUT only": ("", "--zone 5", (True, True, False, False)),
    "--zone 5 in, --zone 6 out": ("--zone 5", "--zone 6", (True, False, False, False)),
    "--zone-orig 5 in PREROUTING": ("--zone-orig 5", "", (True, True, True, True)),
    "--zone-reply 5 both ways": ("--zone-reply 5", "--zone-reply 5", (True, False, True, False)),
}


def test_fact06_conntrack_zones() -> None:
    """CT --zone: SO_ORIGINAL_DST looks the connection up in the default zone by its reply tuple, so
    it gives ENOENT when the reply direction is in another zone. When the two directions of one
    connection are put in different zones, a REDIRECTed connection never completes (the SYN-ACK
    is not un-NATed); a plain one still completes, its replies being INVALID (untracked)."""
    def run_case(v6: bool, name: str) -> None:
        pre, out, expect = _ZONES[name]
        rules = (table("raw", "PREROUTING OUTPUT",
                       *([f"-A PREROUTING -p tcp -j CT {pre}"] if pre else []),
                       *([f"-A OUTPUT -p tcp -j CT {out}"] if out else []))
                 + table("nat", "PREROUTING", "-A PREROUTING -p tcp --dport 9005 -j REDIRECT --to-ports 15006")
                 + table("filter", "OUTPUT", "-A OUTPUT -p tcp --sport 9001 --tcp-flags SYN,ACK SYN,ACK -m conntrack "
                         "--ctstate INVALID -m comment --comment synack-invalid"))
        with lab() as L:
            L.restore(L.pod, rules, v6=v6)
            app, proxy = L.listen(L.pod, wildcard(v6), 9001), L.listen(L.pod, wildcard(v6), 15006)
            plain, nated = L.concurrently(lambda: L.connect(L.peer, pod(v6), 9001, timeout=0.7),
                                          lambda: L.connect(L.peer, pod(v6), 9005, timeout=0.7))
            got: list[bool] = []
            for attempt, listener, port in ((plain, app, 9001), (nated, proxy, 9005)):
                conn = L.accept(listener)
                dst = original_dst(conn) if conn is not None else None  # read first, as a proxy does
                assert dst in (None, (pod(v6), port), "ENOENT"), (name, dst)
                exchanged = attempt.sock is not None and L.round_trip(attempt.sock, conn)
                got += [attempt.connected and conn is not None and exchanged, dst == (pod(v6), port)]
                if conn is not None and name == "--zone 5 in PREROUTING only" and port == 9001:
                    # the app's first data packet, untracked in zone 0, was picked up there as a new
                    # connection *from* the app: SO_ORIGINAL_DST now finds that one
                    assert attempt.local is not None
                    assert original_dst(conn) == (attempt.local[0], attempt.local[1])
            assert tuple(got) == expect, (name, v6)
            invalid_replies = L.counters(L.pod, v6=v6)["synack-invalid"]
            assert (invalid_replies > 0) == (pre != out and "orig" not in pre), (name, invalid_replies)

    Lab.concurrently(*(lambda v6=v6, n=n: run_case(v6, n) for v6 in (False, True) for n in _ZONES))


# ----------------------------------------------------------------------------------------- fact 7
_OPTS = {"none": {}, "REUSEADDR": {"reuseaddr": True}, "REUSEPORT": {"reuseport": True},
         "both": {"reuseaddr": True, "reuseport": True}}
_PAIRS = (("0.0.0.0", None, "127.0.0.1", None, "127.0.0.1"), ("::", True, "::1", True, "::1"),
          ("::", False, "127.0.0.1", None, "127.0.0.1"), ("0.0.0.0", None, POD4, None, POD4))


def _bind_expect(o1: str, o2: str, same_uid: bool, listen_between: bool) -> str:
    if "reuseport" in _OPTS[o1] and "reuseport" in _OPTS[o2] and same_uid:
        return "both listen"
    if "reuseaddr" in _OPTS[o1] and "reuseaddr" in _OPTS[o2] and not listen_between:
        return "listen EADDRINUSE"  # both binds succeed, the first listen() fails
    return "bind EADDRINUSE"


def _two_listeners(L: Lab, port: int, first: tuple[str, bool | None, str, int | None],
                   second: tuple[str, bool | None, str, int | None], listen_between: bool
                   ) -> tuple[str, list[socket.socket]]:
    """Bind (and listen on) two sockets on ``port``; which step failed, or "both listen"."""
    socks: list[socket.socket] = []
    for addr, v6only, opt, uid in (first, second):
        s = L.socket(L.pod, socket.AF_INET6 if ":" in addr else socket.AF_INET, uid=uid, v6only=v6only,
                     **_OPTS[opt])  # type: ignore[arg-type]
        try:
            s.bind((addr, port))
        except OSError as exc:
            return f"bind {errno.errorcode[exc.errno or 0]}", socks
        socks.append(s)
        if listen_between:
            s.listen(8)  # listen() after a successful bind never failed here
    if not listen_between:
        for s in socks:
            try:
                s.listen(8)
            except OSError as exc:
                return f"listen {errno.errorcode[exc.errno or 0]}", socks
    return "both listen", socks


def test_fact07_wildcard_and_specific_bind_on_one_port() -> None:
    """A wildcard and a specific listener on one port coexist only with SO_REUSEPORT on both and the
    same owner uid (in either order); SO_REUSEADDR lets both bind() but then listen() fails. When both
    listen, the specific one accepts a connection to its address."""
    port = 20000
    uid_pairs = ((None, None), (1000, 1000), (1000, 1001), (None, 1001))  # None: root
    with lab() as L:
        for wild, wv6, spec, sv6, dst in _PAIRS:
            for o1, o2, uids, specific_first, listen_between in itertools.product(
                    _OPTS, _OPTS, uid_pairs, (False, True), (True, False)):
                port += 1
                order = [(wild, wv6, o1, uids[0]), (spec, sv6, o2, uids[1])]
                if specific_first:
                    order.reverse()
                got, socks = _two_listeners(L, port, order[0], order[1], listen_between)
                case = (wild, spec, o1, o2, uids, specific_first, listen_between)
                assert got == _bind_expect(o1, o2, uids[0] == uids[1], listen_between), case
                if got == "both listen":
                    specific = socks[0] if specific_first else socks[1]
                    assert L.completion(L.connect(L.pod, dst, port), specific).completes, case
                for s in socks:
                    s.close()


# ----------------------------------------------------------------------------------------- fact 8
_REJECT4 = {"": "ECONNREFUSED", "tcp-reset": "ECONNREFUSED", "icmp-port-unreachable": "ECONNREFUSED",
            "icmp-net-unreachable": "ENETUNREACH", "icmp-host-unreachable": "EHOSTUNREACH",
            "icmp-proto-unreachable": "ENOPROTOOPT", "icmp-net-prohibited": "ENETUNREACH",
            "icmp-host-prohibited": "EHOSTUNREACH", "icmp-admin-prohibited": "EHOSTUNREACH"}
_REJECT6 = {"": "ECONNREFUSED", "tcp-reset": "ECONNREFUSED", "icmp6-port-unreachable": "ECONNREFUSED",
            "icmp6-no-route": "ENETUNREACH", "icmp6-adm-prohibited": "EACCES",
            "icmp6-addr-unreachable": "EHOSTUNREACH"}


def test_fact08_reject_and_drop_on_a_syn() -> None:
    """REJECT makes connect() fail with an errno that depends on --reject-with (the client sees no
    connection, never a timeout); DROP makes it time out. tcp-reset is answered at once, and so is
    an IPv4 ICMP error in a fresh namespace. On this zero-latency veth the first ICMPv6 error reaches
    the socket while connect() still holds it and is lost (TcpExt.LockDroppedIcmps); the errno then
    comes with the first SYN retransmission, about 1 s later."""
    def run_case(v6: bool, kind: str, expect: str) -> None:
        target = "-j DROP" if kind == "DROP" else "-j REJECT" + (f" --reject-with {kind}" if kind else "")
        with lab() as L:  # a fresh namespace per case: ICMP errors are rate limited per destination
            L.restore(L.pod, table("filter", "INPUT OUTPUT", f"-A INPUT -p tcp --dport 9001 {target}",
                                   f"-A OUTPUT -p tcp --dport 9101 {target}"), v6=v6)
            L.listen(L.pod, wildcard(v6), 9001)
            L.listen(L.peer, wildcard(v6), 9101)
            inbound, outbound = L.concurrently(lambda: L.connect(L.peer, pod(v6), 9001, timeout=SLOW),
                                               lambda: L.connect(L.pod, peer(v6), 9101, timeout=SLOW))
            if kind == "DROP":  # a SYN dropped in OUTPUT is retried, not reported as EPERM
                assert L.snmp(L.pod).get("TcpExt.TCPRetransFail", 0) >= 1
            for direction, attempt in (("peer->pod, INPUT", inbound), ("pod->peer, OUTPUT", outbound)):
                where = (v6, direction, kind, attempt.outcome, round(attempt.seconds, 3))
                assert attempt.outcome == expect, where
                if kind == "tcp-reset" or (kind != "DROP" and not v6):
                    assert attempt.seconds < 0.25, where
                elif kind != "DROP":
                    assert 0.5 < attempt.seconds < 2.0, where

    cases = [(v6, kind, expect) for v6, kinds in ((False, _REJECT4), (True, _REJECT6))
             for kind, expect in {**kinds, "DROP": "timeout"}.items()]
    Lab.concurrently(*(lambda c=c: run_case(*c) for c in cases))


# ----------------------------------------------------------------------------------------- fact 9
def test_fact09_rules_on_the_reply_and_the_third_packet() -> None:
    """The connection completes only if the SYN-ACK and the client's ACK pass too. Dropping the
    server's SYN-ACK in OUTPUT: connect() times out, accept() never returns. Dropping ESTABLISHED in
    INPUT (the handshake's ACK is already ESTABLISHED): connect() succeeds, accept() never returns,
    no request/response gets through. The SYN-ACK itself is ESTABLISHED in OUTPUT."""
    def check(v6: bool) -> None:
        rules = table("filter", "INPUT OUTPUT",
                      "-A OUTPUT -p tcp --sport 9001 -m comment --comment drop-synack -j DROP",
                      "-A INPUT -p tcp --dport 9002 -m conntrack --ctstate ESTABLISHED -m comment --comment drop-est -j DROP",
                      "-A OUTPUT -p tcp --sport 9003 -m conntrack --ctstate ESTABLISHED "
                      "-m comment --comment synack-est -j DROP",
                      "-A INPUT -p tcp --dport 9005 -m state --state ESTABLISHED -m comment --comment state-est -j DROP")
        with lab() as L:
            L.restore(L.pod, rules, v6=v6)
            ports = (9001, 9002, 9003, 9004, 9005)
            listeners = [L.listen(L.pod, wildcard(v6), p) for p in ports]
            attempts = L.concurrently(*(lambda p=p: L.connect(L.peer, pod(v6), p) for p in ports))
            steps = L.concurrently(*(lambda a=a, lis=lis: L.completion(a, lis).steps
                                     for a, lis in zip(attempts, listeners, strict=True)))
            assert [a.outcome for a in attempts] == ["timeout", "connected", "timeout", "connected", "connected"]
            assert steps == [(False, False, False), (True, False, False), (False, False, False), (True, True, True),
                             (True, False, False)]
            c = L.counters(L.pod, v6=v6)
            assert c["drop-synack"] >= 1 and c["drop-est"] >= 1 and c["synack-est"] >= 1 and c["state-est"] >= 1
    per_family(check)


# ----------------------------------------------------------------------------------------- fact 10
def test_fact10_syn_and_tcp_flags_on_the_first_packet() -> None:
    """--syn is --tcp-flags FIN,SYN,RST,ACK SYN (iptables-save prints it so); the first packet of a
    connection matches it in nat PREROUTING/OUTPUT, `! --syn` never matches in nat (nat sees only
    the first packet), while mangle sees the later packets that `! --syn` matches."""
    def rules(chain: str, fam: int) -> list[str]:
        m = f"-A {chain} -p tcp --dport 9001"
        return [f"{m} --syn -m comment --comment {{t}}{chain}{fam}:syn",
                f"{m} --tcp-flags FIN,SYN,RST,ACK SYN -m comment --comment {{t}}{chain}{fam}:flags",
                f"{m} ! --syn -m comment --comment {{t}}{chain}{fam}:notsyn",
                f"{m} -m comment --comment {{t}}{chain}{fam}:all"]

    def check(v6: bool) -> None:
        fam = 6 if v6 else 4
        both = rules("PREROUTING", fam) + rules("OUTPUT", fam)
        text = (table("nat", "PREROUTING OUTPUT", ct_on(v6), *(r.format(t="nat.") for r in both))
                + table("mangle", "PREROUTING OUTPUT", *(r.format(t="mangle.") for r in both)))
        with lab() as L:
            L.restore(L.pod, text, v6=v6)
            saved = L.save(L.pod, v6=v6)
            assert "--syn" not in saved
            assert saved.count("! --tcp-flags FIN,SYN,RST,ACK SYN") == 4
            assert saved.count("--tcp-flags FIN,SYN,RST,ACK SYN") == 12
            pod_l, peer_l = L.listen(L.pod, wildcard(v6), 9001), L.listen(L.peer, wildcard(v6), 9001)
            assert L.completion(L.connect(L.peer, pod(v6), 9001), pod_l).completes
            assert L.completion(L.connect(L.pod, peer(v6), 9001), peer_l).completes
            c = L.counters(L.pod, v6=v6)
            for chain in ("PREROUTING", "OUTPUT"):
                nat = {k: c[f"nat.{chain}{fam}:{k}"] for k in ("syn", "flags", "notsyn", "all")}
                assert nat == {"syn": 1, "flags": 1, "notsyn": 0, "all": 1}, chain
                mangle = {k: c[f"mangle.{chain}{fam}:{k}"] for k in ("syn", "flags", "notsyn", "all")}
                assert mangle["syn"] == mangle["flags"] == 1 and mangle["all"] >= 3, chain
                assert mangle["notsyn"] == mangle["all"] - 1, chain
    per_family(check)


# ----------------------------------------------------------------------------------------- fact 11
def test_fact11_egress_from_an_address_only_on_lo() -> None:
    """IPv6: a socket bound to ::6 (on lo) sends its SYN out of eth0 with source ::6; a peer without
    a route back to ::6 cannot answer (Ip6OutNoRoutes) and connect() times out; with a route to ::6
    via the pod the same connection completes. IPv4: a socket bound to 127.0.0.6 gets EINVAL from
    connect(); with route_localnet=1 on eth0 the SYN leaves and the peer drops it (martian source)."""
    def check(v6: bool) -> None:
        with lab() as L:
            listener = L.listen(L.peer, wildcard(v6), 443)
            if v6:
                L.ip(L.pod, "addr add ::6/128 dev lo nodad", v6=True)
                L.restore(L.pod, table("raw", "OUTPUT",
                                       "-A OUTPUT -s ::6 -o eth0 -p tcp --dport 443 -m comment --comment pod-out"), v6=True)
                L.restore(L.peer, table("raw", "PREROUTING OUTPUT",
                                        "-A PREROUTING -s ::6 -p tcp --dport 443 -m comment --comment peer-in",
                                        "-A OUTPUT -d ::6 -p tcp --sport 443 -m comment --comment peer-out"), v6=True)
                before = L.snmp(L.peer)
                attempt = L.connect(L.pod, PEER6, 443, src="::6")
                assert attempt.outcome == "timeout" and not L.completion(attempt, listener).accepted
                c = {**L.counters(L.pod, v6=True), **L.counters(L.peer, v6=True)}
                assert c["pod-out"] >= 1 and c["peer-in"] >= 1 and c["peer-out"] == 0
                assert moved(before, L.snmp(L.peer)).get("Ip6OutNoRoutes", 0) >= 1
                unbound = L.connect(L.pod, PEER6, 443)
                assert L.completion(unbound, listener).completes and unbound.local is not None
                assert unbound.local[0] == POD6
                L.ip(L.peer, "route add ::6/128 via 2001:db8::10", v6=True)
                attempt = L.connect(L.pod, PEER6, 443, src="::6")
                done = L.completion(attempt, listener)
                assert done.completes and done.server is not None and done.server.getpeername()[0] == "::6"
            else:
                assert L.connect(L.pod, PEER4, 443, src="127.0.0.6").outcome == "EINVAL"
                L.sysctl(L.pod, "net.ipv4.conf.eth0.route_localnet", "1")
                mac = L.sh(L.peer, ["cat", "/sys/class/net/vpeer/address"]).stdout.strip()
                L.ip(L.pod, f"neigh replace 192.0.2.20 lladdr {mac} dev eth0 nud permanent")
                L.restore(L.peer, table("raw", "PREROUTING",
                                        "-A PREROUTING -s 127.0.0.6 -p tcp --dport 443 -m comment --comment peer-in"))
                attempt = L.connect(L.pod, PEER4, 443, src="127.0.0.6")
                assert attempt.outcome == "timeout" and not L.completion(attempt, listener).accepted
                assert L.counters(L.peer)["peer-in"] >= 1
    per_family(check)


# ----------------------------------------------------------------------------------------- fact 12
_REFUSED = (
    # (ip6tables?, restore input, exit status, message fragments)
    (False, table("nat", "PREROUTING", "-A PREROUTING -p tcp -j DROP"), 2,
     ('The "nat" table is not intended for filtering, the use of DROP is therefore inhibited.',
      "Error occurred at line: 3")),
    (True, table("nat", "PREROUTING", "-A PREROUTING -p tcp -j DROP"), 2,
     ('The "nat" table is not intended for filtering', "Error occurred at line: 3")),
    (False, table("mangle", "PREROUTING", "-A PREROUTING -p tcp -j REJECT"), 4,
     ("line 3: RULE_APPEND failed (Invalid argument): rule in chain PREROUTING",)),
    (False, table("mangle", "INPUT", "-A INPUT -p tcp -j REJECT"), 4,
     ("line 3: RULE_APPEND failed (Invalid argument): rule in chain INPUT",)),
    (True, table("mangle", "PREROUTING", "-A PREROUTING -p tcp -j REJECT"), 4,
     ("line 3: RULE_APPEND failed (Invalid argument): rule in chain PREROUTING",)),
    (False, table("filter", "OUTPUT", "-A OUTPUT -i eth0 -j ACCEPT"), 2,
     ("Can't use -i with OUTPUT", "Error occurred at line: 3")),
    (False, table("nat", "OUTPUT", "-A OUTPUT -i eth0 -j ACCEPT"), 2, ("Can't use -i with OUTPUT",)),
    (True, table("filter", "OUTPUT", "-A OUTPUT -i eth0 -j ACCEPT"), 2, ("Can't use -i with OUTPUT",)),
    (False, table("nat", "PREROUTING", "-A PREROUTING -o eth0 -j ACCEPT"), 2,
     ("Can't use -o with PREROUTING", "Error occurred at line: 3")),
    (False, table("filter", "INPUT", "-A INPUT -o eth0 -j ACCEPT"), 2, ("Can't use -o with INPUT",)),
    (False, table("nat", "PREROUTING", "-A PREROUTING -m owner --uid-owner 1337 -j RETURN"), 4,
     ("line 3: RULE_APPEND failed (Invalid argument): rule in chain PREROUTING",)),
    (False, table("filter", "INPUT", "-A INPUT -m owner --uid-owner 1337 -j RETURN"), 4,
     ("line 3: RULE_APPEND failed (Invalid argument): rule in chain INPUT",)),
    (True, table("nat", "PREROUTING", "-A PREROUTING -m owner --uid-owner 1337 -j RETURN"), 4,
     ("line 3: RULE_APPEND failed (Invalid argument): rule in chain PREROUTING",)),
    (False, table("nat", "PREROUTING", "-A PREROUTING -j REDIRECT --to-ports 15001"), 2,
     ("Need TCP, UDP, SCTP or DCCP with port specification",)),
    (False, table("nat", "PREROUTING", '-A PREROUTING -p tcp -m comment --comment "a "quoted" word" -j RETURN'), 2,
     ("Bad argument `quoted word'", "Error occurred at line: 3")),
    (False, table("nat", "PREROUTING", "-A PREROUTING -p tcp -j TPROXY --on-port 15006 --tproxy-mark 1"), 4,
     ("line 3: RULE_APPEND failed (Invalid argument): rule in chain PREROUTING",)),
    (False, table("nat", "OUTPUT", "-A OUTPUT -m socket -j ACCEPT"), 4,
     ("line 3: RULE_APPEND failed (Invalid argument): rule in chain OUTPUT",)),
    (False, table("raw", "OUTPUT", "-A OUTPUT -m socket -j ACCEPT"), 4,
     ("line 3: RULE_APPEND failed (Invalid argument): rule in chain OUTPUT",)),
)


def test_fact12_what_iptables_restore_refuses() -> None:
    """iptables-restore (1.8.9, nf_tables) refuses these inputs with exit 2 (its own checks) or 4
    (the kernel refused the rule) and names the line. It is not all or nothing: the tables
    committed before the failing one stay loaded; the failing table and those after it keep their
    old rules. A nat chain *policy* of DROP is accepted (see fact 12b)."""
    with lab() as L:
        for v6, text, status, fragments in _REFUSED:
            proc = L.try_restore(L.pod, text, v6=v6)
            assert proc.returncode == status, (text, proc.stderr)
            for fragment in fragments:
                assert fragment in proc.stderr, (text, proc.stderr)
        for bad, status in ((table("nat", "PREROUTING", "-A PREROUTING -p tcp -j DROP"), 2),
                            (table("nat", "PREROUTING", "-A PREROUTING -m owner --uid-owner 1 -j RETURN"), 4)):
            L.restore(L.pod, table("filter", "INPUT", "-A INPUT -s 203.0.113.1/32 -j ACCEPT")
                      + table("nat", "PREROUTING", "-A PREROUTING -s 203.0.113.2/32 -j RETURN")
                      + table("mangle", "PREROUTING", "-A PREROUTING -s 203.0.113.3/32 -j RETURN"))
            proc = L.try_restore(L.pod, table("filter", "INPUT", "-A INPUT -s 203.0.113.7/32 -j ACCEPT") + bad
                                 + table("mangle", "PREROUTING", "-A PREROUTING -s 203.0.113.9/32 -j RETURN"))
            assert proc.returncode == status and "line: 7" in proc.stderr.replace("line 7:", "line: 7")
            saved = L.save(L.pod)
            assert "203.0.113.7/32" in saved and "203.0.113.1/32" not in saved  # filter: replaced
            assert "203.0.113.2/32" in saved  # nat: the failing table kept its old rules
            assert "203.0.113.3/32" in saved and "203.0.113.9/32" not in saved  # mangle: never reached
        for v6, text in ((False, table("mangle", "PREROUTING", "-A PREROUTING -p tcp -j TPROXY --on-port 15006")),
                         (False, table("filter", "INPUT", "-A INPUT -m socket -j ACCEPT")),
                         (False, "*nat\n:OUTPUT DROP [0:0]\nCOMMIT\n")):
            assert L.try_restore(L.pod, text, v6=v6).returncode == 0, text
        assert "-j TPROXY --on-port 15006 --on-ip 0.0.0.0 --tproxy-mark 0x0/0x0" in L.save(L.pod)


def test_fact12b_a_nat_chain_policy_of_drop_is_loaded_and_drops_new_connections() -> None:
    """`:OUTPUT DROP` / `:PREROUTING DROP` in *nat loads (exit 0) and drops the first packet of every
    new connection through that chain; replies are not affected (connections the other way work)."""
    def check(v6: bool) -> None:
        for chain in ("OUTPUT", "PREROUTING"):
            with lab() as L:
                text = f"*nat\n:{chain} DROP [0:0]\n{ct_on(v6).replace('OUTPUT', chain)}\nCOMMIT\n"
                L.restore(L.pod, text, v6=v6)
                pod_l, peer_l = L.listen(L.pod, wildcard(v6), 9001), L.listen(L.peer, wildcard(v6), 9001)
                out_, in_ = L.concurrently(lambda: L.connect(L.pod, peer(v6), 9001),
                                           lambda: L.connect(L.peer, pod(v6), 9001))
                (blocked, _), (fine, fine_server) = ((out_, peer_l), (in_, pod_l)) if chain == "OUTPUT" \
                    else ((in_, pod_l), (out_, peer_l))
                assert blocked.outcome == "timeout", chain
                assert L.completion(fine, fine_server).completes, chain
                assert f":{chain} DROP [" in L.save(L.pod, v6=v6)
    per_family(check)


# ----------------------------------------------------------------------------------------- fact 13
def test_fact13_tproxy_needs_a_transparent_listener() -> None:
    """mangle PREROUTING TPROXY (with the fwmark rule and a local default route in its table)
    delivers peer -> pod:9001 to an IP_TRANSPARENT listener on 15006, whose accepted socket has
    the original destination pod:9001 as its local address. A listener without IP_TRANSPARENT
    gets nothing: TPROXY drops the packet, even with an app listening on 9001. The later packets
    of a TPROXYed connection match `-m socket --transparent`; its SYN matches no `-m socket`."""
    def check(v6: bool) -> None:
        with lab() as L:
            L.ip(L.pod, "rule add fwmark 0x539 lookup 133", "route add local default dev lo table 133", v6=v6)
            L.restore(L.pod, table(
                "mangle", "PREROUTING",
                "-A PREROUTING -p tcp --dport 9001 --syn -m socket -m comment --comment syn-socket",
                "-A PREROUTING -p tcp --dport 9001 ! --syn -m socket --transparent -m comment --comment later-socket",
                "-A PREROUTING -p tcp --dport 9001 ! --syn -m comment --comment later-all",
                "-A PREROUTING -p tcp --dport 9001 -j TPROXY --on-port 15006 --tproxy-mark 0x539/0xffffffff",
                "-A PREROUTING -p tcp --dport 9002 -m comment --comment tproxy-opaque "
                "-j TPROXY --on-port 15007 --tproxy-mark 0x539/0xffffffff"), v6=v6)
            transparent = L.listen(L.pod, wildcard(v6), 15006, transparent=True)
            opaque = L.listen(L.pod, wildcard(v6), 15007)
            apps = [L.listen(L.pod, wildcard(v6), p) for p in (9001, 9002)]
            first, second = L.concurrently(lambda: L.connect(L.peer, pod(v6), 9001),
                                           lambda: L.connect(L.peer, pod(v6), 9002))
            done = L.completion(first, transparent)
            assert done.completes and done.server is not None
            assert done.server.getsockname()[:2] == (pod(v6), 9001)
            assert done.server.getpeername()[0] == peer(v6)
            assert second.outcome == "timeout"
            assert L.accept(opaque, 0.05) is None and all(L.accept(a, 0.05) is None for a in apps)
            c = L.counters(L.pod, v6=v6)
            assert c["syn-socket"] == 0 and c["tproxy-opaque"] >= 1
            assert c["later-all"] >= 2 and c["later-socket"] == c["later-all"]
    per_family(check)


# listener (address kind, transparent) -> which -m socket flavours match (SYN, later packets)
_SOCKET_FLAVOURS = {"plain": "", "--transparent": "--transparent", "--nowildcard": "--nowildcard",
                    "--restore-skmark": "--restore-skmark", "--transparent --nowildcard": "--transparent --nowildcard"}
_FLAVOUR_TAG = {"plain": "plain", "--transparent": "tr", "--nowildcard": "nw", "--restore-skmark": "restore",
                "--transparent --nowildcard": "tr+nw"}
_SOCKET_MATCHES = {
    ("wildcard", False): ({"--nowildcard"}, {"plain", "--nowildcard", "--restore-skmark"}),
    ("pod IP", False): ({"plain", "--nowildcard", "--restore-skmark"}, {"plain", "--nowildcard", "--restore-skmark"}),
    ("wildcard", True): ({"--nowildcard", "--transparent --nowildcard"}, set(_SOCKET_FLAVOURS)),
    ("pod IP", True): (set(_SOCKET_FLAVOURS), set(_SOCKET_FLAVOURS)),
}


def test_fact13b_socket_match_on_first_and_later_packets() -> None:
    """`-m socket` in mangle PREROUTING looks the packet up like TCP would (established, then
    listening). A SYN finds the listener: a wildcard (0.0.0.0 / ::) listener counts only with
    --nowildcard; --transparent needs IP_TRANSPARENT on it. Later packets find the connection's own
    socket (never a wildcard), so plain matches; --transparent only if the listener was
    transparent. --restore-skmark copies the socket's mark (SO_MARK) for full sockets only: not
    for the handshake's ACK (a request socket) and not for a wildcard listener."""
    def check(v6: bool) -> None:
        ports = dict(zip(_SOCKET_MATCHES, (9001, 9002, 9003, 9004), strict=True))
        rules = []
        for port in ports.values():
            for syn, when in (("--syn", "syn"), ("! --syn", "later")):
                m = f"-A PREROUTING -p tcp --dport {port} {syn}"
                rules += [f"{m} -m socket {opt} -m comment --comment {port}:{when}:{_FLAVOUR_TAG[name]}".replace("  ", " ")
                          for name, opt in _SOCKET_FLAVOURS.items()]
                rules.append(f"{m} -m comment --comment {port}:{when}:all")
                rules.append(f"{m} -m mark --mark 0x77 -m comment --comment {port}:{when}:marked")
            rules.append(f"-A PREROUTING -p tcp --dport {port} -j MARK --set-mark 0")
        with lab() as L:
            L.restore(L.pod, table("mangle", "PREROUTING", *rules), v6=v6)
            for (kind, transparent), port in ports.items():
                addr = wildcard(v6) if kind == "wildcard" else pod(v6)
                listener = L.listen(L.pod, addr, port, transparent=transparent, mark=0x77)
                assert L.completion(L.connect(L.peer, pod(v6), port), listener).completes
            c = L.counters(L.pod, v6=v6)
            for (kind, transparent), port in ports.items():
                syn_set, later_set = _SOCKET_MATCHES[(kind, transparent)]
                later = c[f"{port}:later:all"]
                assert c[f"{port}:syn:all"] == 1 and later >= 2
                for name in _SOCKET_FLAVOURS:
                    tag = _FLAVOUR_TAG[name]
                    assert c[f"{port}:syn:{tag}"] == (1 if name in syn_set else 0), (kind, transparent, name)
                    assert c[f"{port}:later:{tag}"] == (later if name in later_set else 0), (kind, transparent, name)
                assert c[f"{port}:syn:marked"] == (1 if kind == "pod IP" else 0)
                assert c[f"{port}:later:marked"] == later - 1  # all but the handshake's ACK
    per_family(check)


# TPROXY --on-port P to the destination's own port P: which listener on P takes the SYN
_TPROXY_OWN = {  # port -> (bind: wildcard / pod / loopback, IP_TRANSPARENT, completes)
    9001: ("wildcard", True, True),
    9002: ("pod", True, True),
    9003: ("loopback", True, False),
    9004: ("wildcard", False, False),
}


def test_fact13c_tproxy_to_the_port_a_listener_holds() -> None:
    """mangle PREROUTING ``--dport P -j TPROXY --on-port P`` (no --on-ip): the SYN goes to a
    listener on P only when that listener is IP_TRANSPARENT and bound to the wildcard or to the
    receiving interface's address (the pod IP); a transparent listener on loopback, or a wildcard
    one without IP_TRANSPARENT, gets nothing: the rule counts and the SYN is dropped (the client
    times out). The accepted socket's local address is the original destination."""
    def check(v6: bool) -> None:
        with lab() as L:
            L.ip(L.pod, "rule add fwmark 0x539 lookup 133", "route add local default dev lo table 133", v6=v6)
            L.restore(L.pod, table("mangle", "PREROUTING", *[
                f"-A PREROUTING -p tcp --dport {port} -m comment --comment tproxy-{port} "
                f"-j TPROXY --on-port {port} --tproxy-mark 0x539/0xffffffff" for port in _TPROXY_OWN]), v6=v6)
            binds = {"wildcard": wildcard(v6), "pod": pod(v6), "loopback": loopback(v6)}
            listeners = {port: L.listen(L.pod, binds[how], port, transparent=transparent)
                         for port, (how, transparent, _ok) in _TPROXY_OWN.items()}
            attempts = L.concurrently(*[lambda p=port: L.connect(L.peer, pod(v6), p) for port in _TPROXY_OWN])
            c = L.counters(L.pod, v6=v6)
            for (port, (how, transparent, ok)), attempt in zip(_TPROXY_OWN.items(), attempts, strict=True):
                assert c[f"tproxy-{port}"] >= 1, port
                if ok:
                    done = L.completion(attempt, listeners[port])
                    assert done.completes and done.server is not None, (port, how, transparent)
                    assert done.server.getsockname()[:2] == (pod(v6), port)
                    assert done.server.getpeername()[0] == peer(v6)
                else:
                    assert attempt.outcome == "timeout", (port, how, transparent, attempt)
                    assert L.accept(listeners[port], 0.05) is None
    per_family(check)


# ----------------------------------------------------------------------------------------- fact 17
def test_fact17_the_refusing_rst_is_a_reply_of_the_pod() -> None:
    """A SYN to a port nobody listens on is answered by a RST the pod sends: it passes mangle and
    filter OUTPUT as a reply of the SYN's conntrack entry (``--ctdir REPLY``, ``--ctstate
    ESTABLISHED``), with mark 0 until a CONNMARK --restore-mark gives it the connection's mark; it
    has no owner (``--uid-owner 0`` fails, ``! --uid-owner 0`` holds), yet ``--socket-exists``
    holds for IPv4's and not for IPv6's; nat OUTPUT and nat POSTROUTING never see it; a DROP in
    filter OUTPUT that matches it leaves the client without an answer (timeout), a port without
    that rule is refused."""
    def check(v6: bool) -> None:
        rst = "-p tcp --tcp-flags RST RST"
        text = (table("mangle", "PREROUTING OUTPUT",
                      "-A PREROUTING -p tcp --dport 9009 -j CONNMARK --set-mark 0x111",
                      f"-A OUTPUT {rst} -m mark --mark 0 -m comment --comment rst-mark0",
                      f"-A OUTPUT {rst} -m conntrack --ctdir REPLY -m comment --comment rst-reply",
                      f"-A OUTPUT {rst} -m conntrack --ctstate ESTABLISHED -m comment --comment rst-est",
                      f"-A OUTPUT {rst} -m owner --socket-exists -m comment --comment rst-socket",
                      f"-A OUTPUT {rst} -m owner --uid-owner 0 -m comment --comment rst-uid0",
                      f"-A OUTPUT {rst} -m owner ! --uid-owner 0 -m comment --comment rst-not-uid0",
                      f"-A OUTPUT {rst} -j CONNMARK --restore-mark",
                      f"-A OUTPUT {rst} -m mark --mark 0x111 -m comment --comment rst-restored")
                + table("nat", "OUTPUT POSTROUTING", ct_on(v6),
                        f"-A OUTPUT {rst} -m comment --comment rst-nat-out",
                        f"-A POSTROUTING {rst} -m comment --comment rst-nat-post")
                + table("filter", "OUTPUT", f"-A OUTPUT {rst} --sport 9008 -m comment --comment rst-drop -j DROP"))
        with lab() as L:
            L.restore(L.pod, text, v6=v6)
            dropped, refused = L.concurrently(lambda: L.connect(L.peer, pod(v6), 9008),
                                              lambda: L.connect(L.peer, pod(v6), 9009))
            assert (dropped.outcome, refused.outcome) == ("timeout", "ECONNREFUSED"), (dropped, refused)
            c = L.counters(L.pod, v6=v6)
            assert c["rst-drop"] >= 1 and c["rst-mark0"] >= 2 and c["rst-reply"] >= 2 and c["rst-restored"] >= 1, c
            assert c["rst-est"] >= 2 and c["rst-not-uid0"] >= 2 and c["rst-uid0"] == 0, c
            # IPv4 sends it from a per-namespace kernel socket (no file: no uid); IPv6 from none
            assert (c["rst-socket"] >= 2) if not v6 else (c["rst-socket"] == 0), c
            assert c["rst-nat-out"] == 0 and c["rst-nat-post"] == 0, c
    per_family(check)
