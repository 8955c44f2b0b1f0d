"""The canonical ``nft -f`` text of a ruleset: what ``nft -f`` loads to recreate it, and what the
parser reads back to the same value (``parse(render(x)) == x``).

Per table: ``add table`` and ``flush table`` (so that loading it again replaces the rules, as
knftables and Istio do), its sets, every chain (base chains with their type, hook, numeric priority
and policy), then every rule with ``add rule`` in chain order, so that every jump target exists
before the rule that names it. Values are written as ``nft list ruleset`` writes them: hosts
without ``/32``, marks and masks in hex, interface names quoted, families in ``tproxy``/NAT
statements except in ``ip``/``ip6`` tables (where they are the table's).
"""

from __future__ import annotations

import ipaddress
import re

from meshsolve.nftables.kinds import KEYWORDS, LISTED_BARE, SET_TYPES, ValueKind
from meshsolve.nftables.model import (
    M32,
    AnonSet,
    Chain,
    Counter,
    Element,
    Flags,
    Item,
    Log,
    MarkValue,
    Match,
    NamedSet,
    Nat,
    Opaque,
    Range,
    Redirect,
    Reject,
    Rule,
    Ruleset,
    SetCtZone,
    SetMark,
    SetRef,
    Table,
    Tproxy,
    Value,
    Verdict,
)

__all__ = ["item_text", "quote_name", "render", "rule_text"]

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*")


def quote_name(name: str) -> str:
    """A table/chain/set name as nft reads it: bare when it is a plain identifier, else quoted."""
    if _IDENT.fullmatch(name) and name not in KEYWORDS:
        return name
    return f'"{name}"'


