"""Linkerd's capture as data: linkerd2-proxy-init's flags → the rules it writes, and the proxy.

The rules (proxy-init's ``ConfigureFirewall``: incoming first, then outgoing; nat table only, one
pass per address family):

* ``PROXY_INIT_REDIRECT`` (jumped to from ``PREROUTING``): a ``-m multiport --dports … RETURN`` per
  group of ignored inbound ports (a group holds at most 15 port references, a range counting two),
  ``-s SUBNET RETURN`` per ignored subnet, then ``-p tcp REDIRECT --to-ports 4143`` — or, with
  ``--ports-to-redirect``, one ``-p tcp --dport P REDIRECT`` per listed port;
* ``PROXY_INIT_OUTPUT`` (jumped to from ``OUTPUT``): ``--uid-owner`` / ``--gid-owner`` of the proxy
  ``RETURN`` (only for an id above 0), ``-o lo RETURN``, the ignored outbound ports, then ``-p tcp
  REDIRECT --to-ports 4140``.

Every rule carries proxy-init's ``proxy-init/…`` comment label. ``--subnets-to-ignore`` applies to
inbound connections only, by their *source* (what users expect to skip both ways does not, and the
facts' linkerd2#10726 is exactly that). Every process except the proxy's uid that talks to a
loopback destination — a self-call through a service included, once the outbound proxy sends it to
the pod IP — returns at ``-o lo``: the server side never sees it.

The proxy (``proxy_behavior``): uid 2102 (its group is taken to be the same when the chart sets
none), outbound listener 4140, inbound 4143; the inbound side forwards to the original destination
from 2.11 on (``LINKERD2_PROXY_INBOUND_IPS``), to ``127.0.0.1`` at the original port before, with
the kernel's choice of source; destinations that are not services pass through.

Defaults are the linkerd-control-plane chart's (``--inbound-ports-to-ignore 4190,4191,4567,4568
--outbound-ports-to-ignore 4567,4568``, uid 2102). With linkerd-cni there is no init container: the
settings are then read from the pod's ``config.linkerd.io/*`` annotations over the chart's defaults.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import attrs

from meshsolve.errors import SpecError
from meshsolve.istio.builder import RuleBuilder, dport, out_if, owner_gid, owner_uid, src, tcp
from meshsolve.meshes.common import (
    MeshSetup,
    cidrs,
    int_value,
    of_family,
    port,
    port_ranges,
    read_flags,
)
from meshsolve.model.net import Family, IPNetwork, PortRange
from meshsolve.model.rules import CommentMatch, Jump, MultiportMatch, Redirect, Return, Rulesets
from meshsolve.model.world import ProxyBehavior

__all__ = [
    "CHAINS",
    "COMMENT_PREFIX",
    "LinkerdConfig",
    "config_from_pod",
    "generate",
    "minor_of",
    "parse_args",
    "proxy_behavior",
    "setup",
]

REDIRECT_CHAIN = "PROXY_INIT_REDIRECT"
OUTPUT_CHAIN = "PROXY_INIT_OUTPUT"
CHAINS = (REDIRECT_CHAIN, OUTPUT_CHAIN)
COMMENT_PREFIX = "proxy-init/"
MULTIPORT_LIMIT = 15  # port references per multiport rule (a range counts two)
PROXY_UID = 2102
INBOUND_PORT = 4143
OUTBOUND_PORT = 4140
CONTROL_PORT, ADMIN_PORT = 4190, 4191
CHART_IGNORED = ("4567", "4568")  # proxyInit.ignoreInboundPorts / ignoreOutboundPorts


def _ranges(values: Iterable[PortRange | str | int]) -> tuple[PortRange, ...]:
    items = list(values)
    if all(isinstance(v, PortRange) for v in items):
        return tuple(items)  # type: ignore[arg-type]
    return port_ranges((str(v) for v in items), "ports", "<config>")


def _nets(values: Iterable[IPNetwork | str]) -> tuple[IPNetwork, ...]:
    return cidrs((str(v) for v in values), "subnets", "<config>")


def _ints(values: Iterable[int]) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


@attrs.frozen
class LinkerdConfig:
    """proxy-init's settings for one pod (flag names in the field docs).

    ``proxy_gid`` ``None``: no ``--proxy-gid`` (no gid rule). ``ports_to_redirect`` empty: every
    inbound port is redirected (``redirect-all`` mode). ``iptables_mode`` says which binary wrote
    the rules (``legacy``, ``nft`` or ``plain``); it does not change them."""

    version: str = "current"
    proxy_uid: int = PROXY_UID  # --proxy-uid (-1: not given, no uid rule; the proxy is taken to run as 2102)
    proxy_gid: int | None = None  # --proxy-gid
    inbound_port: int = INBOUND_PORT  # --incoming-proxy-port
    outbound_port: int = OUTBOUND_PORT  # --outgoing-proxy-port
    inbound_ports_to_ignore: tuple[PortRange, ...] = attrs.field(
        default=_ranges((CONTROL_PORT, ADMIN_PORT, *CHART_IGNORED)), converter=_ranges)
    outbound_ports_to_ignore: tuple[PortRange, ...] = attrs.field(default=_ranges(CHART_IGNORED), converter=_ranges)
    subnets_to_ignore: tuple[IPNetwork, ...] = attrs.field(default=(), converter=_nets)
    ports_to_redirect: tuple[int, ...] = attrs.field(default=(), converter=_ints)
    ipv6: bool = False
    iptables_mode: Literal["legacy", "nft", "plain"] = "nft"

    @property
    def minor(self) -> int:
        return minor_of(self.version)

    @property
    def families(self) -> tuple[Family, ...]:
        return ("ipv4", "ipv6") if self.ipv6 else ("ipv4",)


def minor_of(version: str) -> int:
    """The Linkerd 2.x minor a version names: ``stable-2.10.2``, ``2.10``, ``enterprise-2.15.1`` → 10,
    15; ``edge-YY.M.P`` → 10 before edge-21.8 (the 2.11 inbound change landed in mid-2021), else 11
    or later (taken as current); ``current`` → the newest."""
    text = version.strip().lower()
    if text in ("current", "latest", ""):
        return 99
    m = re.fullmatch(r"(?:stable-|enterprise-|v)?2\.(\d+)(?:\.\d+)?(?:[-+].*)?", text)
    if m:
        return int(m.group(1))
    m = re.fullmatch(r"edge-(\d+)\.(\d+)\.\d+(?:[-+].*)?", text)
    if m:
        return 10 if (int(m.group(1)), int(m.group(2))) < (21, 8) else 99
    raise SpecError(f"Linkerd version {version!r}: expected 2.N, stable-2.N.P, edge-YY.M.P or current",
                    source="version")


# -- flags -----------------------------------------------------------------------------------------

_SPEC: dict[str, Any] = {
    "incoming-proxy-port": "int", "outgoing-proxy-port": "int", "proxy-uid": "int", "proxy-gid": "int",
    "ports-to-redirect": "list", "inbound-ports-to-ignore": "list", "outbound-ports-to-ignore": "list",
    "subnets-to-ignore": "list", "ipv6": "bool", "iptables-mode": "str", "firewall-bin-path": "str",
    "firewall-save-bin-path": "str", "simulate": "bool",
}
_ALIASES = {"p": "incoming-proxy-port", "o": "outgoing-proxy-port", "u": "proxy-uid", "r": "ports-to-redirect",
            "g": "proxy-gid"}
_IGNORED = ("netns=str", "use-wait-flag", "w", "timeout-close-wait-secs=str", "log-format=str", "log-level=str")


def parse_args(argv: Sequence[str], *, version: str = "current", source: str = "<proxy-init>") -> LinkerdConfig:
    """proxy-init's command line (``proxy-init --incoming-proxy-port 4143 …``; a leading program name
    is skipped) → its configuration. Flags not given take proxy-init's own defaults: no ignored
    ports or subnets, no uid/gid rule, redirect-all; the two proxy ports are required."""
    args = list(argv)
    if args and not args[0].startswith("-"):
        args = args[1:]
    got = read_flags(args, _SPEC, aliases=_ALIASES, source=source, ignore=_IGNORED)
    mode = str(got.get("iptables-mode", "")).strip()
    binary = str(got.get("firewall-bin-path", ""))
    if not mode:
        mode = "nft" if "nft" in binary else "legacy" if "legacy" in binary else "plain" if binary else "legacy"
    if mode not in ("legacy", "nft", "plain"):
        raise SpecError(f"--iptables-mode: expected legacy, nft or plain, got {mode!r}", source=source)
    for flag in ("incoming-proxy-port", "outgoing-proxy-port"):
        if flag not in got:  # proxy-init's default is -1, which it refuses
            raise SpecError(f"--{flag} is missing (proxy-init refuses to run without it)", source=source)
    gid = got.get("proxy-gid")
    return LinkerdConfig(
        version=version,
        proxy_uid=got.get("proxy-uid", -1),
        proxy_gid=gid if gid is not None and gid >= 0 else None,
        inbound_port=port(got["incoming-proxy-port"], "--incoming-proxy-port", source),
        outbound_port=port(got["outgoing-proxy-port"], "--outgoing-proxy-port", source),
        inbound_ports_to_ignore=port_ranges(got.get("inbound-ports-to-ignore", ()), "--inbound-ports-to-ignore",
                                            source),
        outbound_ports_to_ignore=port_ranges(got.get("outbound-ports-to-ignore", ()),
                                             "--outbound-ports-to-ignore", source),
        subnets_to_ignore=cidrs(got.get("subnets-to-ignore", ()), "--subnets-to-ignore", source),
        ports_to_redirect=tuple(port(p, "--ports-to-redirect", source) for p in got.get("ports-to-redirect", ())),
        ipv6=bool(got.get("ipv6", False)),
        iptables_mode=mode,  # type: ignore[arg-type]
    )


# -- rules -----------------------------------------------------------------------------------------

def _groups(ranges: tuple[PortRange, ...]) -> list[tuple[PortRange, ...]]:
    """Split a port list into multiport rules of at most 15 port references (a range counts two)."""
    out: list[tuple[PortRange, ...]] = []
    cur: list[PortRange] = []
    count = 0
    for r in ranges:
        n = 1 if r.lo == r.hi else 2
        if count + n > MULTIPORT_LIMIT:
            out.append(tuple(cur))
            cur, count = [], 0
        cur.append(r)
        count += n
    if cur:
        out.append(tuple(cur))
    return out


def _label(text: str) -> CommentMatch:
    return CommentMatch(COMMENT_PREFIX + text)


def record(config: LinkerdConfig) -> RuleBuilder:
    """proxy-init's commands for ``config``, per family, in the order it runs them (fresh netns)."""
    b = RuleBuilder()
    c = config
    for fam in c.families:
        def a(chain: str, *ms: Any, target: Any, fam: Family = fam) -> None:
            b.append(fam, "nat", chain, *ms, target=target)

        b.declare(fam, "nat", REDIRECT_CHAIN)
        for group in _groups(c.inbound_ports_to_ignore):
            text = ",".join(str(r) for r in group)
            a(REDIRECT_CHAIN, tcp(), MultiportMatch("dports", group), _label(f"ignore-port-{text}"), target=Return())
        for net in of_family(c.subnets_to_ignore, fam):
            a(REDIRECT_CHAIN, src(net), _label(f"ignore-subnet-{net}"), target=Return())
        if c.ports_to_redirect:
            for p in c.ports_to_redirect:
                a(REDIRECT_CHAIN, tcp(), dport(p), _label(f"redirect-port-{p}-to-proxy-port"),
                  target=Redirect(c.inbound_port))
        else:
            a(REDIRECT_CHAIN, tcp(), _label("redirect-all-incoming-to-proxy-port"), target=Redirect(c.inbound_port))
        a("PREROUTING", _label("install-proxy-init-prerouting"), target=Jump(REDIRECT_CHAIN))
        b.declare(fam, "nat", OUTPUT_CHAIN)
        if c.proxy_uid > 0:
            a(OUTPUT_CHAIN, owner_uid(str(c.proxy_uid)), _label("ignore-proxy-user-id"), target=Return())
        if c.proxy_gid is not None and c.proxy_gid > 0:
            a(OUTPUT_CHAIN, owner_gid(str(c.proxy_gid)), _label("ignore-proxy-group-id"), target=Return())
        a(OUTPUT_CHAIN, out_if("lo"), _label("ignore-loopback"), target=Return())
        for group in _groups(c.outbound_ports_to_ignore):
            text = ",".join(str(r) for r in group)
            a(OUTPUT_CHAIN, tcp(), MultiportMatch("dports", group), _label(f"ignore-port-{text}"), target=Return())
        a(OUTPUT_CHAIN, tcp(), _label("redirect-all-outgoing-to-proxy-port"), target=Redirect(c.outbound_port))
        a("OUTPUT", _label("install-proxy-init-output"), target=Jump(OUTPUT_CHAIN))
    return b


