"""A1–A5 for every ambient golden and mode (solver, witnesses replayed by the interpreter), Istio's
#58546 rediscovered on the ingress rules before the fix, and each property refuted by a rule set
that breaks it (so that a proof means something)."""

from __future__ import annotations

import attrs
import pytest
from ambient_vectors import IPTABLES, LOCAL, POD_GOLDENS, pod_config, read_golden

from meshsolve.analysis.ambient import ambient_properties, check_ambient, probe_neighbours
from meshsolve.analysis.ambient_properties import (
    SPOOFER,
    AmbientNoBypass,
    AmbientNoLoops,
    HboneSplit,
    ProbeExemption,
    ReturnPath,
    hbone_inner,
    with_spoofer,
)
from meshsolve.analysis.check import Proved, Refuted, check
from meshsolve.errors import UnsupportedError, WorldError
from meshsolve.iptables import parse_file, parse_text
from meshsolve.istio.ambient import AmbientConfig, inpod_text
from meshsolve.istio.ambient.profile import ambient_routing, ambient_world, ztunnel_behavior
from meshsolve.model.net import to_address
from meshsolve.model.routing import Routing
from meshsolve.model.world import Flow, World
from meshsolve.report.catalog import CATALOG
from meshsolve.report.findings import findings_for
from meshsolve.semantics.interpret import interpret
from meshsolve.semantics.trace import Delivered, Dropped, Egress, Failed
from meshsolve.smt.query import Captured, EndsAs, Not, Scope
from meshsolve.smt.solve import Candidate, NoWitness, search


def _golden_world(name: str) -> World:
    """The pod with the golden's own rules (read from Istio's file) and ztunnel."""
    return attrs.evolve(ambient_world(pod_config(name)), rules=parse_file(IPTABLES / f"{name}.golden"))


def _mutant(c: AmbientConfig, old: str, new: str) -> World:
    text = inpod_text(c)
    assert old in text, old
    return attrs.evolve(ambient_world(c), rules=parse_text(text.replace(old, new), source="mutant"))


def _kinds(rows: tuple[object, ...]) -> list[tuple[str, str]]:
    return [(r.key, r.verdict.kind) for r in rows]  # type: ignore[attr-defined]


def test_ztunnel_model() -> None:
    c = AmbientConfig(redirect_dns=True)
    p = ztunnel_behavior(c)
    assert (p.outbound_port, p.inbound_port, p.own_listeners, p.socket_mark) == (15001, 15006, (15008, 15053), 0x539)
    assert p.inbound_original_source and p.inbound_endpoint == "original_dst" and not p.transparent
    assert ztunnel_behavior(AmbientConfig(version="1.21")).transparent
    assert ztunnel_behavior(AmbientConfig(redirect_dns=False)).own_listeners == (15008,)
    r = ambient_routing(AmbientConfig(enable_ipv6=True))
    assert [str(x) for x in r.rules] == ["32764: from all fwmark 0x111/0xfff lookup 100"] * 2
    assert [str(x) for x in r.routes] == ["local 0.0.0.0/0 dev lo table 100", "local ::/0 dev lo table 100"]
    assert ambient_routing(AmbientConfig(enable_ipv6=True), ("ipv4",)).rules[0].family == "ipv4"


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_ztunnels_own_connections_start_with_its_mark(family: str) -> None:
    """A connection ztunnel opens itself carries ``SO_MARK`` 0x539 from its first packet, in the
    interpreter and in the solver: capture never takes it. Without the mark the solver finds one
    that the outbound listener takes, and the interpreter agrees."""
    c = pod_config("default", enable_ipv6=True)
    w = ambient_world(c)
    scope = Scope(family=family, client="proxy", local=False)
    assert isinstance(search(w, scope, Not(Captured())), NoWitness)
    unmarked = attrs.evolve(w, proxy=attrs.evolve(w.proxy, socket_mark=None))
    ans = search(unmarked, scope, Not(Captured()))
    assert isinstance(ans, Candidate) and ans.flow.client == "proxy"
    assert interpret(unmarked, ans.flow).observed[:1] == ("out",)
    assert interpret(w, ans.flow).observed == ()


