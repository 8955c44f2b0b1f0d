"""One rule's items from nft text: typed matches and statements; the rest as ``Opaque`` text.

An item that meshsolve does not model (``fib daddr type local``, ``tcp flags syn``, ``ip daddr .
tcp dport { ... }``, ``meta nftrace set 1``...) becomes one ``Opaque`` item that runs to the next
word that starts a modelled item (``counter``, ``accept``, ``ip``, ``meta``...), skipping over
braces, and over the selector after a ``.`` of a concatenation. A modelled item with a value of the
wrong kind (a port of 70000, an IPv6 address after ``ip daddr``) is a ``ParseError``, as nft
refuses it too. So is a statement after a terminal one (a verdict, ``reject``, ``redirect`` or a
NAT statement), as in nft.
"""

from __future__ import annotations

import ipaddress
import re

from meshsolve.nftables.kinds import (
    BARE_META_KEYS,
    ITEM_STARTERS,
    PAYLOAD_BASES,
    VERDICTS,
    ValueKind,
)
from meshsolve.nftables.lexer import Tokens
from meshsolve.nftables.model import (
    L3,
    M32,
    AnonSet,
    Counter,
    Element,
    Flags,
    Item,
    Log,
    MarkValue,
    Match,
    Nat,
    Op,
    Opaque,
    Redirect,
    Reject,
    Rule,
    Selector,
    SetCtZone,
    SetMark,
    SetRef,
    Tproxy,
    Value,
    Verdict,
)
from meshsolve.nftables.values import BadValue, element, make_range, make_set, number, scalar

__all__ = ["default_reject", "element_of", "parse_rule", "rule_end"]

_OPS: dict[str, Op] = {"==": "==", "eq": "==", "!=": "!=", "ne": "!=", "<": "<", "lt": "<", ">": ">",
                       "gt": ">", "<=": "<=", "le": "<=", ">=": ">=", "ge": ">="}
_NAT_FLAGS = ("random", "fully-random", "persistent")
_TERMINAL = (Verdict, Reject, Redirect, Nat)
_NAME_RE = re.compile(r"[A-Za-z_.][A-Za-z0-9_./-]*")
#: The default ``reject`` of each table family (nft lists it as a bare ``reject``).
_DEFAULT_REJECT = {"inet": "icmpx port-unreachable", "ip": "icmp port-unreachable",
                   "ip6": "icmpv6 port-unreachable", "bridge": "icmpx port-unreachable",
                   "netdev": "icmpx port-unreachable"}


def default_reject(reason: str | None, family: str) -> str | None:
    """``reason`` normalised (no ``type`` word), None when it is the family's default."""
    if reason is None:
        return None
    text = " ".join(w for w in reason.split() if w != "type")
    return None if text == _DEFAULT_REJECT.get(family) else text


class _Opaque(Exception):
    """Internal: the item at ``start`` is not modelled; at least tokens up to ``upto`` belong to it."""

    def __init__(self, upto: int) -> None:
        super().__init__(upto)
        self.upto = upto


def rule_end(ts: Tokens) -> bool:
    t = ts.peek()
    return t.kind in ("nl", "eof", "handle") or (t.kind == "punct" and t.text in (";", "}"))


def parse_rule(ts: Tokens, family: str) -> Rule:
    """The items of one rule up to its end (newline, ``;``, ``}``, end of input); ``# handle N``
    after it is read as the rule's handle. ``family`` is the table's (it settles NAT families)."""
    items: list[Item] = []
    comment: str | None = None
    handle: int | None = None
    first = ts.peek().lineno
    while not rule_end(ts):
        if comment is not None:
            ts.fail("expected the end of the rule after its comment (a comment is the last item)")
        if ts.at("comment") and ts.peek(1).kind in ("string", "word"):
            ts.next()
            comment = ts.string("a comment string")
            continue
        if items and isinstance(items[-1], _TERMINAL):
            ts.fail(f"statement after the terminal statement {type(items[-1]).__name__.lower()} "
                    "(nft: Statement after terminal statement has no effect)")
        start = ts.i
        try:
            items.append(_item(ts, family))
        except _Opaque as op:
            items.append(_absorb(ts, start, op.upto))
        except BadValue as exc:
            ts.fail(str(exc))
    if ts.peek().kind == "handle":
        handle = int(ts.next().text)
    if not items:
        ts.fail("expected a rule (a match or a statement)", first)
    return Rule(tuple(items), comment, handle)