def generate(config: LinkerdConfig) -> Rulesets:
    """The rules proxy-init writes for ``config`` into a fresh network namespace."""
    return record(config).build()


def proxy_behavior(config: LinkerdConfig) -> ProxyBehavior:
    """What linkerd2-proxy does with the connections ``config``'s rules hand it."""
    uid = config.proxy_uid if config.proxy_uid >= 0 else PROXY_UID
    return ProxyBehavior(
        uid=uid, gid=config.proxy_gid if config.proxy_gid is not None else uid,
        outbound_port=config.outbound_port, inbound_port=config.inbound_port,
        inbound_endpoint="original_dst" if config.minor >= 11 else "localhost", outbound="passthrough")


# -- pods ------------------------------------------------------------------------------------------

A_VERSION = "linkerd.io/proxy-version"
A_SKIP_IN = "config.linkerd.io/skip-inbound-ports"
A_SKIP_OUT = "config.linkerd.io/skip-outbound-ports"
A_SKIP_SUBNETS = "config.linkerd.io/skip-subnets"
A_UID = "config.linkerd.io/proxy-uid"
A_GID = "config.linkerd.io/proxy-gid"
A_IN_PORT = "config.linkerd.io/proxy-inbound-port"
A_OUT_PORT = "config.linkerd.io/proxy-outbound-port"
_TAG = re.compile(r"[:@]((?:stable-|edge-|enterprise-)?v?\d[\w.+-]*)$")