@pytest.mark.parametrize("name", sorted(POD_GOLDENS))
def test_golden_properties(name: str) -> None:
    c = pod_config(name)
    rows = check_ambient(c, _golden_world(name))
    got = _kinds(rows)
    virt = len(c.virtual_interfaces)
    want = [("A1", "proved")] * (1 + virt) + [("A2", "proved"), ("A2", "refuted")]
    want += [("A3", "proved")] * (1 if c.ingress else 2)
    want += [] if c.ingress else [("A4", "proved")]
    want += [("A5", "proved")]
    assert got == want
    spoof = next(r.verdict for r in rows if r.key == "A2" and r.verdict.kind == "refuted")
    assert isinstance(spoof, Refuted) and spoof.flow.client == SPOOFER[0]
    assert isinstance(spoof.result.outcome, Egress) and not spoof.result.observed
    (f,) = findings_for(ambient_world(c), spoof)
    assert f.code == "MSH0162" and "SO_MARK 0x539" in f.message and "uid 4242" in f.message


def test_58546_rediscovered_on_the_rules_before_the_fix() -> None:
    """Ingress mode before 1.29: without the connmark rule the app's SYN-ACK to the client's address
    leaves the pod, the tunnel's inner connection never completes (HBONE timed out); the fixed rules
    prove the same property. The witness is HBONE itself: a connection to ztunnel's tunnel listener
    naming the app's port, in the pod's own world (no variant)."""
    before = attrs.evolve(ambient_world(pod_config("ingress", version="1.28")),
                          rules=parse_text(read_golden(LOCAL / "ingress-before-1.29.iptables.golden")))
    prop = ReturnPath((8080,), tunnel=True)
    v = check(before, prop)
    assert isinstance(v, Refuted), v
    assert str(v.flow) == "peer -> 192.0.2.10:15008/tcp (tunnel to port 8080)"
    assert isinstance(v.result.outcome, Failed) and v.result.observed == ("in",)
    assert v.world.rules == before.rules  # no stand-in rule
    text = str(v.result)
    assert "tunnel listener: the client names 192.0.2.10:8080 as the inner target" in text
    assert "SYN-ACK 192.0.2.10:8080 -> 192.0.2.20:*: leaves the pod" in text
    assert "mangle::ISTIO_PRERT" not in text  # nothing marks ztunnel's connection
    (f,) = findings_for(before, v)
    assert f.code == "MSH0163" and f.level == "Error"
    fixed = attrs.evolve(before, rules=parse_file(IPTABLES / "ingress.golden"))
    assert isinstance(check(fixed, prop), Proved)
    assert _kinds(check_ambient(pod_config("ingress", version="1.28")))[-2] == ("A3", "refuted")


@pytest.mark.parametrize("version", ["1.21", "1.24"])
def test_tproxy_eras(version: str) -> None:
    c = AmbientConfig(version=version, tproxy=True if version == "1.24" else None, redirect_dns=True)
    rows = check_ambient(c)
    assert _kinds(rows) == [("A1", "proved"), ("A2", "proved"), ("A2", "refuted"), ("A3", "proved"),
                            ("A3", "proved"), ("A4", "proved"), ("A5", "proved")]
    assert [r.prop.tunnel for r in rows if r.key == "A3"] == [False, True]  # type: ignore[attr-defined]
    assert "left out" not in rows[0].prop.title() and "left out" not in rows[5].prop.title()
    # ztunnel's listeners without IP_TRANSPARENT: TPROXY drops HBONE (kernel-facts.md, fact 13c)
    w = ambient_world(c)
    opaque = attrs.evolve(w, proxy=attrs.evolve(w.proxy, transparent=False))
    a5 = check(opaque, rows[-1].prop)
    assert isinstance(a5, Refuted) and a5.flow.dport == 15008
    assert isinstance(a5.result.outcome, Dropped) and "no transparent listener" in str(a5.result)


