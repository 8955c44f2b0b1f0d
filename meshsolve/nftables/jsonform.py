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

import json
from typing import Any

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
from meshsolve.nftables.jsonexpr import (
    Fail,
    element,
    fail,
    handle,
    integer,
    obj,
    opt_str,
    rule,
    short,
    single,
    string,
)
from meshsolve.nftables.kinds import (
    CHAIN_TYPES,
    FAMILIES,
    HOOKS,
    POLICIES,
    SET_TYPES,
    allowed_hooks,
)
from meshsolve.nftables.lexer import check_text
from meshsolve.nftables.model import Element, HookSpec, NamedSet, Opaque

__all__ = ["parse_json_commands"]

_OBJECTS = ("counter", "quota", "limit", "flowtable", "ct helper", "ct timeout", "ct expectation", "secmark",
            "synproxy", "tunnel")
_VERBS = ("add", "create", "insert", "replace", "delete", "destroy", "flush", "rename")
MAX_DEPTH = 64


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
        except Fail as exc:
            raise ParseError(f"{exc.path}: {exc.message}", source=source, lineno=lineno,
                             line=lines[lineno - 1][:200] if 0 < lineno <= len(lines) else None) from None
        except RecursionError:
            raise ParseError(f"{path}: expression nested too deeply", source=source, lineno=lineno) from None
    return tuple(out), lines


def _entry(entry: Any, path: str, o: Origin) -> list[Command]:
    key, body = single(entry, path, "table, chain, rule, set, add, insert...")
    if key == "metainfo":
        return []
    if key in _VERBS:
        okey, obody = single(body, f"{path}.{key}", "table, chain, rule, set, map, element")
        return _command(key, okey, obody, f"{path}.{key}.{okey}", o, listed=False)
    return _command("add", key, body, f"{path}.{key}", o, listed=True)


def _family(d: dict[str, Any], path: str) -> Any:
    fam = d.get("family")
    if fam not in FAMILIES:
        fail(f"{path}.family", f"expected a family ({', '.join(FAMILIES)}), got {short(fam)}")
    return fam


def _command(verb: str, what: str, body: Any, path: str, o: Origin, listed: bool) -> list[Command]:
    """One object under a verb; ``listed``: a bare object of a listing, whose ``handle`` is its own
    (in a command, ``add``/``insert`` take the ``handle`` of the rule to add after/insert before)."""
    if what == "ruleset" and verb == "flush":
        fam = body.get("family") if isinstance(body, dict) else None
        return [FlushRuleset(fam if fam in FAMILIES else None, origin=o)]
    d = obj(body, path)
    fam = _family(d, path)
    if what == "table":
        name = string(d, "name", path, name=True)
        if verb in ("add", "create"):
            flags = d.get("flags", ())
            flags = (flags,) if isinstance(flags, str) else tuple(str(f) for f in flags) if isinstance(flags, list) \
                else ()
            return [AddTable(fam, name, flags, opt_str(d, "comment", path), verb == "create", origin=o,
                             handle=handle(d) if listed else None)]
        if verb in ("delete", "destroy"):
            return [DeleteTable(fam, name, None, verb == "destroy", origin=o)]
        if verb == "flush":
            return [FlushTable(fam, name, origin=o)]
        fail(path, f"cannot {verb} a table")
    table = string(d, "table", path, name=True)
    if what == "chain":
        name = string(d, "name", path, name=True)
        if verb in ("add", "create"):
            return [AddChain(fam, table, name, _hook(d, fam, path), opt_str(d, "comment", path),
                             verb == "create", origin=o, handle=handle(d) if listed else None)]
        if verb in ("delete", "destroy"):
            return [DeleteChain(fam, table, name, None, verb == "destroy", origin=o)]
        if verb == "flush":
            return [FlushChain(fam, table, name, origin=o)]
        if verb == "rename":
            return [RenameChain(fam, table, name, string(d, "newname", path, name=True), origin=o)]
        fail(path, f"cannot {verb} a chain")
    if what == "rule":
        chain = string(d, "chain", path, name=True)
        if verb in ("delete", "destroy"):
            return [DeleteRule(fam, table, chain, integer(d.get("handle"), f"{path}.handle", "a rule handle"),
                               verb == "destroy", origin=o)]
        new = rule(d, fam, path, o, listed)
        if verb == "replace":
            return [ReplaceRule(fam, table, chain, integer(d.get("handle"), f"{path}.handle", "a rule handle"), new,
                                origin=o)]
        index = integer(d["index"], f"{path}.index", "a rule index") if "index" in d else None
        position = None
        if not listed and index is None and "handle" in d:
            position = integer(d["handle"], f"{path}.handle", "a rule handle")
        return [AddRule(fam, table, chain, new, verb == "insert", index, position, origin=o)]
    if what in ("set", "map"):
        name = string(d, "name", path, name=True)
        if verb in ("add", "create"):
            return [AddSet(fam, table, _set(d, what, path), verb == "create", origin=o)]
        if verb in ("delete", "destroy"):
            return [DeleteSet(fam, table, name, None, verb == "destroy", origin=o)]
        if verb == "flush":
            return [FlushSet(fam, table, name, origin=o)]
        fail(path, f"cannot {verb} a {what}")
    if what == "element":
        name = string(d, "name", path, name=True)
        elems = d.get("elem", [])
        if not isinstance(elems, list):
            elems = [elems]
        els = tuple(Opaque(json.dumps(e, sort_keys=True)) for e in elems)
        return [AddElements(fam, table, name, els, delete=verb in ("delete", "destroy"), origin=o)]
    if what in _OBJECTS and verb in ("add", "create"):
        return [AddObject(fam, table, Opaque(f"{what} {json.dumps(d, sort_keys=True)}"), origin=o)]
    fail(path, f"expected table, chain, rule, set, map or element, got {what!r}")


