"""Kuma's capture as data: ``kumactl install transparent-proxy``'s flags → the rules, and kuma-dp.

Kuma copies the structure of Istio ≥1.10's outbound chain. Per address family (``--ip-family-mode
dualstack``, the default, or ``ipv4``), in the nat table:

* ``PREROUTING``: per ``--vnet IFACE:CIDR`` of the family (by interface name) ``-i IFACE -p udp
  --dport 53 REDIRECT`` to the DNS port and ``! -d CIDR -i IFACE -p tcp REDIRECT`` to the outbound
  port; then ``-p tcp -j KUMA_MESH_INBOUND``;
* ``OUTPUT``: one ``-m multiport --dports … -m owner --uid-owner … RETURN`` per protocol of each
  ``--exclude-outbound-ports-for-uids`` entry, ``-d IP RETURN`` per ``--exclude-outbound-ips``, the
  DNS rules (below), then ``-p tcp -j KUMA_MESH_OUTBOUND``;
* ``KUMA_MESH_INBOUND``: ``-s IP RETURN`` per ``--exclude-inbound-ips``, then either one ``-p tcp
  --dport P -j KUMA_MESH_INBOUND_REDIRECT`` per included port, or ``-p tcp --dport P RETURN`` per
  excluded port and ``-p tcp -j KUMA_MESH_INBOUND_REDIRECT`` (``--redirect-inbound=false``: ``-p tcp
  RETURN`` alone);
* ``KUMA_MESH_OUTBOUND``: the excluded outbound ports' ``RETURN``, then Istio's loopback block with
  kuma-dp's uid (**5678**) and ``127.0.0.6`` / ``::6`` — ``-s 127.0.0.6/32 -o lo RETURN``, ``-p tcp -o lo
  ! -d 127.0.0.1/32 --uid-owner U -j KUMA_MESH_INBOUND_REDIRECT``, ``-p tcp -o lo ! --uid-owner U
  RETURN``, ``--uid-owner U RETURN`` —, ``-d 127.0.0.1/32 RETURN``, then ``-j
  KUMA_MESH_OUTBOUND_REDIRECT`` (or one per included outbound port);
* ``KUMA_MESH_INBOUND_REDIRECT`` / ``KUMA_MESH_OUTBOUND_REDIRECT``: ``-p tcp REDIRECT`` to 15006 / 15001.

DNS (``--redirect-all-dns-traffic``, port ``--redirect-dns-port``, 15053): in ``OUTPUT``, kuma-dp's
own ``-p udp --dport 53`` returns, everyone else's is redirected to the DNS port; TCP to port 53 of
anyone but kuma-dp returns (``dns_tcp="return"``, kumactl today) — older kumactl redirected it to the
DNS port from ``KUMA_MESH_OUTBOUND`` instead (``dns_tcp="redirect"``). Unless
``--skip-dns-conntrack-zone-split``, the raw table puts DNS replies and kuma-dp's queries in
conntrack zone 1 and the apps' queries and the DNS proxy's answers in zone 2.

kuma-dp (``proxy_behavior``): uid/gid 5678, listeners 15001/15006; from Kuma 2.0 the inbound side
forwards to the dataplane's address (the pod IP) from ``127.0.0.6``/``::6``, before it forwarded to
``localhost:PORT`` (kuma PR 4750); destinations that are not services pass through.

Not modelled (``UnsupportedError``): ``--redirect-dns`` (DNS servers read from resolv.conf), the
DOCKER_OUTPUT jump target, logging, ``--drop-invalid-packets`` and the eBPF mode. Rule comments are
left out: the kumactl goldens are compared without them, real dumps modulo comments.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import attrs

from meshsolve.errors import SpecError, UnsupportedError
from meshsolve.istio.builder import RuleBuilder, dport, dst, in_if, out_if, owner_uid, sport, src, tcp, udp
from meshsolve.meshes.common import (
    MeshSetup,
    bool_value,
    cidrs,
    int_value,
    of_family,
    port,
    port_ranges,
    read_flags,
)
from meshsolve.model.net import Family, IPNetwork, PortRange, to_network
from meshsolve.model.rules import CtTarget, Jump, MultiportMatch, Protocol, Redirect, Return, Rulesets
from meshsolve.model.world import ProxyBehavior

__all__ = ["CHAINS", "COMMENT_PREFIX", "KumaConfig", "UidPorts", "config_from_pod", "generate", "parse_args",
           "parse_uid_ports", "proxy_behavior", "setup"]

INBOUND = "KUMA_MESH_INBOUND"
OUTBOUND = "KUMA_MESH_OUTBOUND"
INBOUND_REDIRECT = "KUMA_MESH_INBOUND_REDIRECT"
OUTBOUND_REDIRECT = "KUMA_MESH_OUTBOUND_REDIRECT"
CHAINS = (INBOUND, OUTBOUND, INBOUND_REDIRECT, OUTBOUND_REDIRECT)
COMMENT_PREFIX = "kuma/mesh/transparent/proxy/"
KUMA_DP_UID = 5678
DNS_PORT = 53


@attrs.frozen
class UidPorts:
    """One ``--exclude-outbound-ports-for-uids`` entry: ``protocols`` (tcp, udp), destination
    ``ports`` (1:65535 for ``*`` or none given) and the uid range."""

    protocols: tuple[str, ...]
    ports: tuple[PortRange, ...]
    uids: tuple[int, int]

    @property
    def uid_text(self) -> str:
        lo, hi = self.uids
        return str(lo) if lo == hi else f"{lo}-{hi}"


def parse_uid_ports(text: str, source: str = "<flags>") -> UidPorts:
    """``[PROTO:][PORTS:]UIDS`` (``tcp:1900,1000-2000:106-108``, ``53:5``, ``123``, ``*:*:0``)."""
    what = "--exclude-outbound-ports-for-uids"
    parts = text.strip().split(":")
    if not 1 <= len(parts) <= 3 or not parts[-1]:
        raise SpecError(f"{what}: expected [PROTOCOL:][PORTS:]UIDS, got {text!r}", source=source)
    proto, ports, uids = ("*", "*", parts[0]) if len(parts) == 1 else \
        ("*", parts[0], parts[1]) if len(parts) == 2 else (parts[0], parts[1], parts[2])
    protos: list[str] = []
    for p in proto.split(","):
        p = p.strip().lower()
        if p == "*":
            protos += ["tcp", "udp"]
        elif p in ("tcp", "udp"):
            protos.append(p)
        else:
            raise SpecError(f"{what}: protocol {p!r} is not tcp, udp or *", source=source)
    if "*" in uids or "," in uids:
        raise SpecError(f"{what}: the uids of {text!r} must be one uid or a range", source=source)
    lo, sep, hi = uids.partition("-")
    first = int_value(lo, what, source)
    last = int_value(hi, what, source) if sep else first
    if last < first:
        raise SpecError(f"{what}: empty uid range {uids!r}", source=source)
    rng = (PortRange(1, 65535),) if ports.strip() in ("*", "") else port_ranges(ports.split(","), what, source)
    return UidPorts(tuple(dict.fromkeys(protos)), rng, (first, last))


def _ports(values: Iterable[int | str]) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


def _nets(values: Iterable[IPNetwork | str]) -> tuple[IPNetwork, ...]:
    return cidrs((str(v) for v in values), "addresses", "<config>")


def _vnets(values: Iterable[tuple[str, IPNetwork | str]]) -> tuple[tuple[str, IPNetwork], ...]:
    return tuple((str(i), to_network(n)) for i, n in values)


def _uid_ports(values: Iterable[UidPorts]) -> tuple[UidPorts, ...]:
    return tuple(values)


@attrs.frozen
class KumaConfig:
    """kumactl's transparent-proxy settings for one pod (flag names in the comments)."""

    version: str = "current"
    uid: int = KUMA_DP_UID  # --kuma-dp-user / --kuma-dp-uid
    inbound_port: int = 15006  # --redirect-inbound-port
    inbound_port_v6: int | None = None  # --redirect-inbound-port-v6 (older kumactl)
    outbound_port: int = 15001  # --redirect-outbound-port
    redirect_inbound: bool = True  # --redirect-inbound
    redirect_outbound: bool = True
    exclude_inbound_ports: tuple[int, ...] = attrs.field(default=(), converter=_ports)
    include_inbound_ports: tuple[int, ...] = attrs.field(default=(), converter=_ports)
    exclude_outbound_ports: tuple[int, ...] = attrs.field(default=(), converter=_ports)
    include_outbound_ports: tuple[int, ...] = attrs.field(default=(), converter=_ports)
    exclude_outbound_ports_for_uids: tuple[UidPorts, ...] = attrs.field(default=(), converter=_uid_ports)
    exclude_inbound_ips: tuple[IPNetwork, ...] = attrs.field(default=(), converter=_nets)
    exclude_outbound_ips: tuple[IPNetwork, ...] = attrs.field(default=(), converter=_nets)
    vnets: tuple[tuple[str, IPNetwork], ...] = attrs.field(default=(), converter=_vnets)
    redirect_all_dns: bool = False  # --redirect-all-dns-traffic
    dns_port: int = 15053  # --redirect-dns-port
    conntrack_zone_split: bool = True  # not --skip-dns-conntrack-zone-split
    dns_tcp: Literal["return", "redirect"] = "return"
    ip_family_mode: Literal["dualstack", "ipv4"] = "dualstack"
    loopback: str = "lo"

    @property
    def families(self) -> tuple[Family, ...]:
        return ("ipv4",) if self.ip_family_mode == "ipv4" else ("ipv4", "ipv6")

    @property
    def major_minor(self) -> tuple[int, int]:
        return version_of(self.version)


