"""The capture configuration of one pod: what istio-iptables (or the 1.0–1.3 shell script) is told.

``CaptureConfig`` is a frozen value holding every setting that changes the rules, already validated
and normalised (ports are ints, CIDRs are networks, lists are tuples). It knows nothing about where
the values came from: ``flags.py`` (argv + environment), ``pod.py`` (a Kubernetes manifest) and
``from_go_fields`` (Istio's own Go field names, as in the golden test manifest) all build one.

``version`` selects the era of the generator: ``"1.0"`` … ``"1.30"`` or ``"current"`` (Istio master
as of the reference snapshot). Patch levels are dropped (``"1.10.3"`` → ``"1.10"``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal, TypeAlias

import attrs

import meshsolve.defaults as defaults
from meshsolve.errors import SpecError
from meshsolve.model.net import IPAddress, IPNetwork, to_address, to_network

__all__ = [
    "CURRENT",
    "KNOWN_MINORS",
    "WILDCARD",
    "CaptureConfig",
    "config_to_dict",
    "Mode",
    "from_go_fields",
    "minor_of",
    "normalise_version",
    "split_list",
    "validate_cidrs",
    "validate_interfaces",
    "validate_names",
    "validate_ports",
    "validate_value",
]

CURRENT = "current"
WILDCARD: Literal["*"] = "*"
# Istio minors with a known rule era (1.30 is the newest tag in the reference snapshot).
KNOWN_MINORS = range(0, 31)
# Sort key for "current": after every numbered release.
_CURRENT_MINOR = 1000

Mode: TypeAlias = Literal["REDIRECT", "TPROXY", "NONE"]
PortList: TypeAlias = tuple[int, ...]
PortsOrAll: TypeAlias = Literal["*"] | tuple[int, ...]
CidrsOrAll: TypeAlias = Literal["*"] | tuple[IPNetwork, ...]
GroupsOrAll: TypeAlias = Literal["*"] | tuple[str, ...]

_VERSION_RE = re.compile(r"^v?1\.(\d{1,2})(?:\.\d+)?(?:-[0-9A-Za-z.-]+)?$")
_CURRENT_ALIASES = {"current", "head", "master", "latest"}


def normalise_version(value: str, *, what: str = "version") -> str:
    """``"1.10.3"`` → ``"1.10"``; ``"master"``/``"head"``/``"latest"`` → ``"current"``."""
    text = str(value).strip().lower()
    if text in _CURRENT_ALIASES:
        return CURRENT
    m = _VERSION_RE.match(text)
    if not m or int(m.group(1)) not in KNOWN_MINORS:
        raise SpecError(f"{what}: unknown Istio version {value!r} (expected 1.0 … 1.30 or 'current')",
                        source=what)
    return f"1.{int(m.group(1))}"


#: The first Istio minor whose istio-iptables has ``--native-nftables`` for sidecars (1.27.0).
NATIVE_NFTABLES_SINCE = 27


def minor_of(version: str) -> int:
    """The Istio minor number of a normalised version (``"current"`` sorts after all releases)."""
    return _CURRENT_MINOR if version == CURRENT else int(version.split(".")[1])


# ---------------------------------------------------------------------------------------------
# Validation helpers shared by flags.py and pod.py. Every error names the setting and the value.

_SHELL_META = re.compile(r"[;&|`$<>\\'\"\n\r\t(){}]")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.:@+-]+$")


def validate_value(value: str, *, what: str, source: str = "<input>", lineno: int | None = None) -> str:
    """Reject shell metacharacters (``;``, ``$(``, backticks, quotes, newlines …) in a setting."""
    if _SHELL_META.search(value):
        bad = _SHELL_META.search(value)
        assert bad is not None
        raise SpecError(f"{what}: value {value!r} contains the shell metacharacter {bad.group(0)!r}",
                        source=source, lineno=lineno)
    return value


def split_list(value: str) -> tuple[str, ...]:
    """Split a comma-separated list the way istio-iptables does: trim items, drop empty ones."""
    return tuple(item.strip() for item in value.split(",") if item.strip())


def validate_ports(value: str, *, what: str, wildcard: bool = False, source: str = "<input>",
                   lineno: int | None = None) -> PortsOrAll:
    """``"80,443"`` → ``(80, 443)``; ``"*"`` (if allowed) → ``"*"``; ``""`` → ``()``."""
    validate_value(value, what=what, source=source, lineno=lineno)
    text = value.strip()
    if wildcard and text == WILDCARD:
        return WILDCARD
    out: list[int] = []
    for item in split_list(text):
        # ASCII digits only, at most 5: str.isdigit() accepts '²' and int() refuses 5000 digits
        if not re.fullmatch(r"[0-9]{1,5}", item) or not 0 <= int(item) <= 65535:
            raise SpecError(f"{what}: {item!r} in {value!r} is not a port number 0..65535",
                            source=source, lineno=lineno)
        out.append(int(item))
    return tuple(out)


def validate_cidrs(value: str, *, what: str, wildcard: bool = False, source: str = "<input>",
                   lineno: int | None = None) -> CidrsOrAll:
    """``"10.0.0.0/8,2001:db8::/32"`` → networks; ``"*"`` (if allowed) → ``"*"``; ``""`` → ``()``."""
    validate_value(value, what=what, source=source, lineno=lineno)
    text = value.strip()
    if text == WILDCARD:
        if wildcard:
            return WILDCARD
        raise SpecError(f"{what}: '*' is not allowed here", source=source, lineno=lineno)
    out: list[IPNetwork] = []
    for item in split_list(text):
        try:
            out.append(to_network(item))
        except ValueError:
            raise SpecError(f"{what}: {item!r} in {value!r} is not an IP address or CIDR",
                            source=source, lineno=lineno) from None
    return tuple(out)


def validate_names(value: str, *, what: str, source: str = "<input>",
                   lineno: int | None = None) -> tuple[str, ...]:
    """Interface, user or group names/ids: ``"eth1,eth2"`` → ``("eth1", "eth2")``."""
    validate_value(value, what=what, source=source, lineno=lineno)
    items = split_list(value)
    for item in items:
        if not _NAME_RE.match(item):
            raise SpecError(f"{what}: {item!r} in {value!r} is not a valid name",
                            source=source, lineno=lineno)
    return items


def validate_interfaces(value: str, *, what: str, source: str = "<input>",
                        lineno: int | None = None) -> tuple[str, ...]:
    """Interface names: ``"eth1,net1"`` → ``("eth1", "net1")``; at most 15 characters each."""
    names = validate_names(value, what=what, source=source, lineno=lineno)
    for name in names:
        if len(name) > 15:
            raise SpecError(f"{what}: {name!r} is not a Linux interface name (at most 15 characters)",
                            source=source, lineno=lineno)
    return names


# ---------------------------------------------------------------------------------------------
# Converters


def _ports(value: Iterable[int | str]) -> tuple[int, ...]:
    if isinstance(value, str):
        got = validate_ports(value, what="ports")
        assert got != WILDCARD
        return tuple(got)
    out = []
    for v in value:
        p = int(v)
        if not 0 <= p <= 65535:
            raise SpecError(f"port out of range 0..65535: {v!r}")
        out.append(p)
    return tuple(out)


def _ports_or_all(value: Iterable[int | str] | str) -> PortsOrAll:
    if isinstance(value, str):
        return validate_ports(value, what="ports", wildcard=True)
    return _ports(value)


def _cidrs(value: Iterable[str | IPAddress | IPNetwork] | str) -> tuple[IPNetwork, ...]:
    if isinstance(value, str):
        got = validate_cidrs(value, what="CIDRs")
        assert got != WILDCARD
        return tuple(got)
    return tuple(to_network(v) for v in value)


def _cidrs_or_all(value: Iterable[str | IPAddress | IPNetwork] | str) -> CidrsOrAll:
    if isinstance(value, str):
        return validate_cidrs(value, what="CIDRs", wildcard=True)
    return _cidrs(value)


def _names(value: Iterable[str] | str) -> tuple[str, ...]:
    if isinstance(value, str):
        return validate_names(value, what="names")
    return tuple(str(v) for v in value)


def _groups_or_all(value: Iterable[str] | str) -> GroupsOrAll:
    if isinstance(value, str) and value.strip() == WILDCARD:
        return WILDCARD
    return _names(value)


def _addresses(value: Iterable[str | IPAddress]) -> tuple[IPAddress, ...]:
    return tuple(to_address(v) for v in value)


def _mode(value: str) -> Mode:
    text = str(value).strip().upper()
    if text == "":
        return "REDIRECT"  # istio-iptables treats an empty mode as REDIRECT
    if text not in ("REDIRECT", "TPROXY", "NONE"):
        raise SpecError(f"interception mode {value!r} is not REDIRECT, TPROXY or NONE")
    return text  # type: ignore[return-value]


def _version(value: str) -> str:
    return normalise_version(value)


def _port(value: int | str) -> int:
    got = _ports([value])
    return got[0]


def _opt_port(value: int | str | None) -> int | None:
    return None if value is None else _port(value)


@attrs.frozen
class CaptureConfig:
    """Every istio-iptables setting that shapes the rules (field ↔ flag in ``flags.py``).

    ``inbound_capture_port`` ``None`` means "the era's default": 15006 from 1.5 on; in the script era
    ``INBOUND_CAPTURE_PORT`` or the proxy port (1.0–1.2), 15006 only with ``-b '*'`` (1.3–1.5).
    ``enable_ipv6`` is what istio-iptables derives from the pod's address (an IPv6 pod); in the
    script era it is ``ENABLE_INBOUND_IPV6``. ``dns_servers_v4/v6`` are what the real tool reads
    from the pod's ``/etc/resolv.conf``. ``dual_stack`` and ``trace_logging`` do not change the rules
    of the modelled eras; they are kept so a configuration round-trips. ``native_nftables``
    (``--native-nftables``, Istio 1.27+) writes the same capture as nftables tables instead
    (``meshsolve.istio.nft``).
    """

    version: str = attrs.field(default=CURRENT, converter=_version)
    proxy_port: int = attrs.field(default=defaults.PROXY_OUTBOUND_PORT, converter=_port)
    inbound_capture_port: int | None = attrs.field(default=None, converter=_opt_port)
    inbound_tunnel_port: int = attrs.field(default=15008, converter=_port)
    proxy_uids: tuple[str, ...] = attrs.field(default=(str(defaults.PROXY_UID),), converter=_names)
    proxy_gids: tuple[str, ...] = attrs.field(default=(str(defaults.PROXY_GID),), converter=_names)
    mode: Mode = attrs.field(default="REDIRECT", converter=_mode)
    inbound_ports: PortsOrAll = attrs.field(default=(), converter=_ports_or_all)
    inbound_ports_exclude: tuple[int, ...] = attrs.field(default=(), converter=_ports)
    outbound_cidrs: CidrsOrAll = attrs.field(default=(), converter=_cidrs_or_all)
    outbound_cidrs_exclude: tuple[IPNetwork, ...] = attrs.field(default=(), converter=_cidrs)
    outbound_ports: tuple[int, ...] = attrs.field(default=(), converter=_ports)
    outbound_ports_exclude: tuple[int, ...] = attrs.field(default=(), converter=_ports)
    reroute_interfaces: tuple[str, ...] = attrs.field(default=(), converter=_names)
    exclude_interfaces: tuple[str, ...] = attrs.field(default=(), converter=_names)
    tproxy_mark: int = attrs.field(default=1337, converter=int)
    tproxy_route_table: int = attrs.field(default=133, converter=int)
    redirect_dns: bool = False
    capture_all_dns: bool = False
    dns_servers_v4: tuple[IPAddress, ...] = attrs.field(default=(), converter=_addresses)
    dns_servers_v6: tuple[IPAddress, ...] = attrs.field(default=(), converter=_addresses)
    drop_invalid: bool = False
    dual_stack: bool = False
    enable_ipv6: bool = False
    owner_groups_include: GroupsOrAll = attrs.field(default=WILDCARD, converter=_groups_or_all)
    owner_groups_exclude: tuple[str, ...] = attrs.field(default=(), converter=_names)
    host_ipv4_loopback_cidr: IPNetwork = attrs.field(default=to_network("127.0.0.1/32"), converter=to_network)
    trace_logging: bool = False
    disable_redirection_on_local_loopback: bool = False
    native_nftables: bool = False

    @dns_servers_v4.validator
    def _v4_only(self, _a: attrs.Attribute[Any], value: tuple[IPAddress, ...]) -> None:
        if any(a.version != 4 for a in value):
            raise SpecError(f"dns_servers_v4 holds a non-IPv4 address: {value}")

    @dns_servers_v6.validator
    def _v6_only(self, _a: attrs.Attribute[Any], value: tuple[IPAddress, ...]) -> None:
        if any(a.version != 6 for a in value):
            raise SpecError(f"dns_servers_v6 holds a non-IPv6 address: {value}")

    @tproxy_mark.validator
    def _mark(self, _a: attrs.Attribute[Any], value: int) -> None:
        if not 0 < value <= 0xFFFFFFFF:
            raise SpecError(f"TPROXY mark must be 1..0xffffffff: {value}")

    @tproxy_route_table.validator
    def _table(self, _a: attrs.Attribute[Any], value: int) -> None:
        if not 0 < value < 0xFFFFFFFF:
            raise SpecError(f"TPROXY route table must be 1..4294967294: {value}")

    @reroute_interfaces.validator
    @exclude_interfaces.validator
    def _ifnames(self, a: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
        for name in value:
            if len(name) > 15 or name in (".", "..") or "/" in name:
                raise SpecError(f"{a.name}: {name!r} is not a Linux interface name (at most 15 characters)")

    @host_ipv4_loopback_cidr.validator
    def _lb(self, _a: attrs.Attribute[Any], value: IPNetwork) -> None:
        if value.version != 4:
            raise SpecError(f"host IPv4 loopback CIDR must be IPv4: {value}")

    @property
    def minor(self) -> int:
        """The Istio minor number (``current`` sorts after every release)."""
        return minor_of(self.version)

    @property
    def inbound_port_list(self) -> tuple[int, ...]:
        """The explicit inbound ports (empty for ``*`` and for no inbound capture)."""
        return () if self.inbound_ports == WILDCARD else tuple(self.inbound_ports)

    @property
    def script_era(self) -> bool:
        """True for the rules of ``istio-iptables.sh`` (1.0–1.3; 1.4's Go port emits the same)."""
        return self.minor <= 4

    def effective_inbound_capture_port(self) -> int:
        """The port ``ISTIO_IN_REDIRECT`` / ``TPROXY`` sends inbound connections to in this era."""
        m = self.minor
        if m <= 2:
            return self.inbound_capture_port if self.inbound_capture_port is not None else self.proxy_port
        capture = self.inbound_capture_port if self.inbound_capture_port is not None else defaults.PROXY_INBOUND_PORT
        if m <= 5 and self.inbound_ports != WILDCARD:
            return self.proxy_port  # 1.3–1.5: 15006 only with -b '*'
        return capture

    def dns_enabled(self) -> bool:
        """istio-iptables' DNS condition: redirect on and some server known (or capture all)."""
        return self.redirect_dns and (
            self.capture_all_dns or bool(self.dns_servers_v4) or bool(self.dns_servers_v6))

    def evolve(self, **changes: Any) -> CaptureConfig:
        return attrs.evolve(self, **changes)


# ---------------------------------------------------------------------------------------------
# Istio's Go field names (tools/common/config/config.go), as used by the golden manifest.

_GO_FIELDS: dict[str, str] = {
    "ProxyPort": "proxy_port",
    "InboundCapturePort": "inbound_capture_port",
    "InboundTunnelPort": "inbound_tunnel_port",
    "ProxyUID": "proxy_uids",
    "ProxyGID": "proxy_gids",
    "InboundInterceptionMode": "mode",
    "InboundPortsInclude": "inbound_ports",
    "InboundPortsExclude": "inbound_ports_exclude",
    "OutboundIPRangesInclude": "outbound_cidrs",
    "OutboundIPRangesExclude": "outbound_cidrs_exclude",
    "OutboundPortsInclude": "outbound_ports",
    "OutboundPortsExclude": "outbound_ports_exclude",
    "RerouteVirtualInterfaces": "reroute_interfaces",
    "KubeVirtInterfaces": "reroute_interfaces",
    "ExcludeInterfaces": "exclude_interfaces",
    "InboundTProxyMark": "tproxy_mark",
    "InboundTProxyRouteTable": "tproxy_route_table",
    "RedirectDNS": "redirect_dns",
    "CaptureAllDNS": "capture_all_dns",
    "DNSServersV4": "dns_servers_v4",
    "DNSServersV6": "dns_servers_v6",
    "DropInvalid": "drop_invalid",
    "DualStack": "dual_stack",
    "EnableIPv6": "enable_ipv6",
    "EnableInboundIPv6": "enable_ipv6",
    "OwnerGroupsInclude": "owner_groups_include",
    "OwnerGroupsExclude": "owner_groups_exclude",
    "HostIPv4LoopbackCidr": "host_ipv4_loopback_cidr",
    "TraceLogging": "trace_logging",
    "NativeNftables": "native_nftables",
}
# Fields that do not change the rules.
_GO_IGNORED = {"DryRun", "IptablesProbePort", "ProbeTimeout", "SkipRuleApply", "RunValidation",
               "RestoreFormat", "Reconcile", "CleanupOnly", "ForceApply", "NetworkNamespace", "CNIMode",
               "ForceIptablesBinary"}


def from_go_fields(fields: Mapping[str, Any], *, version: str = CURRENT,
                   source: str = "<go-config>") -> CaptureConfig:
    """Build a configuration from istio-iptables' Go field names (``ProxyUID: "3,4"``, …).

    Missing fields take istio-iptables' zero values (``-b ""``, ``-i ""``, REDIRECT), not the
    injector's defaults, exactly as the Go test harness does; ``ProxyGID`` empty means "= ProxyUID".
    """
    kwargs: dict[str, Any] = {"version": version}
    for key, value in fields.items():
        if key in _GO_IGNORED:
            continue
        name = _GO_FIELDS.get(key)
        if name is None:
            raise SpecError(f"unknown istio-iptables config field {key!r}", source=source)
        if isinstance(value, list):
            value = tuple(str(v) for v in value)
        elif isinstance(value, bool):
            pass
        elif value is None:
            continue
        else:
            value = str(value)
        try:
            kwargs[name] = _field_value(name, value, what=key, source=source)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, SpecError):
                raise
            raise SpecError(f"{key}: invalid value {value!r}: {exc}", source=source) from None
    if "proxy_uids" in kwargs and "proxy_gids" not in kwargs:
        kwargs["proxy_gids"] = kwargs["proxy_uids"]
    if kwargs.get("proxy_gids") == ():
        kwargs["proxy_gids"] = kwargs.get("proxy_uids", (str(defaults.PROXY_UID),))
    return CaptureConfig(**kwargs)


def _field_value(name: str, value: Any, *, what: str, source: str) -> Any:
    """Validate one textual value for a ``CaptureConfig`` field, naming ``what`` on error."""
    if isinstance(value, bool | tuple):
        return value
    text = str(value)
    if name in ("inbound_ports",):
        return validate_ports(text, what=what, wildcard=True, source=source)
    if name in ("inbound_ports_exclude", "outbound_ports", "outbound_ports_exclude"):
        return validate_ports(text, what=what, source=source)
    if name in ("proxy_port", "inbound_capture_port", "inbound_tunnel_port"):
        got = validate_ports(text, what=what, source=source)
        if len(got) != 1:
            raise SpecError(f"{what}: {text!r} is not a single port number", source=source)
        return got[0]
    if name == "outbound_cidrs":
        return validate_cidrs(text, what=what, wildcard=True, source=source)
    if name == "outbound_cidrs_exclude":
        return validate_cidrs(text, what=what, source=source)
    if name in ("reroute_interfaces", "exclude_interfaces"):
        return validate_interfaces(text, what=what, source=source)
    if name in ("proxy_uids", "proxy_gids", "owner_groups_exclude"):
        return validate_names(text, what=what, source=source)
    if name == "owner_groups_include":
        validate_value(text, what=what, source=source)
        return WILDCARD if text.strip() in ("", WILDCARD) else validate_names(text, what=what, source=source)
    if name in ("tproxy_mark", "tproxy_route_table"):
        validate_value(text, what=what, source=source)
        if not re.fullmatch(r"[0-9]{1,10}", text.strip()):  # ASCII digits; int() refuses 5000 digits
            raise SpecError(f"{what}: {text!r} is not a number", source=source)
        return int(text)
    if name == "mode":
        validate_value(text, what=what, source=source)
        t = text.strip().upper()
        if t not in ("", "REDIRECT", "TPROXY"):
            raise SpecError(f"{what}: interception mode {text!r} is not REDIRECT or TPROXY", source=source)
        return t or "REDIRECT"
    if name == "host_ipv4_loopback_cidr":
        nets = validate_cidrs(text, what=what, source=source)
        if len(nets) != 1 or to_network(nets[0]).version != 4:
            raise SpecError(f"{what}: {text!r} is not one IPv4 CIDR", source=source)
        return text.strip()
    if name in ("dns_servers_v4", "dns_servers_v6"):
        return tuple(split_list(text))
    return text


def config_to_dict(config: CaptureConfig) -> dict[str, Any]:
    """The configuration as plain JSON-able data (addresses and networks as strings)."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, str | int | bool) or value is None:
            return value
        return str(value)

    return {f.name: plain(getattr(config, f.name)) for f in attrs.fields(CaptureConfig)}
