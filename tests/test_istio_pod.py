"""Pod manifests → the same rules as the equivalent istio-iptables flags; bad annotations are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshsolve.errors import SpecError, UnsupportedError
from meshsolve.iptables import parse_text
from meshsolve.istio.flags import parse_flags
from meshsolve.istio.generate import generate
from meshsolve.istio.pod import pods_from_file, pods_from_text
from meshsolve.model import Destination, Rulesets, to_network

PODS = Path(__file__).parent / "data" / "pods"
DEFAULT_CURRENT = ["-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-x", "",
                   "-b", "*", "-d", "15090,15021,15020"]

# file, version, equivalent istio-iptables flags, env, settings istio-iptables reads from the pod itself
CASES = [
    ("default.yaml", "current", DEFAULT_CURRENT, {}, {}),
    ("default.yaml", "1.10", DEFAULT_CURRENT, {}, {}),
    ("default.yaml", "1.3", ["-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*",
                             "-x", "", "-b", "*", "-d", "15020"], {}, {}),
    ("default.yaml", "1.0", ["-p", "15001", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-x", "",
                             "-b", "8080", "-d", ""], {}, {}),
    ("ports-1.2.yaml", "1.2", ["-p", "15001", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-x", "",
                               "-b", "80,90", "-d", "15020"], {}, {}),
    ("annotations.yaml", "current",
     ["-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "198.51.100.0/24,2001:db8::/32",
      "-x", "198.51.100.128/25", "-b", "8080,9090", "-d", "15090,15021,9000", "-q", "3306", "-o", "25,465",
      "-k", "net1", "-c", "eth9"], {}, {}),
    ("tproxy.yaml", "current", ["-p", "15001", "-z", "15006", "-u", "1337", "-m", "TPROXY", "-i", "*",
                                "-x", "", "-b", "*", "-d", "15090,15021,9000,15030"], {}, {}),
    ("tproxy.yaml", "1.10", ["-p", "15001", "-z", "15006", "-u", "1337", "-m", "TPROXY", "-i", "*",
                             "-x", "", "-b", "*", "-d", "15090,15021,9000,15030"], {}, {}),
    ("kubevirt.yaml", "current", [*DEFAULT_CURRENT[:8], "-i", "203.0.113.0/24", *DEFAULT_CURRENT[10:],
                                  "-k", "eth1,eth2"], {}, {}),
    ("kubevirt.yaml", "1.1", ["-p", "15001", "-u", "1337", "-m", "REDIRECT", "-i", "203.0.113.0/24", "-x", "",
                              "-b", "", "-d", "15020", "-k", "eth1,eth2"], {}, {}),
    ("dns.yaml", "current", DEFAULT_CURRENT, {"ISTIO_META_DNS_CAPTURE": "true", "INVALID_DROP": "true"},
     {"dns_servers_v4": ("192.0.2.53",)}),
    ("ipv6.yaml", "current", DEFAULT_CURRENT, {}, {"enable_ipv6": True}),
    ("injected-1.10.yaml", None, DEFAULT_CURRENT, {}, {"version": "1.10"}),
    ("injected-1.2.yaml", None, ["-p", "15001", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-x", "",
                                 "-b", "80,90", "-d", "15020"],
     {"DISABLE_REDIRECTION_ON_LOCAL_LOOPBACK": "true"}, {"version": "1.2"}),
]


@pytest.mark.parametrize(("name", "version", "flags", "env", "facts"), CASES,
                         ids=[f"{c[0]}@{c[1]}" for c in CASES])
def test_pod_equals_flags(name: str, version: str | None, flags: list[str], env: dict[str, str],
                          facts: dict[str, object]) -> None:
    (pod,) = pods_from_file(PODS / name, version=version)
    flag_version = str(facts.get("version", version))
    expected = parse_flags(flags, env, version=flag_version)
    extra = {k: v for k, v in facts.items() if k != "version"}
    if extra:
        expected = expected.evolve(**extra)
    assert pod.config == expected
    got = generate(pod.config)
    assert got == generate(expected)
    assert got.ipv4.rule_count() > 0


def test_every_annotation_changes_the_rules() -> None:
    """Each annotation case differs from the plain pod, so the equality above is not vacuous."""
    plain = generate(pods_from_file(PODS / "default.yaml")[0].config)
    for name in ("annotations.yaml", "tproxy.yaml", "kubevirt.yaml", "dns.yaml", "ipv6.yaml"):
        assert generate(pods_from_file(PODS / name)[0].config) != plain, name


def test_injected_init_container_is_the_ground_truth() -> None:
    (pod,) = pods_from_file(PODS / "injected-1.10.yaml")
    assert pod.basis == "istio-init"
    assert pod.config.version == "1.10"  # from the image tag
    assert pod.config.inbound_ports == "*"  # not the stale annotation's 1234
    assert "istio-init" in pod.notes[0]
    (old,) = pods_from_file(PODS / "injected-1.2.yaml")
    assert old.config.disable_redirection_on_local_loopback
    # an explicit version wins over the image tag
    assert pods_from_file(PODS / "injected-1.10.yaml", version="current")[0].config.version == "current"


def test_list_of_pods() -> None:
    a, b = pods_from_file(PODS / "list.yaml")
    assert (a.name, b.name) == ("a", "b")
    assert a.config.outbound_ports_exclude == (5432,)
    assert generate(b.config) == Rulesets()
    assert b.config.mode == "NONE"


def test_dns_servers_from_dns_config() -> None:
    (pod,) = pods_from_file(PODS / "dns.yaml")
    nat = generate(pod.config).ipv4.chain("nat", "ISTIO_OUTPUT_DNS")
    assert nat is not None and len(nat.rules) == 2
    assert any(getattr(m, "net", None) == to_network("192.0.2.53") for m in nat.rules[0].matches)


def test_workload_template_and_inject_false() -> None:
    text = """