def version_of(version: str) -> tuple[int, int]:
    """``2.9.3`` / ``v1.8`` / ``current`` → (major, minor) (current: newest)."""
    text = version.strip().lower()
    if text in ("current", "latest", ""):
        return (99, 0)
    m = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.\d+)?(?:[-+].*)?", text)
    if not m:
        raise SpecError(f"Kuma version {version!r}: expected MAJOR.MINOR[.PATCH] or current", source="version")
    return int(m.group(1)), int(m.group(2))


# -- flags -----------------------------------------------------------------------------------------

_SPEC: dict[str, Any] = {
    "kuma-dp-user": "str", "kuma-dp-uid": "str", "redirect-inbound": "bool", "redirect-inbound-port": "int",
    "redirect-inbound-port-v6": "int", "redirect-outbound-port": "int", "exclude-inbound-ports": "list",
    "exclude-outbound-ports": "list", "include-inbound-ports": "list", "include-outbound-ports": "list",
    "exclude-outbound-ports-for-uids": "multi", "exclude-outbound-tcp-ports-for-uids": "multi",
    "exclude-outbound-udp-ports-for-uids": "multi", "exclude-inbound-ips": "list", "exclude-outbound-ips": "list",
    "vnet": "multi", "redirect-all-dns-traffic": "bool", "redirect-dns": "bool", "redirect-dns-port": "int",
    "skip-dns-conntrack-zone-split": "bool", "ip-family-mode": "str", "drop-invalid-packets": "bool",
    "ebpf-enabled": "bool", "log-enabled": "bool",
}
_IGNORED = ("verbose", "dry-run", "skip-resolv-conf", "store-firewalld", "kuma-cp-ip=str", "wait=str",
            "wait-interval=str", "max-retries=str", "sleep-between-retries=str",
            "redirect-dns-upstream-target-chain=str",
            "log-level=str", "iptables-executables=str", "skip-dns-conntrack-zone-split-when-not-available")


