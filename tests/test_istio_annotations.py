"""to_annotations inverts the injector: pod → config → annotations → pod → the same config."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from meshsolve.errors import UnsupportedError
from meshsolve.istio import CaptureConfig, generate, parse_flags, pods_from_text
from meshsolve.istio.pod import A_IN_PORTS, A_MODE, A_PROXY_CONFIG, A_STATUS_PORT, to_annotations

VERSIONS = ["1.0", "1.1", "1.2", "1.3", "1.5", "1.6", "1.7", "1.10", "1.15", "1.21", "1.24", "1.25",
            "current"]
port_csv = st.lists(st.integers(1, 65535), max_size=3).map(lambda ps: ",".join(map(str, ps)))
cidr_csv = st.lists(st.sampled_from(["192.0.2.0/24", "198.51.100.0/25", "2001:db8::/32"]), max_size=2,
                    unique=True).map(",".join)
nic_csv = st.lists(st.sampled_from(["eth1", "net1"]), min_size=1, max_size=2, unique=True).map(",".join)


def _pod(annotations: dict[str, str], *, ipv6: bool = False, nameservers: tuple[str, ...] = ()) -> str:
    pod: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod",
                           "metadata": {"name": "p", "annotations": annotations},
                           "spec": {"containers": [{"name": "app", "image": "x",
                                                    "ports": [{"containerPort": 8080}]}]}}
    if nameservers:
        pod["spec"]["dnsConfig"] = {"nameservers": list(nameservers)}
    if ipv6:
        pod["status"] = {"podIP": "2001:db8::5", "podIPs": [{"ip": "2001:db8::5"}]}
    return yaml.safe_dump(pod)


@st.composite
def annotated(draw: st.DrawFn) -> tuple[str, dict[str, str]]:
    version = draw(st.sampled_from(VERSIONS))
    m = CaptureConfig(version=version).minor
    ann: dict[str, str] = {}
    optional = {
        A_MODE: st.sampled_from(["REDIRECT", "TPROXY"]),
        A_IN_PORTS: st.just("*") | port_csv,
        "traffic.sidecar.istio.io/excludeInboundPorts": port_csv,
        A_STATUS_PORT: st.sampled_from(["0", "15020", "15030"]),
        "traffic.sidecar.istio.io/includeOutboundIPRanges": st.just("*") | cidr_csv,
        "traffic.sidecar.istio.io/excludeOutboundIPRanges": cidr_csv,
    }
    if m >= 7:
        optional["traffic.sidecar.istio.io/includeOutboundPorts"] = port_csv
    if m >= 2:
        optional["traffic.sidecar.istio.io/excludeOutboundPorts"] = port_csv
    if m >= 1:
        optional["istio.io/reroute-virtual-interfaces" if m >= 25 else
                 "traffic.sidecar.istio.io/kubevirtInterfaces"] = nic_csv
    if m >= 15:
        optional["traffic.sidecar.istio.io/excludeInterfaces"] = nic_csv
    for key, strategy in optional.items():
        if draw(st.booleans()):
            ann[key] = draw(strategy)
    metadata: dict[str, str] = {}
    if m >= 25 and draw(st.booleans()):
        metadata["ISTIO_META_DNS_CAPTURE"] = "true"
    if m >= 24 and draw(st.booleans()):
        metadata["INVALID_DROP"] = "true"
    if m >= 14 and draw(st.booleans()):
        metadata["ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE"] = "888"
    if m >= 21 and draw(st.booleans()):
        metadata["ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR"] = "127.0.0.1/8"
    if metadata:
        ann[A_PROXY_CONFIG] = yaml.safe_dump({"proxyMetadata": metadata})
    return version, ann


@settings(max_examples=150, deadline=None)
@given(annotated(), st.booleans())
def test_annotations_round_trip(case: tuple[str, dict[str, str]], ipv6: bool) -> None:
    version, ann = case
    ipv6 = ipv6 and CaptureConfig(version=version).minor >= 5
    (pod,) = pods_from_text(_pod(ann, ipv6=ipv6, nameservers=("192.0.2.53",)), version=version)
    again, notes = to_annotations(pod.config)
    (back,) = pods_from_text(_pod(again, ipv6=ipv6, nameservers=("192.0.2.53",)), version=version)
    assert back.config == pod.config
    assert generate(back.config) == generate(pod.config)
    assert any("IPv6" in n for n in notes) == ipv6


def test_defaults_need_no_annotation() -> None:
    (pod,) = pods_from_text(_pod({}))
    assert to_annotations(pod.config) == ({}, ())


@pytest.mark.parametrize(("flags", "fragment"), [
    (["-p", "15002"], "proxy port"),
    (["-u", "2000"], "proxy uid/gid"),
    (["-b", "*", "-d", "9000"], "inbound exclusions '9000'"),
    (["-t", "7"], "TPROXY mark"),
    (["--capture-all-dns"], "capture-all DNS"),
])
def test_inexpressible_settings(flags: list[str], fragment: str) -> None:
    base = ["-z", "15006", "-i", "*", "-b", "*", "-d", "15090,15021,15020"]
    with pytest.raises(UnsupportedError) as info:
        to_annotations(parse_flags([*base, *flags]))
    assert fragment in str(info.value)