kind: Deployment
metadata: {name: dep, namespace: ns}
spec:
  template:
    metadata:
      annotations: {traffic.sidecar.istio.io/excludeOutboundPorts: "22"}
    spec:
      containers: [{name: app, image: x}]
---
kind: Pod
metadata:
  name: off
  annotations: {sidecar.istio.io/inject: "false"}
spec: {containers: [{name: app, image: x}]}
"""
    dep, off = pods_from_text(text)
    assert (dep.name, dep.namespace) == ("dep", "ns")
    assert dep.config.outbound_ports_exclude == (22,)
    assert off.basis == "not-injected" and generate(off.config) == Rulesets()


BAD = {
    "port": ("traffic.sidecar.istio.io/includeInboundPorts", "99999"),
    "cidr": ("traffic.sidecar.istio.io/excludeOutboundIPRanges", "10.0.0.0/33"),
    "mode": ("sidecar.istio.io/interceptionMode", "FOO"),
    "semicolon": ("traffic.sidecar.istio.io/excludeInboundPorts", ";"),
    "subshell": ("traffic.sidecar.istio.io/excludeOutboundIPRanges", "$"),
    "backtick": ("traffic.sidecar.istio.io/kubevirtInterfaces", "`"),
    "quote": ("traffic.sidecar.istio.io/excludeInterfaces", "'"),
    "newline": ("traffic.sidecar.istio.io/includeOutboundIPRanges", "\\n"),
    "statusport": ("status.sidecar.istio.io/port", "15020,15021"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_annotation_is_named(name: str) -> None:
    annotation, fragment = BAD[name]
    path = PODS / "bad" / f"{name}.yaml"
    with pytest.raises(SpecError) as info:
        pods_from_file(path)
    message = str(info.value)
    assert f"annotation {annotation}" in message
    assert fragment in message
    assert info.value.source == str(path)
    assert info.value.lineno == 6  # the annotation's line in the file


def test_not_a_pod() -> None:
    with pytest.raises(SpecError, match="expected a Kubernetes object with a kind"):
        pods_from_text("kind: Service\nmetadata: {name: s}\n")
    with pytest.raises(SpecError, match=r"no pod in the manifest \(skipped the Service 's' \(<manifest>:1\)"):
        pods_from_text("apiVersion: v1\nkind: Service\nmetadata: {name: s}\n")
    with pytest.raises(SpecError, match="YAML"):
        pods_from_text("kind: [Pod\n")


def test_cni_pod_matches_the_cni_golden() -> None:
    """A pod with istio-validation gets the istio-cni plugin's rules (basic.txt.golden)."""
    (pod,) = pods_from_file(PODS / "cni.yaml")
    assert pod.basis == "cni" and pod.config.version == "1.26"
    want = parse_text((PODS / "cni-basic.expected").read_text(encoding="utf-8"), source="cni-basic.expected")
    assert generate(pod.config) == want
    # the injector's istio-init for the same pod would differ (no outbound 15020 exclusion)
    assert generate(pods_from_file(PODS / "default.yaml")[0].config) != want


