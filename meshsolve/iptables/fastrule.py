"""A faster way to read one rule's arguments, giving exactly what ``rule.parse_rule_tokens`` gives.

Large dumps (kube-proxy's, Istio's) repeat the same pieces over and over: ``-p tcp``, ``-m tcp
--dport 443``, ``-m comment --comment "ns/svc cluster IP"`` shared by a service's rules, ``-j
KUBE-MARK-MASQ``. A rule's arguments fall into *segments* that iptables reads independently of
each other: a basic option (``[!] -s/-d/-i/-o/-p VALUE``), a module (``-m NAME`` and its options)
and the target (``-j/-g NAME`` and its options, last). :class:`FastRules` cuts the words into
those segments with the full parser's own scanners (``scan_options`` for a module meshsolve knows,
``collect_raw`` for one it does not), reads each *distinct* segment once with the full parser's own
builders (``basic_match``, ``build_port``, ``build_module``, ``target_of``), and puts the rule
together from the cached pieces; ``Rule`` orders the matches as the full parser's rule has them.

Only shapes where that is exactly the full parser's answer are taken. Anything else returns None
and the caller runs the full parser, which also words the error: ``-c`` counters, a port option of
the implicit protocol module (``-p tcp --dport 80`` without ``-m tcp``), ``sctp``/``dccp``
modules, a basic option given twice, a target followed by more options, a segment a builder
refuses. The pieces are frozen values, so sharing them between rules is safe.
``tests/test_iptables_fastrule.py`` checks the two ways against each other on generated rulesets.
"""

from __future__ import annotations

from meshsolve.errors import MeshsolveError
from meshsolve.iptables.matches import MODULE_OPTS, PortBuilder, build_module, build_port, unmodelled_module
from meshsolve.iptables.options import (
    BASIC,
    GOTO_OPTS,
    JUMP_OPTS,
    MATCH_OPTS,
    PORT_PROTOCOLS,
    TERMINATORS,
    collect_raw,
    scan_options,
)
from meshsolve.iptables.rule import basic_match, target_of
from meshsolve.iptables.tokens import LineError
from meshsolve.model.rules import Match, Origin, Rule, Target

__all__ = ["FastRules"]

_MISSING = object()
_TARGET_OPTS = frozenset([*JUMP_OPTS, *GOTO_OPTS])


class FastRules:
    """One input's cache of rule segments (keep one per parse, so it is freed with it)."""

    def __init__(self) -> None:
        self._basic: dict[tuple[str, str, bool], Match | None] = {}
        self._modules: dict[tuple[str, ...], Match | None] = {}
        self._targets: dict[tuple[str, str, str | None, tuple[str, ...]], tuple[Target, str | None]] = {}

    def parse(self, toks: list[str], counters: tuple[int, int] | None = None, origin: Origin | None = None
              ) -> tuple[Rule, str | None] | None:
        """(rule, jump chain name) as ``parse_rule_tokens(toks)`` gives them (the rule with
        ``counters`` and ``origin``), or None when this shape is left to the full parser."""
        matches: list[Match] = []
        seen: list[str] = []  # the basic options given so far
        protocol: str | None = None  # the -p value so far (what a target extension sees)
        target: Target | None = None
        jump: str | None = None
        i, n = 0, len(toks)
        try:
            while i < n:
                t = toks[i]
                neg = t == "!"
                if neg:
                    i += 1
                    if i >= n:
                        return None
                    t = toks[i]
                key = BASIC.get(t)
                if key is not None:
                    if i + 1 >= n or key in seen:
                        return None
                    val = toks[i + 1]
                    if val == "!" or val in TERMINATORS:
                        return None
                    seen.append(key)
                    if key == "p":
                        protocol = val
                    bkey = (key, val, neg)
                    got = self._basic.get(bkey, _MISSING)
                    if got is _MISSING:
                        got = self._basic[bkey] = basic_match(key, val, neg)
                    if got is not None:
                        matches.append(got)  # type: ignore[arg-type]
                    i += 2
                    continue
                if neg:
                    return None
                if t in MATCH_OPTS:
                    if i + 1 >= n or toks[i + 1].startswith("-"):
                        return None
                    mod = toks[i + 1].lower()
                    spec = MODULE_OPTS.get(mod)
                    if spec is None:
                        if mod in PORT_PROTOCOLS:
                            return None  # sctp / dccp: their own scan in the full parser
                        raw, end = collect_raw(toks, i + 2)
                    else:
                        opts, end = scan_options(toks, i + 2, spec, f"-m {mod}")
                    mkey = (mod, *toks[i + 2:end])
                    got = self._modules.get(mkey, _MISSING)
                    if got is _MISSING:
                        if spec is None:
                            got = unmodelled_module(mod, tuple(raw))
                        elif mod in PORT_PROTOCOLS:
                            got = build_port(PortBuilder(mod, opts))
                        else:
                            got = build_module(mod, opts)
                        self._modules[mkey] = got
                    if got is not None:
                        matches.append(got)  # type: ignore[arg-type]
                    i = end
                    continue
                if t in _TARGET_OPTS:
                    if i + 1 >= n or toks[i + 1].startswith("-"):
                        return None
                    raw, end = collect_raw(toks, i + 2)
                    if end != n:
                        return None  # the target is not last: left to the full parser
                    tkey = (t, toks[i + 1], protocol, tuple(raw))
                    hit = self._targets.get(tkey)
                    if hit is None:
                        hit = self._targets[tkey] = target_of(t, toks[i + 1], raw, protocol)
                    target, jump = hit
                    break
                return None
            return Rule(tuple(matches), target, counters, origin), jump
        except (LineError, MeshsolveError):
            return None  # the full parser words the error