def _uid(value: str, what: str, source: str) -> int:
    v = value.strip()
    if v == "root":
        return 0
    if not v.isdigit():
        raise SpecError(f"{what}: user {v!r} cannot be looked up here; give its uid", source=source)
    return int_value(v, what, source)


def parse_args(argv: Sequence[str], *, version: str = "current", source: str = "<kumactl>") -> KumaConfig:
    """``kumactl install transparent-proxy`` flags (the words up to and including
    ``transparent-proxy`` are skipped when present) → the configuration."""
    args = list(argv)
    if "transparent-proxy" in args:
        args = args[args.index("transparent-proxy") + 1:]
    elif args and not args[0].startswith("-"):
        args = args[1:]
    got = read_flags(args, _SPEC, source=source, ignore=_IGNORED)
    for flag in ("ebpf-enabled", "drop-invalid-packets", "log-enabled"):
        if got.get(flag):
            raise UnsupportedError(f"kumactl --{flag} is not modelled")
    if got.get("redirect-dns"):
        raise UnsupportedError("kumactl --redirect-dns (DNS servers from resolv.conf) is not modelled; "
                               "--redirect-all-dns-traffic is")
    user = got.get("kuma-dp-user", got.get("kuma-dp-uid", str(KUMA_DP_UID)))
    entries = [parse_uid_ports(e, source) for e in _uid_entries(got)]
    mode = str(got.get("ip-family-mode", "dualstack")).lower()
    if mode not in ("dualstack", "ipv4"):
        raise SpecError(f"--ip-family-mode: expected dualstack or ipv4, got {mode!r}", source=source)
    vnets = []
    for item in got.get("vnet", ()):
        iface, sep, net = item.partition(":")
        if not sep or not iface:
            raise SpecError(f"--vnet: expected IFACE:CIDR, got {item!r}", source=source)
        vnets.append((iface, cidrs([net], "--vnet", source)[0]))
    return KumaConfig(
        version=version, uid=_uid(user, "--kuma-dp-user", source),
        inbound_port=port(got.get("redirect-inbound-port", 15006), "--redirect-inbound-port", source),
        inbound_port_v6=got.get("redirect-inbound-port-v6"),
        outbound_port=port(got.get("redirect-outbound-port", 15001), "--redirect-outbound-port", source),
        redirect_inbound=got.get("redirect-inbound", True),
        exclude_inbound_ports=_port_list(got.get("exclude-inbound-ports", ()), "--exclude-inbound-ports", source),
        exclude_outbound_ports=_port_list(got.get("exclude-outbound-ports", ()), "--exclude-outbound-ports", source),
        include_inbound_ports=_port_list(got.get("include-inbound-ports", ()), "--include-inbound-ports", source),
        include_outbound_ports=_port_list(got.get("include-outbound-ports", ()), "--include-outbound-ports",
                                          source),
        exclude_outbound_ports_for_uids=entries,
        exclude_inbound_ips=cidrs(got.get("exclude-inbound-ips", ()), "--exclude-inbound-ips", source),
        exclude_outbound_ips=cidrs(got.get("exclude-outbound-ips", ()), "--exclude-outbound-ips", source),
        vnets=tuple(vnets), redirect_all_dns=bool(got.get("redirect-all-dns-traffic", False)),
        dns_port=port(got.get("redirect-dns-port", 15053), "--redirect-dns-port", source),
        conntrack_zone_split=not got.get("skip-dns-conntrack-zone-split", False),
        ip_family_mode=mode)  # type: ignore[arg-type]


