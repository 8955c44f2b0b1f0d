"""One rule's arguments (what follows ``-A CHAIN``) → ``Rule``.

Options are read in any order, as iptables reads them: ``[!] -s/-d/-i/-o/-p``, ``-m`` modules
(``matches.py``), the implicit module of ``-p tcp|udp|...`` (``--dport`` without ``-m tcp``),
``-j``/``-g`` (``targets.py``) and ``-c`` counters. A ``-j NAME`` that is neither a known target nor a
target extension is a jump to a user chain; whether that chain exists is checked by the caller.
``-s/-d 0.0.0.0/0`` (not negated) and ``-p all`` are dropped, as iptables-save omits them. The rule
is family-independent here: its addresses are checked against the ruleset it lands in.
"""

from __future__ import annotations

import functools
from typing import cast

from meshsolve.errors import MeshsolveError, ParseError
from meshsolve.iptables.matches import (
    MODULE_OPTS,
    TCP_EXTRA,
    PortBuilder,
    build_module,
    build_port,
    unmodelled_module,
)
from meshsolve.iptables.options import (
    BASIC,
    COUNTER_OPTS,
    GOTO_OPTS,
    JUMP_OPTS,
    MATCH_OPTS,
    PORT_ALIASES,
    PORT_PROTOCOLS,
    TERMINATORS,
    Opt,
    collect_raw,
    parse_int,
    parse_net,
    resolve_long,
    scan_options,
)
from meshsolve.iptables.targets import KNOWN_TARGETS, OTHER_TARGET_EXTENSIONS, build_target
from meshsolve.iptables.tokens import LineError, tokenize
from meshsolve.model.rules import (
    Destination,
    Goto,
    InInterface,
    Jump,
    Match,
    OpaqueMatch,
    OpaqueTarget,
    OutInterface,
    Protocol,
    Rule,
    SetMatch,
    Source,
    Target,
)


def parse_rule_tokens(toks: list[str]) -> tuple[Rule, str | None, tuple[int, int] | None]:
    """Rule arguments (after ``-A CHAIN``) → the rule, the jump/goto chain name to check later,
    and ``-c`` counters. Family-independent: address families are checked per ruleset."""
    basics: dict[str, tuple[str, bool]] = {}
    modules: list[tuple[str, object]] = []  # (name, builder) in load order
    target: Target | None = None
    jump_name: str | None = None
    counters: tuple[int, int] | None = None
    i, n = 0, len(toks)

    def proto() -> str | None:
        p = basics.get("p")
        if p is None or p[1]:
            return None
        name = Protocol(p[0]).name
        return name if name in PORT_PROTOCOLS else None

    while i < n:
        t = toks[i]
        neg = False
        if t == "!":
            if i + 1 >= n:
                raise LineError("'!' at the end of the rule")
            neg = True
            i += 1
            t = toks[i]
            if t == "!":
                raise LineError("'!' given twice")
        if t in BASIC:
            key = BASIC[t]
            if i + 1 >= n or toks[i + 1] in TERMINATORS:
                raise LineError(f"option {t} needs a value")
            val = toks[i + 1]
            if val == "!":
                raise LineError(f"legacy negation after the option is not supported: write '! {t} ...' "
                                f"instead of '{t} ! ...'")
            if key in basics:
                raise LineError(f"option {t} given twice")
            basics[key] = (val, neg)
            i += 2
            continue
        if t in MATCH_OPTS:
            if neg:
                raise LineError("'!' cannot negate -m; negate the module's options instead")
            if i + 1 >= n or toks[i + 1].startswith("-"):
                raise LineError(f"option {t} needs a module name")
            mod = toks[i + 1].lower()
            i += 2
            if mod in PORT_PROTOCOLS and mod not in MODULE_OPTS:  # sctp / dccp: ports + raw extras
                raw, i = collect_raw(toks, i)
                pb = PortBuilder(mod)
                k = 0
                while k < len(raw):
                    ng = raw[k] == "!"
                    kk = k + 1 if ng else k
                    nm = PORT_ALIASES.get(raw[kk]) if kk < len(raw) else None
                    if nm and kk + 1 < len(raw):
                        pb.opts.append(Opt(nm, ng, [raw[kk + 1]]))
                        k = kk + 2
                    else:
                        pb.opts.append(Opt(raw[k], False, []))
                        k += 1
                modules.append((mod, pb))
            elif mod in MODULE_OPTS:
                opts, i = scan_options(toks, i, MODULE_OPTS[mod], f"-m {mod}")
                if mod in PORT_PROTOCOLS:
                    modules.append((mod, PortBuilder(mod, opts)))
                else:
                    modules.append((mod, opts))
            else:
                raw, i = collect_raw(toks, i)
                modules.append((mod, unmodelled_module(mod, tuple(raw))))
            continue
        if t in JUMP_OPTS or t in GOTO_OPTS:
            if neg:
                raise LineError(f"'!' cannot negate {t}")
            if target is not None:
                raise LineError("more than one -j/-g target")
            if i + 1 >= n or toks[i + 1].startswith("-"):
                raise LineError(f"option {t} needs a target name")
            name = toks[i + 1]
            raw, i = collect_raw(toks, i + 2)
            given = basics.get("p")  # what the extension sees: -p so far, negation ignored
            target, jump_name = target_of(t, name, raw, given[0] if given else None)
            continue
        if t in COUNTER_OPTS:
            if i + 2 >= n:
                raise LineError(f"option {t} needs two values (packets bytes)")
            counters = (parse_int(toks[i + 1], "packet counter"), parse_int(toks[i + 2], "byte counter"))
            i += 3
            continue
        if t in ("-f", "--fragment"):
            raise LineError("option -f (fragments) is not supported")
        # an option of a module loaded earlier in the rule? iptables merges a loaded module's options
        # into its table, so "-m multiport -p tcp --dport 1,2" is multiport's --dports (an abbreviation)
        pname = PORT_ALIASES.get(t, t)
        owner = _loaded_module(pname, modules)
        if owner is not None:
            mod, b = owner
            spec = MODULE_OPTS[mod]
            opts, j = scan_options(toks, i - (1 if neg else 0), spec, f"-m {mod}")
            have = b.opts if isinstance(b, PortBuilder) else cast(list[Opt], b)
            for o in opts:
                if any(x.name == o.name for x in have):
                    raise LineError(f"option {o.name} given twice")
                have.append(o)
            i = j
            continue
        # an option of the implicit protocol module (-p tcp --dport 80)?
        pr = proto()
        if pr is not None and (pname in ("--sport", "--dport") or (pr == "tcp" and pname in TCP_EXTRA)):
            spec = MODULE_OPTS.get(pr, {"--sport": 1, "--dport": 1})
            opts, j = scan_options(toks, i - (1 if neg else 0), spec, f"-p {pr}")
            existing = next((b for m, b in modules if m == pr and isinstance(b, PortBuilder)), None)
            if existing is None:
                modules.append((pr, PortBuilder(pr, opts)))
            else:
                for o in opts:
                    if any(x.name == o.name for x in existing.opts):
                        raise LineError(f"option {o.name} given twice")
                    existing.opts.append(o)
            i = j
            continue
        if t.startswith("-"):
            hint = " (port options need -p tcp or -p udp first)" if pname in ("--sport", "--dport") else ""
            raise LineError(f"unknown option {t!r}{hint}")
        raise LineError(f"unexpected argument {t!r}")

    matches: list[Match] = []
    for key, (val, neg) in basics.items():
        bm = basic_match(key, val, neg)
        if bm is not None:
            matches.append(bm)
    for mod, b in modules:
        mm = module_match(mod, b)
        if mm is not None:
            matches.append(mm)
    try:
        rule = Rule(tuple(matches), target, counters)
    except MeshsolveError as exc:
        raise LineError(str(exc)) from None
    return rule, jump_name, counters