def _starts_item(ts: Tokens, start: int) -> bool:
    """Whether the word at the cursor starts a new item rather than being the value of the opaque
    item begun at ``start`` (``ether type ip``, ``ct status dnat``, ``fib daddr oif missing``)."""
    w = ts.peek().text
    nxt = ts.peek(1)
    nxt_word = nxt.kind == "word" and nxt.text not in ITEM_STARTERS
    if w in ("meta", "ct") or w in VERDICTS or w in ("counter", "log", "comment", "notrack", "queue", "limit",
                                                     "quota", "reject", "redirect", "masquerade", "tproxy"):
        return True
    if w in ("dnat", "snat"):
        return nxt.kind == "word" and (nxt.text in ("to", "ip", "ip6") or nxt.text[:1].isdigit() or ":" in nxt.text)
    if w in PAYLOAD_BASES:
        return nxt_word
    if w in BARE_META_KEYS:
        if ts.toks[start].text == "fib" and not any(t.text in ("oif", "oifname", "type")
                                                    for t in ts.toks[start + 1:ts.i]):
            return False  # fib's flags (iif, oif) and result (oif, oifname, type) come before its value
        return nxt.kind in ("word", "string", "punct")
    return True


def _absorb(ts: Tokens, start: int, upto: int) -> Opaque:
    """Tokens from ``start`` to the next item (at brace depth 0) as one opaque item."""
    ts.i = max(ts.i, upto)
    depth = 0
    while True:
        t = ts.peek()
        if t.kind in ("nl", "eof", "handle"):
            break
        if t.kind == "punct":
            if t.text in ("{", "("):
                depth += 1
            elif t.text in ("}", ")"):
                if depth == 0:
                    break
                depth -= 1
            elif t.text == ";" and depth == 0:
                break
        elif depth == 0 and t.kind == "word" and t.text in ITEM_STARTERS and ts.i > start and \
                not (ts.toks[ts.i - 1].kind == "word" and ts.toks[ts.i - 1].text == ".") and \
                not (ts.i - 2 >= start and ts.toks[ts.i - 2].text == "." and ts.toks[ts.i - 1].text in PAYLOAD_BASES) \
                and _starts_item(ts, start):
            break
        ts.next()
    if depth:
        ts.fail("unbalanced braces: expected '}' or ')' before the end of the rule")
    if ts.i == start:  # pragma: no cover - an item always consumes a token
        ts.next()
    return Opaque(" ".join(tok.raw() for tok in ts.toks[start:ts.i]))