def _version_of(pod: Mapping[str, Any]) -> tuple[str, str | None]:
    meta = pod.get("metadata") or {}
    ann = meta.get("annotations") or {}
    if ann.get(A_VERSION):
        return str(ann[A_VERSION]), f"annotation {A_VERSION}"
    for c in (pod.get("spec") or {}).get("containers") or ():
        if isinstance(c, Mapping) and c.get("name") == "linkerd-proxy":
            m = _TAG.search(str(c.get("image", "")))
            if m:
                return m.group(1), "the linkerd-proxy image tag"
    return "current", None


def init_container(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The pod's ``linkerd-init`` container (proxy-init), if it has one."""
    for c in (pod.get("spec") or {}).get("initContainers") or ():
        if isinstance(c, Mapping) and (c.get("name") == "linkerd-init" or "proxy-init" in str(c.get("image", ""))):
            return c
    return None


def config_from_pod(pod: Mapping[str, Any], *, version: str | None = None,
                    source: str = "<manifest>") -> tuple[LinkerdConfig, str, tuple[str, ...]]:
    """A Linkerd pod → (its proxy-init configuration, what it was read from, notes)."""
    notes: list[str] = []
    found, where = _version_of(pod)
    ver = version or found
    minor_of(ver)
    if version is None and where is None:
        notes.append("Linkerd version not in the pod: current assumed (the inbound side forwards to the "
                     "original destination)")
    init = init_container(pod)
    if init is not None:
        argv = [str(a) for a in (*(init.get("command") or ()), *(init.get("args") or ()))]
        return parse_args(argv, version=ver, source=source), f"{init.get('name')} arguments", tuple(notes)
    ann = ((pod.get("metadata") or {}).get("annotations")) or {}

    def ann_int(key: str, default: int) -> int:
        return int_value(ann[key], key, source) if ann.get(key) not in (None, "") else default

    inbound = [str(CONTROL_PORT), str(ADMIN_PORT), *(str(ann[A_SKIP_IN]).split(",") if ann.get(A_SKIP_IN)
                                                      else CHART_IGNORED)]
    outbound = str(ann[A_SKIP_OUT]).split(",") if ann.get(A_SKIP_OUT) else list(CHART_IGNORED)
    gid = ann_int(A_GID, -1)
    config = LinkerdConfig(
        version=ver, proxy_uid=ann_int(A_UID, PROXY_UID), proxy_gid=gid if gid >= 0 else None,
        inbound_port=ann_int(A_IN_PORT, INBOUND_PORT), outbound_port=ann_int(A_OUT_PORT, OUTBOUND_PORT),
        inbound_ports_to_ignore=port_ranges(inbound, A_SKIP_IN, source),
        outbound_ports_to_ignore=port_ranges(outbound, A_SKIP_OUT, source),
        subnets_to_ignore=cidrs(str(ann.get(A_SKIP_SUBNETS) or "").split(","), A_SKIP_SUBNETS, source))
    notes.append("no linkerd-init container (linkerd-cni): settings from the config.linkerd.io annotations "
                 "over the chart's defaults")
    return config, "annotations (linkerd-cni)", tuple(notes)


def setup(config: LinkerdConfig, *, basis: str = "proxy-init flags", notes: Iterable[str] = ()) -> MeshSetup:
    proxy = proxy_behavior(config)
    ports = [p for r in config.outbound_ports_to_ignore for p in range(r.lo, r.hi + 1)]
    return MeshSetup("linkerd", config.version, generate(config), proxy, basis, tuple(notes),
                     exempt_uids=(proxy.uid,) if config.proxy_uid > 0 else (),
                     exempt_gids=(config.proxy_gid,) if config.proxy_gid else (), exempt_ports=ports)