def test_the_properties_of_a_mode() -> None:
    c = pod_config("ingress_and_virtual_interfaces")
    props = dict(ambient_properties(c, ambient_world(c)))
    a1 = [p for k, p in ambient_properties(c, ambient_world(c)) if k == "A1"]
    assert [getattr(p, "interface", None) for p in a1] == [None, "fake1s0f0", "fake1s0f1"]
    assert isinstance(props["A5"], HboneSplit) and not props["A5"].plaintext
    assert "A4" not in props
    assert probe_neighbours(to_address("169.254.7.127")) == (to_address("169.254.7.126"), to_address("169.254.7.128"))


def test_every_ambient_code_is_in_the_catalog() -> None:
    for cls in (AmbientNoBypass, AmbientNoLoops, ReturnPath, ProbeExemption, HboneSplit):
        assert cls.code in CATALOG
    codes = [m.code for m in CATALOG.values() if m.name.startswith("Ambient")]
    assert codes == ["MSH0160", "MSH0161", "MSH0162", "MSH0163", "MSH0164", "MSH0165"]


# ---------------------------------------------------------------------------------------------
# Each property refuted by rules that break it

_OUT = "-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -p tcp -m mark ! --mark 0x539/0xfff -j REDIRECT --to-ports 15001"
_IN = "-A ISTIO_PRERT ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m mark ! --mark 0x539/0xfff -j REDIRECT --to-ports 15006"
_PROBE = "-A ISTIO_PRERT -s 169.254.7.127 -p tcp -m tcp -j ACCEPT"


def _refuted(world: World, prop: object, code: str) -> Refuted:
    v = check(world, prop)  # type: ignore[arg-type]
    assert isinstance(v, Refuted), v
    (f,) = findings_for(world, v)
    assert f.code == code
    return v


def test_a1_refuted_by_an_extra_exemption() -> None:
    c = pod_config("default")
    w = _mutant(c, _OUT, "-A ISTIO_OUTPUT -d 198.51.100.0/24 -j ACCEPT\n" + _OUT)
    v = _refuted(w, AmbientNoBypass(exempt_dsts=(c.probe_snat_v4,)), "MSH0160")
    assert v.flow.dst in __import__("ipaddress").ip_network("198.51.100.0/24")


def test_a1_refuted_without_outbound_capture() -> None:
    c = pod_config("default")
    w = _mutant(c, _OUT + "\n", "")
    v = _refuted(w, AmbientNoBypass(exempt_dsts=(c.probe_snat_v4,)), "MSH0160")
    assert isinstance(v.result.outcome, Egress)


def test_a2_refuted_when_ztunnel_is_captured_again() -> None:
    c = pod_config("default")
    w = _mutant(c, _OUT, _OUT.replace("-m mark ! --mark 0x539/0xfff ", ""))
    v = _refuted(w, AmbientNoLoops(), "MSH0161")
    assert v.result.summary.endswith("loop")


@pytest.mark.parametrize("broken", ["restore", "routing"])
def test_a3_refuted_without_the_restore_or_the_route(broken: str) -> None:
    c = pod_config("default")
    if broken == "restore":
        w = _mutant(c, "-A ISTIO_OUTPUT -m connmark --mark 0x111/0xfff -j CONNMARK --restore-mark --nfmask "
                       "0xffffffff --ctmask 0xffffffff\n", "")
    else:
        w = attrs.evolve(ambient_world(c), routing=Routing())
    for prop in (ReturnPath((8080,)), ReturnPath((8080,), tunnel=True)):
        v = _refuted(w, prop, "MSH0163")
        assert isinstance(v.result.outcome, Failed) and v.result.observed == ("in",)
        assert v.flow.inner == (8080 if prop.tunnel else None)


