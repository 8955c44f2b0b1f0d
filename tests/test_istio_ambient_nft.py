"""Ambient's native nftables rules beyond text and syntax: they load on the kernel as generated for
any mode; lowered into the rule model (``meshsolve.nftables.lower``) they prove and refute A1–A5 as
the iptables rules do. The probe exemption differs by backend (A4 as a semantic difference): with
source NAT and the probe sets' members in the semantics, ``diff`` finds the node agent's connection
that iptables gives the probe source and nft does not."""

from __future__ import annotations

import shutil

import pytest
from ambient_vectors import POD_GOLDENS, pod_config
from nft_kernel import kernel_load, nft_unavailable_reason

from meshsolve.errors import UnsupportedError
from meshsolve.istio.ambient import AmbientConfig
from meshsolve.istio.ambient.nft import host_nft_text, inpod_nft_ruleset, inpod_nft_text
from meshsolve.istio.ambient.profile import ambient_world
from meshsolve.model.world import App, Flow, IpSet, World
from meshsolve.nftables import kernel_form, parse_text
from meshsolve.semantics.interpret import interpret
from meshsolve.semantics.trace import Egress, Undetermined

_CONFIGS = [
    pod_config("default", "nftables", probe_snat_v4="203.0.113.127"),
    pod_config("virtual_interfaces_ipv6", "nftables", redirect_dns=True),
    pod_config("ingress", "nftables", version="1.28"),
    AmbientConfig(backend="nftables", dns_override="disabled", enable_ipv6=True),
]


def test_an_nft_ambient_world_has_the_lowered_nft_rules() -> None:
    from meshsolve.nftables.lower import lower

    c = AmbientConfig(backend="nftables", enable_ipv6=True)
    w = ambient_world(c)
    assert w.rules == lower(inpod_nft_ruleset(c))
    assert not w.rules.ipv4.tables and [t.name for t in w.rules.ipv4.nft] == [
        "istio-ambient-nat", "istio-ambient-mangle", "istio-ambient-raw"]
    assert w.routing == ambient_world(c.evolve(backend="iptables")).routing
    with pytest.raises(UnsupportedError, match="nftables"):
        ambient_world(AmbientConfig(version="1.27", backend="nftables"))


_reason = nft_unavailable_reason()


@pytest.mark.kernel
@pytest.mark.skipif(_reason is not None, reason=f"kernel test skipped: {_reason}")
@pytest.mark.parametrize("config", _CONFIGS, ids=lambda c: c.describe())
def test_generated_nft_loads_on_the_kernel(config: AmbientConfig) -> None:
    loaded = kernel_load(inpod_nft_text(config))
    assert loaded.error is None, loaded.error
    assert parse_text(loaded.listing) == kernel_form(inpod_nft_ruleset(config))


@pytest.mark.kernel
@pytest.mark.skipif(_reason is not None, reason=f"kernel test skipped: {_reason}")
def test_host_rule_loads_once_the_sets_exist() -> None:
    c = AmbientConfig(backend="nftables", enable_ipv6=True, probe_snat_v4="203.0.113.127",
                      probe_snat_v6="2001:db8:7127::1", kubelet_uid=1000)
    sets = ("add table inet istio-ambient-nat\n"
            "add set inet istio-ambient-nat istio-inpod-probes-v4 { type ipv4_addr ; }\n"
            "add set inet istio-ambient-nat istio-inpod-probes-v6 { type ipv6_addr ; }\n")
    assert kernel_load(host_nft_text(c)).error is not None  # the sets come from another transaction
    assert kernel_load(sets + host_nft_text(c)).error is None


@pytest.mark.parametrize("name", sorted(POD_GOLDENS))
def test_nft_properties_match_the_iptables_ones(name: str) -> None:
    """The nft rules of every pod mode prove and refute A1–A5 exactly as its iptables rules do, the
    refutations with flows that end the same way on both."""
    from meshsolve.analysis.ambient import check_ambient
    from meshsolve.analysis.check import Refuted
    from meshsolve.semantics.interpret import interpret

    ipt, nft = pod_config(name), pod_config(name, "nftables")
    rows_i, rows_n = check_ambient(ipt), check_ambient(nft)
    assert [(r.key, r.prop, r.verdict.kind) for r in rows_n] == [(r.key, r.prop, r.verdict.kind) for r in rows_i]
    wi = ambient_world(ipt)
    for row in rows_n:
        if isinstance(row.verdict, Refuted):  # the nft witness ends the same way on the iptables rules
            from meshsolve.analysis.ambient_properties import property_world

            flow = row.verdict.flow
            assert interpret(property_world(row.prop, wi), flow).outcome == row.verdict.result.outcome