def _uid_entries(got: Mapping[str, Any]) -> list[str]:
    """Each ``--exclude-outbound-ports-for-uids`` entry, and those of the older per-protocol flags
    (``--exclude-outbound-tcp-ports-for-uids PORTS:UIDS``)."""
    out: list[str] = list(got.get("exclude-outbound-ports-for-uids", ()))
    for flag, proto in (("exclude-outbound-tcp-ports-for-uids", "tcp"), ("exclude-outbound-udp-ports-for-uids", "udp")):
        out += [f"{proto}:{e}" for e in got.get(flag, ())]
    return out


def _port_list(values: Iterable[str], what: str, source: str) -> tuple[int, ...]:
    return tuple(port(v, what, source) for v in values if str(v).strip())


# -- rules -----------------------------------------------------------------------------------------

def _lo(fam: Family) -> IPNetwork:
    return to_network("127.0.0.1/32" if fam == "ipv4" else "::1/128")


def _passthrough_source(fam: Family) -> IPNetwork:
    return to_network("127.0.0.6/32" if fam == "ipv4" else "::6/128")


def record(config: KumaConfig) -> RuleBuilder:
    """kumactl's rules for ``config``, per family, in their final order."""
    b = RuleBuilder()
    c = config
    for fam in c.families:
        def a(table: str, chain: str, *ms: Any, target: Any, fam: Family = fam) -> None:
            b.append(fam, table, chain, *ms, target=target)

        uid = str(c.uid)
        # PREROUTING: virtual networks, then the inbound chain
        for iface, net in sorted(((i, n) for i, n in c.vnets if n.version == (4 if fam == "ipv4" else 6))):
            a("nat", "PREROUTING", in_if(iface), udp(), dport(DNS_PORT, "udp"), target=Redirect(c.dns_port))
            a("nat", "PREROUTING", dst(net, negated=True), in_if(iface), tcp(), target=Redirect(c.outbound_port))
        a("nat", "PREROUTING", tcp(), target=Jump(INBOUND))
        # OUTPUT: per-uid port exclusions, excluded addresses, DNS, then the outbound chain
        for entry in c.exclude_outbound_ports_for_uids:
            for proto in entry.protocols:
                a("nat", "OUTPUT", Protocol(proto), MultiportMatch("dports", entry.ports), owner_uid(entry.uid_text),
                  target=Return())
        for net in of_family(c.exclude_outbound_ips, fam):
            a("nat", "OUTPUT", dst(net), target=Return())
        if c.redirect_all_dns:
            a("nat", "OUTPUT", udp(), dport(DNS_PORT, "udp"), owner_uid(uid), target=Return())
            a("nat", "OUTPUT", udp(), dport(DNS_PORT, "udp"), target=Redirect(c.dns_port))
            if c.dns_tcp == "return":
                a("nat", "OUTPUT", tcp(), dport(DNS_PORT), owner_uid(uid, negated=True), target=Return())
        a("nat", "OUTPUT", tcp(), target=Jump(OUTBOUND))
        # the inbound chain
        if not c.redirect_inbound:
            a("nat", INBOUND, tcp(), target=Return())
        else:
            for net in of_family(c.exclude_inbound_ips, fam):
                a("nat", INBOUND, src(net), target=Return())
            if c.include_inbound_ports:
                for p in c.include_inbound_ports:
                    a("nat", INBOUND, tcp(), dport(p), target=Jump(INBOUND_REDIRECT))
            else:
                for p in c.exclude_inbound_ports:
                    a("nat", INBOUND, tcp(), dport(p), target=Return())
                a("nat", INBOUND, tcp(), target=Jump(INBOUND_REDIRECT))
        # the outbound chain
        if not c.redirect_outbound:
            a("nat", OUTBOUND, tcp(), target=Return())
        else:
            if not c.include_outbound_ports:
                for p in c.exclude_outbound_ports:
                    a("nat", OUTBOUND, tcp(), dport(p), target=Return())
            lo = out_if(c.loopback)
            a("nat", OUTBOUND, src(_passthrough_source(fam)), lo, target=Return())
            a("nat", OUTBOUND, tcp(), lo, dst(_lo(fam), negated=True), owner_uid(uid), target=Jump(INBOUND_REDIRECT))
            a("nat", OUTBOUND, tcp(), lo, owner_uid(uid, negated=True), target=Return())
            a("nat", OUTBOUND, owner_uid(uid), target=Return())
            if c.redirect_all_dns and c.dns_tcp == "redirect":
                a("nat", OUTBOUND, tcp(), dport(DNS_PORT), target=Redirect(c.dns_port))
            a("nat", OUTBOUND, dst(_lo(fam)), target=Return())
            if c.include_outbound_ports:
                for p in c.include_outbound_ports:
                    a("nat", OUTBOUND, tcp(), dport(p), target=Jump(OUTBOUND_REDIRECT))
            else:
                a("nat", OUTBOUND, target=Jump(OUTBOUND_REDIRECT))
        inbound = c.inbound_port_v6 if fam == "ipv6" and c.inbound_port_v6 else c.inbound_port
        a("nat", INBOUND_REDIRECT, tcp(), target=Redirect(inbound))
        a("nat", OUTBOUND_REDIRECT, tcp(), target=Redirect(c.outbound_port))
        # raw: conntrack zones keep kuma-dp's DNS flows apart from the apps'
        if c.redirect_all_dns and c.conntrack_zone_split:
            a("raw", "PREROUTING", udp(), sport(DNS_PORT), target=CtTarget(zone=1))
            a("raw", "OUTPUT", udp(), dport(DNS_PORT, "udp"), owner_uid(uid), target=CtTarget(zone=1))
            a("raw", "OUTPUT", udp(), sport(c.dns_port), owner_uid(uid), target=CtTarget(zone=2))
            a("raw", "OUTPUT", udp(), dport(DNS_PORT, "udp"), target=CtTarget(zone=2))
    return b


