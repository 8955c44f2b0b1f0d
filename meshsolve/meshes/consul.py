"""Consul's capture as data: ``consul connect redirect-traffic`` (the SDK's ``iptables.Config``, which
consul-k8s passes as the ``consul.hashicorp.com/redirect-traffic-config`` annotation) → the rules,
and the Envoy sidecar.

The SDK (``sdk/iptables``) writes, in this order, into the IPv4 nat table only:

* ``-N`` for ``CONSUL_PROXY_INBOUND``, ``CONSUL_PROXY_IN_REDIRECT``, ``CONSUL_PROXY_OUTPUT``,
  ``CONSUL_PROXY_REDIRECT`` (and, since the DNS redirect exists, ``CONSUL_DNS_REDIRECT``);
* ``CONSUL_PROXY_REDIRECT``: ``-p tcp REDIRECT --to-ports`` the outbound port (15001);
* with a Consul DNS address: ``CONSUL_DNS_REDIRECT`` DNATs udp/tcp port 53 to it (to ``IP:PORT``
  and only for that destination when a DNS port is given), jumped to from ``OUTPUT``;
* ``OUTPUT -p tcp -j CONSUL_PROXY_OUTPUT``; there ``--uid-owner PROXY RETURN``, ``-d 127.0.0.1/32
  RETURN``, ``-j CONSUL_PROXY_REDIRECT``; then the exclusions are *inserted* at the top (``-I``
  without an index: excluded ports, then CIDRs, then uids, so the last one given comes first);
* ``CONSUL_PROXY_IN_REDIRECT``: ``-p tcp REDIRECT`` to the inbound port; ``PREROUTING -p tcp -j
  CONSUL_PROXY_INBOUND``; there ``-p tcp -j CONSUL_PROXY_IN_REDIRECT`` with the excluded inbound ports
  inserted above it.

There is no loopback rule: an app's connection to its own pod IP goes through the outbound proxy, and
a self-call through a service reaches the app from the proxy (its uid returns) without the inbound
side. The Envoy sidecar (``proxy_behavior``): the proxy uid (consul-k8s: 5995, its group the same),
outbound listener 15001, the public listener (consul-k8s: 20000) forwarding to the local app at
``127.0.0.1`` and the original port; destinations that are not services pass through.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from meshsolve.errors import SpecError
from meshsolve.istio.builder import RuleBuilder, dport, dst, owner_uid, tcp, udp
from meshsolve.meshes.common import MeshSetup, cidrs, int_value, port, read_flags
from meshsolve.model.net import IPNetwork, to_address
from meshsolve.model.rules import Dnat, Jump, Redirect, Return, Rulesets
from meshsolve.model.world import ProxyBehavior

__all__ = ["CHAINS", "ConsulConfig", "config_from_json", "config_from_pod", "generate", "parse_args",
           "proxy_behavior", "setup"]

INBOUND = "CONSUL_PROXY_INBOUND"
IN_REDIRECT = "CONSUL_PROXY_IN_REDIRECT"
OUTPUT_CHAIN = "CONSUL_PROXY_OUTPUT"
REDIRECT = "CONSUL_PROXY_REDIRECT"
DNS = "CONSUL_DNS_REDIRECT"
CHAINS = (INBOUND, IN_REDIRECT, OUTPUT_CHAIN, REDIRECT, DNS)
ENVOY_UID = 5995  # consul-k8s's Envoy user and group
PUBLIC_LISTENER_PORT = 20000  # consul-k8s's inbound (public listener) port
OUTBOUND_PORT = 15001


def _strs(values: Iterable[str | int]) -> tuple[str, ...]:
    return tuple(str(v).strip() for v in values if str(v).strip())


def _nets(values: Iterable[IPNetwork | str]) -> tuple[IPNetwork, ...]:
    return cidrs((str(v) for v in values), "ExcludeOutboundCIDRs", "<config>")


@attrs.frozen
class ConsulConfig:
    """The SDK's ``iptables.Config`` (its JSON field names in the comments). ``dns_chain``: the SDK
    declares ``CONSUL_DNS_REDIRECT`` (every version with the DNS redirect; the SDK's first test lists
    predate it)."""

    proxy_uid: int = ENVOY_UID  # ProxyUserID
    inbound_port: int = PUBLIC_LISTENER_PORT  # ProxyInboundPort
    outbound_port: int = OUTBOUND_PORT  # ProxyOutboundPort (0 in the JSON: 15001)
    exclude_inbound_ports: tuple[str, ...] = attrs.field(default=(), converter=_strs)  # ExcludeInboundPorts
    exclude_outbound_ports: tuple[str, ...] = attrs.field(default=(), converter=_strs)  # ExcludeOutboundPorts
    exclude_outbound_cidrs: tuple[IPNetwork, ...] = attrs.field(default=(), converter=_nets)  # ExcludeOutboundCIDRs
    exclude_uids: tuple[str, ...] = attrs.field(default=(), converter=_strs)  # ExcludeUIDs
    consul_dns_ip: str | None = None  # ConsulDNSIP
    consul_dns_port: int | None = None  # ConsulDNSPort
    dns_chain: bool = True
    version: str = "current"


def record(config: ConsulConfig) -> RuleBuilder:
    """The SDK's command stream for ``config`` (IPv4)."""
    b = RuleBuilder()
    c = config

    def a(chain: str, *ms: Any, target: Any) -> None:
        b.append("ipv4", "nat", chain, *ms, target=target)

    def ins(chain: str, *ms: Any, target: Any) -> None:
        b.insert("ipv4", "nat", chain, 1, *ms, target=target)

    for chain in (INBOUND, IN_REDIRECT, OUTPUT_CHAIN, REDIRECT, *((DNS,) if c.dns_chain else ())):
        b.declare("ipv4", "nat", chain)
    a(REDIRECT, tcp(), target=Redirect(c.outbound_port))
    if c.consul_dns_ip or c.consul_dns_port:
        ip = c.consul_dns_ip or "127.0.0.1"
        to_ip = (dst(ip),) if c.consul_dns_port else ()
        to = f"{ip}:{c.consul_dns_port}" if c.consul_dns_port else ip
        a(DNS, udp(), *to_ip, dport(53, "udp"), target=Dnat(to))
        a(DNS, tcp(), *to_ip, dport(53), target=Dnat(to))
        a("OUTPUT", udp(), *to_ip, dport(53, "udp"), target=Jump(DNS))
        a("OUTPUT", tcp(), *to_ip, dport(53), target=Jump(DNS))
    a("OUTPUT", tcp(), target=Jump(OUTPUT_CHAIN))
    a(OUTPUT_CHAIN, owner_uid(str(c.proxy_uid)), target=Return())
    a(OUTPUT_CHAIN, dst("127.0.0.1/32"), target=Return())
    a(OUTPUT_CHAIN, target=Jump(REDIRECT))
    for p in c.exclude_outbound_ports:
        ins(OUTPUT_CHAIN, tcp(), dport(port(p, "ExcludeOutboundPorts", "<config>")), target=Return())
    for net in c.exclude_outbound_cidrs:
        ins(OUTPUT_CHAIN, dst(net), target=Return())
    for uid in c.exclude_uids:
        ins(OUTPUT_CHAIN, owner_uid(str(int_value(uid, "ExcludeUIDs", "<config>"))), target=Return())
    a(IN_REDIRECT, tcp(), target=Redirect(c.inbound_port))
    a("PREROUTING", tcp(), target=Jump(INBOUND))
    a(INBOUND, tcp(), target=Jump(IN_REDIRECT))
    for p in c.exclude_inbound_ports:
        ins(INBOUND, tcp(), dport(port(p, "ExcludeInboundPorts", "<config>")), target=Return())
    return b


