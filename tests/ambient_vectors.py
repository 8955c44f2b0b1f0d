"""Istio's ambient goldens and the configuration of each (frontier/INDEX.md: the case table of
``cni/pkg/iptables`` and ``cni/pkg/nftables`` tests), read at test time from the shared reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import REFERENCE

from meshsolve.istio.ambient import AmbientConfig

IPTABLES = REFERENCE / "frontier" / "istio-ambient-iptables"
NFTABLES = REFERENCE / "frontier" / "istio-ambient-nftables"
HISTORICAL = IPTABLES / "historical"
LOCAL = Path(__file__).resolve().parent / "data" / "ambient"

#: The pod tests' v6 probe address (Istio's test configuration; the chart's default is fd16:…).
TEST_V6 = "e9ac:1e77:90ca:399f:4d6d:ece2:2f9b:3164"
_VIRT = "fake1s0f0,fake1s0f1"

#: golden name → the settings on top of the test base (RedirectDNS false, HostProbeSNATAddress 169.254.7.127).
POD_CASES: dict[str, dict[str, Any]] = {
    "default": {"redirect_dns": True},
    "dns_pod_disabled_and_on_globally": {"redirect_dns": True, "dns_override": "disabled"},
    "dns_pod_enabled_and_off_globally": {"redirect_dns": False, "dns_override": "enabled"},
    "ingress": {"ingress": True},
    "ingress_and_virtual_interfaces": {"ingress": True, "virtual_interfaces": _VIRT},
    "virtual_interfaces": {"virtual_interfaces": _VIRT},
}
POD_GOLDENS: dict[str, dict[str, Any]] = {}
for _name, _kw in POD_CASES.items():
    POD_GOLDENS[_name] = _kw
    POD_GOLDENS[f"{_name}_ipv6"] = {**_kw, "enable_ipv6": True}


def pod_config(name: str, backend: str = "iptables", **more: Any) -> AmbientConfig:
    """The configuration of the pod golden ``name`` (base: no DNS capture, Istio's test v6 address)."""
    kw = {"redirect_dns": False, **POD_GOLDENS[name], **more}
    return AmbientConfig(backend=backend, probe_snat_v6=TEST_V6, **kw)  # type: ignore[arg-type]


def read_golden(path: Path) -> str:
    """A golden's text without the state probes Istio's stub records and without our comment lines."""
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines()
             if ln not in ("iptables-save", "ip6tables-save") and not ln.startswith("#")]
    return "\n".join(lines).rstrip() + "\n"