#: the node's probe sets: the pod the node probes (its address in each family)
PROBED = {"ipv4": "192.0.2.10", "ipv6": "2001:db8::10"}


def node_world(c: AmbientConfig, backend: str, *, sets: bool = True) -> World:
    """The node (kubelet, uid 1000, and a node agent running as root) with the host probe rule of
    ``c`` in ``backend``; its peer is the probed pod, a member of the probe sets (``sets``)."""
    from meshsolve.istio.ambient import host_rules
    from meshsolve.istio.ambient.config import PROBE_SET
    from meshsolve.istio.ambient.nft import host_nft_ruleset
    from meshsolve.nftables.lower import lower

    fams = c.families
    apps = (App("kubelet", uid=1000, gid=1000), App("node-agent", uid=0, gid=0))
    given = tuple(IpSet(f"{PROBE_SET}-{'v4' if f == 'ipv4' else 'v6'}", f, (PROBED[f],)) for f in fams)
    rules = host_rules(c) if backend == "iptables" else lower(host_nft_ruleset(c.evolve(backend="nftables")))
    return World(pod_ips=tuple(NODE[f] for f in fams), peer_ips=tuple(PROBED[f] for f in fams), apps=apps,
                 rules=rules, ip_sets=given if sets else ())


NODE = {"ipv4": "198.51.100.1", "ipv6": "2001:db8:1::1"}
HOST = AmbientConfig(probe_snat_v4="203.0.113.127", probe_snat_v6="2001:db8:7127::1", kubelet_uid=1000)


@pytest.mark.parametrize("v6", [False, True], ids=["hostprobe", "hostprobe_ipv6"])
def test_probe_exemption_differs_by_backend(v6: bool) -> None:
    """A4 as a semantic difference: on the node, iptables gives the probe source to a connection from
    any socket of the node (--socket-exists), nft only to kubelet's (skuid). A node agent running as
    root (not kubelet) connecting to the pod is exempt from capture with iptables, captured with nft."""
    from meshsolve.analysis.diff import Different, diff

    c = HOST.evolve(enable_ipv6=v6)
    results = diff(node_world(c, "iptables"), node_world(c, "nftables"))
    witness = [r for r in results if isinstance(r, Different)]
    assert [w.scope.family for w in witness] == list(c.families)
    for w in witness:
        fam = w.scope.family
        assert w.flow.client == "node-agent" and str(w.flow.dst) == PROBED[fam]
        assert isinstance(w.a.outcome, Egress) and isinstance(w.b.outcome, Egress)
        assert w.a.outcome.source == c.probe_snat(fam) and str(w.b.outcome.source) == NODE[fam]
        assert f"from {c.probe_snat(fam)}  vs  " in str(w) and str(w).endswith(f"from {NODE[fam]}")
    kubelet = Flow("kubelet", PROBED["ipv4"], 8080)
    for backend in ("iptables", "nftables"):  # kubelet's probe gets the probe source in both
        got = interpret(node_world(c, backend), kubelet).outcome
        assert isinstance(got, Egress) and got.source == c.probe_snat_v4


def test_probe_set_members_are_the_world_s() -> None:
    """The probe rule's set lookup reads the members the world gives: another pod is not SNATed, and
    without the members the rule is left undecided (never guessed)."""
    from meshsolve.model.kinds import coarsening
    from meshsolve.model.rules import SetMatch

    for backend in ("iptables", "nftables"):
        w = node_world(HOST, backend)
        assert any(isinstance(m, SetMatch) for t in w.rules.ipv4.all_tables()
                   for ch in t.chains for r in ch.rules for m in r.matches)
        other = interpret(w, Flow("kubelet", "192.0.2.11", 8080)).outcome
        assert isinstance(other, Egress) and str(other.source) == NODE["ipv4"]
        unknown = interpret(node_world(HOST, backend, sets=False), Flow("kubelet", PROBED["ipv4"], 8080)).outcome
        assert isinstance(unknown, Undetermined) and "istio-inpod-probes-v4" in unknown.reason
    assert coarsening(SetMatch, "members")