def _hook(d: dict[str, Any], fam: Any, path: str) -> HookSpec | None:
    if "hook" not in d and "type" not in d:
        return None
    ctype, hook = d.get("type"), d.get("hook")
    if ctype not in CHAIN_TYPES:
        fail(f"{path}.type", f"expected a chain type (filter, nat or route), got {short(ctype)}")
    if hook not in HOOKS or hook not in allowed_hooks(fam, ctype):
        fail(f"{path}.hook", f"expected a hook for a {ctype} chain in a {fam} table "
                              f"({', '.join(allowed_hooks(fam, ctype)) or 'none'}), got {short(hook)}")
    prio = d.get("prio")
    if isinstance(prio, bool) or not isinstance(prio, int) or not -2**31 <= prio < 2**31:
        fail(f"{path}.prio", f"expected a numeric priority, got {short(prio)}")
    policy = d.get("policy", "accept")
    if policy not in POLICIES:
        fail(f"{path}.policy", f"expected accept or drop, got {short(policy)}")
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
        fail(f"{path}.type", f"expected the set's type, got {short(typ)}")
    data = d.get("map") if what == "map" else None
    data_type = data if isinstance(data, str) else (json.dumps(data) if data is not None else None)
    flags = d.get("flags", [])
    flags = tuple(str(f) for f in flags) if isinstance(flags, list) else (str(flags),)
    kind = SET_TYPES.get(key_type) if what == "set" else None
    elems = d.get("elem", [])
    elements: list[Element | Opaque] = []
    for k, e in enumerate(elems if isinstance(elems, list) else [elems]):
        if kind is not None and (not isinstance(e, dict | list) or (isinstance(e, dict) and set(e) in ({"range"},
                                                                                              {"prefix"}))):
            elements.append(element(e, kind, f"{path}.elem[{k}]"))
        else:
            elements.append(Opaque(json.dumps(e, sort_keys=True)))
    extra = tuple(f"{k} {json.dumps(d[k])}" for k in ("policy", "timeout", "gc-interval", "size") if k in d)
    return NamedSet(string(d, "name", path, name=True), key_type, what, data_type, flags,  # type: ignore[arg-type]
                    tuple(elements), extra, opt_str(d, "comment", path))