def generate(config: ConsulConfig) -> Rulesets:
    """The rules ``consul connect redirect-traffic`` (the SDK) writes for ``config``."""
    if config.consul_dns_ip:
        to_address(config.consul_dns_ip)
    return record(config).build()


def proxy_behavior(config: ConsulConfig) -> ProxyBehavior:
    """What the Envoy sidecar does with the connections ``config``'s rules hand it."""
    return ProxyBehavior(uid=config.proxy_uid, gid=config.proxy_uid, outbound_port=config.outbound_port,
                         inbound_port=config.inbound_port, inbound_endpoint="localhost", outbound="passthrough")


# -- inputs ----------------------------------------------------------------------------------------

_JSON_FIELDS = {"ConsulDNSIP", "ConsulDNSPort", "ProxyUserID", "ProxyInboundPort", "ProxyOutboundPort",
                "ExcludeInboundPorts", "ExcludeOutboundPorts", "ExcludeOutboundCIDRs", "ExcludeUIDs", "NetNS"}


def config_from_json(text: str, *, source: str = "<redirect-traffic-config>") -> ConsulConfig:
    """The SDK's ``iptables.Config`` as JSON (the ``consul.hashicorp.com/redirect-traffic-config``
    annotation, or ``CONSUL_REDIRECT_TRAFFIC_CONFIG``) → the configuration."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(f"redirect-traffic config is not JSON: {exc.msg} (column {exc.colno})",
                        source=source) from None
    if not isinstance(doc, Mapping):
        raise SpecError("redirect-traffic config: expected a JSON object", source=source)
    unknown = sorted(set(doc) - _JSON_FIELDS)
    if unknown:
        raise SpecError(f"redirect-traffic config: unknown field(s) {', '.join(unknown)}", source=source)
    uid = str(doc.get("ProxyUserID") or "")
    if not uid:
        raise SpecError("redirect-traffic config: ProxyUserID is required (the SDK refuses it)", source=source)
    inbound = int(doc.get("ProxyInboundPort") or 0)
    if not inbound:
        raise SpecError("redirect-traffic config: ProxyInboundPort is required (the SDK refuses it)",
                        source=source)

    def strs(key: str) -> tuple[str, ...]:
        v = doc.get(key) or []
        if not isinstance(v, list):
            raise SpecError(f"redirect-traffic config: {key} must be a list", source=source)
        return tuple(str(x) for x in v)

    return ConsulConfig(
        proxy_uid=int_value(uid, "ProxyUserID", source), inbound_port=port(inbound, "ProxyInboundPort", source),
        outbound_port=port(doc.get("ProxyOutboundPort") or OUTBOUND_PORT, "ProxyOutboundPort", source),
        exclude_inbound_ports=strs("ExcludeInboundPorts"), exclude_outbound_ports=strs("ExcludeOutboundPorts"),
        exclude_outbound_cidrs=cidrs(strs("ExcludeOutboundCIDRs"), "ExcludeOutboundCIDRs", source),
        exclude_uids=strs("ExcludeUIDs"), consul_dns_ip=str(doc.get("ConsulDNSIP") or "") or None,
        consul_dns_port=int(doc.get("ConsulDNSPort") or 0) or None)


_SPEC: dict[str, Any] = {
    "proxy-uid": "str", "proxy-inbound-port": "int", "proxy-outbound-port": "int", "exclude-inbound-port": "list",
    "exclude-outbound-port": "list", "exclude-outbound-cidr": "list", "exclude-uid": "list",
    "consul-dns-ip": "str", "consul-dns-port": "int",
}
_IGNORED = ("proxy-id=str", "netns=str", "http-addr=str", "token=str", "token-file=str", "namespace=str",
            "partition=str", "ca-file=str", "ca-path=str", "client-cert=str", "client-key=str",
            "tls-server-name=str", "datacenter=str", "stale")


def parse_args(argv: Sequence[str], *, source: str = "<redirect-traffic>") -> ConsulConfig:
    """``consul connect redirect-traffic -proxy-uid 5995 -proxy-inbound-port 20000 …`` (the words
    before the first flag are skipped) → the configuration."""
    args = list(argv)
    while args and not args[0].startswith("-"):
        args = args[1:]
    got = read_flags(args, _SPEC, source=source, single_dash=True, ignore=_IGNORED)
    if not got.get("proxy-uid"):
        raise SpecError("-proxy-uid is required", source=source)
    if not got.get("proxy-inbound-port"):
        raise SpecError("-proxy-inbound-port is required", source=source)
    return ConsulConfig(
        proxy_uid=int_value(got["proxy-uid"], "-proxy-uid", source),
        inbound_port=port(got["proxy-inbound-port"], "-proxy-inbound-port", source),
        outbound_port=port(got.get("proxy-outbound-port") or OUTBOUND_PORT, "-proxy-outbound-port", source),
        exclude_inbound_ports=got.get("exclude-inbound-port", ()),
        exclude_outbound_ports=got.get("exclude-outbound-port", ()),
        exclude_outbound_cidrs=cidrs(got.get("exclude-outbound-cidr", ()), "-exclude-outbound-cidr", source),
        exclude_uids=got.get("exclude-uid", ()), consul_dns_ip=got.get("consul-dns-ip"),
        consul_dns_port=got.get("consul-dns-port"))


A_REDIRECT = "consul.hashicorp.com/redirect-traffic-config"
A_INJECT_STATUS = "consul.hashicorp.com/connect-inject-status"
ENV_REDIRECT = "CONSUL_REDIRECT_TRAFFIC_CONFIG"


def config_from_pod(pod: Mapping[str, Any], *, source: str = "<manifest>") -> tuple[ConsulConfig, str, tuple[str, ...]]:
    """A Consul pod → (its redirect-traffic configuration, what it was read from, notes): the
    ``redirect-traffic-config`` annotation, an init container's ``CONSUL_REDIRECT_TRAFFIC_CONFIG`` or
    ``consul connect redirect-traffic`` command line, else consul-k8s's defaults."""
    ann = ((pod.get("metadata") or {}).get("annotations")) or {}
    if ann.get(A_REDIRECT):
        return config_from_json(str(ann[A_REDIRECT]), source=f"{source}: {A_REDIRECT}"), \
            f"annotation {A_REDIRECT}", ()
    for c in (pod.get("spec") or {}).get("initContainers") or ():
        if not isinstance(c, Mapping):
            continue
        for e in c.get("env") or ():
            if isinstance(e, Mapping) and e.get("name") == ENV_REDIRECT and e.get("value"):
                return config_from_json(str(e["value"]), source=f"{source}: {ENV_REDIRECT}"), \
                    f"{c.get('name')} {ENV_REDIRECT}", ()
        words = [str(w) for w in (*(c.get("command") or ()), *(c.get("args") or ()))]
        if "redirect-traffic" in words:
            return parse_args(words[words.index("redirect-traffic") + 1:], source=source), \
                f"{c.get('name')} redirect-traffic arguments", ()
    return ConsulConfig(), "consul-k8s defaults", (
        "no redirect-traffic configuration in the pod: consul-k8s's defaults assumed (Envoy uid 5995, "
        "inbound 20000, outbound 15001)",)


def setup(config: ConsulConfig, *, basis: str = "redirect-traffic", notes: Iterable[str] = ()) -> MeshSetup:
    return MeshSetup("consul", config.version, generate(config), proxy_behavior(config), basis, tuple(notes),
                     exempt_uids=(config.proxy_uid, *(int(u) for u in config.exclude_uids)),
                     exempt_ports=tuple(int(p) for p in config.exclude_outbound_ports),
                     exempt_cidrs=tuple(str(n) for n in config.exclude_outbound_cidrs))