@pytest.mark.kernel
@pytest.mark.skipif(_reason is not None, reason=f"kernel test skipped: {_reason}")
@pytest.mark.skipif(shutil.which("ipset") is None, reason="kernel test skipped: ipset is not installed")
@pytest.mark.parametrize("v6", [False, True], ids=["hostprobe", "hostprobe_ipv6"])
def test_probe_difference_replays_on_the_kernel(v6: bool) -> None:
    """The A4 witness on the kernel: the node's rules in a namespace (the probe set an ipset, or an
    nft set, with the probed pod in it), the node agent's and kubelet's connections to the pod end as
    the interpreter says — the peer sees the probe source exactly where the interpreter gives it."""
    from meshsolve.analysis.diff import Different, diff
    from meshsolve.oracle.compare import differences, explain, replay_command
    from meshsolve.oracle.run import KernelWorld, OracleConfig

    c = HOST.evolve(enable_ipv6=v6)
    worlds = {b: node_world(c, b) for b in ("iptables", "nftables")}
    witness = [r for r in diff(worlds["iptables"], worlds["nftables"]) if isinstance(r, Different)]
    assert witness
    others = {"ipv4": "192.0.2.11", "ipv6": "2001:db8::11"}  # not in the probe set: no SNAT
    flows = [w.flow for w in witness] + [Flow("kubelet", a[w.scope.family], w.flow.dport)
                                         for w in witness for a in (PROBED, others)]
    for backend, world in worlds.items():
        with KernelWorld(world, OracleConfig(connect_timeout=0.5, upstream_timeout=0.5)) as k:
            for flow in flows:
                expected, actual = interpret(world, flow), k.run(flow)
                assert isinstance(actual.outcome, Egress), (backend, flow, actual.outcome)
                assert actual.outcome.source == expected.outcome.source, (backend, flow, actual.outcome)  # type: ignore[union-attr]
                assert not differences(expected, actual), explain(world, flow, expected, actual, replay_command(flow))


_SNAT_RULES = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -d 198.51.100.7/32 -p tcp -j SNAT --to-source 203.0.113.5
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
{extra}COMMIT
"""


@pytest.mark.kernel
@pytest.mark.skipif(_reason is not None, reason=f"kernel test skipped: {_reason}")
@pytest.mark.parametrize("extra", ["", "-A INPUT -m conntrack --ctstate SNAT -j DROP\n",
                                   "-A INPUT -p tcp -s 198.51.100.7/32 -d 192.0.2.10/32 -j DROP\n"],
                         ids=["snat", "ctstate-snat-reply", "reply-un-natted"])
def test_snat_on_the_kernel(extra: str) -> None:
    """The kernel facts source NAT rests on: SNAT in nat POSTROUTING gives the connection's first
    packet the new source (the remote host sees it); conntrack turns the replies' destination back
    into the client's before filter INPUT sees them (a rule on the client's own address drops them);
    the replies show conntrack state SNAT. Interpreter and kernel agree on each."""
    from meshsolve.iptables import parse_text as parse_iptables
    from meshsolve.oracle.compare import differences, explain, replay_command
    from meshsolve.oracle.run import KernelWorld, OracleConfig

    world = World(pod_ips=("192.0.2.10",), peer_ips=("192.0.2.20",), apps=(App("app", uid=1000, gid=1000),),
                  rules=parse_iptables(_SNAT_RULES.format(extra=extra)))
    flow = Flow("app", "198.51.100.7", 80)
    expected = interpret(world, flow)
    if extra:
        assert not isinstance(expected.outcome, Egress)
    else:
        assert isinstance(expected.outcome, Egress) and str(expected.outcome.source) == "203.0.113.5"
    with KernelWorld(world, OracleConfig(connect_timeout=0.5, upstream_timeout=0.5)) as k:
        actual = k.run(flow)
    assert not differences(expected, actual), explain(world, flow, expected, actual, replay_command(flow))