def _item(ts: Tokens, family: str) -> Item:
    t = ts.peek()
    if t.kind != "word":
        raise _Opaque(ts.i + 1)
    w = t.text
    if w in ("accept", "drop", "return", "continue"):
        ts.next()
        return Verdict(w)  # type: ignore[arg-type]
    if w in ("jump", "goto"):
        ts.next()
        return Verdict(w, _chain_name(ts))  # type: ignore[arg-type]
    if w == "counter":
        ts.next()
        if ts.at("packets"):
            ts.next()
            packets = number(ts.word("a packet count"), "a packet count", 2**64 - 1)
            ts.expect("bytes")
            return Counter(packets, number(ts.word("a byte count"), "a byte count", 2**64 - 1))
        if ts.at("name") or (ts.peek().kind == "string"):
            raise _Opaque(ts.i + 1)
        return Counter()
    if w == "redirect":
        ts.next()
        port = port_max = None
        if ts.accept("to"):
            port, port_max = _port_spec(ts)
        return Redirect(port, port_max, _nat_flags(ts))
    if w == "tproxy":
        ts.next()
        fam = _l3(ts)
        ts.expect("to", "'to' after tproxy")
        addr, addr_max, port, port_max = _addr_spec(ts, fam)
        if addr_max is not None or port_max is not None:
            ts.fail("expected one address and one port after 'tproxy to'")
        return Tproxy(_family(fam, addr, family), addr, port)
    if w in ("snat", "dnat", "masquerade"):
        ts.next()
        if w == "masquerade":
            port = port_max = None
            if ts.accept("to"):
                port, port_max = _port_spec(ts)
            return Nat("masquerade", None, None, None, port, port_max, _nat_flags(ts))
        fam = _l3(ts)
        ts.accept("to")
        addr, addr_max, port, port_max = _addr_spec(ts, fam)
        return Nat(w, _family(fam, addr, family), addr, addr_max, port, port_max,  # type: ignore[arg-type]
                   _nat_flags(ts))
    if w == "log":
        return _log(ts)
    if w == "reject":
        ts.next()
        reason = None
        if ts.accept("with"):
            kind = ts.word("tcp or icmp, icmpv6, icmpx after 'reject with'")
            if kind == "tcp":
                ts.expect("reset", "'reset' after 'reject with tcp'")
                reason = "tcp reset"
            elif kind in ("icmp", "icmpv6", "icmpx"):
                ts.accept("type")
                reason = f"{kind} {ts.word('an icmp reject code')}"
            else:
                ts.fail(f"expected tcp reset or icmp, icmpv6, icmpx after 'reject with', got {kind!r}")
        return Reject(default_reject(reason, family))
    if w in PAYLOAD_BASES or w in ("meta", "ct") or w in BARE_META_KEYS:
        return _selector_item(ts)
    raise _Opaque(ts.i + 1)


def _chain_name(ts: Tokens) -> str:
    return ts.name("a chain name")


def _l3(ts: Tokens) -> L3 | None:
    """The ``ip``/``ip6`` before ``to`` in ``tproxy ip to``, ``dnat ip6 to``."""
    if ts.at("ip", "ip6") and ts.peek(1).kind == "word" and ts.peek(1).text == "to":
        return ts.next().text  # type: ignore[return-value]
    return None


def _family(written: L3 | None, addr: ipaddress.IPv4Address | ipaddress.IPv6Address | None,
            table_family: str) -> L3 | None:
    if addr is not None:
        return "ip" if addr.version == 4 else "ip6"
    if table_family in ("ip", "ip6"):
        return table_family  # type: ignore[return-value]
    return written


def _nat_flags(ts: Tokens) -> tuple[str, ...]:
    flags: list[str] = []
    while ts.at(*_NAT_FLAGS):
        flags.append(ts.next().text)
        if not ts.accept(","):
            break
    return tuple(flags)


def _port(text: str) -> int:
    return number(text, "a port number", 65535)


def _port_spec(ts: Tokens) -> tuple[int | None, int | None]:
    """``:15001``, ``15001`` or ``:1000-2000``."""
    if ts.peek().kind != "word":
        raise _Opaque(ts.i)
    text = ts.peek().text.removeprefix(":")
    if not re.fullmatch(r"[0-9]+(?:-[0-9]+)?", text):
        raise _Opaque(ts.i + 1)  # a map or expression: not modelled
    ts.next()
    lo, _, hi = text.partition("-")
    return _port(lo), (_port(hi) if hi else None)


_AddrSpec = tuple[ipaddress.IPv4Address | ipaddress.IPv6Address | None,
                  ipaddress.IPv4Address | ipaddress.IPv6Address | None, int | None, int | None]