def _scalar(kind: ValueKind | None, v: int | str | ipaddress.IPv4Network | ipaddress.IPv6Network
            | ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    if isinstance(v, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return str(v.network_address) if v.num_addresses == 1 else v.with_prefixlen
    if isinstance(v, int) and not isinstance(v, bool):
        return f"0x{v:08x}" if kind is ValueKind.MARK else str(v)
    if isinstance(v, str):
        return f'"{v}"' if kind is ValueKind.IFNAME else v
    return str(v)


def _element(kind: ValueKind | None, e: Element) -> str:
    if isinstance(e, Range):
        return f"{_scalar(kind, e.lo)}-{_scalar(kind, e.hi)}"
    return _scalar(kind, e)


def value_text(kind: ValueKind | None, value: Value) -> str:
    if isinstance(value, AnonSet):
        return "{ " + ", ".join(_element(kind, e) for e in value.elements) + " }"
    if isinstance(value, SetRef):
        return "@" + value.name
    if isinstance(value, Flags):
        return ",".join(value.names)
    return _element(kind, value)


def _selector(m: Match) -> str:
    base, key = m.selector.base, m.selector.key
    if base == "meta" and key in LISTED_BARE:
        return key
    return f"{base} {key}"


def _mark(v: MarkValue) -> str:
    if v.source is None:
        return f"0x{v.xor:08x}"
    text = f"{v.source} mark"
    if v.xor == 0:
        return text if v.mask == M32 else f"{text} & 0x{v.mask:08x}"
    if v.mask & v.xor == 0:
        m2 = v.mask | v.xor
        return (text if m2 == M32 else f"{text} & 0x{m2:08x}") + f" | 0x{v.xor:08x}"
    return (text if v.mask == M32 else f"{text} & 0x{v.mask:08x}") + f" ^ 0x{v.xor:08x}"


def _addr(a: ipaddress.IPv4Address | ipaddress.IPv6Address, bracket: bool) -> str:
    return f"[{a}]" if bracket and a.version == 6 else str(a)


def _ports(lo: int | None, hi: int | None) -> str:
    if lo is None:
        return ""
    return f":{lo}" + (f"-{hi}" if hi is not None else "")


def _to(family: str | None, address: ipaddress.IPv4Address | ipaddress.IPv6Address | None,
        address_max: ipaddress.IPv4Address | ipaddress.IPv6Address | None, port: int | None,
        port_max: int | None, table_family: str) -> str:
    fam = f" {family}" if family is not None and table_family not in ("ip", "ip6") else ""
    bracket = port is not None
    text = ""
    if address is not None:
        text = _addr(address, bracket)
        if address_max is not None:
            text += "-" + _addr(address_max, bracket)
    return f"{fam} to {text}{_ports(port, port_max)}"


def _quoted(text: str) -> str:
    return f'"{text}"'


def item_text(item: Item, family: str = "inet") -> str:
    """One item as nft text (``family`` is the table's: it decides whether NAT/tproxy say theirs)."""
    match item:
        case Match(selector=sel, value=value, op=op, mask=mask):
            kind = sel.kind
            text = _selector(item)
            if mask is not None:
                text += f" & 0x{mask:08x}"
            if isinstance(value, Flags):
                if op == "in":
                    return f"{text} {','.join(value.names)}"
                return f"{text} {op} {' | '.join(value.names)}"
            if op not in ("==", "in"):
                text += f" {op}"
            return f"{text} {value_text(kind, value)}"
        case Verdict(kind=kind, chain=chain):
            return kind if chain is None else f"{kind} {quote_name(chain)}"
        case Counter(packets=p, bytes=b):
            return "counter" if p == 0 and b == 0 else f"counter packets {p} bytes {b}"
        case Redirect(port=port, port_max=port_max, flags=flags):
            text = "redirect" + (f" to {_ports(port, port_max)}" if port is not None else "")
            return text + (" " + ",".join(flags) if flags else "")
        case Tproxy(family=fam, address=address, port=port):
            return "tproxy" + _to(fam, address, None, port, None, family)
        case Nat(kind="masquerade", port=port, port_max=port_max, flags=flags):
            text = "masquerade" + (f" to {_ports(port, port_max)}" if port is not None else "")
            return text + (" " + ",".join(flags) if flags else "")
        case Nat(kind=kind, family=fam, address=a, address_max=a2, port=port, port_max=port_max, flags=flags):
            text = kind + _to(fam, a, a2, port, port_max, family)
            return text + (" " + ",".join(flags) if flags else "")
        case SetMark(key=key, value=value):
            return f"{key} mark set {_mark(value)}"
        case SetCtZone(zone=zone):
            return f"ct zone set {zone}"
        case Log(prefix=prefix, level=level, group=group):
            text = "log"
            if prefix is not None:
                text += f" prefix {_quoted(prefix)}"
            if level is not None:
                text += f" level {level}"
            if group is not None:
                text += f" group {group}"
            return text
        case Reject(reason=reason):
            return "reject" if reason is None else f"reject with {reason}"
        case Opaque(text=text):
            return text
    raise AssertionError(item)  # pragma: no cover


def rule_text(rule: Rule, family: str = "inet") -> str:
    """A rule's items (and comment) as nft text, as in ``add rule ... <this>``."""
    text = " ".join(item_text(i, family) for i in rule.items)
    if rule.comment is not None:
        text += f" comment {_quoted(rule.comment)}"
    return text


def _chain_spec(c: Chain) -> str:
    parts = []
    if c.hook is not None:
        h = c.hook
        dev = f" device {_quoted(h.device)}" if h.device is not None else ""
        parts.append(f"type {h.type} hook {h.hook}{dev} priority {h.priority} ;")
        parts.append(f"policy {h.policy} ;")
    if c.comment is not None:
        parts.append(f"comment {_quoted(c.comment)} ;")
    return " { " + " ".join(parts) + " }" if parts else ""


def _set_spec(s: NamedSet) -> str:
    kind = SET_TYPES.get(s.key_type) if s.kind == "set" else None
    typ = s.key_type if s.key_type.startswith("typeof ") else f"type {s.key_type}"
    parts = [f"{typ}{' : ' + s.data_type if s.data_type is not None else ''} ;"]
    if s.flags:
        parts.append(f"flags {','.join(s.flags)} ;")
    parts.extend(f"{x} ;" for x in s.extra)
    if s.comment is not None:
        parts.append(f"comment {_quoted(s.comment)} ;")
    if s.elements:
        els = ", ".join(e.text if isinstance(e, Opaque) else _element(kind, e) for e in s.elements)
        parts.append(f"elements = {{ {els} }} ;")
    return " { " + " ".join(parts) + " }"


def _table(t: Table) -> list[str]:
    fam, name = t.family, quote_name(t.name)
    opts = []
    if t.flags:
        opts.append(f"flags {','.join(t.flags)} ;")
    if t.comment is not None:
        opts.append(f"comment {_quoted(t.comment)} ;")
    out = [f"add table {fam} {name}" + (" { " + " ".join(opts) + " }" if opts else ""),
           f"flush table {fam} {name}"]
    for s in t.sets:
        out.append(f"add {s.kind} {fam} {name} {quote_name(s.name)}{_set_spec(s)}")
    for o in t.objects:
        first, _, rest = o.text.partition(" ")
        out.append(f"add {first} {fam} {name} {rest}")
    for c in t.chains:
        out.append(f"add chain {fam} {name} {quote_name(c.name)}{_chain_spec(c)}")
    for c in t.chains:
        for r in c.rules:
            out.append(f"add rule {fam} {name} {quote_name(c.name)} {rule_text(r, fam)}")
    return out


def render(ruleset: Ruleset) -> str:
    """The canonical ``nft -f`` text of ``ruleset``."""
    lines: list[str] = []
    for t in ruleset.tables:
        lines.extend(_table(t))
    return "".join(line + "\n" for line in lines)
