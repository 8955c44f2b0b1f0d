"""Targets (``-j NAME options...``) → target values.

The targets listed in ``KNOWN_TARGETS`` get their own class; other target extensions, and any
upper-case name given options, are kept as ``OpaqueTarget``; a bare other name is a jump to a user
chain (decided by the rule parser). Normalisations, so that a kernel round trip gives equal models:

- ``-j MARK``: every form becomes ``SetMark(value, mask)`` (``--set-xmark`` semantics);
- ``-j CONNMARK``: ``--set-mark/--and-mark/--or-mark/--xor-mark`` become ``set-xmark``;
  ``--mask M`` sets both ``nfmask`` and ``ctmask``;
- ``-j TPROXY``: ``--on-ip 0.0.0.0``/``::`` → ``on_ip=None``; ``--tproxy-mark V`` → mask 0xffffffff;
  no mark (printed ``0x0/0x0`` by the kernel) → ``mark=None``;
- ``-j REJECT``: the family default (``icmp-port-unreachable`` / ``icmp6-port-unreachable``) →
  ``reject_with=None``; aliases (``host-prohib``...) → their full names;
- ``-j REDIRECT --to-port`` = ``--to-ports``; ``-j CT --zone 0`` → no zone;
- ``-j LOG --log-level``: names → numbers, the default level 4 → ``None``; flags in the order
  iptables-save prints them.

Refused as iptables refuses them: ports for a NAT target (``REDIRECT``/``MASQUERADE --to-ports``,
``DNAT``/``SNAT`` ``ADDR:PORT``) without ``-p tcp|udp|sctp|dccp|icmp`` before ``-j``.
"""

from __future__ import annotations

import ipaddress
from typing import Literal, cast

from meshsolve.iptables.options import (
    M32,
    Opt,
    parse_int,
    parse_port,
    parse_port_range,
    parse_u32,
    parse_value_mask,
    scan_options,
)
from meshsolve.iptables.tokens import LineError
from meshsolve.model.net import Family, PortRange
from meshsolve.model.rules import (
    Accept,
    ConnmarkTarget,
    CtTarget,
    Dnat,
    Drop,
    Log,
    Masquerade,
    OpaqueTarget,
    Redirect,
    Reject,
    Return,
    SetMark,
    Snat,
    Target,
    Tproxy,
    Trace,
)

_REJECT_V4 = {
    "icmp-net-unreachable": "icmp-net-unreachable", "net-unreach": "icmp-net-unreachable",
    "icmp-host-unreachable": "icmp-host-unreachable", "host-unreach": "icmp-host-unreachable",
    "icmp-proto-unreachable": "icmp-proto-unreachable", "proto-unreach": "icmp-proto-unreachable",
    "icmp-port-unreachable": "icmp-port-unreachable", "port-unreach": "icmp-port-unreachable",
    "icmp-net-prohibited": "icmp-net-prohibited", "net-prohib": "icmp-net-prohibited",
    "icmp-host-prohibited": "icmp-host-prohibited", "host-prohib": "icmp-host-prohibited",
    "icmp-admin-prohibited": "icmp-admin-prohibited", "admin-prohib": "icmp-admin-prohibited",
    "tcp-reset": "tcp-reset", "tcp-rst": "tcp-reset",
}
_REJECT_V6 = {
    "icmp6-no-route": "icmp6-no-route", "no-route": "icmp6-no-route",
    "icmp6-adm-prohibited": "icmp6-adm-prohibited", "adm-prohibited": "icmp6-adm-prohibited",
    "icmp6-addr-unreachable": "icmp6-addr-unreachable", "addr-unreach": "icmp6-addr-unreachable",
    "icmp6-port-unreachable": "icmp6-port-unreachable", "port-unreach": "icmp6-port-unreachable",
    "icmp6-policy-fail": "icmp6-policy-fail", "policy-fail": "icmp6-policy-fail",
    "icmp6-reject-route": "icmp6-reject-route", "reject-route": "icmp6-reject-route",
    "tcp-reset": "tcp-reset", "tcp-rst": "tcp-reset",
}
REJECT_DEFAULT: dict[Family, str] = {"ipv4": "icmp-port-unreachable", "ipv6": "icmp6-port-unreachable"}
_LOG_FLAGS = ("--log-tcp-sequence", "--log-tcp-options", "--log-ip-options", "--log-uid",
              "--log-macdecode")
_LOG_LEVELS = {"emerg": 0, "panic": 0, "alert": 1, "crit": 2, "err": 3, "error": 3, "warning": 4,
               "warn": 4, "notice": 5, "info": 6, "debug": 7}

# Targets meshsolve parses into classes; any other upper-case name with options is opaque.
KNOWN_TARGETS = frozenset(["ACCEPT", "DROP", "RETURN", "REJECT", "REDIRECT", "TPROXY", "MARK",
                          "CONNMARK", "CT", "DNAT", "SNAT", "MASQUERADE", "LOG", "TRACE"])
