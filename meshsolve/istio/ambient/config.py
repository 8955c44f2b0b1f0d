"""The settings of ambient mode's in-pod capture (istio-cni's node agent and ztunnel), per Istio
version and pod option, as one frozen value.

Ambient mode has no sidecar and no init container: the istio-cni node agent enters the pod's
network namespace and writes the rules, and ztunnel (a process of the node) opens its listeners
inside that namespace. Capture rests on packet marks, not on owner ids: every ztunnel socket
carries ``SO_MARK`` 0x539 (1337), a marked packet entering the pod sets connmark 0x111, and
``ip rule fwmark 0x111/0xfff lookup 100`` with a local default route in table 100 brings the
replies of ztunnel's transparent connections back to it.

Eras (istio/istio history, ``frontier-facts.md`` §2):

* 1.21–1.23: TPROXY in mangle to 15008 (HBONE) and 15006 (plaintext), iptables commands one by
  one; DNS capture is one UDP rule without a mark test and without conntrack zones;
* 1.24: REDIRECT to 15006 in nat, ``iptables-restore`` input; TPROXY kept as an option for this
  release only; ``ambient.istio.io/bypass-inbound-capture`` (ingress mode); DNS capture with a
  mark test, a TCP rule and conntrack zone 1;
* 1.25: the pod's own DNS setting (``ambient.istio.io/dns-capture``), virtual interfaces
  (``istio.io/reroute-virtual-interfaces``), DNS capture on by default in the chart;
* 1.28: the native nftables backend;
* 1.29: ingress mode keeps the connmark rule (before it, the mangle ``CONNMARK --set-xmark``
  rule was left out with inbound capture, and HBONE to such a pod timed out).

What is checked against Istio's own outputs: the 14 iptables and 14 nftables HEAD goldens, the
1.21.0 default and host-probe goldens, the 1.24.0 TPROXY golden and the pre-fix ingress goldens.
Other releases follow the timeline above (derived, not compared with an Istio output): 1.22 and
1.23 are taken to write 1.21's rules, 1.24–1.28 HEAD's rules but for the ingress fix, and the
host-probe rule HEAD's form from 1.24.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypeAlias

import attrs

from meshsolve.errors import SpecError, UnsupportedError
from meshsolve.istio.config import CURRENT, minor_of, normalise_version
from meshsolve.model.net import Family, IPAddress, to_address

__all__ = [
    "CONNMARK",
    "CONNMARK_MASK",
    "DNS_LISTENER_PORT",
    "HBONE_PORT",
    "INBOUND_PLAINTEXT_PORT",
    "INPOD_MARK",
    "INPOD_MASK",
    "NATIVE_NFTABLES_ENV",
    "OUTBOUND_PORT",
    "PROBE_SET",
    "PROBE_SNAT_V4",
    "PROBE_SNAT_V6",
    "ROUTE_TABLE",
    "RULE_PRIORITY",
    "ZTUNNEL_PORTS",
    "AmbientConfig",
    "Backend",
    "DnsOverride",
    "backend_from_env",
]

INPOD_MARK = 0x539  # ztunnel's SO_MARK on every socket (1337)
INPOD_MASK = 0xFFF
CONNMARK = 0x111  # the connection mark a ztunnel-marked packet leaves on its connection
CONNMARK_MASK = 0xFFF
RESTORE_MASK = 0xFFFFFFFF
ROUTE_TABLE = 100
RULE_PRIORITY = 32764
OUTBOUND_PORT = 15001
INBOUND_PLAINTEXT_PORT = 15006
HBONE_PORT = 15008
DNS_LISTENER_PORT = 15053
DNS_PORT = 53
# every port ztunnel listens on in the pod: an app cannot bind one of them
ZTUNNEL_PORTS = (OUTBOUND_PORT, INBOUND_PLAINTEXT_PORT, HBONE_PORT, DNS_LISTENER_PORT)
PROBE_SNAT_V4 = to_address("169.254.7.127")
PROBE_SNAT_V6 = to_address("fd16:9254:7127:1337:ffff:ffff:ffff:ffff")
PROBE_SET = "istio-inpod-probes"

FIRST_MINOR = 21  # the in-pod mode (before: node-level redirection, not modelled)
REDIRECT_MINOR = 24  # REDIRECT in nat; TPROXY kept as an option for this release only
INGRESS_MINOR = 24
POD_DNS_MINOR = 25
VIRTUAL_MINOR = 25
DNS_DEFAULT_MINOR = 25  # cni.ambient.dnsCapture defaults to true (the 1.29 notes say it again)
NFT_MINOR = 28
INGRESS_FIX_MINOR = 29

#: istio-cni's environment variable for the chart's ``values.global.nativeNftables``
NATIVE_NFTABLES_ENV = "NATIVE_NFTABLES"

Backend: TypeAlias = Literal["iptables", "nftables"]
DnsOverride: TypeAlias = Literal["unset", "enabled", "disabled"]


def backend_from_env(env: Mapping[str, str], *, source: str = "--env") -> Backend | None:
    """The backend istio-cni's environment names (``NATIVE_NFTABLES``, set by the chart's
    ``values.global.nativeNftables``); None when it is not set."""
    from meshsolve.istio.flags import parse_bool

    if NATIVE_NFTABLES_ENV not in env:
        return None
    on = parse_bool(env[NATIVE_NFTABLES_ENV], what=NATIVE_NFTABLES_ENV, source=source)
    return "nftables" if on else "iptables"


def _version(value: str) -> str:
    return normalise_version(value, what="ambient version")


def _names(values: Any) -> tuple[str, ...]:
    if isinstance(values, str):
        values = values.split(",")
    out = tuple(str(v).strip() for v in values if str(v).strip())
    for name in out:
        if len(name) > 15 or any(c.isspace() or c in "/:" for c in name):
            raise SpecError(f"virtual interface {name!r} is not an interface name", source="ambient")
    return out


def _v4(value: str | IPAddress) -> IPAddress:
    a = to_address(value)
    if a.version != 4:
        raise SpecError(f"host probe SNAT address {value} is not IPv4", source="ambient")
    return a


def _v6(value: str | IPAddress) -> IPAddress:
    a = to_address(value)
    if a.version != 6:
        raise SpecError(f"host probe SNAT address {value} is not IPv6", source="ambient")
    return a


@attrs.frozen
class AmbientConfig:
    """What istio-cni is told for one pod, and the node agent's own settings.

    - ``version``: the Istio release (``"1.21"`` … or ``"current"``);
    - ``backend``: ``iptables`` or ``nftables`` (``values.global.nativeNftables``, 1.28 on);
    - ``redirect_dns``: the chart's ``cni.ambient.dnsCapture`` (``None``: the release's default);
    - ``dns_override``: the pod's ``ambient.istio.io/dns-capture`` (``unset``/``enabled``/``disabled``);
    - ``ingress``: the pod's ``ambient.istio.io/bypass-inbound-capture`` (inbound is not captured);
    - ``virtual_interfaces``: the pod's ``istio.io/reroute-virtual-interfaces``: TCP arriving on them
      is treated as outbound (to 15001);
    - ``enable_ipv6``: ``ENABLE_INBOUND_IPV6`` (ip6tables rules, the IPv6 policy route);
    - ``tproxy``: the TPROXY rules (``None``: the release's: 1.21–1.23 yes, from 1.24 no);
    - ``probe_snat_v4``/``_v6``: ``HOST_PROBE_SNAT_ADDRESS``/``HOST_PROBE_V6_SNAT_ADDRESS``, the
      source the node gives kubelet's probes (and the pod rules exempt);
    - ``kubelet_uid``: the uid the nftables host rule matches (found in ``/proc`` on the node).
    """

    version: str = attrs.field(default=CURRENT, converter=_version)
    backend: Backend = "iptables"
    redirect_dns: bool | None = None
    dns_override: DnsOverride = "unset"
    ingress: bool = False
    virtual_interfaces: tuple[str, ...] = attrs.field(default=(), converter=_names)
    enable_ipv6: bool = False
    tproxy: bool | None = None
    probe_snat_v4: IPAddress = attrs.field(default=PROBE_SNAT_V4, converter=_v4)
    probe_snat_v6: IPAddress = attrs.field(default=PROBE_SNAT_V6, converter=_v6)
    kubelet_uid: int = 0

    def __attrs_post_init__(self) -> None:
        m = self.minor
        v = self.version
        if m < FIRST_MINOR:
            raise UnsupportedError(f"Istio {v} has no in-pod ambient capture (it begins in 1.{FIRST_MINOR}; before, "
                                   "ambient redirected on the node, which meshsolve does not model)")
        if self.backend not in ("iptables", "nftables"):
            raise SpecError(f"ambient backend {self.backend!r}: expected iptables or nftables", source="ambient")
        if self.dns_override not in ("unset", "enabled", "disabled"):
            raise SpecError(f"ambient DNS override {self.dns_override!r}: expected unset, enabled or disabled",
                            source="ambient")
        if self.tproxy is True and m > REDIRECT_MINOR:
            raise UnsupportedError(f"Istio {v} has no TPROXY in-pod rules (removed after 1.{REDIRECT_MINOR})")
        if self.tproxy is False and m < REDIRECT_MINOR:
            raise UnsupportedError(f"Istio {v} writes TPROXY in-pod rules only (REDIRECT from 1.{REDIRECT_MINOR})")
        for what, given, since in (("ingress mode (ambient.istio.io/bypass-inbound-capture)", self.ingress,
                                    INGRESS_MINOR),
                                   ("the pod's DNS setting (ambient.istio.io/dns-capture)",
                                    self.dns_override != "unset", POD_DNS_MINOR),
                                   ("virtual interfaces (istio.io/reroute-virtual-interfaces)",
                                    bool(self.virtual_interfaces), VIRTUAL_MINOR),
                                   ("the native nftables backend", self.backend == "nftables", NFT_MINOR)):
            if given and m < since:
                raise UnsupportedError(f"{what} does not exist in Istio {v} (added in 1.{since})")
        if self.is_tproxy and (self.ingress or self.virtual_interfaces or self.backend == "nftables"):
            raise UnsupportedError("the TPROXY in-pod rules are modelled without ingress mode, virtual interfaces "
                                   "and nftables")

    @property
    def minor(self) -> int:
        return minor_of(self.version)

    @property
    def is_tproxy(self) -> bool:
        return self.tproxy if self.tproxy is not None else self.minor < REDIRECT_MINOR

    @property
    def dns(self) -> bool:
        """Whether the pod's DNS is captured: the pod's setting, else the chart's."""
        if self.dns_override != "unset":
            return self.dns_override == "enabled"
        if self.redirect_dns is not None:
            return self.redirect_dns
        return self.minor >= DNS_DEFAULT_MINOR

    @property
    def ingress_connmark(self) -> bool:
        """Whether the mangle rule that marks ztunnel's connections is written (always, but in ingress
        mode only from 1.29)."""
        return not self.ingress or self.minor >= INGRESS_FIX_MINOR

    @property
    def command_form(self) -> bool:
        """1.21–1.23 run ``iptables`` once per rule; later releases feed ``iptables-restore``."""
        return self.minor < REDIRECT_MINOR

    @property
    def families(self) -> tuple[Family, ...]:
        return ("ipv4", "ipv6") if self.enable_ipv6 else ("ipv4",)

    def probe_snat(self, family: Family) -> IPAddress:
        return self.probe_snat_v4 if family == "ipv4" else self.probe_snat_v6

    def loopback(self, family: Family) -> str:
        return "127.0.0.1/32" if family == "ipv4" else "::1/128"

    def evolve(self, **changes: Any) -> AmbientConfig:
        return attrs.evolve(self, **changes)

    def describe(self) -> str:
        """One line: ``ambient Istio 1.28 iptables, ingress mode, DNS, IPv6``."""
        parts = [f"ambient Istio {self.version} {self.backend}"]
        if self.is_tproxy:
            parts.append("TPROXY")
        if self.ingress:
            parts.append("ingress mode")
        if self.virtual_interfaces:
            parts.append("virtual interfaces " + ",".join(self.virtual_interfaces))
        parts.append("DNS" if self.dns else "no DNS capture")
        if self.enable_ipv6:
            parts.append("IPv6")
        return ", ".join(parts)

