"""Match modules (``-m NAME [!] --opt value...``, and the implicit one of ``-p tcp --dport 80``) →
match values.

Modelled modules get their own class; any other module is kept as ``OpaqueMatch`` with its raw words.
Normalisations, so that a kernel round trip gives equal models:

- a negated ``--sport/--dport`` range touching 0 or 65535 becomes its complement, not negated
  (``! --dport 0:1`` → ``--dport 2:65535``), as iptables-nft stores it;
- a ``--sport/--dport`` covering 0:65535 is dropped (iptables-nft drops it, even when negated), and a
  ``-m tcp``/``-m udp`` with nothing left is dropped; ``--syn`` becomes
  ``--tcp-flags FIN,SYN,RST,ACK SYN`` in ``PortMatch.extra``, flag lists are put in the kernel's
  bit order, and ``--tcp-option`` is printed before ``--tcp-flags``, as iptables-save does;
- owner ``--uid-owner 5-5`` → ``5``, ``106:108`` → ``106-108`` (both separators are iptables'); numbers
  lose leading zeros. User/group *names* are kept as
  written (the kernel stores numbers: compare kernel dumps after mapping names to ids).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal, cast

from meshsolve.iptables.options import M32, Opt, parse_int, parse_port_range, parse_value_mask
from meshsolve.iptables.tokens import LineError
from meshsolve.model.net import PortRange
from meshsolve.model.rules import (
    AddrtypeMatch,
    CommentMatch,
    ConnmarkMatch,
    ConntrackMatch,
    MarkMatch,
    Match,
    MultiportMatch,
    OpaqueMatch,
    OwnerMatch,
    PortMatch,
    SetMatch,
    SocketMatch,
    StateMatch,
)

# Module options: name -> number of values (aliases map to the canonical name, see options.py).
TCP_EXTRA = {"--syn": 0, "--tcp-flags": 2, "--tcp-option": 1}
MODULE_OPTS: dict[str, dict[str, int]] = {
    "tcp": {"--sport": 1, "--dport": 1, **TCP_EXTRA},
    "udp": {"--sport": 1, "--dport": 1},
    "udplite": {"--sport": 1, "--dport": 1},
    "multiport": {"--sports": 1, "--dports": 1, "--ports": 1},
    "owner": {"--uid-owner": 1, "--gid-owner": 1, "--socket-exists": 0, "--suppl-groups": 0},
    "mark": {"--mark": 1},
    "connmark": {"--mark": 1},
    "conntrack": {"--ctstate": 1, "--ctproto": 1, "--ctorigsrc": 1, "--ctorigdst": 1,
                  "--ctreplsrc": 1, "--ctrepldst": 1, "--ctorigsrcport": 1, "--ctorigdstport": 1,
                  "--ctreplsrcport": 1, "--ctrepldstport": 1, "--ctstatus": 1, "--ctexpire": 1,
                  "--ctdir": 1},
    "state": {"--state": 1},
    "addrtype": {"--src-type": 1, "--dst-type": 1, "--limit-iface-in": 0, "--limit-iface-out": 0},
    "comment": {"--comment": 1},
    "socket": {"--transparent": 0, "--nowildcard": 0, "--restore-skmark": 0},
}
_CT_STATES = ("INVALID", "NEW", "RELATED", "ESTABLISHED", "UNTRACKED", "SNAT", "DNAT")


def _owner_id(value: str, what: str) -> str:
    """``"1337"``, ``"1000-2000"`` or a name; numbers normalised, ``N-N`` → ``N``."""
    v = value.strip()
    if not v:
        raise LineError(f"{what} needs a value")
    m = re.fullmatch(r"(\d+)(?:[-:](\d+))?", v)  # libxt_owner takes "a-b" and "a:b"
    if not m:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*\$?", v):
            raise LineError(f"{what}: expected a number, a range a-b or a name, got {value!r}")
        return v
    lo = parse_int(m.group(1), what)  # parse_int: a 5000-digit id is a ParseError, not int()'s ValueError
    hi = parse_int(m.group(2), what) if m.group(2) is not None else lo
    if hi < lo:
        raise LineError(f"{what}: empty range {value!r}")
    return str(lo) if lo == hi else f"{lo}-{hi}"


def _states(value: str, what: str) -> tuple[str, ...]:
    vals = [v.strip().upper() for v in value.split(",") if v.strip()]
    bad = [v for v in vals if v not in _CT_STATES]
    if bad or not vals:
        raise LineError(f"{what}: expected states from {','.join(_CT_STATES)}, got {value!r}")
    return tuple(vals)


@dataclass
class PortBuilder:
    module: str
    opts: list[Opt] = field(default_factory=list)


_TCP_FLAGS = ("FIN", "SYN", "RST", "PSH", "ACK", "URG")


def _tcp_flags(value: str) -> str:
    """A ``--tcp-flags`` list in the kernel's bit order (``ALL`` expanded, empty → ``NONE``)."""
    names: set[str] = set()
    for item in value.upper().split(","):
        if item == "ALL":
            names.update(_TCP_FLAGS)
        elif item == "NONE":
            continue
        elif item in _TCP_FLAGS:
            names.add(item)
        else:
            raise LineError(f"--tcp-flags: unknown TCP flag {item!r} (expected {','.join(_TCP_FLAGS)}, ALL, NONE)")
    return ",".join(f for f in _TCP_FLAGS if f in names) or "NONE"