def test_cni_uid_and_dns() -> None:
    text = (PODS / "cni.yaml").read_text(encoding="utf-8").replace("runAsUser: 1337", "runAsUser: 2000")
    dns_env = "    env:\n    - {name: ISTIO_META_DNS_CAPTURE, value: 'true'}\n"
    text = text.replace("    securityContext:", dns_env + "    securityContext:")
    (pod,) = pods_from_text(text)
    assert pod.config.proxy_uids == ("2000",) and pod.config.proxy_gids == ("1337",)
    assert pod.config.redirect_dns and pod.config.capture_all_dns
    dns = generate(pod.config).ipv4.chain("nat", "ISTIO_OUTPUT_DNS")
    assert dns is not None and not any(isinstance(m, Destination) for r in dns.rules for m in r.matches)
    with pytest.raises(UnsupportedError):
        pods_from_text(text, version="1.20")


def test_error_line_in_a_list_points_at_the_right_pod() -> None:
    text = """kind: List
items:
- kind: Pod
  metadata:
    name: good
    annotations:
      traffic.sidecar.istio.io/excludeInboundPorts: "80"
  spec: {containers: [{name: app, image: x}]}
- kind: Pod
  metadata:
    name: bad
    annotations:
      traffic.sidecar.istio.io/excludeInboundPorts: "80,x"
  spec: {containers: [{name: app, image: x}]}
"""
    with pytest.raises(SpecError) as info:
        pods_from_text(text, source="list.yaml")
    assert info.value.lineno == 13
    assert str(info.value).startswith("list.yaml:13: annotation traffic.sidecar.istio.io/excludeInboundPorts")


def test_dns_without_known_nameservers_is_noted() -> None:
    text = (PODS / "dns.yaml").read_text(encoding="utf-8").replace("nameservers: [192.0.2.53]", "options: []")
    (pod,) = pods_from_text(text)
    assert pod.config.redirect_dns and not pod.config.dns_enabled()
    assert any("nameservers are unknown" in n for n in pod.notes)
    assert generate(pod.config).ipv4.chain("nat", "ISTIO_OUTPUT_DNS") is None


def _claims_pod(**ann: str) -> dict[str, object]:
    return {"kind": "Pod", "metadata": {"name": "web", "annotations": dict(ann), "labels": {}},
            "spec": {"initContainers": [{"name": "istio-init", "image": "docker.io/istio/proxyv2:1.10.2"}],
                     "containers": [{"name": "web"}, {"name": "istio-proxy", "image": "gcr.io/istio/proxyv2:1.11.0"}]}}


def test_version_claims_read_images_annotations_and_revisions() -> None:
    from meshsolve.istio.pod import version_claims, version_contradictions

    pod = _claims_pod(**{"sidecar.istio.io/proxyImage": "docker.io/istio/proxyv2:1.12.1",
                         "sidecar.istio.io/status": '{"initContainers":["istio-init"],"revision":"1-13-0"}',
                         "istio.io/rev": "canary"})
    claims = version_claims(pod)
    assert [(c.what, c.low, c.high) for c in claims] == [
        ("the image tag of istio-init (docker.io/istio/proxyv2:1.10.2)", 10, 10),
        ("the image tag of istio-proxy (gcr.io/istio/proxyv2:1.11.0)", 11, 11),
        ("annotation sidecar.istio.io/proxyImage (docker.io/istio/proxyv2:1.12.1)", 12, 12),
        ("the revision '1-13-0' in annotation sidecar.istio.io/status", 13, 13)]  # 'canary' spells no release
    assert [c.low for c in version_contradictions(pod, "1.10")] == [11, 12, 13]
    # a recorded revision that names no release still says the injector is 1.6 or later
    old = _claims_pod(**{"sidecar.istio.io/status": '{"revision":"default"}'})
    assert [c.says() for c in version_contradictions(old, "1.5")] == ["Istio 1.10", "Istio 1.11",
                                                                    "Istio 1.6 or later"]
    assert [c.says() for c in version_contradictions(old, "1.10")] == ["Istio 1.11"]
    # no revision key (injectors before 1.6 wrote none) and no tags: nothing to contradict
    bare = {"kind": "Pod", "metadata": {"name": "x", "annotations": {
        "sidecar.istio.io/status": '{"version":"fde1","initContainers":["istio-init"]}'}}, "spec": {}}
    assert version_claims(bare) == ()
