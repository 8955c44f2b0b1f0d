"""istio-iptables' command line and environment → ``CaptureConfig``.

Two vocabularies, chosen by the version:

* the Go ``istio-iptables`` (1.4+): short and long flags, each bound to an environment variable
  (``--istio-inbound-ports`` ↔ ``ISTIO_INBOUND_PORTS``); an explicit flag beats the environment,
  which beats the default. Env-only settings: ``ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR``,
  ``ISTIO_OUTBOUND_OWNER_GROUPS[_EXCLUDE]``, and the aliases ``ISTIO_META_DNS_CAPTURE`` (redirect
  DNS), ``INVALID_DROP``, ``ISTIO_DUAL_STACK``. ``ENABLE_INBOUND_IPV6`` stands in for what the tool
  derives from the pod's address. Missing ``-u`` is 1337 and missing ``-g`` is the uid list.
* ``istio-iptables.sh`` (1.0–1.3): getopts letters per version (1.0 ``p u g m b d i x``; 1.1 adds
  ``k``; 1.2 ``o``; 1.3 ``z``) with the script's environment fallbacks (``ENVOY_PORT``,
  ``INBOUND_CAPTURE_PORT``, ``DISABLE_REDIRECTION_ON_LOCAL_LOOPBACK``, …). Missing ``-u`` is
  ``1337,0`` (the proxy user, then root) and missing ``-g`` the final uid list.

The command line is cut into flags the way each era's flag library cut it, so an argv that
misbehaved for a user misbehaves here the same way:

* the Go tool (cobra/pflag, 1.4+): a flag that takes a value takes the next word even when it
  starts with ``-`` (``-x -b '*'`` sets ``-x`` to ``-b``); words that are not flags are ignored
  (the command has no positional arguments), parsing goes on after them; ``--`` ends the flags.
  The tool then ignores, with a message, each ``-i``/``-x`` item that is not a CIDR (``Ignoring
  error for bug compatibility ... invalid CIDR address``; Go's parser wants ``ADDR/LEN``).
* the script (``getopts``, 1.0–1.3): a flag that takes a value also takes the next word; the first
  word that is not a flag ends the options, and everything after it is ignored. A ``-i``/``-x``
  item that is not a CIDR is handed to ``iptables -d``, which refuses it, and the script (errexit)
  stops half way: refused here with that explanation.

Settings that change what istio-iptables does but that meshsolve does not model (``--native-nftables``
writes nftables rules) are refused, not ignored. :func:`read_flags` returns the configuration and
the notes about what was ignored; :func:`parse_flags` only the configuration.

Every value is validated; errors name the flag (or variable) and the value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence

import attrs

import meshsolve.defaults as defaults
from meshsolve.errors import SpecError, UnsupportedError
from meshsolve.istio.config import (
    NATIVE_NFTABLES_SINCE,
    CaptureConfig,
    _field_value,
    minor_of,
    normalise_version,
    split_list,
    validate_value,
)

__all__ = ["FlagSpec", "FlagsRead", "MODERN_FLAGS", "parse_bool", "parse_flags", "read_flags", "script_flags",
           "to_flags"]


@attrs.frozen
class FlagSpec:
    """One option: short letter, long name, env variables (first wins), config field, kind."""

    short: str | None
    long: str | None
    env: tuple[str, ...]
    field: str | None  # None: accepted, no effect on the rules
    kind: str = "value"  # "value" | "bool"

    @property
    def label(self) -> str:
        names = [f"-{self.short}" if self.short else None, f"--{self.long}" if self.long else None]
        shown = " / ".join(n for n in names if n)
        return shown or (self.env[0] if self.env else "?")


def _f(short: str | None, long: str | None, env: str | tuple[str, ...], field: str | None,
       kind: str = "value") -> FlagSpec:
    return FlagSpec(short, long, (env,) if isinstance(env, str) else env, field, kind)


MODERN_FLAGS: tuple[FlagSpec, ...] = (
    _f("p", "envoy-port", (), "proxy_port"),
    _f("z", "inbound-capture-port", "INBOUND_CAPTURE_PORT", "inbound_capture_port"),
    _f("e", "inbound-tunnel-port", "INBOUND_TUNNEL_PORT", "inbound_tunnel_port"),
    _f("u", "proxy-uid", "PROXY_UID", "proxy_uids"),
    _f("g", "proxy-gid", "PROXY_GID", "proxy_gids"),
    _f("m", "istio-inbound-interception-mode", "ISTIO_INBOUND_INTERCEPTION_MODE", "mode"),
    _f("b", "istio-inbound-ports", "ISTIO_INBOUND_PORTS", "inbound_ports"),
    _f("d", "istio-local-exclude-ports", "ISTIO_LOCAL_EXCLUDE_PORTS", "inbound_ports_exclude"),
    _f("c", "istio-exclude-interfaces", "ISTIO_EXCLUDE_INTERFACES", "exclude_interfaces"),
    _f("i", "istio-service-cidr", "ISTIO_SERVICE_CIDR", "outbound_cidrs"),
    _f("x", "istio-service-exclude-cidr", "ISTIO_SERVICE_EXCLUDE_CIDR", "outbound_cidrs_exclude"),
    _f("q", "istio-outbound-ports", "ISTIO_OUTBOUND_PORTS", "outbound_ports"),
    _f("o", "istio-local-outbound-ports-exclude", "ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE",
       "outbound_ports_exclude"),
    _f("k", "kube-virt-interfaces", "KUBE_VIRT_INTERFACES", "reroute_interfaces"),
    _f("t", "istio-inbound-tproxy-mark", "ISTIO_INBOUND_TPROXY_MARK", "tproxy_mark"),
    _f("r", "istio-inbound-tproxy-route-table", "ISTIO_INBOUND_TPROXY_ROUTE_TABLE", "tproxy_route_table"),
    _f("n", "dry-run", "DRY_RUN", None, "bool"),
    _f(None, "redirect-dns", ("REDIRECT_DNS", "ISTIO_META_DNS_CAPTURE"), "redirect_dns", "bool"),
    _f(None, "capture-all-dns", "CAPTURE_ALL_DNS", "capture_all_dns", "bool"),
    _f(None, "drop-invalid", ("DROP_INVALID", "INVALID_DROP"), "drop_invalid", "bool"),
    _f(None, "dual-stack", ("DUAL_STACK", "ISTIO_DUAL_STACK"), "dual_stack", "bool"),
    _f(None, "iptables-trace-logging", "IPTABLES_TRACE_LOGGING", "trace_logging", "bool"),
    _f(None, None, "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR", "host_ipv4_loopback_cidr"),
    _f(None, None, "ISTIO_OUTBOUND_OWNER_GROUPS", "owner_groups_include"),
    _f(None, None, "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE", "owner_groups_exclude"),
    _f(None, None, "ENABLE_INBOUND_IPV6", "enable_ipv6", "bool"),
    _f(None, "native-nftables", "NATIVE_NFTABLES", "native_nftables", "bool"),
    # accepted, no effect on the rules a pod ends up with
    _f(None, "run-validation", "RUN_VALIDATION", None, "bool"),
    _f(None, "skip-rule-apply", "SKIP_RULE_APPLY", None, "bool"),
    _f(None, "iptables-probe-port", "IPTABLES_PROBE_PORT", None),
    _f(None, "probe-timeout", "PROBE_TIMEOUT", None),
    _f(None, "reconcile", "RECONCILE", None, "bool"),
    _f(None, "force-apply", "FORCE_APPLY", None, "bool"),

    _f(None, "force-iptables-binary", "FORCE_IPTABLES_BINARY", None),
    _f(None, "network-namespace", "NETWORK_NAMESPACE", None),
    _f(None, "cni-mode", "CNI_MODE", None, "bool"),
    _f(None, "log_as_json", (), None, "bool"),
)

# The script's getopts letters per version, with the script's env fallbacks.
_SCRIPT_ALL: dict[str, FlagSpec] = {
    "p": _f("p", None, "ENVOY_PORT", "proxy_port"),
    "z": _f("z", None, "INBOUND_CAPTURE_PORT", "inbound_capture_port"),
    "u": _f("u", None, (), "proxy_uids"),
    "g": _f("g", None, (), "proxy_gids"),
    "m": _f("m", None, "ISTIO_INBOUND_INTERCEPTION_MODE", "mode"),
    "b": _f("b", None, "ISTIO_INBOUND_PORTS", "inbound_ports"),
    "d": _f("d", None, "ISTIO_LOCAL_EXCLUDE_PORTS", "inbound_ports_exclude"),
    "i": _f("i", None, "ISTIO_SERVICE_CIDR", "outbound_cidrs"),
    "x": _f("x", None, "ISTIO_SERVICE_EXCLUDE_CIDR", "outbound_cidrs_exclude"),
    "k": _f("k", None, (), "reroute_interfaces"),
    "o": _f("o", None, "ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE", "outbound_ports_exclude"),
}
_SCRIPT_LETTERS = {0: "pugmbdix", 1: "pugmbdixk", 2: "pugmbdixko", 3: "pugmbdixkoz"}
_SCRIPT_ENV_ONLY: tuple[FlagSpec, ...] = (
    _f(None, None, "ISTIO_INBOUND_TPROXY_MARK", "tproxy_mark"),
    _f(None, None, "ISTIO_INBOUND_TPROXY_ROUTE_TABLE", "tproxy_route_table"),
)
_PROGRAMS = {"istio-iptables", "istio-iptables.sh", "pilot-agent"}


def script_flags(version: str) -> tuple[FlagSpec, ...]:
    """The getopts options of ``istio-iptables.sh`` at ``version`` (1.0–1.3)."""
    m = minor_of(normalise_version(version))
    return tuple(_SCRIPT_ALL[c] for c in _SCRIPT_LETTERS[min(m, 3)])


_TRUE = {"1", "t", "true"}
_FALSE = {"0", "f", "false", ""}


def _bool(text: str, *, what: str, source: str) -> bool:
    """Go's strconv.ParseBool (empty = false)."""
    t = text.strip().lower()
    if t in _TRUE:
        return True
    if t in _FALSE:
        return False
    raise SpecError(f"{what}: {text!r} is not a boolean (true/false)", source=source)