def _loaded_module(word: str, modules: list[tuple[str, object]]) -> tuple[str, object] | None:
    """The loaded module (``-m NAME`` with modelled options, or a port module) whose option ``word``
    is, exactly or as getopt's unambiguous abbreviation; ``None`` when no loaded module takes it."""
    owners: dict[str, tuple[str, object]] = {}
    for mod, b in modules:
        if mod in MODULE_OPTS and not isinstance(b, OpaqueMatch):
            for opt in MODULE_OPTS[mod]:
                owners.setdefault(opt, (mod, b))
    name = resolve_long(word, set(owners))
    return None if name is None else owners[name]


def basic_match(key: str, val: str, neg: bool) -> Match | None:
    """The match of a basic option (``key`` s, d, i, o or p, as ``BASIC`` names them); None for
    what iptables-save omits (``-s/-d 0.0.0.0/0``, ``-p all``)."""
    if key in ("s", "d"):
        net = parse_net(val, "-s" if key == "s" else "-d")
        if net.prefixlen == 0 and not neg:
            return None
        return Source(net, neg) if key == "s" else Destination(net, neg)
    if key in ("i", "o"):
        if not val or len(val) > 15 or any(c in val for c in " /"):
            raise LineError(f"bad interface name {val!r}")
        return InInterface(val, neg) if key == "i" else OutInterface(val, neg)
    p = Protocol(val, neg)
    if p.name in ("all", "0"):
        if neg:
            raise LineError("'! -p all' matches nothing; not supported")
        return None
    return p


def module_match(mod: str, b: object) -> Match | None:
    """The match of one ``-m`` module, from what the scan collected (a port builder, an opaque
    match, or the module's options)."""
    if isinstance(b, PortBuilder):
        return build_port(b)
    if isinstance(b, OpaqueMatch | SetMatch):
        return b
    return build_module(mod, cast(list[Opt], b))


@functools.lru_cache(maxsize=256)
def _protocol_name(value: str) -> str:
    """A ``-p`` value's name (``6`` is ``tcp``), as ``Protocol`` normalises it."""
    return Protocol(value).name


def target_of(opt: str, name: str, raw: list[str], protocol: str | None) -> tuple[Target, str | None]:
    """``-j NAME raw...`` / ``-g NAME`` → the target and the chain to check later (a jump or goto);
    ``protocol`` is the ``-p`` value given before it (a target extension sees it)."""
    if opt in GOTO_OPTS:
        if raw:
            raise LineError(f"-g {name} takes no options")
        return Goto(name), name
    if name in KNOWN_TARGETS:
        return build_target(name, raw, _protocol_name(protocol) if protocol is not None else None), None
    if name in OTHER_TARGET_EXTENSIONS or raw:
        return OpaqueTarget(name, tuple(raw)), None
    return Jump(name), name


def parse_rule(args: str | list[str]) -> Rule:
    """One rule's arguments (``"-p tcp --dport 80 -j ACCEPT"``, no ``-A CHAIN``) → ``Rule``.

    A ``-j NAME`` that is not a known target becomes ``Jump(NAME)`` (no chain check here). A string
    is split into words like a shell command line (``tokens.tokenize``); a list is taken as the words.
    """
    text = args if isinstance(args, str) else None
    try:
        toks = tokenize(args) if isinstance(args, str) else list(args)
        rule, _, _ = parse_rule_tokens(toks)
    except LineError as exc:
        raise ParseError(str(exc), source="<rule>", lineno=1, line=text) from None
    return rule
