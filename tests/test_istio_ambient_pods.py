"""Ambient pods from manifests: which pods ambient mode captures and with which settings, ``check
--pod`` on an ambient pod (the ambient properties by default), ``audit`` over a fleet with sidecar
and ambient pods."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from ambient_vectors import LOCAL

from meshsolve.analysis.ambient_properties import AmbientNoBypass, HboneSplit, MarkSpoofing, ReturnPath
from meshsolve.inputs import from_ambient_pod, load_configuration, parse_properties
from meshsolve.istio.ambient import AmbientConfig
from meshsolve.istio.ambient.pods import ambient_enrollment, ambient_pod, has_sidecar, namespace_labels
from meshsolve.istio.pod import load_pods
from meshsolve.model.net import to_address


def _pod(labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None,
         containers: tuple[str, ...] = ("app",), ips: tuple[str, ...] = ("192.0.2.31",)) -> dict[str, Any]:
    return {"kind": "Pod", "metadata": {"name": "p", "namespace": "ns", "labels": labels or {},
                                        "annotations": annotations or {}},
            "spec": {"containers": [{"name": c, "ports": [{"containerPort": 8080}]} for c in containers]},
            "status": {"podIPs": [{"ip": ip} for ip in ips]}}


AMBIENT_NS = {"istio.io/dataplane-mode": "ambient"}


@pytest.mark.parametrize(("pod", "namespace", "why"), [
    (_pod(annotations={"ambient.istio.io/redirection": "enabled"}), None, "istio-cni enrolled it"),
    (_pod(labels={"istio.io/dataplane-mode": "ambient"}), None, "pod label"),
    (_pod(), AMBIENT_NS, "namespace ns label"),
    (_pod(labels={"istio.io/dataplane-mode": "none"}), AMBIENT_NS, None),
    (_pod(annotations={"ambient.istio.io/redirection": "disabled"}), AMBIENT_NS, None),
    (_pod(containers=("app", "istio-proxy")), AMBIENT_NS, None),
    (_pod(annotations={"sidecar.istio.io/status": "{}"}), AMBIENT_NS, None),
    (_pod(), {"istio.io/dataplane-mode": "none"}, None),
    (_pod(), None, None),
])
def test_enrollment(pod: dict[str, Any], namespace: dict[str, str] | None, why: str | None) -> None:
    got = ambient_enrollment(pod, namespace)
    if why is None:
        assert got is None
    else:
        assert got is not None and why in got


def test_a_pod_s_settings() -> None:
    pod = _pod(labels={"istio.io/dataplane-mode": "ambient"},
               annotations={"ambient.istio.io/bypass-inbound-capture": "True", "ambient.istio.io/dns-capture": "0",
                            "istio.io/reroute-virtual-interfaces": " net1, net2 ,"},
               ips=("192.0.2.31", "2001:db8::31"))
    found = ambient_pod(pod, version="1.28")
    assert found is not None
    assert found.config == AmbientConfig(version="1.28", ingress=True, dns_override="disabled",
                                         virtual_interfaces=("net1", "net2"), enable_ipv6=True)
    assert found.pod_ips == (to_address("192.0.2.31"), to_address("2001:db8::31"))
    odd = ambient_pod(_pod(labels={"istio.io/dataplane-mode": "ambient"},
                           annotations={"ambient.istio.io/bypass-inbound-capture": "yes"}))
    assert odd is not None and not odd.config.ingress and any("not a boolean" in n for n in odd.notes)
    assert ambient_pod(_pod()) is None
    assert has_sidecar(_pod(containers=("istio-proxy",)))


def test_namespace_labels_and_namespaces_in_a_list() -> None:
    text = (LOCAL / "fleet-mixed.yaml").read_text(encoding="utf-8")
    pods = load_pods(text, "fleet")  # Namespace items are not pods, and no error
    assert [p["metadata"]["name"] for p in pods] == ["cart", "gateway", "legacy", "web"]
    import yaml

    assert namespace_labels(yaml.safe_load(text)) == {"shop": {"istio.io/dataplane-mode": "ambient"}}


def test_check_configuration_of_an_ambient_pod() -> None:
    cfg = load_configuration(pod=str(LOCAL / "ambient-pod.yaml"))
    w = cfg.world
    assert w.proxy.socket_mark == 0x539 and w.proxy.own_listeners == (15008, 15053)
    assert (w.name, w.namespace) == ("reviews-v1", "bookinfo")
    assert w.pod_ips == (to_address("192.0.2.31"),) and [s.port for s in w.apps[0].sockets] == [9080]
    assert not w.routing.empty and "ambient pod bookinfo/reviews-v1" in cfg.label
    assert any("istio-cni enrolled it" in n for n in cfg.notes)
    props = parse_properties((), w, defaults=cfg.defaults)
    assert props == cfg.defaults
    kinds = [type(p) for p in props]
    assert AmbientNoBypass in kinds and MarkSpoofing in kinds and HboneSplit in kinds
    assert [p.ports for p in props if isinstance(p, ReturnPath)] == [(9080,), (9080,)]
    assert parse_properties(("default", "no-loops"), w, defaults=cfg.defaults)[:len(props)] == props
    sidecar = load_configuration(istio="1.24")
    assert sidecar.defaults is None and sidecar.world.proxy.socket_mark is None


def test_not_ambient_is_none() -> None:
    assert from_ambient_pod(_pod()) is None


def test_cli_check_pod_selects_the_ambient_profile(capsys: pytest.CaptureFixture[str]) -> None:
    from meshsolve.cli import main

    code = main(["check", "--pod", str(LOCAL / "ambient-pod.yaml"), "-o", "json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 79  # the mark-spoofing bypass is a (warning) finding
    assert [f["code"] for f in out["findings"]] == ["MSH0162"]
    assert "ambient pod bookinfo/reviews-v1" in out["configuration"]
    titles = [c["property"] for c in out["checked"]]
    assert any("reaches ztunnel" in t for t in titles) and any("HBONE" in t for t in titles)
    assert all(c["verdict"] == "proved" for c in out["checked"] if "SO_MARK" not in c["property"])
    assert main(["check", "--pod", str(LOCAL / "ambient-pod.yaml"), "--failure-threshold", "Error"]) == 0
    capsys.readouterr()


def test_cli_check_pod_on_an_nft_chart(capsys: pytest.CaptureFixture[str]) -> None:
    """``--env NATIVE_NFTABLES=true`` (istio-cni's setting for the chart's values.global.nativeNftables):
    the ambient pod's world has the lowered nft in-pod rules, and the properties end as with iptables."""
    from meshsolve.cli import main
    from meshsolve.errors import UnsupportedError
    from meshsolve.istio.ambient.nft import inpod_nft_ruleset
    from meshsolve.nftables.lower import lower

    pod = str(LOCAL / "ambient-pod.yaml")
    ipt = load_configuration(pod=pod)
    nft = load_configuration(pod=pod, env={"NATIVE_NFTABLES": "true"})
    assert nft.world is not None and ipt.world is not None
    assert nft.world.rules == lower(inpod_nft_ruleset(AmbientConfig(backend="nftables", redirect_dns=True)))
    assert not nft.world.rules.ipv4.tables and nft.defaults == ipt.defaults and "nftables" in nft.label
    off = load_configuration(pod=pod, env={"NATIVE_NFTABLES": "false"})
    assert off.world is not None and off.world.rules == ipt.world.rules
    with pytest.raises(UnsupportedError, match="nftables"):
        load_configuration(pod=pod, istio="1.27", env={"NATIVE_NFTABLES": "1"})
    code = main(["check", "--pod", pod, "--env", "NATIVE_NFTABLES=true", "-o", "json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 79 and [f["code"] for f in out["findings"]] == ["MSH0162"]
    assert "nftables" in out["configuration"]
    assert all(c["verdict"] == "proved" for c in out["checked"] if "SO_MARK" not in c["property"])


def test_audit_of_a_mixed_fleet(tmp_path: Path) -> None:
    from meshsolve.fleet import audit, load_fleet

    path = LOCAL / "fleet-mixed.yaml"
    pods = {p.subject.name: p for p in load_fleet(path)}
    assert isinstance(pods["cart"].config, AmbientConfig) and pods["cart"].basis == "ambient"
    assert isinstance(pods["gateway"].config, AmbientConfig) and pods["gateway"].config.ingress
    assert not isinstance(pods["web"].config, AmbientConfig) and pods["web"].basis == "istio-init"
    assert not isinstance(pods["legacy"].config, AmbientConfig)  # opted out of ambient mode
    result = audit(path, jobs=1)
    assert (result.pods, result.groups) == (4, 4)
    codes = sorted((f.subject.name, f.code) for f in result.report.findings)
    assert ("cart", "MSH0162") in codes and ("gateway", "MSH0162") in codes
    ambient_checked = [c for c in result.report.checked if c.subject.name == "gateway"]
    assert any("HBONE's inner connections" in c.property and c.verdict == "proved" for c in ambient_checked)
    assert not any("come back to ztunnel" in c.property for c in result.report.checked if c.subject.name == "web")


def test_an_ambient_pod_s_parts_and_its_rules_dump(tmp_path: Path) -> None:
    """The door records where each part of an ambient pod's world comes from; a dump of the pod's
    rules (iptables or nft) replaces the generated ones, with the policy routing then assumed; a
    sidecar's rules with an ambient pod, and ambient rules without the pod, are refused by name."""
    from meshsolve.errors import UnsupportedError
    from meshsolve.iptables import render_save
    from meshsolve.istio import CaptureConfig, generate
    from meshsolve.istio.ambient import inpod_text
    from meshsolve.istio.ambient.nft import inpod_nft_text
    from meshsolve.model.provenance import Assumed, Given, Inferred

    pod = str(LOCAL / "ambient-pod.yaml")
    cfg = load_configuration(pod=pod)
    kinds = {p.kind: p.provenance for p in cfg.parts}
    assert isinstance(kinds["rules"], Inferred) and isinstance(kinds["routing"], Inferred)
    assert isinstance(kinds["pod-ip"], Given) and kinds["pod-ip"].source == pod
    assert isinstance(kinds["proxy"], Assumed)  # no --istio: ztunnel of current
    given = load_configuration(pod=pod, istio="1.28")
    assert any(p.kind == "proxy" and isinstance(p.provenance, Given) for p in given.parts) and given.version == "1.28"
    dump = tmp_path / "inpod.txt"
    dump.write_text(inpod_text(AmbientConfig()), encoding="utf-8")
    with_dump = load_configuration(pod=pod, rules=str(dump))
    assert with_dump.world is not None and cfg.world is not None
    assert with_dump.world.rules == cfg.world.rules and with_dump.defaults == cfg.defaults
    routing = next(p for p in with_dump.parts if p.kind == "routing")
    assert isinstance(routing.provenance, Assumed) and f"rules {dump}" in with_dump.label
    nft = tmp_path / "inpod.nft"
    nft.write_text(inpod_nft_text(AmbientConfig(backend="nftables")), encoding="utf-8")
    from_nft = load_configuration(pod=pod, rules=str(nft))
    assert from_nft.world is not None and from_nft.world.rules.ipv4.nft
    sidecar = tmp_path / "sidecar.txt"
    sidecar.write_text(render_save(generate(CaptureConfig()).ipv4), encoding="utf-8")
    with pytest.raises(UnsupportedError, match="ambient mode, but these are the rules of Istio's sidecar"):
        load_configuration(pod=pod, rules=str(sidecar))
    with pytest.raises(UnsupportedError, match="ambient mode"):
        load_configuration(rules=str(dump))


def test_worlds_of_a_manifest_with_ambient_pods() -> None:
    from meshsolve.inputs import worlds_of_manifest

    text = (LOCAL / "fleet-mixed.yaml").read_text(encoding="utf-8")
    worlds = {w.world.name: w for w in worlds_of_manifest(text, source="fleet") if w.world is not None}
    assert worlds["cart"].defaults is not None and worlds["cart"].world.proxy.socket_mark == 0x539  # type: ignore[union-attr]
    assert worlds["web"].defaults is None and worlds["web"].world.proxy.socket_mark is None  # type: ignore[union-attr]