parse_bool = _bool


@attrs.frozen
class FlagsRead:
    """A configuration and what the tool ignored or said while reading the command line."""

    config: CaptureConfig
    notes: tuple[str, ...] = ()


def parse_flags(argv: Sequence[str], env: Mapping[str, str] | None = None, *, version: str = "current",
                source: str = "<istio-iptables flags>") -> CaptureConfig:
    """Build the configuration istio-iptables (or the shell script) of ``version`` would use.

    ``argv`` may start with the program name (``istio-iptables``, ``pilot-agent istio-iptables``).
    ``env`` defaults to no environment (pass ``os.environ`` explicitly to use the real one).
    """
    return read_flags(argv, env, version=version, source=source).config


_MAX_ARG_STRLEN = 131072  # Linux refuses to exec a program with a longer single argument
_GO_CIDR = re.compile(r"^[0-9A-Fa-f.:]+/[0-9]{1,3}$")
_UNMODELLED = {"native_nftables": "--native-nftables: istio-iptables writes nftables rules instead of "
                                  "iptables rules, which meshsolve does not model yet"}


def read_flags(argv: Sequence[str], env: Mapping[str, str] | None = None, *, version: str = "current",
               source: str = "<istio-iptables flags>") -> FlagsRead:
    """:func:`parse_flags` with the notes of what the era's flag library or the tool ignored."""
    version = normalise_version(version)
    m = minor_of(version)
    env = dict(env or {})
    args = list(argv)
    while args and os.path.basename(args[0]) in _PROGRAMS:
        args.pop(0)
    script = m <= 3
    specs = script_flags(version) if script else MODERN_FLAGS
    by_short = {s.short: s for s in specs if s.short}
    by_long = {s.long.replace("_", "-"): s for s in specs if s.long}

    for tok in args:
        if len(tok) > _MAX_ARG_STRLEN:
            raise SpecError(f"an argument of {len(tok)} characters: longer than one argument of a program can "
                            f"be ({_MAX_ARG_STRLEN}, Linux's MAX_ARG_STRLEN)", source=source)
    given: dict[str, tuple[str, str]] = {}  # field -> (text, label)
    notes: list[str] = []
    ignored: list[str] = []
    i = 0
    while i < len(args):
        tok = args[i]
        i += 1
        validate_value(tok, what=f"argument {tok!r}", source=source)
        if not script and tok == "--":
            ignored.extend(args[i:])
            break
        if script and (tok == "--" or not tok.startswith("-") or tok == "-"):
            if tok == "clean" and i == 1:
                raise SpecError("'clean' only removes Istio's chains; there is nothing to generate",
                                source=source)
            remaining = args[i:]
            if remaining or tok != "--":
                notes.append(f"istio-iptables.sh's getopts stops at {tok!r}: the arguments after it "
                             f"({' '.join(remaining) or 'none'}) were ignored")
            break
        if tok.startswith("--") and len(tok) > 2 and not script:
            name, eq, value = tok[2:].partition("=")
            key = name.replace("_", "-")
            spec = by_long.get(key)
            if spec is None:
                if key.startswith("log-"):
                    if not eq and i < len(args) and not args[i].startswith("-"):
                        i += 1
                    continue
                if key == "cleanup-only":
                    raise SpecError("--cleanup-only removes Istio's rules; there is nothing to generate",
                                    source=source)
                raise SpecError(f"unknown flag --{name} for istio-iptables {version}", source=source)
            if spec.field is None and key.replace("-", "_") in _UNMODELLED \
                    and _bool(value if eq else "true", what=f"--{name}", source=source):
                raise UnsupportedError(_UNMODELLED[key.replace("-", "_")])
            if spec.kind == "bool":
                value = value if eq else "true"
            elif not eq:
                if i >= len(args):
                    raise SpecError(f"flag --{name} needs a value", source=source)
                value = args[i]
                i += 1
            _store(given, spec, value, f"--{name}")
        elif script and tok.startswith("--") and len(tok) > 2:
            raise SpecError(f"{tok}: Istio {version}'s istio-iptables.sh has no long options", source=source)
        elif tok.startswith("-") and len(tok) >= 2 and tok != "--":
            letter, rest = tok[1], tok[2:]
            spec = by_short.get(letter)
            if spec is None:
                era = f"Istio {version}'s istio-iptables.sh" if script else f"istio-iptables {version}"
                if script and letter == "t":
                    raise SpecError(f"-t is the unit-test switch of {era}; it installs no rules",
                                    source=source)
                if letter == "h":
                    raise SpecError(f"-h asks {era} for its help text; it installs no rules", source=source)
                raise SpecError(f"unknown flag -{letter} for {era}", source=source)
            if spec.kind == "bool":
                value = rest[1:] if rest.startswith("=") else "true"
            elif rest:
                value = rest[1:] if rest.startswith("=") else rest
            else:
                if i >= len(args):
                    raise SpecError(f"flag -{letter} needs a value", source=source)
                value = args[i]
                i += 1
            _store(given, spec, value, f"-{letter}")
        else:
            ignored.append(tok)  # cobra: a command without positional arguments ignores them
    if ignored:
        notes.append(f"istio-iptables ignores what is not a flag: {' '.join(repr(t) for t in ignored)}")

    # environment fallbacks
    all_specs = specs + (_SCRIPT_ENV_ONLY if script else ())
    for spec in all_specs:
        if spec.field is None or spec.field in given:
            continue
        for name in spec.env:
            if name in env and (env[name] != "" or spec.kind == "bool"):
                _store(given, spec, env[name], f"${name}")
                break

    kwargs: dict[str, object] = {"version": version}
    for fld, (text, label) in given.items():
        spec = next(s for s in all_specs if s.field == fld)
        if spec.kind == "bool":
            kwargs[fld] = _bool(text, what=label, source=source)
            continue
        if fld in ("outbound_cidrs", "outbound_cidrs_exclude") and text.strip() != "*":
            text = _cidr_items(text, label, script=script, version=version, notes=notes, source=source)
        kwargs[fld] = _field_value(fld, text, what=label, source=source)

    if script:
        if "proxy_uids" not in kwargs:
            kwargs["proxy_uids"] = (str(defaults.PROXY_UID), "0")
        if "inbound_capture_port" not in kwargs and m <= 2 and env.get("INBOUND_CAPTURE_PORT"):
            kwargs["inbound_capture_port"] = _field_value(
                "inbound_capture_port", env["INBOUND_CAPTURE_PORT"], what="$INBOUND_CAPTURE_PORT",
                source=source)
        if env.get("ENABLE_INBOUND_IPV6"):
            kwargs["enable_ipv6"] = True
        if m >= 1 and env.get("DISABLE_REDIRECTION_ON_LOCAL_LOOPBACK"):
            validate_value(env["DISABLE_REDIRECTION_ON_LOCAL_LOOPBACK"],
                           what="$DISABLE_REDIRECTION_ON_LOCAL_LOOPBACK", source=source)
            kwargs["disable_redirection_on_local_loopback"] = True
    else:
        if "proxy_uids" not in kwargs or kwargs["proxy_uids"] == ():
            kwargs["proxy_uids"] = (str(defaults.PROXY_UID),)
        if m == 4 and env.get("DISABLE_REDIRECTION_ON_LOCAL_LOOPBACK"):  # 1.4's Go port still read it
            kwargs["disable_redirection_on_local_loopback"] = True
    if "proxy_gids" not in kwargs or kwargs["proxy_gids"] == ():
        kwargs["proxy_gids"] = kwargs["proxy_uids"]
    if kwargs.get("native_nftables") and m < NATIVE_NFTABLES_SINCE:
        raise SpecError(f"--native-nftables: Istio {version}'s istio-iptables has no nftables backend (it writes "
                        f"nftables tables from 1.{NATIVE_NFTABLES_SINCE})", source=source)
    return FlagsRead(CaptureConfig(**kwargs), tuple(notes))  # type: ignore[arg-type]


