"""``nft -j list ruleset`` JSON (and ``nft -j -f`` JSON commands) → commands.

The listing form is a list of ``table``, ``chain``, ``rule``, ``set``/``map`` (and other table
objects, kept as opaque text) under ``{"nftables": [...]}``; the command form wraps the same objects
in ``add``/``create``/``insert``/``replace``/``delete``/``destroy``/``flush``/``rename``. Expressions
are decoded into the same items as the text forms (``match``, ``counter``, verdicts, ``redirect``,
``tproxy``, ``snat``/``dnat``/``masquerade``, ``mangle`` of ``meta mark``/``ct mark``/``ct zone``,
``log``, ``reject``); anything else becomes an ``Opaque`` item holding its JSON text.

Errors are ``ParseError``s naming the path in the document (``nftables[7].rule.expr[2].match.right``)
and the line where that top-level item starts.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any, NoReturn

from meshsolve.errors import ParseError
from meshsolve.model.rules import Origin
from meshsolve.nftables.commands import (
    AddChain,
    AddElements,
    AddObject,
    AddRule,
    AddSet,
    AddTable,
    Command,
    DeleteChain,
    DeleteRule,
    DeleteSet,
    DeleteTable,
    FlushChain,
    FlushRuleset,
    FlushSet,
    FlushTable,
    RenameChain,
    ReplaceRule,
)
from meshsolve.nftables.exprs import default_reject
from meshsolve.nftables.kinds import (
    CHAIN_TYPES,
    FAMILIES,
    HOOKS,
    POLICIES,
    SET_TYPES,
    ValueKind,
    allowed_hooks,
)
from meshsolve.nftables.lexer import check_text
from meshsolve.nftables.model import (
    M32,
    AnonSet,
    Counter,
    Element,
    Flags,
    HookSpec,
    Item,
    Log,
    MarkValue,
    Match,
    NamedSet,
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

__all__ = ["parse_json_commands"]

_OBJECTS = ("counter", "quota", "limit", "flowtable", "ct helper", "ct timeout", "ct expectation", "secmark",
            "synproxy", "tunnel")
_VERBS = ("add", "create", "insert", "replace", "delete", "destroy", "flush", "rename")
_MAX_DEPTH = 64


class _Fail(Exception):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def _fail(path: str, message: str) -> NoReturn:
    raise _Fail(path, message)


def _item_lines(text: str) -> list[int]:
    """The line each element of the top-level ``nftables`` list starts on (the text is valid JSON)."""
    dec = json.JSONDecoder()
    n = len(text)
    line, counted = 1, 0

    def ws(i: int) -> int:
        while i < n and text[i] in " \t\r\n":
            i += 1
        return i

    def line_at(i: int) -> int:
        nonlocal line, counted
        line += text.count("\n", counted, i)
        counted = i
        return line

    i = ws(0)
    if i >= n or text[i] != "{":
        return []
    i += 1
    while True:
        i = ws(i)
        if i >= n or text[i] != '"':
            return []
        key, i = dec.raw_decode(text, i)
        i = ws(i) + 1  # the ':'
        i = ws(i)
        if key == "nftables" and i < n and text[i] == "[":
            i += 1
            lines: list[int] = []
            while True:
                i = ws(i)
                if i >= n or text[i] == "]":
                    return lines
                lines.append(line_at(i))
                _, i = dec.raw_decode(text, i)
                i = ws(i)
                if i < n and text[i] == ",":
                    i += 1
        _, i = dec.raw_decode(text, i)
        i = ws(i)
        if i < n and text[i] == ",":
            i += 1


def parse_json_commands(text: str, source: str = "<string>") -> tuple[tuple[Command, ...], list[str]]:
    """The commands a JSON document stands for (a listing is the adds that recreate it)."""
    lines = check_text(text, source, "nft JSON", line_limit=False)
    try:
        doc = json.loads(text)
        item_lines = _item_lines(text)
    except json.JSONDecodeError as exc:
        raise ParseError(f"not JSON: {exc.msg}", source=source, lineno=exc.lineno,
                         line=lines[exc.lineno - 1][:200] if 0 < exc.lineno <= len(lines) else None) from None
    except RecursionError:
        raise ParseError("JSON nested too deeply", source=source, lineno=1) from None
    except ValueError as exc:  # e.g. a number of more than 4300 digits
        raise ParseError(f"not JSON nft can print: {exc}", source=source, lineno=1) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("nftables"), list):
        raise ParseError('expected a JSON object {"nftables": [...]} (what nft -j prints)', source=source,
                         lineno=1, line=lines[0][:200])
    out: list[Command] = []
    for k, entry in enumerate(doc["nftables"]):
        lineno = item_lines[k] if k < len(item_lines) else 1
        path = f"nftables[{k}]"
        try:
            out.extend(_entry(entry, path, Origin(source, lineno)))
        except _Fail as exc:
            raise ParseError(f"{exc.path}: {exc.message}", source=source, lineno=lineno,
                             line=lines[lineno - 1][:200] if 0 < lineno <= len(lines) else None) from None
        except RecursionError:
            raise ParseError(f"{path}: expression nested too deeply", source=source, lineno=lineno) from None
    return tuple(out), lines


def _single(obj: Any, path: str, what: str) -> tuple[str, Any]:
    if not isinstance(obj, dict) or len(obj) != 1:
        _fail(path, f"expected an object with one key ({what}), got {_short(obj)}")
    ((key, value),) = obj.items()
    return str(key), value


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def _entry(entry: Any, path: str, o: Origin) -> list[Command]:
    key, body = _single(entry, path, "table, chain, rule, set, add, insert...")
    if key == "metainfo":
        return []
    if key in _VERBS:
        okey, obody = _single(body, f"{path}.{key}", "table, chain, rule, set, map, element")
        return _command(key, okey, obody, f"{path}.{key}.{okey}", o, listed=False)
    return _command("add", key, body, f"{path}.{key}", o, listed=True)


def _obj(body: Any, path: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        _fail(path, f"expected an object, got {_short(body)}")
    return body


def _str(d: dict[str, Any], key: str, path: str, *, name: bool = False) -> str:
    v = d.get(key)
    if not isinstance(v, str) or not v or len(v) > 255 or not v.isprintable() or '"' in v:
        _fail(f"{path}.{key}", f"expected {'a name' if name else 'a string'} (printable, no quotes), got {_short(v)}")
    return v


def _opt_str(d: dict[str, Any], key: str, path: str) -> str | None:
    return None if d.get(key) is None else _str(d, key, path)


def _int(v: Any, path: str, what: str, top: int = M32) -> int:
    try:
        return number(v, what, top) if isinstance(v, int) else number(str(v), what, top)
    except BadValue as exc:
        _fail(path, str(exc))


def _family(d: dict[str, Any], path: str) -> Any:
    fam = d.get("family")
    if fam not in FAMILIES:
        _fail(f"{path}.family", f"expected a family ({', '.join(FAMILIES)}), got {_short(fam)}")
    return fam


def _command(verb: str, what: str, body: Any, path: str, o: Origin, listed: bool) -> list[Command]:
    """One object under a verb; ``listed``: a bare object of a listing, whose ``handle`` is its own
    (in a command, ``add``/``insert`` take the ``handle`` of the rule to add after/insert before)."""
    if what == "ruleset" and verb == "flush":
        fam = body.get("family") if isinstance(body, dict) else None
        return [FlushRuleset(fam if fam in FAMILIES else None, origin=o)]
    d = _obj(body, path)
    fam = _family(d, path)
    if what == "table":
        name = _str(d, "name", path, name=True)
        if verb in ("add", "create"):
            flags = d.get("flags", ())
            flags = (flags,) if isinstance(flags, str) else tuple(str(f) for f in flags) if isinstance(flags, list) \
                else ()
            return [AddTable(fam, name, flags, _opt_str(d, "comment", path), verb == "create", origin=o,
                             handle=_handle(d) if listed else None)]
        if verb in ("delete", "destroy"):
            return [DeleteTable(fam, name, None, verb == "destroy", origin=o)]
        if verb == "flush":
            return [FlushTable(fam, name, origin=o)]
        _fail(path, f"cannot {verb} a table")
    table = _str(d, "table", path, name=True)
    if what == "chain":
        name = _str(d, "name", path, name=True)
        if verb in ("add", "create"):
            return [AddChain(fam, table, name, _hook(d, fam, path), _opt_str(d, "comment", path),
                             verb == "create", origin=o, handle=_handle(d) if listed else None)]
        if verb in ("delete", "destroy"):
            return [DeleteChain(fam, table, name, None, verb == "destroy", origin=o)]
        if verb == "flush":
            return [FlushChain(fam, table, name, origin=o)]
        if verb == "rename":
            return [RenameChain(fam, table, name, _str(d, "newname", path, name=True), origin=o)]
        _fail(path, f"cannot {verb} a chain")
    if what == "rule":
        chain = _str(d, "chain", path, name=True)
        if verb in ("delete", "destroy"):
            return [DeleteRule(fam, table, chain, _int(d.get("handle"), f"{path}.handle", "a rule handle"),
                               verb == "destroy", origin=o)]
        rule = _rule(d, fam, path, o, listed)
        if verb == "replace":
            return [ReplaceRule(fam, table, chain, _int(d.get("handle"), f"{path}.handle", "a rule handle"), rule,
                                origin=o)]
        index = _int(d["index"], f"{path}.index", "a rule index") if "index" in d else None
        position = None
        if not listed and index is None and "handle" in d:
            position = _int(d["handle"], f"{path}.handle", "a rule handle")
        return [AddRule(fam, table, chain, rule, verb == "insert", index, position, origin=o)]
    if what in ("set", "map"):
        name = _str(d, "name", path, name=True)
        if verb in ("add", "create"):
            return [AddSet(fam, table, _set(d, what, path), verb == "create", origin=o)]
        if verb in ("delete", "destroy"):
            return [DeleteSet(fam, table, name, None, verb == "destroy", origin=o)]
        if verb == "flush":
            return [FlushSet(fam, table, name, origin=o)]
        _fail(path, f"cannot {verb} a {what}")
    if what == "element":
        name = _str(d, "name", path, name=True)
        elems = d.get("elem", [])
        if not isinstance(elems, list):
            elems = [elems]
        els = tuple(Opaque(json.dumps(e, sort_keys=True)) for e in elems)
        return [AddElements(fam, table, name, els, delete=verb in ("delete", "destroy"), origin=o)]
    if what in _OBJECTS and verb in ("add", "create"):
        return [AddObject(fam, table, Opaque(f"{what} {json.dumps(d, sort_keys=True)}"), origin=o)]
    _fail(path, f"expected table, chain, rule, set, map or element, got {what!r}")


def _hook(d: dict[str, Any], fam: Any, path: str) -> HookSpec | None:
    if "hook" not in d and "type" not in d:
        return None
    ctype, hook = d.get("type"), d.get("hook")
    if ctype not in CHAIN_TYPES:
        _fail(f"{path}.type", f"expected a chain type (filter, nat or route), got {_short(ctype)}")
    if hook not in HOOKS or hook not in allowed_hooks(fam, ctype):
        _fail(f"{path}.hook", f"expected a hook for a {ctype} chain in a {fam} table "
                              f"({', '.join(allowed_hooks(fam, ctype)) or 'none'}), got {_short(hook)}")
    prio = d.get("prio")
    if isinstance(prio, bool) or not isinstance(prio, int) or not -2**31 <= prio < 2**31:
        _fail(f"{path}.prio", f"expected a numeric priority, got {_short(prio)}")
    policy = d.get("policy", "accept")
    if policy not in POLICIES:
        _fail(f"{path}.policy", f"expected accept or drop, got {_short(policy)}")
    dev = d.get("dev")
    device = dev if isinstance(dev, str) and dev.isprintable() and '"' not in dev else None
    return HookSpec(ctype, hook, prio, policy, device)


def _set(d: dict[str, Any], what: str, path: str) -> NamedSet:
    typ = d.get("type")
    if isinstance(typ, list) and all(isinstance(t, str) for t in typ):
        key_type = " . ".join(typ)
    elif isinstance(typ, str) and typ.isprintable():
        key_type = typ
    else:
        _fail(f"{path}.type", f"expected the set's type, got {_short(typ)}")
    data = d.get("map") if what == "map" else None
    data_type = data if isinstance(data, str) else (json.dumps(data) if data is not None else None)
    flags = d.get("flags", [])
    flags = tuple(str(f) for f in flags) if isinstance(flags, list) else (str(flags),)
    kind = SET_TYPES.get(key_type) if what == "set" else None
    elems = d.get("elem", [])
    elements: list[Element | Opaque] = []
    for k, e in enumerate(elems if isinstance(elems, list) else [elems]):
        if kind is not None and (not isinstance(e, dict | list) or set(e) in ({"range"}, {"prefix"})):
            elements.append(_element(e, kind, f"{path}.elem[{k}]"))
        else:
            elements.append(Opaque(json.dumps(e, sort_keys=True)))
    extra = tuple(f"{k} {json.dumps(d[k])}" for k in ("policy", "timeout", "gc-interval", "size") if k in d)
    return NamedSet(_str(d, "name", path, name=True), key_type, what, data_type, flags,  # type: ignore[arg-type]
                    tuple(elements), extra, _opt_str(d, "comment", path))


# ---------------------------------------------------------------------------------------------
# Rules and expressions


def _handle(d: dict[str, Any]) -> int | None:
    h = d.get("handle")
    return h if isinstance(h, int) and not isinstance(h, bool) and 0 < h < 2**63 else None


def _rule(d: dict[str, Any], fam: str, path: str, o: Origin, listed: bool) -> Rule:
    exprs = d.get("expr")
    if not isinstance(exprs, list) or not exprs:
        _fail(f"{path}.expr", f"expected a non-empty list of expressions, got {_short(exprs)}")
    items = tuple(_stmt(e, fam, f"{path}.expr[{k}]") for k, e in enumerate(exprs))
    return Rule(items, _opt_str(d, "comment", path), _handle(d) if listed else None, o)


def _stmt(e: Any, fam: str, path: str) -> Item:
    key, v = _single(e, path, "match, counter, accept, jump...")
    p = f"{path}.{key}"
    if key == "match":
        return _match(_obj(v, p), p)
    if key in ("accept", "drop", "return", "continue"):
        return Verdict(key)  # type: ignore[arg-type]
    if key in ("jump", "goto"):
        return Verdict(key, _str(_obj(v, p), "target", p, name=True))  # type: ignore[arg-type]
    if key == "counter":
        if v is None:
            return Counter()
        if isinstance(v, dict) and set(v) <= {"packets", "bytes"}:
            return Counter(_int(v.get("packets", 0), f"{p}.packets", "a count", 2**64 - 1),
                           _int(v.get("bytes", 0), f"{p}.bytes", "a count", 2**64 - 1))
        return _opaque(e)
    if key == "redirect":
        if v is None:
            return Redirect()
        d = _obj(v, p)
        if set(d) - {"port", "flags"}:
            return _opaque(e)
        lo, hi = _port(d.get("port"), f"{p}.port")
        return Redirect(lo, hi, _flags(d.get("flags"), p))
    if key == "tproxy":
        d = _obj(v, p)
        if set(d) - {"family", "addr", "port"} or isinstance(d.get("addr"), dict):
            return _opaque(e)
        addr = _address(d.get("addr"), f"{p}.addr")
        lo, hi = _port(d.get("port"), f"{p}.port")
        family = _l3(d.get("family"), addr, fam, p)
        return Tproxy(family, addr, lo)
    if key in ("snat", "dnat", "masquerade"):
        d = {} if v is None else _obj(v, p)
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
        return _mangle(_obj(v, p), e, p)
    if key == "log":
        d = {} if v is None else _obj(v, p)
        if set(d) - {"prefix", "level", "group"}:
            return _opaque(e)
        group = _int(d["group"], f"{p}.group", "a log group", 65535) if "group" in d else None
        try:
            return Log(_opt_str(d, "prefix", p), _opt_str(d, "level", p), group)
        except ValueError:
            return _opaque(e)
    if key == "reject":
        if v is None:
            return Reject()
        d = _obj(v, p)
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
        _fail(f"{path}.flags", f"expected random, fully-random or persistent, got {_short(v)}")
    return tuple(items)


def _port(v: Any, path: str) -> tuple[int | None, int | None]:
    if v is None:
        return None, None
    if isinstance(v, dict) and isinstance(v.get("range"), list) and len(v["range"]) == 2:
        return _int(v["range"][0], path, "a port", 65535), _int(v["range"][1], path, "a port", 65535)
    return _int(v, path, "a port", 65535), None


def _address(v: Any, path: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if v is None:
        return None
    if not isinstance(v, str):
        _fail(path, f"expected an address, got {_short(v)}")
    try:
        return ipaddress.ip_address(v)
    except ValueError:
        _fail(path, f"expected an address, got {_short(v)}")


def _l3(v: Any, addr: ipaddress.IPv4Address | ipaddress.IPv6Address | None, fam: str, path: str) -> Any:
    if addr is not None:
        return "ip" if addr.version == 4 else "ip6"
    if fam in ("ip", "ip6"):
        return fam
    if v not in (None, "ip", "ip6"):
        _fail(f"{path}.family", f"expected ip or ip6, got {_short(v)}")
    return v


def _mark_source(v: Any) -> str | None:
    if v == {"meta": {"key": "mark"}}:
        return "meta"
    if v == {"ct": {"key": "mark"}}:
        return "ct"
    return None


def _mark_value(v: Any, path: str, depth: int = 0) -> MarkValue | None:
    """``N``, ``{"meta": {"key": "mark"}}``, ``{"&"|"|"|"^": [V, N]}`` folded; None: not a mark value."""
    if depth > _MAX_DEPTH:
        return None
    if isinstance(v, int) and not isinstance(v, bool):
        return MarkValue.constant(_int(v, path, "a mark"))
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
            n = _int(args[1], path, "a mark")
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
        return SetCtZone(_int(d["value"], f"{path}.value", "a conntrack zone", 65535))
    return _opaque(e)


def _selector(left: Any, path: str) -> tuple[Selector, int | None] | None:
    """The selector (and mask) on the left of a match, or None when meshsolve does not type it."""
    mask = None
    if isinstance(left, dict) and set(left) == {"&"}:
        args = left["&"]
        if not (isinstance(args, list) and len(args) == 2 and isinstance(args[1], int)
                and not isinstance(args[1], bool)):
            return None
        mask = _int(args[1], path, "a mask")
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
            _fail(path, f"expected ==, != or in for a conntrack state list, got {op!r}")
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
            _fail(rpath, "expected at least one set element")
        value = AnonSet(make_set([_element(x, kind, f"{rpath}.set[{k}]") for k, x in enumerate(els)]))
    else:
        value = _element(right, kind, rpath)
    return Match(sel, value, op, mask)


def _or_names(v: Any, path: str, depth: int = 0) -> list[Any]:
    """``{"|": [a, {"|": [b, c]}]}`` → ``[a, b, c]``."""
    if isinstance(v, dict) and set(v) == {"|"} and isinstance(v["|"], list) and depth < _MAX_DEPTH:
        return [n for x in v["|"] for n in _or_names(x, path, depth + 1)]
    return [v]


def _scalar(kind: ValueKind, v: Any, path: str) -> int | str | ipaddress.IPv4Network | ipaddress.IPv6Network:
    if isinstance(v, bool) or not isinstance(v, int | str):
        _fail(path, f"expected {kind.value}, got {_short(v)}")
    try:
        return scalar(kind, v)
    except BadValue as exc:
        _fail(path, str(exc))


def _element(v: Any, kind: ValueKind, path: str) -> Element:
    if isinstance(v, dict) and set(v) == {"range"} and isinstance(v["range"], list) and len(v["range"]) == 2:
        lo, hi = v["range"]
        if isinstance(lo, bool) or isinstance(hi, bool) or not isinstance(lo, int | str) or \
                not isinstance(hi, int | str):
            _fail(path, f"expected a range of {kind.value}, got {_short(v)}")
        try:
            return make_range(kind, lo, hi)
        except BadValue as exc:
            _fail(path, str(exc))
    if isinstance(v, dict) and set(v) == {"prefix"} and isinstance(v["prefix"], dict) and kind is ValueKind.MARK:
        try:
            return mark_prefix(v["prefix"].get("addr"), v["prefix"].get("len"))  # type: ignore[arg-type]
        except BadValue as exc:
            _fail(path, str(exc))
    if isinstance(v, dict) and set(v) == {"prefix"} and isinstance(v["prefix"], dict):
        pre = v["prefix"]
        if not isinstance(pre.get("addr"), str) or isinstance(pre.get("len"), bool) or \
                not isinstance(pre.get("len"), int):
            _fail(path, f"expected a prefix {{addr, len}}, got {_short(v)}")
        return _scalar(kind, f"{pre['addr']}/{pre['len']}", path)
    if isinstance(v, dict) and set(v) == {"elem"} and isinstance(v["elem"], dict) and "val" in v["elem"] and \
            set(v["elem"]) == {"val"}:
        return _element(v["elem"]["val"], kind, f"{path}.elem.val")
    return _scalar(kind, v, path)