def _addr_spec(ts: Tokens, fam: L3 | None) -> _AddrSpec:
    """``[addr[-addr]][:port[-port]]`` with IPv6 addresses in brackets when a port follows."""
    if ts.peek().kind != "word":
        raise _Opaque(ts.i)
    text = ts.peek().text
    addr_text, port_text = text, ""
    if text.startswith(":") and not text.startswith("::"):
        addr_text, port_text = "", text[1:]
    elif text.startswith("["):
        m = re.fullmatch(r"\[([^\]]*)\](?:-\[([^\]]*)\])?(?::(.*))?", text)
        if not m:
            raise _Opaque(ts.i + 1)
        addr_text = m.group(1) + (f"-{m.group(2)}" if m.group(2) else "")
        port_text = m.group(3) or ""
    elif text.count(":") == 1:
        addr_text, _, port_text = text.partition(":")
    addrs: list[ipaddress.IPv4Address | ipaddress.IPv6Address | None] = [None, None]
    if addr_text:
        for k, part in enumerate(addr_text.split("-", 1)):
            try:
                addrs[k] = ipaddress.ip_address(part)
            except ValueError:
                raise _Opaque(ts.i + 1) from None
        if addrs[1] is not None and (addrs[0].version != addrs[1].version  # type: ignore[union-attr]
                                     or addrs[1] < addrs[0]):  # type: ignore[operator]
            raise BadValue(f"expected an address range of one family, low to high, got {addr_text!r}")
        if fam is not None and addrs[0] is not None and addrs[0].version != (4 if fam == "ip" else 6):
            raise BadValue(f"expected an {'IPv4' if fam == 'ip' else 'IPv6'} address after '{fam} to', "
                           f"got {addr_text!r}")
    port = port_max = None
    if port_text:
        if not re.fullmatch(r"[0-9]+(?:-[0-9]+)?", port_text):
            raise _Opaque(ts.i + 1)
        lo, _, hi = port_text.partition("-")
        port, port_max = _port(lo), (_port(hi) if hi else None)
    if addrs[0] is None and port is None:
        raise _Opaque(ts.i + 1)
    ts.next()
    return addrs[0], addrs[1], port, port_max


_LOG_KEYS = ("prefix", "level", "group", "snaplen", "queue-threshold", "flags")


def _log(ts: Tokens) -> Item:
    """``log`` with ``prefix``/``level``/``group``; other options make the statement opaque."""
    start = ts.i
    ts.next()
    prefix: str | None = None
    level: str | None = None
    group: int | None = None
    while ts.at(*_LOG_KEYS):
        key = ts.next().text
        if key == "prefix":
            prefix = ts.string("a log prefix")
        elif key == "level":
            level = ts.word("a log level")
        elif key == "group":
            group = number(ts.word("a log group"), "a log group", 65535)
        else:
            raise _Opaque(ts.i)
    try:
        return Log(prefix, level, group)
    except ValueError:
        raise _Opaque(start + 1) from None


def _selector_item(ts: Tokens) -> Item:
    """A match on a selector, or the ``mark set`` / ``ct mark set`` / ``ct zone set`` statements."""
    w = ts.next().text
    if w in BARE_META_KEYS:
        base, key = "meta", w
    else:
        base = w
        if ts.peek().kind != "word":
            raise _Opaque(ts.i)
        key = ts.next().text
    sel = Selector(base, key)
    if ts.at("set"):
        ts.next()
        if (base, key) in (("meta", "mark"), ("ct", "mark")):
            return SetMark(base, _mark_value(ts))  # type: ignore[arg-type]
        if (base, key) == ("ct", "zone"):
            if ts.peek().kind != "word":
                raise _Opaque(ts.i)
            return SetCtZone(number(ts.next().text, "a conntrack zone", 65535))
        raise _Opaque(ts.i)
    kind = sel.kind
    if kind is None or ts.at(".", "vmap", "map"):
        raise _Opaque(ts.i + (1 if ts.at(".") else 0))
    mask = None
    if ts.at("&", "and"):
        ts.next()
        if kind is not ValueKind.MARK or ts.peek().kind != "word":
            raise _Opaque(ts.i)
        mask = number(ts.next().text, "a mask", M32)
    if ts.at("|", "^", "or", "xor", "<<", ">>", "&", "and"):
        raise _Opaque(ts.i + 1)
    op: Op | None = None
    if ts.peek().kind in ("word", "punct") and ts.peek().text in _OPS:
        op = _OPS[ts.next().text]
    value = _value(ts, kind)
    if kind is ValueKind.CTSTATE and isinstance(value, Flags):
        # ``ct state a,b`` is the flag test (``in``); ``ct state a | b`` is one value (``==``)
        implicit: Op = "==" if value.written == "|" else "in"
        return Match(sel, Flags(value.names), op or implicit, mask)
    return Match(sel, value, op or "==", mask)


