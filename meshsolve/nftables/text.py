"""nft text → commands: the ``nft -f`` command form and the nested ``table { ... }`` form that
``nft list ruleset`` prints (and ``nft -f`` also reads), in one grammar.

Commands: ``add|create|insert|replace|delete|destroy|flush|rename`` of ``table``, ``chain``,
``rule``, ``set``, ``map``, ``element`` (``add`` may be left out, as nft allows), ``flush ruleset``,
with the family optional (``ip`` when left out, as in nft). ``add rule`` / ``insert rule`` take
``index N`` (0-based), ``position H`` or ``handle H``; ``replace``/``delete rule`` take ``handle H``.
A leading ``nft`` (with options) is accepted, so shell transcripts read; ``nft list ...`` lines and
``#`` comments are skipped. Table objects other than chains and sets (named counters, quotas,
flowtables, ct helpers...) are kept as opaque text. ``define``, ``include`` and ``$variables`` are
refused with a ParseError that says so.
"""

from __future__ import annotations

import attrs

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
from meshsolve.nftables.exprs import element_of, parse_rule
from meshsolve.nftables.kinds import (
    CHAIN_TYPES,
    FAMILIES,
    HOOKS,
    POLICIES,
    SET_TYPES,
    ChainType,
    Family,
    Hook,
    ValueKind,
    allowed_hooks,
    priority_name_value,
)
from meshsolve.nftables.lexer import Tokens, lex
from meshsolve.nftables.model import Element, HookSpec, NamedSet, Opaque, Rule
from meshsolve.nftables.values import BadValue, number

__all__ = ["parse_commands"]

_VERBS = ("add", "create", "insert", "replace", "delete", "destroy", "flush", "rename")
_OBJECTS = ("table", "chain", "rule", "set", "map", "element")
_READ_ONLY = ("list", "reset", "monitor", "describe", "export", "import", "get")
_OPAQUE_OBJECTS = ("counter", "quota", "limit", "flowtable", "ct", "secmark", "synproxy")


def parse_commands(text: str, source: str = "<string>") -> tuple[tuple[Command, ...], list[str]]:
    """The commands a text stands for, in order, and the text's lines (for replay messages)."""
    toks, lines = lex(text.removeprefix("\ufeff"), source)
    p = _Parser(Tokens(toks, lines, source))
    p.run()
    return tuple(p.out), lines


