"""Loading configurations from what users have (meshsolve.inputs) and the --property syntax."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshsolve.analysis.properties import (
    Bypass,
    CaptureInbound,
    CaptureOutbound,
    NoExposure,
    NoLoops,
    Observation,
    Reachable,
)
from meshsolve.errors import SpecError
from meshsolve.inputs import (
    check_defaults,
    default_config,
    load_binds,
    load_configuration,
    parse_properties,
    parse_property,
    parse_side,
)
from meshsolve.model.net import to_address
from meshsolve.model.provenance import Inferred
from meshsolve.semantics import setup_world

ROOT = Path(__file__).resolve().parent.parent
EX = ROOT / "docs" / "examples"


def test_setup_input_is_the_built_in_pod() -> None:
    c = load_configuration(setup="b", family="ipv6")
    assert c.world == setup_world("B", "ipv6")
    with pytest.raises(SpecError):
        load_configuration(setup="A", istio="1.2")
    with pytest.raises(SpecError, match="nothing to check"):
        load_configuration()


def test_istio_version_without_flags_uses_the_injector_defaults() -> None:
    old = load_configuration(istio="1.2")
    assert [r for r in old.world.rules.ipv4.chain("nat", "ISTIO_INBOUND").rules]  # -b 8080 (the app port)
    assert old.world.pod_ips == (to_address("192.0.2.10"),)  # the 1.2 ip6tables rules do not make it dual-stack
    assert default_config("1.2", (9080,)).inbound_ports == (9080,)
    assert default_config("current").inbound_ports == "*"
    new = load_configuration(istio="current")
    assert new.world.proxy.inbound_port == 15006 and new.world.name == "istio-current"


def test_istio_flags_and_env() -> None:
    c = load_configuration(istio="1.10", flags=["-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT",
                                                "-i", "*", "-b", "9080"])
    assert c.world.proxy.inbound_endpoint == "original_dst"
    assert [s.port for a in c.world.apps for s in a.sockets] == [9080]  # the apps listen on -b


def test_pod_manifest_gives_apps_ids_and_pod_ip() -> None:
    c = load_configuration(pod=str(EX / "reviews-v1.yaml"))
    w = c.world
    assert (w.namespace, w.name) == ("default", "reviews-v1")
    (app,) = w.apps
    assert (app.name, app.uid, app.gid) == ("reviews", 1000, 1000)
    assert [str(s) for s in app.sockets] == ["0.0.0.0:9080"]
    assert w.pod_ips == (to_address("192.0.2.10"),)
    assert w.proxy.inbound_endpoint == "localhost"  # the istio-init image says 1.2
    assert any("istio-init" in n for n in c.notes)
    assert dict(c.app_references)["reviews"].endswith("reviews-v1.yaml:32")


def test_rules_dump_with_binds_and_pod() -> None:
    c = load_configuration(pod=str(EX / "reviews-v1.yaml"), rules=str(EX / "reviews-v1-iptables.txt"),
                           binds=str(EX / "reviews-v1-binds.yaml"))
    w = c.world
    assert [str(s) for a in w.apps for s in a.sockets] == ["192.0.2.10:9080"]
    assert w.services[0].endpoints[0].address == to_address("192.0.2.10")
    rule = w.rules.ipv4.chain("nat", "ISTIO_OUTPUT").rules[0]
    assert rule.origin is not None and rule.origin.lineno == 15


def test_rules_dump_alone_infers_the_version_and_invents_no_app() -> None:
    c = load_configuration(rules=str(EX / "reviews-v1-iptables.txt"))
    assert c.world is not None and c.world.name == "reviews-v1-iptables"
    assert "Istio version inferred from the rules: 1.0–1.2" in c.notes
    assert c.version == "1.2" and c.world.proxy.inbound_port is None  # the 1.0-1.2 sidecar: one listener
    # the only app listener is the port the rules name, its address said to be assumed
    assert [str(s) for a in c.world.apps for s in a.sockets] == ["0.0.0.0:9080"]
    (listener,) = [p for p in c.parts if p.kind == "listener"]
    assert listener.assumed and "nat::ISTIO_INBOUND#1" in str(listener.provenance)
    assert not any("8080" in str(p) for p in c.parts)
    proxy = next(p for p in c.parts if p.kind == "proxy")
    assert isinstance(proxy.provenance, Inferred) and "1.0–1.2" in proxy.provenance.basis


def test_binds_file(tmp_path: Path) -> None:
    p = tmp_path / "b.yaml"
    p.write_text("pod_ips: ['2001:db8::10']\napps:\n  - {name: a, uid: 7, listen: ['[::1]:81', 'pod:82']}\n"
                 "services:\n  - {name: s, vip: '2001:db8:100::1', port: 80, endpoints: ['pod:82']}\n")
    b = load_binds(p)
    assert b.pod_ips == (to_address("2001:db8::10"),)
    assert b.apps is not None and b.apps[0].gid == 7
    assert [str(s) for s in b.apps[0].sockets] == ["[::1]:81", "[2001:db8::10]:82"]
    p.write_text("apps:\n  - {name: a, listen: ['nonsense']}\n")
    with pytest.raises(SpecError, match="ADDRESS:PORT"):
        load_binds(p)
    p.write_text("frobs: 1\n")
    with pytest.raises(SpecError, match="unknown key"):
        load_binds(p)


def test_property_syntax() -> None:
    w = setup_world("A")
    assert parse_property("no-loops", w) == (NoLoops(),)
    assert parse_property("bypass", w) == (Bypass(),)
    assert parse_property("capture-out", w) == (CaptureOutbound(),)
    assert parse_property("capture-in:9001,9003", w) == (CaptureInbound(ports=(9001, 9003)),)
    assert parse_property("no-exposure", w) == (NoExposure(),)
    assert parse_property("reach:peer:9003", w) == (Reachable("peer", 9003),)
    assert parse_property("reach:app:9001:127.0.0.1", w) == (Reachable("app", 9001, dst="127.0.0.1"),)
    assert parse_property("observe:app:198.51.100.1:9001", w) == (Observation("app", "198.51.100.1", 9001),)
    assert parse_property("observe:app:[2001:db8:100::1]:9001:out", w) == (
        Observation("app", "2001:db8:100::1", 9001, sides=("out",)),)
    for bad in ("reach:peer", "reach:ghost:1", "reach:peer:70000", "observe:app:1.2.3.4:1:up", "loops",
                "observe:app:nonsense:1", "bypass:1"):
        with pytest.raises(SpecError):
            parse_property(bad, w)


def test_default_properties_add_reach_of_non_loopback_ports() -> None:
    w = setup_world("A")
    props = check_defaults(w)
    assert Reachable("peer", 9001) in props and Reachable("peer", 9003) in props
    assert Reachable("peer", 9002) not in props  # bound to loopback only: no-exposure's business
    assert parse_properties([], w) == props
    assert parse_properties(["no-loops", "no-loops"], w) == (NoLoops(),)


def test_cli_diff_sides() -> None:
    assert parse_side("a") == {"setup": "A"}
    assert parse_side("1.2.3") == {"istio": "1.2"}
    assert parse_side("current") == {"istio": "current"}
    assert parse_side("rules:x.txt") == {"rules": "x.txt"}
    assert parse_side(str(EX / "reviews-v1.yaml")) == {"pod": str(EX / "reviews-v1.yaml")}
    assert parse_side(str(EX / "reviews-v1-iptables.txt")) == {"rules": str(EX / "reviews-v1-iptables.txt")}
    with pytest.raises(SpecError):
        parse_side("no-such-file")


def test_a_version_the_pods_annotations_contradict_is_a_finding(tmp_path: Path) -> None:
    import yaml

    doc = yaml.safe_load((ROOT / "tests" / "data" / "pods" / "injected-1.10.yaml").read_text())
    doc["metadata"]["annotations"]["sidecar.istio.io/proxyImage"] = "docker.io/istio/proxyv2:1.12.1"
    path = tmp_path / "pod.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    lines = path.read_text().splitlines()
    # the version comes from istio-init's image (1.10): the annotation contradicts it
    got = load_configuration(pod=str(path))
    assert got.version == "1.10"
    assert [(p.code, p.message) for p in got.problems] == [
        ("MSH0113", "Annotation sidecar.istio.io/proxyImage (docker.io/istio/proxyv2:1.12.1) says Istio 1.12, "
                    "but the sidecar of Istio 1.10 is used (inferred from the image tag of istio-init "
                    "(docker.io/istio/proxyv2:1.10.0))")]
    line = int((got.problems[0].reference or "").rsplit(":", 1)[1])
    assert "sidecar.istio.io/proxyImage" in lines[line - 1]
    # --istio contradicts every claim: the images and the annotation
    given = load_configuration(pod=str(path), istio="1.12")
    assert sorted(p.message.split(" says ")[0] for p in given.problems) == [
        "The image tag of istio-init (docker.io/istio/proxyv2:1.10.0)",
        "The image tag of istio-proxy (docker.io/istio/proxyv2:1.10.0)"]
    assert all(p.code == "MSH0113" and "(given in --istio)" in p.message for p in given.problems)
    del doc["metadata"]["annotations"]["sidecar.istio.io/proxyImage"]
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert load_configuration(pod=str(path)).problems == ()