def _mark_value(ts: Tokens) -> MarkValue:
    """``N``, ``mark``, ``meta mark``, ``ct mark``, followed by ``& N``, ``| N``, ``^ N`` (also
    ``and``/``or``/``xor``): folded into the kernel's ``(source & mask) ^ xor``."""
    t = ts.peek()
    if t.kind != "word":
        raise _Opaque(ts.i)
    source: str | None
    if t.text == "mark":
        source = "meta"
        ts.next()
    elif t.text in ("meta", "ct") and ts.peek(1).text == "mark":
        source = t.text
        ts.next()
        ts.next()
    elif re.fullmatch(r"[0-9]+|0[xX][0-9a-fA-F]+", t.text):
        ts.next()
        return MarkValue.constant(number(t.text, "a mark", M32))
    else:
        raise _Opaque(ts.i + 1)
    mask, xor = M32, 0
    while ts.at("&", "and", "|", "or", "^", "xor"):
        opname = ts.next().text
        if ts.peek().kind != "word":
            raise _Opaque(ts.i)
        n = number(ts.next().text, "a mark", M32)
        if opname in ("&", "and"):
            mask, xor = mask & n, xor & n
        elif opname in ("|", "or"):
            mask, xor = mask & ~n & M32, xor | n
        else:
            xor ^= n
    return MarkValue(source, mask, xor)  # type: ignore[arg-type]


def _value(ts: Tokens, kind: ValueKind) -> Value:
    t = ts.peek()
    if t.kind == "punct" and t.text == "{":
        ts.next()
        elements: list[Element] = []
        while True:
            ts.skip_newlines()
            if ts.accept("}"):
                break
            elements.append(_element(ts, kind))
            ts.skip_newlines()
            if ts.accept("}"):
                break
            ts.expect(",", "',' or '}' in a set")
        if not elements:
            ts.fail("expected at least one element in '{ }'")
        return AnonSet(make_set(elements))
    if t.kind == "word" and t.text.startswith("@"):
        ts.next()
        name = t.text[1:]
        if not _NAME_RE.fullmatch(name):
            ts.fail(f"expected a set name after '@', got {t}")
        return SetRef(name)
    if t.kind == "word" and t.text.startswith("$"):
        ts.fail(f"variables ({t.text}) are not supported: expected a value")
    if kind is ValueKind.CTSTATE:
        names = [str(scalar(kind, ts.word("a conntrack state")))]
        sep = ts.peek().text if ts.at(",", "|") else None
        while sep is not None and ts.accept(sep):
            names.append(str(scalar(kind, ts.word("a conntrack state"))))
        return Flags(tuple(names), "|" if sep == "|" else ",")
    return _element(ts, kind)


def _element(ts: Tokens, kind: ValueKind) -> Element:
    t = ts.peek()
    if t.kind not in ("word", "string") or (t.kind == "string" and kind is not ValueKind.IFNAME):
        ts.fail(f"expected {'an' if kind.value[0] in 'aeiouI' else 'a'} {kind.value}, got {t}")
    ts.next()
    if t.kind == "word" and ts.peek().kind == "word" and ts.peek().text == "-":
        ts.next()  # ``lo - hi`` written with blanks
        return make_range(kind, t.text, ts.word("the end of a range"))
    return element_of(kind, t.text)


def element_of(kind: ValueKind, text: str) -> Element:
    """A value or set element of ``kind`` from one word (interface names never form ranges)."""
    if kind is ValueKind.IFNAME:
        return scalar(kind, text)
    return element(kind, text)