class _Parser:
    def __init__(self, ts: Tokens) -> None:
        self.ts = ts
        self.out: list[Command] = []
        self.set_kinds: dict[tuple[str, str, str], ValueKind | None] = {}

    def origin(self, lineno: int) -> Origin:
        return Origin(self.ts.source, lineno)

    # -- top level
    def run(self) -> None:
        ts = self.ts
        while True:
            ts.skip_separators()
            if ts.peek().kind == "eof":
                return
            self.command()
            if not (ts.peek().kind in ("nl", "eof") or ts.at(";")):
                ts.fail(f"expected the end of the command, got {ts.peek()}")

    def command(self) -> None:
        ts = self.ts
        t = ts.peek()
        if t.kind != "word":
            ts.fail(f"expected a command (add, insert, delete, flush...) or 'table', got {t}")
        w = t.text
        if w in ("$", "sudo") or (w == "nft" and ts.peek(1).kind in ("word", "string")):
            self.shell_prefix()
            return
        if w in _READ_ONLY:
            ts.fail(f"'{w}' reads the ruleset; expected a command that changes it (add, insert, flush...)")
        if w in ("define", "include", "redefine", "undefine"):
            ts.fail(f"'{w}' is not supported: expected plain commands (expand variables and includes first)")
        line = t.lineno
        if w in _VERBS:
            ts.next()
            self.verb(w, line)
        elif w in _OBJECTS:
            self.verb("add", line)  # nft's implicit add
        else:
            ts.fail(f"expected a command (add, insert, delete, flush...) or 'table', got {t}")

    def shell_prefix(self) -> None:
        """``$ nft list ruleset``, ``sudo nft -a list ruleset`` (skipped) or ``nft add ...`` (read)."""
        ts = self.ts
        while ts.at("$", "sudo"):
            ts.next()
        if not ts.at("nft"):
            ts.fail(f"expected 'nft' after the shell prompt, got {ts.peek()}")
        ts.next()
        while ts.peek().kind == "word" and ts.peek().text.startswith("-"):
            opt = ts.next().text
            if opt in ("-f", "--file", "-i", "--interactive", "-I", "--includepath"):
                ts.fail(f"nft {opt} is not supported here: give the file's contents instead")
        if ts.peek().kind == "word" and ts.peek().text in _READ_ONLY:
            while ts.peek().kind not in ("nl", "eof"):
                ts.next()
            return
        self.command()

    def family(self) -> Family:
        """An optional family keyword (``ip`` when left out, as in nft)."""
        ts = self.ts
        if ts.peek().kind == "word" and ts.peek().text in FAMILIES and ts.peek(1).kind in ("word", "string"):
            return ts.next().text  # type: ignore[return-value]
        return "ip"

    def verb(self, verb: str, line: int) -> None:
        ts = self.ts
        what = ts.word("table, chain, rule, set, map or element")
        o = self.origin(line)
        if verb == "flush" and what == "ruleset":
            fam = ts.next().text if ts.peek().kind == "word" and ts.peek().text in FAMILIES else None
            self.out.append(FlushRuleset(fam, origin=o))  # type: ignore[arg-type]
            return
        if what in _OPAQUE_OBJECTS and verb in ("add", "create"):
            fam = self.family()
            table = ts.name("a table name")
            self.out.append(AddObject(fam, table, self.opaque_object(what), origin=o))
            return
        if what not in _OBJECTS:
            ts.fail(f"expected table, chain, rule, set, map or element after '{verb}', got {what!r}", line)
        fam = self.family()
        if what == "table":
            if verb in ("add", "create"):
                name = ts.name("a table name")
                self.out.append(AddTable(fam, name, create=verb == "create", origin=o))
                if ts.at("{"):
                    self.table_body(fam, name)
            elif verb in ("delete", "destroy"):
                dname, handle = self.name_or_handle("a table name")
                self.out.append(DeleteTable(fam, dname, handle, verb == "destroy", origin=o))
            elif verb == "flush":
                self.out.append(FlushTable(fam, ts.name("a table name"), origin=o))
            else:
                ts.fail(f"cannot {verb} a table: expected add, create, delete or flush", line)
            return
        table = ts.name("a table name")
        if what == "chain":
            if verb in ("add", "create"):
                name = ts.name("a chain name")
                if ts.at("{"):
                    self.chain_body(fam, table, name, line, create=verb == "create")
                else:
                    self.out.append(AddChain(fam, table, name, create=verb == "create", origin=o))
            elif verb in ("delete", "destroy"):
                dname, handle = self.name_or_handle("a chain name")
                self.out.append(DeleteChain(fam, table, dname, handle, verb == "destroy", origin=o))
            elif verb == "flush":
                self.out.append(FlushChain(fam, table, ts.name("a chain name"), origin=o))
            elif verb == "rename":
                old = ts.name("a chain name")
                self.out.append(RenameChain(fam, table, old, ts.name("the new chain name"), origin=o))
            else:
                ts.fail(f"cannot {verb} a chain", line)
            return
        if what == "rule":
            chain = ts.name("a chain name")
            self.rule_command(verb, fam, table, chain, o)
            return
        if what in ("set", "map"):
            if verb in ("add", "create"):
                name = ts.name(f"a {what} name")
                self.out.append(AddSet(fam, table, self.set_body(fam, table, name, what), verb == "create",
                                       origin=o))
            elif verb in ("delete", "destroy"):
                dname, handle = self.name_or_handle(f"a {what} name")
                self.out.append(DeleteSet(fam, table, dname, handle, verb == "destroy", origin=o))
            elif verb == "flush":
                self.out.append(FlushSet(fam, table, ts.name(f"a {what} name"), origin=o))
            else:
                ts.fail(f"cannot {verb} a {what}", line)
            return
        # element
        if verb not in ("add", "create", "delete", "destroy"):
            ts.fail(f"cannot {verb} an element: expected add or delete", line)
        name = ts.name("a set name")
        kind = self.set_kinds.get((fam, table, name))
        self.out.append(AddElements(fam, table, name, self.elements(kind),
                                    delete=verb in ("delete", "destroy"), origin=o))

    def name_or_handle(self, what: str) -> tuple[str | None, int | None]:
        ts = self.ts
        if ts.at("handle"):
            ts.next()
            return None, number(ts.word("a handle"), "a handle", 2**64 - 1)
        return ts.name(what), None

    def rule_command(self, verb: str, fam: Family, table: str, chain: str, o: Origin) -> None:
        ts = self.ts
        if verb in ("delete", "destroy", "replace"):
            ts.expect("handle", "'handle N'")
            handle = self.number("a rule handle")
            if verb != "replace":
                self.out.append(DeleteRule(fam, table, chain, handle, verb == "destroy", origin=o))
                return
            self.out.append(ReplaceRule(fam, table, chain, handle, self.rule(fam), origin=o))
            return
        if verb not in ("add", "create", "insert"):
            ts.fail(f"cannot {verb} a rule: expected add, insert, replace or delete")
        index = position = None
        if ts.at("index") and ts.peek(1).kind == "word":
            ts.next()
            index = self.number("a rule index")
        elif ts.at("position", "handle") and ts.peek(1).kind == "word":
            ts.next()
            position = self.number("a rule handle")
        self.out.append(AddRule(fam, table, chain, self.rule(fam), verb == "insert", index, position, origin=o))

    def number(self, what: str) -> int:
        ts = self.ts
        try:
            return number(ts.word(what), what, 2**32 - 1)
        except BadValue as exc:
            ts.fail(str(exc))

    def rule(self, fam: Family) -> Rule:
        line = self.ts.peek().lineno
        return attrs.evolve(parse_rule(self.ts, fam), origin=self.origin(line))

    # -- blocks
    def table_body(self, fam: Family, name: str) -> None:
        """The block after ``table NAME`` (the ``AddTable`` is the last command emitted)."""
        ts = self.ts
        ts.expect("{")
        if ts.peek().kind == "handle":
            added = self.out[-1]
            assert isinstance(added, AddTable)
            self.out[-1] = attrs.evolve(added, handle=int(ts.next().text))
        while True:
            ts.skip_separators()
            if ts.accept("}"):
                return
            t = ts.peek()
            line = t.lineno
            if t.kind == "eof":
                ts.fail(f"expected '}}' to close table {name}")
            if t.kind != "word":
                ts.fail(f"expected chain, set, map, flags or comment in table {name}, got {t}")
            w = t.text
            ts.next()
            if w == "chain":
                self.chain_body(fam, name, ts.name("a chain name"), line)
            elif w in ("set", "map"):
                sname = ts.name(f"a {w} name")
                self.out.append(AddSet(fam, name, self.set_body(fam, name, sname, w), origin=self.origin(line)))
            elif w == "flags":
                self.out.append(AddTable(fam, name, self.word_list("a table flag"), origin=self.origin(line)))
            elif w == "comment":
                self.out.append(AddTable(fam, name, comment=ts.string("a comment"), origin=self.origin(line)))
            elif w in _OPAQUE_OBJECTS:
                self.out.append(AddObject(fam, name, self.opaque_object(w), origin=self.origin(line)))
            else:
                ts.fail(f"expected chain, set, map, flags or comment in table {name}, got {t}", line)
            self.end_of_statement()

    def end_of_statement(self) -> None:
        ts = self.ts
        if not (ts.peek().kind in ("nl", "eof", "handle") or ts.at(";", "}")):
            ts.fail(f"expected the end of the statement, got {ts.peek()}")
        if ts.peek().kind == "handle":
            ts.next()

    def word_list(self, what: str) -> tuple[str, ...]:
        ts = self.ts
        out = [ts.word(what)]
        while ts.accept(","):
            out.append(ts.word(what))
        return tuple(out)

    def opaque_object(self, first: str) -> Opaque:
        """A table object meshsolve does not model: its words up to the end of the statement."""
        ts = self.ts
        start = ts.i
        depth = 0
        while True:
            t = ts.peek()
            if t.kind == "eof":
                break
            if t.kind == "punct" and t.text == "{":
                depth += 1
            elif t.kind == "punct" and t.text == "}":
                if depth == 0:
                    break
                depth -= 1
                if depth == 0:
                    ts.next()
                    break
            elif depth == 0 and (t.kind == "nl" or (t.kind == "punct" and t.text == ";")):
                break
            ts.next()
        if depth:
            ts.fail("unbalanced braces: expected '}'")
        return Opaque(" ".join([first, *(x.raw() for x in ts.toks[start:ts.i] if x.kind not in ("nl", "handle"))]))

    def chain_body(self, fam: Family, table: str, name: str, line: int, create: bool = False) -> None:
        ts = self.ts
        ts.expect("{")
        handle = int(ts.next().text) if ts.peek().kind == "handle" else None
        spec: tuple[ChainType, Hook, int, str | None] | None = None
        policy: str | None = None
        comment: str | None = None
        rules: list[AddRule] = []
        while True:
            ts.skip_separators()
            if ts.accept("}"):
                break
            t = ts.peek()
            if t.kind == "eof":
                ts.fail(f"expected '}}' to close chain {name}")
            if ts.at("type") and ts.peek(1).kind == "word":
                spec = self.hook_spec(fam)
            elif ts.at("policy") and ts.peek(1).kind == "word":
                ts.next()
                policy = ts.word("accept or drop")
                if policy not in POLICIES:
                    ts.fail(f"expected policy accept or drop, got {policy!r}", t.lineno)
            elif ts.at("comment") and ts.peek(1).kind == "string" and (
                    ts.peek(2).kind in ("nl", "eof") or ts.peek(2).text in (";", "}")):
                ts.next()
                comment = ts.string("a comment")
            elif ts.at("flags", "devices") and ts.peek(1).kind in ("word", "punct"):
                ts.fail(f"chain {t.text} are not supported: expected type/hook/priority, policy or rules")
            else:
                rules.append(AddRule(fam, table, name, self.rule(fam), origin=self.origin(t.lineno)))
                continue
            self.end_of_statement()
        if policy is not None and spec is None:
            ts.fail(f"chain {name}: a policy needs 'type ... hook ... priority ...' (a base chain)", line)
        hook = None
        if spec is not None:
            hook = HookSpec(spec[0], spec[1], spec[2], policy or "accept", spec[3])  # type: ignore[arg-type]
        self.out.append(AddChain(fam, table, name, hook, comment, create, origin=self.origin(line), handle=handle))
        self.out.extend(rules)

    def hook_spec(self, fam: Family) -> tuple[ChainType, Hook, int, str | None]:
        """``type T hook H [device D] priority P``, checked the way nft checks it."""
        ts = self.ts
        line = ts.peek().lineno
        ts.expect("type")
        ctype = ts.word("a chain type (filter, nat or route)")
        if ctype not in CHAIN_TYPES:
            ts.fail(f"expected a chain type (filter, nat or route), got {ctype!r}", line)
        ts.expect("hook", "'hook'")
        hook = ts.word("a hook")
        if hook not in HOOKS:
            ts.fail(f"expected a hook ({', '.join(HOOKS)}), got {hook!r}", line)
        allowed = allowed_hooks(fam, ctype)
        if hook not in allowed:
            ts.fail(f"a {ctype} chain in a {fam} table cannot use hook {hook}: expected one of "
                    f"{', '.join(allowed) or 'none'}", line)
        device = None
        if ts.accept("device"):
            device = ts.string("a device name")
        ts.expect("priority", "'priority'")
        return ctype, hook, self.priority(fam, hook), device

    def priority(self, fam: Family, hook: str) -> int:
        ts = self.ts
        t = ts.peek()
        word = ts.word("a priority (a number or raw, mangle, dstnat, filter, security, srcnat)")
        try:
            if word.lstrip("-").isdigit() or word.startswith(("0x", "-0x")):
                neg = word.startswith("-")
                value = number(word.removeprefix("-"), "a priority", 2**31)
                return -value if neg else value
        except BadValue as exc:
            ts.fail(str(exc), t.lineno)
        base = priority_name_value(word, fam, hook)  # type: ignore[arg-type]
        if base is None:
            ts.fail(f"priority {word!r} is not valid for hook {hook} in a {fam} table: expected a number "
                    "or raw, mangle, filter, security (dstnat only on prerouting, srcnat only on postrouting)",
                    t.lineno)
        if ts.at("+", "-") and ts.peek(1).kind == "word":
            sign = -1 if ts.next().text == "-" else 1
            base += sign * self.number("a priority offset")
        elif ts.peek().kind == "word" and ts.peek().text[:1] in "+-" and ts.peek().text[1:].isdigit():
            text = ts.next().text
            base += (-1 if text[0] == "-" else 1) * number(text[1:], "a priority offset", 2**31)
        return base

    def set_body(self, fam: Family, table: str, name: str, kind: str) -> NamedSet:
        ts = self.ts
        line = ts.peek().lineno
        ts.expect("{", "'{' and the set's type")
        if ts.peek().kind == "handle":
            ts.next()
        key_type: str | None = None
        data_type: str | None = None
        flags: tuple[str, ...] = ()
        elements: tuple[Element | Opaque, ...] = ()
        extra: list[str] = []
        comment = None
        while True:
            ts.skip_separators()
            if ts.accept("}"):
                break
            t = ts.peek()
            if t.kind == "eof":
                ts.fail(f"expected '}}' to close {kind} {name}")
            if ts.at("type", "typeof"):
                ts.next()
                words = self.raw_until_separator()
                whole = ("typeof " if t.text == "typeof" else "") + words
                if kind == "map":
                    key, sep, data = whole.rpartition(" : ")
                    if not sep:
                        ts.fail(f"expected 'type KEY : DATA' for map {name}", t.lineno)
                    key_type, data_type = key, data
                else:
                    key_type = whole
                self.set_kinds[(fam, table, name)] = SET_TYPES.get(key_type or "") if kind == "set" else None
            elif ts.at("flags"):
                ts.next()
                flags = self.word_list("a set flag")
            elif ts.at("elements"):
                ts.next()
                ts.expect("=", "'=' after elements")
                elements = self.elements(self.set_kinds.get((fam, table, name)))
            elif ts.at("comment") and ts.peek(1).kind == "string":
                ts.next()
                comment = ts.string("a comment")
            else:
                extra.append(self.raw_until_separator())
            self.end_of_statement()
        if key_type is None:
            ts.fail(f"{kind} {name}: expected 'type ...' in its body", line)
        return NamedSet(name, key_type, kind, data_type, flags, elements, tuple(extra), comment)  # type: ignore[arg-type]

    def raw_until_separator(self) -> str:
        ts = self.ts
        start = ts.i
        while not (ts.peek().kind in ("nl", "eof", "handle") or ts.at(";", "}", "{")):
            ts.next()
        if ts.i == start:
            ts.fail(f"expected a value, got {ts.peek()}")
        return " ".join(t.raw() for t in ts.toks[start:ts.i])

    def elements(self, kind: ValueKind | None) -> tuple[Element | Opaque, ...]:
        """``{ e1, e2, ... }``: typed when the set's type is known, otherwise each as text."""
        ts = self.ts
        ts.expect("{", "'{' and the elements")
        out: list[Element | Opaque] = []
        while True:
            ts.skip_newlines()
            if ts.accept("}"):
                return tuple(out)
            start = ts.i
            depth = 0
            while not (depth == 0 and (ts.at(",", "}"))) and ts.peek().kind != "eof":
                if ts.at("{"):
                    depth += 1
                elif ts.at("}"):
                    depth -= 1
                ts.next()
            toks = [t for t in ts.toks[start:ts.i] if t.kind != "nl"]
            if not toks:
                ts.fail("expected a set element")
            if kind is not None and len(toks) == 1 and toks[0].kind in ("word", "string"):
                try:
                    out.append(element_of(kind, toks[0].text))
                except BadValue as exc:
                    ts.fail(str(exc), toks[0].lineno)
            else:
                out.append(Opaque(" ".join(t.raw() for t in toks)))
            if ts.peek().kind == "eof":
                ts.fail("expected '}' to close the elements")
            ts.accept(",")