# Target extensions that exist in iptables (kept opaque even without options, never a jump).
OTHER_TARGET_EXTENSIONS = frozenset([
    "AUDIT", "CHECKSUM", "CLASSIFY", "CLUSTERIP", "CONNSECMARK", "DSCP", "ECN", "HL", "HMARK",
    "IDLETIMER", "LED", "NETMAP", "NFLOG", "NFQUEUE", "NOTRACK", "RATEEST", "SECMARK", "SET",
    "SYNPROXY", "TCPMSS", "TCPOPTSTRIP", "TEE", "TOS", "TTL", "ULOG", "QUEUE", "SNPT", "DNPT",
    "MIRROR", "NOTRACK",
])


# ``-p`` values under which the NAT targets take ports (``--to-ports``, ``ADDR:PORT``): the
# extension checks the protocol given *before* ``-j``, ignoring its negation. Measured on iptables
# 1.8.9: tcp, udp, sctp, dccp and icmp pass (icmp also in ip6tables); no -p, all, udplite and
# ipv6-icmp are refused ("33" is dccp given by number; the model names tcp, udp, icmp and sctp).
NAT_PORT_PROTOCOLS = frozenset(["tcp", "udp", "sctp", "dccp", "33", "icmp"])


def _check_port_protocol(what: str, proto: str | None) -> None:
    if proto not in NAT_PORT_PROTOCOLS:
        given = "no -p" if proto is None else f"-p {proto}"
        raise LineError(f"{what} needs -p tcp, udp, sctp or dccp before -j, got {given} "
                        "(iptables: Need TCP, UDP, SCTP or DCCP with port specification)")


def _nat_address_has_port(to: str) -> bool:
    """``ADDR[-ADDR]:PORT[-PORT]``, ``:PORT`` or ``[ADDR6]:PORT`` (an IPv6 address alone has 2+ colons)."""
    return "]:" in to or to.count(":") == 1