def test_hbone_through_the_tunnel_listener() -> None:
    """A connection to ztunnel's tunnel listener naming a port is its inbound side for the pod's
    address at that port, from the tunnel's source; naming none, ztunnel ends it itself. The
    solver finds the same (a refusal where nothing listens on the named port) and asks about the
    tunnel only where the proxy has a tunnel listener."""
    w = ambient_world(pod_config("default"))
    hbone = interpret(w, Flow("peer", "192.0.2.10", 15008, inner=8080))
    assert hbone.observed == ("in",) and hbone.summary == "in, app<-192.0.2.20"
    assert interpret(w, Flow("peer", "192.0.2.10", 15008)).summary == "proxy<-192.0.2.20"
    nobody = interpret(w, Flow("peer", "192.0.2.10", 15008, inner=9999))
    assert nobody.observed == ("in",) and nobody.outcome.token == "refused"
    scope = Scope(family="ipv4", client="peer", dports=("15008",), inner=9999)
    ans = search(w, scope, EndsAs({"delivered"}))
    assert isinstance(ans, Candidate) and ans.flow.inner == 9999
    assert interpret(ans.world, ans.flow).summary == nobody.summary
    sidecar = attrs.evolve(w, proxy=attrs.evolve(w.proxy, own_listeners=()))
    with pytest.raises(UnsupportedError, match="tunnel listener"):
        check(sidecar, ReturnPath((8080,), tunnel=True))
    with pytest.raises(WorldError, match="inner port"):
        Flow("peer", "192.0.2.10", 15008, inner=0)


def test_a4_refuted_by_a_wider_probe_exemption() -> None:
    c = pod_config("default")
    w = _mutant(c, _PROBE, _PROBE.replace("169.254.7.127", "169.254.7.0/24"))
    probe = (c.probe_snat_v4,)
    v = _refuted(w, ProbeExemption(probe, probe_neighbours(c.probe_snat_v4), (8080,)), "MSH0164")
    assert isinstance(v.result.outcome, Delivered) and not v.result.observed


def test_a4_refuted_when_probes_are_captured() -> None:
    c = pod_config("default")
    w = _mutant(c, _PROBE + "\n", "")
    probe = (c.probe_snat_v4,)
    v = _refuted(w, ProbeExemption(probe, (), (8080,)), "MSH0164")
    assert v.flow.src == c.probe_snat_v4 and v.result.observed == ("in",)
    # searched with one connection, reported followed to the end: ztunnel hands it to the app
    assert isinstance(v.result.outcome, Delivered) and v.result.summary == "in, app<-169.254.7.127"


def test_a5_refuted_when_hbone_is_redirected() -> None:
    c = pod_config("default")
    w = _mutant(c, _IN, _IN.replace("! --dport 15008 ", ""))
    v = _refuted(w, HboneSplit(), "MSH0165")
    assert v.flow.dport == 15008 and "port 15008" in findings_for(w, v)[0].message


def test_variant_worlds_only_append_rules() -> None:
    """The pod's rule names stay valid in the worlds a property is asked about."""
    w = ambient_world(pod_config("default"))
    for variant in (hbone_inner(w), with_spoofer(w, 0x539)):
        for fam in ("ipv4", "ipv6"):
            old, new = w.rules.for_family(fam), variant.rules.for_family(fam)  # type: ignore[arg-type]
            for table in old.tables:
                for chain in table.chains:
                    mine = new.chain(table.name, chain.name)
                    assert mine is not None and mine.rules[:len(chain.rules)] == chain.rules
    spoofer = with_spoofer(w, 0x539)
    assert spoofer.rules == w.rules  # no stand-in rule: the process's own socket mark
    assert spoofer.app(SPOOFER[0]).uid == SPOOFER[1] and spoofer.app(SPOOFER[0]).mark == 0x539
