"""JSON expressions of ``nft -j`` → the model's rule items, and the helpers both JSON modules use.

``match`` (payload, ``meta`` and ``ct`` selectors, an ``&`` mask, values, sets, ranges, prefixes,
``|``-joined conntrack states), ``counter``, verdicts, ``redirect``, ``tproxy``, ``snat``/``dnat``/
``masquerade``, ``mangle`` of ``meta mark``/``ct mark`` (folded into the kernel's ``(source & mask)
^ xor``) and ``ct zone``, ``log``, ``reject``; anything else is an ``Opaque`` item holding its JSON
text. Errors are ``Fail`` with the path in the document; ``jsonform`` adds the line.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any, NoReturn

from meshsolve.model.rules import Origin
from meshsolve.nftables.exprs import default_reject
from meshsolve.nftables.kinds import ValueKind
from meshsolve.nftables.model import (
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
from meshsolve.nftables.values import BadValue, make_range, make_set, mark_prefix, number, scalar

__all__ = ["MAX_DEPTH", "Fail", "element", "fail", "handle", "integer", "obj", "opt_str", "rule", "short", "single",
           "string"]

MAX_DEPTH = 64


class Fail(Exception):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def fail(path: str, message: str) -> NoReturn:
    raise Fail(path, message)


def single(value: Any, path: str, what: str) -> tuple[str, Any]:
    if not isinstance(value, dict) or len(value) != 1:
        fail(path, f"expected an object with one key ({what}), got {short(value)}")
    ((key, inner),) = value.items()
    return str(key), inner


def short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def obj(body: Any, path: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        fail(path, f"expected an object, got {short(body)}")
    return body


def string(d: dict[str, Any], key: str, path: str, *, name: bool = False) -> str:
    v = d.get(key)
    if not isinstance(v, str) or not v or len(v) > 255 or not v.isprintable() or '"' in v:
        fail(f"{path}.{key}", f"expected {'a name' if name else 'a string'} (printable, no quotes), got {short(v)}")
    return v


def opt_str(d: dict[str, Any], key: str, path: str) -> str | None:
    return None if d.get(key) is None else string(d, key, path)


def integer(v: Any, path: str, what: str, top: int = M32) -> int:
    try:
        return number(v, what, top) if isinstance(v, int) else number(str(v), what, top)
    except BadValue as exc:
        fail(path, str(exc))




def handle(d: dict[str, Any]) -> int | None:
    h = d.get("handle")
    return h if isinstance(h, int) and not isinstance(h, bool) and 0 < h < 2**63 else None


def rule(d: dict[str, Any], fam: str, path: str, o: Origin, listed: bool) -> Rule:
    exprs = d.get("expr")
    if not isinstance(exprs, list) or not exprs:
        fail(f"{path}.expr", f"expected a non-empty list of expressions, got {short(exprs)}")
    items = tuple(_stmt(e, fam, f"{path}.expr[{k}]") for k, e in enumerate(exprs))
    return Rule(items, opt_str(d, "comment", path), handle(d) if listed else None, o)


def _stmt(e: Any, fam: str, path: str) -> Item:
    key, v = single(e, path, "match, counter, accept, jump...")
    p = f"{path}.{key}"
    if key == "match":
        return _match(obj(v, p), p)
    if key in ("accept", "drop", "return", "continue"):
        return Verdict(key)  # type: ignore[arg-type]
    if key in ("jump", "goto"):
        return Verdict(key, string(obj(v, p), "target", p, name=True))  # type: ignore[arg-type]
    if key == "counter":
        if v is None:
            return Counter()
        if isinstance(v, dict) and set(v) <= {"packets", "bytes"}:
            return Counter(integer(v.get("packets", 0), f"{p}.packets", "a count", 2**64 - 1),
                           integer(v.get("bytes", 0), f"{p}.bytes", "a count", 2**64 - 1))
        return _opaque(e)
    if key == "redirect":
        if v is None:
            return Redirect()
        d = obj(v, p)
        if set(d) - {"port", "flags"}:
            return _opaque(e)
        lo, hi = _port(d.get("port"), f"{p}.port")
        return Redirect(lo, hi, _flags(d.get("flags"), p))
    if key == "tproxy":
        d = obj(v, p)
        if set(d) - {"family", "addr", "port"} or isinstance(d.get("addr"), dict):
            return _opaque(e)
        addr = _address(d.get("addr"), f"{p}.addr")
        lo, hi = _port(d.get("port"), f"{p}.port")
        family = _l3(d.get("family"), addr, fam, p)
        return Tproxy(family, addr, lo)
    if key in ("snat", "dnat", "masquerade"):
        d = {} if v is None else obj(v, p)
        if set(d) - {"family", "addr", "port", "flags"}:
            return _opaque(e)
        lo, hi = _port(d.get("port"), f"{p}.port")
        if key == "masquerade":
            return Nat("masquerade", None, None, None, lo, hi, _flags(d.get("flags"), p))
        a = d.get("addr")
        a1 = a2 = None
        if isinstance(a, dict) and set(a) == {"range"} and isinstance(a["range"], list) and len(a["range"]) == 2:
            a1, a2 = _address(a["range"][0], f"{p}.addr"), _address(a["range"][1], f"{p}.addr")
        elif isinstance(a, dict) or (a is None and lo is None):
            return _opaque(e)
        else:
            a1 = _address(a, f"{p}.addr")
        return Nat(key, _l3(d.get("family"), a1, fam, p), a1, a2, lo, hi,  # type: ignore[arg-type]
                   _flags(d.get("flags"), p))
    if key == "mangle":
        return _mangle(obj(v, p), e, p)
    if key == "log":
        d = {} if v is None else obj(v, p)
        if set(d) - {"prefix", "level", "group"}:
            return _opaque(e)
        group = integer(d["group"], f"{p}.group", "a log group", 65535) if "group" in d else None
        try:
            return Log(opt_str(d, "prefix", p), opt_str(d, "level", p), group)
        except ValueError:
            return _opaque(e)
    if key == "reject":
        if v is None:
            return Reject()
        d = obj(v, p)
        reason = " ".join(str(d[k]) for k in ("type", "expr") if d.get(k) is not None) or None
        return Reject(default_reject(reason, fam))
    return _opaque(e)


def _opaque(e: Any) -> Opaque:
    return Opaque(json.dumps(e, sort_keys=True))


def _flags(v: Any, path: str) -> tuple[str, ...]:
    if v is None:
        return ()
    items = v if isinstance(v, list) else [v]
    if not all(isinstance(f, str) and f in ("random", "fully-random", "persistent") for f in items):
        fail(f"{path}.flags", f"expected random, fully-random or persistent, got {short(v)}")
    return tuple(items)


def _port(v: Any, path: str) -> tuple[int | None, int | None]:
    if v is None:
        return None, None
    if isinstance(v, dict) and isinstance(v.get("range"), list) and len(v["range"]) == 2:
        return integer(v["range"][0], path, "a port", 65535), integer(v["range"][1], path, "a port", 65535)
    return integer(v, path, "a port", 65535), None


def _address(v: Any, path: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if v is None:
        return None
    if not isinstance(v, str):
        fail(path, f"expected an address, got {short(v)}")
    try:
        return ipaddress.ip_address(v)
    except ValueError:
        fail(path, f"expected an address, got {short(v)}")


def _l3(v: Any, addr: ipaddress.IPv4Address | ipaddress.IPv6Address | None, fam: str, path: str) -> Any:
    if addr is not None:
        return "ip" if addr.version == 4 else "ip6"
    if fam in ("ip", "ip6"):
        return fam
    if v not in (None, "ip", "ip6"):
        fail(f"{path}.family", f"expected ip or ip6, got {short(v)}")
    return v


def _mark_source(v: Any) -> str | None:
    if v == {"meta": {"key": "mark"}}:
        return "meta"
    if v == {"ct": {"key": "mark"}}:
        return "ct"
    return None


def _mark_value(v: Any, path: str, depth: int = 0) -> MarkValue | None:
    """``N``, ``{"meta": {"key": "mark"}}``, ``{"&"|"|"|"^": [V, N]}`` folded; None: not a mark value."""
    if depth > MAX_DEPTH:
        return None
    if isinstance(v, int) and not isinstance(v, bool):
        return MarkValue.constant(integer(v, path, "a mark"))
    src = _mark_source(v)
    if src is not None:
        return MarkValue(src)  # type: ignore[arg-type]
    if isinstance(v, dict) and len(v) == 1:
        ((op, args),) = v.items()
        if op in ("&", "|", "^") and isinstance(args, list) and len(args) == 2 and \
                isinstance(args[1], int) and not isinstance(args[1], bool):
            inner = _mark_value(args[0], path, depth + 1)
            if inner is None or inner.source is None:
                return None
            n = integer(args[1], path, "a mark")
            mask, xor = inner.mask, inner.xor
            if op == "&":
                mask, xor = mask & n, xor & n
            elif op == "|":
                mask, xor = mask & ~n & M32, xor | n
            else:
                xor ^= n
            return MarkValue(inner.source, mask, xor)
    return None


def _mangle(d: dict[str, Any], e: Any, path: str) -> Item:
    key = d.get("key")
    target = _mark_source(key)
    if target is not None:
        value = _mark_value(d.get("value"), f"{path}.value")
        return SetMark(target, value) if value is not None else _opaque(e)  # type: ignore[arg-type]
    if key == {"ct": {"key": "zone"}} and isinstance(d.get("value"), int):
        return SetCtZone(integer(d["value"], f"{path}.value", "a conntrack zone", 65535))
    return _opaque(e)


def _selector(left: Any, path: str) -> tuple[Selector, int | None] | None:
    """The selector (and mask) on the left of a match, or None when meshsolve does not type it."""
    mask = None
    if isinstance(left, dict) and set(left) == {"&"}:
        args = left["&"]
        if not (isinstance(args, list) and len(args) == 2 and isinstance(args[1], int)
                and not isinstance(args[1], bool)):
            return None
        mask = integer(args[1], path, "a mask")
        left = args[0]
    if not isinstance(left, dict) or len(left) != 1:
        return None
    ((base, body),) = left.items()
    if not isinstance(body, dict):
        return None
    if base == "payload":
        proto = body.get("protocol", body.get("name"))
        sel = Selector(str(proto), str(body.get("field")))
        if set(body) - {"protocol", "name", "field"}:
            return None
    elif base in ("meta", "ct") and set(body) == {"key"}:
        sel = Selector(base, str(body["key"]))
    else:
        return None
    if sel.kind is None or (mask is not None and sel.kind is not ValueKind.MARK):
        return None
    return sel, mask


def _match(d: dict[str, Any], path: str) -> Item:
    found = _selector(d.get("left"), f"{path}.left")
    op = d.get("op", "==")
    if found is None or op not in ("==", "!=", "<", ">", "<=", ">=", "in"):
        return _opaque({"match": d})
    sel, mask = found
    kind = sel.kind
    assert kind is not None
    right = d.get("right")
    rpath = f"{path}.right"
    if kind is ValueKind.CTSTATE and isinstance(right, dict) and set(right) == {"|"}:
        right, op = _or_names(right, rpath), ("==" if op in ("==", "in") else op)
    if kind is ValueKind.CTSTATE and (isinstance(right, list) or (op == "in" and isinstance(right, str))):
        names = right if isinstance(right, list) else [right]
        value: Value = Flags(tuple(str(_scalar(kind, n, rpath)) for n in names))
        if op not in ("in", "==", "!="):
            fail(path, f"expected ==, != or in for a conntrack state list, got {op!r}")
        return Match(sel, value, op, mask)
    if op == "in":
        op = "=="
    if kind is ValueKind.CTSTATE and isinstance(right, str):
        value = Flags((str(_scalar(kind, right, rpath)),))
        return Match(sel, value, op, mask)
    if isinstance(right, str) and right.startswith("@"):
        value = SetRef(right[1:])
    elif isinstance(right, dict) and set(right) == {"set"}:
        els = right["set"] if isinstance(right["set"], list) else [right["set"]]
        if not els:
            fail(rpath, "expected at least one set element")
        value = AnonSet(make_set([element(x, kind, f"{rpath}.set[{k}]") for k, x in enumerate(els)]))
    else:
        value = element(right, kind, rpath)
    return Match(sel, value, op, mask)


def _or_names(v: Any, path: str, depth: int = 0) -> list[Any]:
    """``{"|": [a, {"|": [b, c]}]}`` → ``[a, b, c]``."""
    if isinstance(v, dict) and set(v) == {"|"} and isinstance(v["|"], list) and depth < MAX_DEPTH:
        return [n for x in v["|"] for n in _or_names(x, path, depth + 1)]
    return [v]


def _scalar(kind: ValueKind, v: Any, path: str) -> int | str | ipaddress.IPv4Network | ipaddress.IPv6Network:
    if isinstance(v, bool) or not isinstance(v, int | str):
        fail(path, f"expected {kind.value}, got {short(v)}")
    try:
        return scalar(kind, v)
    except BadValue as exc:
        fail(path, str(exc))


def element(v: Any, kind: ValueKind, path: str) -> Element:
    if isinstance(v, dict) and set(v) == {"range"} and isinstance(v["range"], list) and len(v["range"]) == 2:
        lo, hi = v["range"]
        if isinstance(lo, bool) or isinstance(hi, bool) or not isinstance(lo, int | str) or \
                not isinstance(hi, int | str):
            fail(path, f"expected a range of {kind.value}, got {short(v)}")
        try:
            return make_range(kind, lo, hi)
        except BadValue as exc:
            fail(path, str(exc))
    if isinstance(v, dict) and set(v) == {"prefix"} and isinstance(v["prefix"], dict) and kind is ValueKind.MARK:
        try:
            return mark_prefix(v["prefix"].get("addr"), v["prefix"].get("len"))  # type: ignore[arg-type]
        except BadValue as exc:
            fail(path, str(exc))
    if isinstance(v, dict) and set(v) == {"prefix"} and isinstance(v["prefix"], dict):
        pre = v["prefix"]
        if not isinstance(pre.get("addr"), str) or isinstance(pre.get("len"), bool) or \
                not isinstance(pre.get("len"), int):
            fail(path, f"expected a prefix {{addr, len}}, got {short(v)}")
        return _scalar(kind, f"{pre['addr']}/{pre['len']}", path)
    if isinstance(v, dict) and set(v) == {"elem"} and isinstance(v["elem"], dict) and "val" in v["elem"] and \
            set(v["elem"]) == {"val"}:
        return element(v["elem"]["val"], kind, f"{path}.elem.val")
    return _scalar(kind, v, path)

