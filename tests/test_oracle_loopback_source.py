"""A kernel fact the handshake model found: a packet with an IPv4 loopback source cannot be routed
out of the pod, and the route is looked up before OUTPUT runs — so a mark that OUTPUT would set
(Istio TPROXY's CONNMARK restore) cannot save it. In Istio's TPROXY golden with DNS capture, the
inbound side's upstream to the pod's port 53 (from the client's own address, transparently) is
redirected to 127.0.0.1:15006 by the gid rule, whose listener's SYN-ACK from 127.0.0.1 towards the
client's address is never sent: the connection fails. Port 8080 is delivered. Interpreter, solver
and kernel agree."""

from __future__ import annotations

import pytest

from meshsolve import Flow, Reachable, Refuted, check, interpret
from meshsolve.analysis.goldens import golden_entries
from meshsolve.analysis.worlds import world_from_config
from meshsolve.iptables import parse_file
from meshsolve.model.world import App, Socket, World
from meshsolve.oracle.compare import differences
from meshsolve.oracle.run import KernelWorld

pytestmark = pytest.mark.kernel


def _world() -> World:
    e = next(x for x in golden_entries() if x.file == "tproxy.golden")
    apps = (App("app", sockets=(Socket("0.0.0.0", 8080), Socket("0.0.0.0", 53))),)
    return world_from_config(e.config, rules=parse_file(e.path), apps=apps)


def test_the_model_says_inbound_tcp_dns_fails_and_8080_is_delivered() -> None:
    w = _world()
    dns = interpret(w, Flow("peer", "192.0.2.10", 53))
    assert dns.summary == "in, failed" and "loopback source 127.0.0.1" in str(dns.outcome)
    assert interpret(w, Flow("peer", "192.0.2.10", 8080)).summary == "in, app<-192.0.2.20"
    v = check(w, Reachable("peer", 53))
    assert isinstance(v, Refuted) and v.result.summary == "in, failed"


def test_the_kernel_agrees() -> None:
    w = _world()
    flows = (Flow("peer", "192.0.2.10", 53), Flow("peer", "192.0.2.10", 8080))
    with KernelWorld(w) as kw:
        for f in flows:
            expected, actual = interpret(w, f), kw.run(f)
            assert not differences(expected, actual), f"{f}: model {expected.summary}, kernel {actual.summary}\n{actual}"


def test_the_proxy_s_own_tcp_dns_call_to_the_pod_loops_as_no_loops_says() -> None:
    """The same golden's gid rule (``! --dport 15008``, port 53 not exempt as it is in the uid rule)
    sends a gid-1337 process's TCP connection to the pod's port 53 to the inbound side, whose
    upstream (uid 0, gid 1337, to the original destination) meets the same rule again: a loop. The
    golden table's "no loops" is refuted for tproxy.golden, and the kernel shows the loop."""
    e = next(x for x in golden_entries() if x.file == "tproxy.golden")
    w = world_from_config(e.config, rules=parse_file(e.path))
    f = Flow("proxy", "192.0.2.10", 53)
    expected = interpret(w, f)
    assert expected.summary == "in, loop"
    with KernelWorld(w) as kw:
        actual = kw.run(f)
    assert not differences(expected, actual), f"model {expected.summary}, kernel {actual.summary}\n{actual}"
    assert actual.summary == "in, loop"