def _cidr_items(text: str, label: str, *, script: bool, version: str, notes: list[str], source: str) -> str:
    """The ``-i``/``-x`` items the tool uses: the Go tool skips what Go's CIDR parser refuses (with
    a message); the script hands every item to ``iptables -d``, which refuses a non-address."""
    kept: list[str] = []
    validate_value(text, what=label, source=source)  # shell metacharacters are refused, never ignored
    for item in split_list(text):
        if script and not item.startswith("-"):
            kept.append(item)
            continue
        if _GO_CIDR.match(item):
            try:
                _field_value("outbound_cidrs_exclude", item, what=label, source=source)
                kept.append(item)
                continue
            except SpecError:
                pass
        if script:
            raise SpecError(f"{label}: istio-iptables.sh of Istio {version} would run `iptables ... -d {item} "
                            "-j RETURN`, which iptables refuses, and stop there (errexit) with its rules half "
                            "installed", source=source)
        notes.append(f"{label}: istio-iptables ignores {item!r} (\"Ignoring error for bug compatibility: "
                     f"invalid CIDR address: {item}\")")
    return ",".join(kept)


def _store(given: dict[str, tuple[str, str]], spec: FlagSpec, value: str, label: str) -> None:
    if spec.field is not None:
        given[spec.field] = (value, label)