def build_target(name: str, raw: list[str], proto: str | None = None) -> Target:
    """``-j NAME raw...`` → a target class (OpaqueTarget for unmodelled extensions).

    ``proto`` is the rule's ``-p`` value given before ``-j`` (None: none), which NAT ports need.
    """
    where = f"-j {name}"

    def opts(spec: dict[str, int]) -> dict[str, Opt]:
        found, k = scan_options(raw, 0, spec, where)
        if k != len(raw):
            raise LineError(f"unknown option {raw[k]!r} for {where} (expected one of {', '.join(spec)})")
        for o in found:
            if o.negated:
                raise LineError(f"target option {o.name} cannot be negated")
        return {o.name: o for o in found}

    if name in ("ACCEPT", "DROP", "RETURN", "TRACE"):
        if raw:
            raise LineError(f"{where} takes no options, got {' '.join(raw)!r}")
        simple: dict[str, Target] = {"ACCEPT": Accept(), "DROP": Drop(), "RETURN": Return(),
                                     "TRACE": Trace()}
        return simple[name]
    if name == "REJECT":
        o = opts({"--reject-with": 1})
        if "--reject-with" not in o:
            return Reject(None)
        val = o["--reject-with"].values[0]
        full = _REJECT_V4.get(val) or _REJECT_V6.get(val)
        if full is None:
            raise LineError(f"--reject-with: unknown reject type {val!r}")
        # the family's default is normalised to None (port-unreach is ambiguous between families)
        return Reject(None if full in REJECT_DEFAULT.values() else full)
    if name == "REDIRECT":
        o = opts({"--to-ports": 1, "--to-port": 1, "--random": 0})
        if "--to-ports" in o and "--to-port" in o:
            raise LineError("give --to-ports once")
        tp = o.get("--to-ports") or o.get("--to-port")
        if tp is not None:
            _check_port_protocol(f"-j REDIRECT {tp.name}", proto)
        return Redirect(parse_port_range(tp.values[0], "--to-ports", "-") if tp else None, "--random" in o)
    if name == "TPROXY":
        o = opts({"--on-port": 1, "--on-ip": 1, "--tproxy-mark": 1})
        if "--on-port" not in o:
            raise LineError("-j TPROXY needs --on-port")
        on_ip = None
        if "--on-ip" in o:
            try:
                addr = ipaddress.ip_address(o["--on-ip"].values[0])
            except ValueError:
                raise LineError(f"--on-ip: not an IP address: {o['--on-ip'].values[0]!r}") from None
            on_ip = None if addr.is_unspecified else addr
        mark: int | None = None
        mask = M32
        if "--tproxy-mark" in o:
            v, m = parse_value_mask(o["--tproxy-mark"].values[0], "--tproxy-mark")
            mask = M32 if m is None else m
            mark = v
            if v == 0 and mask == 0:
                mark, mask = None, M32
        return Tproxy(parse_port(o["--on-port"].values[0], "--on-port"), on_ip, mark, mask)
    if name == "MARK":
        o = opts({"--set-mark": 1, "--set-xmark": 1, "--and-mark": 1, "--or-mark": 1, "--xor-mark": 1})
        if len(o) != 1:
            raise LineError("-j MARK needs exactly one of --set-mark, --set-xmark, --and-mark, --or-mark, "
                            "--xor-mark")
        return SetMark(*_mark_op(next(iter(o.values()))))
    if name == "CONNMARK":
        o = opts({"--save-mark": 0, "--restore-mark": 0, "--set-mark": 1, "--set-xmark": 1,
                  "--and-mark": 1, "--or-mark": 1, "--xor-mark": 1, "--nfmask": 1, "--ctmask": 1,
                  "--mask": 1})
        actions = [k for k in o if k not in ("--nfmask", "--ctmask", "--mask")]
        if len(actions) != 1:
            raise LineError("-j CONNMARK needs exactly one of --save-mark, --restore-mark, --set-xmark, "
                            "--set-mark, --and-mark, --or-mark, --xor-mark")
        act = actions[0]
        if act in ("--save-mark", "--restore-mark"):
            nf = ct = M32
            if "--mask" in o:
                nf = ct = parse_u32(o["--mask"].values[0], "--mask")
            if "--nfmask" in o:
                nf = parse_u32(o["--nfmask"].values[0], "--nfmask")
            if "--ctmask" in o:
                ct = parse_u32(o["--ctmask"].values[0], "--ctmask")
            action = cast(Literal["save-mark", "restore-mark"], act[2:])
            return ConnmarkTarget(action, 0, M32, nf, ct)
        if any(k in o for k in ("--nfmask", "--ctmask", "--mask")):
            raise LineError(f"--nfmask/--ctmask/--mask only go with --save-mark/--restore-mark, not {act}")
        v, m = _mark_op(o[act])
        return ConnmarkTarget("set-xmark", v, m)
    if name == "CT":
        zone: int | None = None
        notrack = False
        extra: list[str] = []
        k = 0
        while k < len(raw):
            t = raw[k]
            if t == "--notrack":
                notrack = True
                k += 1
            elif t == "--zone":
                if k + 1 >= len(raw):
                    raise LineError("option --zone needs a value")
                zone = parse_int(raw[k + 1], "--zone") or None
                k += 2
            else:
                extra.append(t)
                k += 1
        return CtTarget(zone, notrack, tuple(extra))
    if name in ("DNAT", "SNAT"):
        key = "--to-destination" if name == "DNAT" else "--to-source"
        to: str | None = None
        extra = []
        k = 0
        while k < len(raw):
            if raw[k] == key:
                if k + 1 >= len(raw):
                    raise LineError(f"option {key} needs a value")
                to = raw[k + 1]
                k += 2
            else:
                extra.append(raw[k])
                k += 1
        if to is None:
            raise LineError(f"-j {name} needs {key}")
        if _nat_address_has_port(to):
            _check_port_protocol(f"-j {name} {key} with a port", proto)
        return Dnat(to, tuple(extra)) if name == "DNAT" else Snat(to, tuple(extra))
    if name == "MASQUERADE":
        tp_range: PortRange | None = None
        extra = []
        k = 0
        while k < len(raw):
            if raw[k] == "--to-ports":
                if k + 1 >= len(raw):
                    raise LineError("option --to-ports needs a value")
                tp_range = parse_port_range(raw[k + 1], "--to-ports", "-")
                _check_port_protocol("-j MASQUERADE --to-ports", proto)
                k += 2
            else:
                extra.append(raw[k])
                k += 1
        return Masquerade(tp_range, tuple(extra))
    if name == "LOG":
        prefix: str | None = None
        level: str | None = None
        extra = []
        k = 0
        while k < len(raw):
            t = raw[k]
            if t in ("--log-prefix", "--log-level"):
                if k + 1 >= len(raw):
                    raise LineError(f"option {t} needs a value")
                if t == "--log-prefix":
                    prefix = raw[k + 1]
                else:
                    lv = raw[k + 1].lower()
                    num = _LOG_LEVELS[lv] if lv in _LOG_LEVELS else parse_int(lv, "--log-level")
                    if not 0 <= num <= 7:
                        raise LineError(f"--log-level out of range 0..7: {raw[k + 1]!r}")
                    level = None if num == 4 else str(num)
                k += 2
            else:
                extra.append(t)
                k += 1
        order = {f: k for k, f in enumerate(_LOG_FLAGS)}
        extra.sort(key=lambda t: order.get(t, len(order)))  # the order iptables-save prints
        return Log(prefix, level, tuple(extra))
    return OpaqueTarget(name, tuple(raw))


def _mark_op(o: Opt) -> tuple[int, int]:
    """A MARK/CONNMARK operation → (value, mask) in ``--set-xmark`` semantics."""
    v, m = parse_value_mask(o.values[0], o.name)
    if o.name == "--set-xmark":
        return v, M32 if m is None else m
    if o.name == "--set-mark":  # the kernel keeps V/M as --set-xmark V/(V|M)
        return v, M32 if m is None else (v | m) & M32
    if m is not None:
        raise LineError(f"{o.name} takes no mask")
    if o.name == "--and-mark":
        return 0, (~v) & M32
    if o.name == "--or-mark":
        return v, v
    return v, 0  # --xor-mark