def generate(config: KumaConfig) -> Rulesets:
    """The rules ``kumactl install transparent-proxy`` writes for ``config``."""
    return record(config).build()


def proxy_behavior(config: KumaConfig) -> ProxyBehavior:
    """What kuma-dp's Envoy does with the connections ``config``'s rules hand it."""
    original = config.major_minor >= (2, 0)
    return ProxyBehavior(uid=config.uid, gid=config.uid, outbound_port=config.outbound_port,
                         inbound_port=config.inbound_port,
                         inbound_endpoint="original_dst" if original else "localhost",
                         inbound_source_v4="127.0.0.6", inbound_source_v6="::6", outbound="passthrough")


# -- pods ------------------------------------------------------------------------------------------

A_INJECTED = "kuma.io/sidecar-injected"
A_IN_PORT = "kuma.io/transparent-proxying-inbound-port"
A_OUT_PORT = "kuma.io/transparent-proxying-outbound-port"
A_UID = "kuma.io/sidecar-uid"
A_EX_IN = "traffic.kuma.io/exclude-inbound-ports"
A_EX_OUT = "traffic.kuma.io/exclude-outbound-ports"
A_EX_UIDS = "traffic.kuma.io/exclude-outbound-ports-for-uids"
A_EX_IN_IPS = "traffic.kuma.io/exclude-inbound-ips"
A_EX_OUT_IPS = "traffic.kuma.io/exclude-outbound-ips"
A_DNS = "kuma.io/builtin-dns"
A_DNS_PORT = "kuma.io/builtin-dns-port"
A_FAMILY = "kuma.io/transparent-proxying-ip-family-mode"
_TAG = re.compile(r":v?(\d+\.\d+(?:\.\d+)?)(?:[-@].*)?$")