def _csv(values: object) -> str:
    if values == "*":
        return "*"
    assert isinstance(values, tuple)
    return ",".join(str(v) for v in values)


def to_flags(config: CaptureConfig) -> tuple[tuple[str, ...], dict[str, str]]:
    """The istio-iptables argv and environment that reproduce ``config`` (the inverse of
    ``parse_flags`` for the config's version). DNS servers have no flag (the tool reads them from
    the pod's resolv.conf) and are not expressed."""
    c = config
    m = c.minor
    argv: list[str] = ["-p", str(c.proxy_port)]
    env: dict[str, str] = {}
    if c.inbound_capture_port is not None:
        if m <= 2:
            env["INBOUND_CAPTURE_PORT"] = str(c.inbound_capture_port)
        else:
            argv += ["-z", str(c.inbound_capture_port)]
    argv += ["-u", _csv(c.proxy_uids), "-g", _csv(c.proxy_gids), "-m", c.mode,
             "-b", _csv(c.inbound_ports), "-d", _csv(c.inbound_ports_exclude),
             "-i", _csv(c.outbound_cidrs), "-x", _csv(c.outbound_cidrs_exclude)]
    if c.reroute_interfaces:
        argv += ["-k", _csv(c.reroute_interfaces)]
    if c.outbound_ports_exclude:
        argv += ["-o", _csv(c.outbound_ports_exclude)]
    if m <= 3:
        if c.tproxy_mark != 1337:
            env["ISTIO_INBOUND_TPROXY_MARK"] = str(c.tproxy_mark)
        if c.tproxy_route_table != 133:
            env["ISTIO_INBOUND_TPROXY_ROUTE_TABLE"] = str(c.tproxy_route_table)
        if c.disable_redirection_on_local_loopback:
            env["DISABLE_REDIRECTION_ON_LOCAL_LOOPBACK"] = "true"
        if c.enable_ipv6:
            env["ENABLE_INBOUND_IPV6"] = "true"
        return tuple(argv), env
    argv += ["-e", str(c.inbound_tunnel_port), "-t", str(c.tproxy_mark), "-r", str(c.tproxy_route_table)]
    if c.outbound_ports:
        argv += ["-q", _csv(c.outbound_ports)]
    if c.exclude_interfaces:
        argv += ["-c", _csv(c.exclude_interfaces)]
    for flag, on in (("--redirect-dns", c.redirect_dns), ("--capture-all-dns", c.capture_all_dns),
                     ("--drop-invalid", c.drop_invalid), ("--dual-stack", c.dual_stack),
                     ("--iptables-trace-logging", c.trace_logging)):
        if on:
            argv.append(flag)
    if c.enable_ipv6:
        env["ENABLE_INBOUND_IPV6"] = "true"
    if str(c.host_ipv4_loopback_cidr) != "127.0.0.1/32":
        env["ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR"] = str(c.host_ipv4_loopback_cidr)
    if c.owner_groups_include != "*":
        env["ISTIO_OUTBOUND_OWNER_GROUPS"] = _csv(c.owner_groups_include)
    if c.owner_groups_exclude:
        env["ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE"] = _csv(c.owner_groups_exclude)
    if c.disable_redirection_on_local_loopback:
        env["DISABLE_REDIRECTION_ON_LOCAL_LOOPBACK"] = "true"
    return tuple(argv), env