def build_port(pb: PortBuilder) -> PortMatch | None:
    sport: PortRange | None = None
    dport: PortRange | None = None
    sneg = dneg = False
    extras: list[tuple[int, list[str]]] = []
    for o in pb.opts:
        if o.name in ("--sport", "--dport"):
            r = parse_port_range(o.values[0], o.name)
            if r.lo == 0 and r.hi == 65535:
                continue  # iptables-nft drops a full-range port match, even a negated one
            neg = o.negated
            # iptables-nft stores a negated range touching 0 or 65535 as its complement
            if neg and r.lo == 0:
                r, neg = PortRange(r.hi + 1, 65535), False
            elif neg and r.hi == 65535:
                r, neg = PortRange(0, r.lo - 1), False
            if o.name == "--sport":
                sport, sneg = r, neg
            else:
                dport, dneg = r, neg
        elif o.name == "--syn":
            extras.append((1, [*(["!"] if o.negated else []), "--tcp-flags", "FIN,SYN,RST,ACK", "SYN"]))
        elif o.name == "--tcp-flags":
            extras.append((1, [*(["!"] if o.negated else []), o.name, _tcp_flags(o.values[0]),
                               _tcp_flags(o.values[1])]))
        else:  # --tcp-option, and raw options of sctp/dccp (kept in the order given)
            extras.append((0 if o.name == "--tcp-option" else 2, [*(["!"] if o.negated else []), o.name,
                                                                  *o.values]))
    # iptables-save prints --tcp-option before --tcp-flags
    extra = [t for _, toks in sorted(extras, key=lambda e: e[0]) for t in toks]
    if sport is None and dport is None and not extra:
        return None
    module = cast(Literal["tcp", "udp", "sctp", "udplite", "dccp"], pb.module)
    return PortMatch(module, sport, dport, sneg, dneg, tuple(extra))


def unmodelled_module(name: str, raw: tuple[str, ...]) -> Match:
    """A module without a builder of its own: ``-m set [!] --match-set NAME src|dst`` (one
    dimension, no other option) is a ``SetMatch``; anything else an ``OpaqueMatch`` of its words."""
    words = list(raw)
    negated = bool(words) and words[0] == "!"
    if negated:
        words = words[1:]
    if name == "set" and len(words) == 3 and words[0] == "--match-set" and words[2] in ("src", "dst"):
        return SetMatch(words[1], "src" if words[2] == "src" else "dst", negated)
    return OpaqueMatch(name, raw)


def build_module(name: str, opts: list[Opt]) -> Match:
    """A modelled module's options → its match class."""
    by = {o.name: o for o in opts}
    if not opts and name not in ("socket",):
        raise LineError(f"-m {name} needs at least one option")
    if name == "multiport":
        if len(opts) != 1:
            raise LineError("-m multiport takes exactly one of --sports, --dports, --ports")
        o = opts[0]
        items = [p for p in o.values[0].split(",")]
        if not all(items):
            raise LineError(f"-m multiport: empty item in {o.values[0]!r}")
        ports = tuple(parse_port_range(p, o.name) for p in items)
        kind = cast(Literal["sports", "dports", "ports"], o.name[2:])
        return MultiportMatch(kind, ports, o.negated)
    if name == "owner":
        uid = by.get("--uid-owner")
        gid = by.get("--gid-owner")
        se = by.get("--socket-exists")
        return OwnerMatch(
            uid=_owner_id(uid.values[0], "--uid-owner") if uid else None,
            uid_negated=bool(uid and uid.negated),
            gid=_owner_id(gid.values[0], "--gid-owner") if gid else None,
            gid_negated=bool(gid and gid.negated),
            socket_exists=None if se is None else not se.negated,
            suppl_groups="--suppl-groups" in by,
        )
    if name in ("mark", "connmark"):
        o = by["--mark"]
        v, m = parse_value_mask(o.values[0], "--mark")
        cls = MarkMatch if name == "mark" else ConnmarkMatch
        return cls(v, M32 if m is None else m, o.negated)
    if name == "conntrack":
        st = by.get("--ctstate")
        if st is None:  # not modelled without states: keep it raw
            raw = [t for o in opts for t in (*(["!"] if o.negated else []), o.name, *o.values)]
            return OpaqueMatch("conntrack", tuple(raw))
        extra: list[str] = []
        for o in opts:
            if o.name != "--ctstate":
                extra += [*(["!"] if o.negated else []), o.name, *o.values]
        return ConntrackMatch(_states(st.values[0], "--ctstate"), st.negated, tuple(extra))
    if name == "state":
        o = by["--state"]
        return StateMatch(_states(o.values[0], "--state"), o.negated)
    if name == "addrtype":
        src, dst = by.get("--src-type"), by.get("--dst-type")
        return AddrtypeMatch(
            src_type=src.values[0].upper() if src else None, src_negated=bool(src and src.negated),
            dst_type=dst.values[0].upper() if dst else None, dst_negated=bool(dst and dst.negated),
            limit_iface_in="--limit-iface-in" in by, limit_iface_out="--limit-iface-out" in by)
    if name == "comment":
        return CommentMatch(by["--comment"].values[0])
    if name == "socket":
        order = ("--transparent", "--nowildcard", "--restore-skmark")
        return SocketMatch(tuple(o for o in order if o in by))
    raise LineError(f"internal: module {name} has no builder")  # pragma: no cover