def init_container(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The pod's ``kuma-init`` container (kumactl install transparent-proxy), if it has one."""
    for c in (pod.get("spec") or {}).get("initContainers") or ():
        if not isinstance(c, Mapping):
            continue
        words = [str(w) for w in (*(c.get("command") or ()), *(c.get("args") or ()))]
        if c.get("name") == "kuma-init" or "transparent-proxy" in words:
            return c
    return None


def _version_of(pod: Mapping[str, Any]) -> str | None:
    spec = pod.get("spec") or {}
    for c in (*(spec.get("containers") or ()), *(spec.get("initContainers") or ())):
        if isinstance(c, Mapping) and c.get("name") in ("kuma-sidecar", "kuma-init"):
            m = _TAG.search(str(c.get("image", "")))
            if m:
                return m.group(1)
    return None


def config_from_pod(pod: Mapping[str, Any], *, version: str | None = None,
                    source: str = "<manifest>") -> tuple[KumaConfig, str, tuple[str, ...]]:
    """A Kuma pod → (its transparent-proxy configuration, what it was read from, notes)."""
    notes: list[str] = []
    ver = version or _version_of(pod)
    if ver is None:
        ver = "current"
        notes.append("Kuma version not in the pod: current assumed (inbound forwarded to the pod IP)")
    version_of(ver)
    init = init_container(pod)
    if init is not None:
        argv = [str(a) for a in (*(init.get("command") or ()), *(init.get("args") or ()))]
        return parse_args(argv, version=ver, source=source), f"{init.get('name')} arguments", tuple(notes)
    ann = ((pod.get("metadata") or {}).get("annotations")) or {}

    def get(key: str) -> str:
        return str(ann.get(key) or "")

    uids = [parse_uid_ports(e, source) for e in get(A_EX_UIDS).split(";") if e.strip()]
    config = KumaConfig(
        version=ver, uid=int_value(get(A_UID) or KUMA_DP_UID, A_UID, source),
        inbound_port=port(get(A_IN_PORT) or 15006, A_IN_PORT, source),
        outbound_port=port(get(A_OUT_PORT) or 15001, A_OUT_PORT, source),
        exclude_inbound_ports=_port_list(get(A_EX_IN).split(","), A_EX_IN, source),
        exclude_outbound_ports=_port_list(get(A_EX_OUT).split(","), A_EX_OUT, source),
        exclude_outbound_ports_for_uids=uids,
        exclude_inbound_ips=cidrs(get(A_EX_IN_IPS).split(","), A_EX_IN_IPS, source),
        exclude_outbound_ips=cidrs(get(A_EX_OUT_IPS).split(","), A_EX_OUT_IPS, source),
        redirect_all_dns=bool_value(get(A_DNS) or "false", A_DNS, source),
        dns_port=port(get(A_DNS_PORT) or 15053, A_DNS_PORT, source),
        ip_family_mode="ipv4" if get(A_FAMILY).lower() == "ipv4" else "dualstack")
    notes.append("no kuma-init container (kuma-cni): settings from the pod's kuma.io annotations")
    return config, "annotations (kuma-cni)", tuple(notes)


def setup(config: KumaConfig, *, basis: str = "kumactl flags", notes: Iterable[str] = ()) -> MeshSetup:
    uids = [config.uid, *(u for e in config.exclude_outbound_ports_for_uids for u in range(e.uids[0], e.uids[1] + 1))]
    ports = list(config.exclude_outbound_ports)
    if config.redirect_all_dns and config.dns_tcp == "return":
        ports.append(DNS_PORT)
    return MeshSetup("kuma", config.version, generate(config), proxy_behavior(config), basis, tuple(notes),
                     exempt_uids=uids, exempt_ports=ports,
                     exempt_cidrs=tuple(str(n) for n in config.exclude_outbound_ips))
