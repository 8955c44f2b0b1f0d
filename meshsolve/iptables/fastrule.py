"""A faster way to read one rule's arguments, giving exactly what ``rule.parse_rule_tokens`` gives.

Large dumps (kube-proxy's, Istio's) repeat the same pieces over and over: ``-p tcp``, ``-m tcp
--dport 443``, ``-m comment --comment "ns/svc cluster IP"`` shared by a service's rules, ``-j
KUBE-MARK-MASQ``. A rule's arguments fall into *segments* that iptables reads independently of
each other: a basic option (``[!] -s/-d/-i/-o/-p VALUE``), a module (``-m NAME`` and its options)
and the target (``-j/-g NAME`` and its options, last). :class:`FastRules` reads each *distinct*
segment once with the full parser's own scanners and builders (``scan_options`` for a module
meshsolve knows, ``collect_raw`` for one it does not, ``basic_match``, ``build_port``,
``build_module``, ``target_of``), and puts the rule together from the cached pieces; ``Rule``
orders the matches as the full parser's rule has them.

Three doors: :meth:`FastRules.parse` takes the words of a rule; :meth:`FastRules.parse_text` takes
the text of an iptables-save rule line after ``-A CHAIN`` and cuts it into segments with one regular
expression, before any word splitting, so a segment seen before costs one dictionary look-up;
:meth:`FastRules.parse_line` takes a whole ``-A CHAIN ...`` line written in iptables-save's own order
(``_LINE``: the basic options once each, in the order -s -d -i -o -p, a comment, a run of other
modules, the target) and looks each of those parts up whole, reading a new one as the text door does. A
segment is cached by its text only after its words were read alone with the word door's logic and
used up exactly; the cut is taken only when the segments, joined by single spaces, give back the
whole text (nothing skipped, no other white space). What may follow a segment (another segment's
first word: ``-s -d -i -o -p -m -j -g !``) ends every module's options, as it ends them for the full
parser (``tests/test_iptables_fastrule.py`` checks that against ``MODULE_OPTS``).

Only shapes where that is exactly the full parser's answer are taken. Anything else returns None
and the caller runs the full parser, which also words the error: ``-c`` counters, a port option of
the implicit protocol module (``-p tcp --dport 80`` without ``-m tcp``), ``sctp``/``dccp``
modules, a basic option given twice, a target followed by more options, a segment a builder
refuses, and for the text door anything its expression does not cut (long option names, tabs,
escapes in quotes). The pieces are frozen values, so sharing them between rules is safe.
``tests/test_iptables_fastrule.py`` checks the two ways against each other.
"""

from __future__ import annotations

import re

from meshsolve.errors import MeshsolveError
from meshsolve.iptables.matches import MODULE_OPTS, PortBuilder, build_module, build_port, unmodelled_module
from meshsolve.iptables.options import (
    BASIC,
    GOTO_OPTS,
    JUMP_OPTS,
    MATCH_OPTS,
    PORT_PROTOCOLS,
    STRING_OPTS,
    TERMINATORS,
    Opt,
    collect_raw,
    scan_options,
)
from meshsolve.iptables.rule import basic_match, target_of
from meshsolve.iptables.tokens import LineError, restore_words
from meshsolve.model.rules import Match, Origin, Rule, Target

__all__ = ["SEGMENT_STARTS", "FastRules"]

_MISSING = object()
_TARGET_OPTS = frozenset([*JUMP_OPTS, *GOTO_OPTS])

#: The first words of the segments the text door cuts (what ends a module's options there).
SEGMENT_STARTS = ("-s", "-d", "-i", "-o", "-p", "-m", "-j", "-g", "!")

# One segment of an iptables-save rule line: a basic option with its value; a module with its
# ``[!] --option value...`` items (a value is quoted without backslashes, or a plain word that
# starts with neither '-' nor '!'); the target and everything after it.
_SEGMENT = re.compile(
    r'(?:! )?-[sdiop] [^ "]+'
    r'|-m [^ "!-][^ "]*(?: (?:! )?--[^ "]+(?: (?:"[^"\\]*"|[^ "!\\-][^ "\\]*))*)*'
    r"|-[jg] .*")

# ``-m comment --comment "TEXT"`` (no quote or backslash inside): its words are these three and TEXT.
_COMMENT = re.compile(r'-m comment --comment "([^"\\]*)"')

# A whole iptables-save rule line in the order iptables-save prints a rule: ``-A CHAIN``, the basic
# options (each at most once, in the order -s -d -i -o -p), then a comment module, then the other
# modules, then the target. Every group but the chain is one segment of ``_SEGMENT``'s cut (its text
# without the space before it); a basic option's value holds no white space or quote, and a target's
# words hold no white space, quote or backslash, so they are its text split at single spaces.
_WORD = r'[^\s"!-][^\s"]*'
_LINE = re.compile(
    r'-A ([^\s"]+)(?= )'
    rf"(?: ((?:! )?-s {_WORD}))?"
    rf"(?: ((?:! )?-d {_WORD}))?"
    rf"(?: ((?:! )?-i {_WORD}))?"
    rf"(?: ((?:! )?-o {_WORD}))?"
    rf"(?: ((?:! )?-p ({_WORD})))?"
    r'(?: (-m comment --comment "[^"\\]*"))?'
    r'((?: -m [^ "!-][^ "]*(?: (?:! )?--[^ "]+(?: (?:"[^"\\]*"|[^ "!\\-][^ "\\]*))*)*)*)'
    r'(?: (-[jg] [^\s"!\\-][^\s"\\]*(?: [^\s"\\]+)*))?')

# A segment's piece: (kind, basic option key, match, words): ("b", "s".."p", match or None, (value,))
# for a basic option, ("m", "", match or None, ()) for a module, ("t", "", None, words) for the target.
_Piece = tuple[str, str, Match | None, tuple[str, ...]]


_UNSEEN: _Piece = ("", "", None, ())  # a segment text not read yet


class FastRules:
    """One input's cache of rule segments (keep one per parse, so it is freed with it)."""

    def __init__(self) -> None:
        self._basic: dict[tuple[str, str, bool], Match | None] = {}
        self._modules: dict[tuple[str, ...], Match | None] = {}
        self._targets: dict[tuple[str, str, str | None, tuple[str, ...]], tuple[Target, str | None]] = {}
        self._pieces: dict[str, _Piece | None] = {}  # segment text -> its piece (None: not taken)
        self._text_targets: dict[tuple[str, str | None], tuple[Target, str | None]] = {}  # (text, -p)
        self._module_runs: dict[str, tuple[Match, ...] | None] = {}  # " -m A ... -m B ..." -> matches

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
                got = self._segment(toks, i)
                if got is None:
                    return None
                (kind, key, match, words), i = got
                if kind == "b":
                    if key in seen:
                        return None
                    seen.append(key)
                    if key == "p":
                        protocol = words[0]
                elif kind == "t":
                    if i != n:
                        return None  # the target is not last: left to the full parser
                    target, jump = self._target(words, protocol)
                if match is not None:
                    matches.append(match)
            return Rule(tuple(matches), target, counters, origin), jump
        except (LineError, MeshsolveError):
            return None  # the full parser words the error

    def parse_text(self, text: str, counters: tuple[int, int] | None = None, origin: Origin | None = None
                   ) -> tuple[Rule, str | None] | None:
        """:meth:`parse` of ``restore_words(text)``, for the text of a save/restore rule line after
        ``-A CHAIN``; None when this shape is left to the word door (or the full parser)."""
        segs = _SEGMENT.findall(text)
        if " ".join(segs) != text:
            return None
        pieces = self._pieces
        by_text = self._text_targets
        matches: list[Match] = []
        seen: set[str] = set()
        protocol: str | None = None
        target: Target | None = None
        jump: str | None = None
        try:
            for seg in segs:
                piece = pieces.get(seg, _UNSEEN)
                if piece is _UNSEEN:
                    piece = pieces[seg] = self._piece(seg)
                if piece is None:
                    return None
                kind, key, match, words = piece
                if kind == "b":
                    if key in seen:
                        return None
                    seen.add(key)
                    if key == "p":
                        protocol = words[0]
                elif kind == "t":  # the expression makes the target the last segment
                    hit = by_text.get((seg, protocol))
                    if hit is None:
                        hit = by_text[(seg, protocol)] = self._target(words, protocol)
                    target, jump = hit
                if match is not None:
                    matches.append(match)
            return Rule(tuple(matches), target, counters, origin), jump
        except (LineError, MeshsolveError):
            return None

    def parse_line(self, line: str, counters: tuple[int, int] | None, source: str, lineno: int
                   ) -> tuple[str, Rule, str | None] | None:
        """(chain, rule, jump chain name) of a whole iptables-save rule line (``-A CHAIN ...``, the
        line stripped), as :meth:`parse_text` gives them for its text after ``-A CHAIN``; None when
        the line is not in ``_LINE``'s order (then :meth:`parse_text` tries it)."""
        m = _LINE.fullmatch(line)
        if m is None:
            return None
        chain, s, d, i, o, p, protocol, comment, modules, target_text = m.groups()
        pieces = self._pieces
        matches: list[Match] = []
        for seg in (s, d, i, o, p, comment):
            if seg is not None:
                piece = pieces.get(seg, _UNSEEN)
                if piece is _UNSEEN:
                    piece = pieces[seg] = self._line_piece(seg)
                if piece is None:
                    return None
                if piece[2] is not None:
                    matches.append(piece[2])
        if modules:
            run = self._module_runs.get(modules, _MISSING)
            if run is _MISSING:
                run = self._module_runs[modules] = self._module_run(modules[1:])
            if run is None:
                return None
            matches.extend(run)  # type: ignore[arg-type]
        target: Target | None = None
        jump: str | None = None
        if target_text is not None:
            hit = self._text_targets.get((target_text, protocol))
            if hit is None:
                words = tuple(target_text.split(" "))
                try:
                    if len(words) == 2:  # ``-j NAME``: no option for collect_raw to take
                        hit = target_of(words[0], words[1], [], protocol)
                    elif collect_raw(list(words), 2)[1] != len(words):
                        return None  # (what the text door's cut would leave to the word door)
                    else:
                        hit = self._target(words, protocol)
                except (LineError, MeshsolveError):
                    return None
                self._text_targets[(target_text, protocol)] = hit
            target, jump = hit
        return chain, Rule(tuple(matches), target, counters, Origin(source, lineno)), jump

    def _line_piece(self, seg: str) -> _Piece | None:
        """The piece of a basic option's or the comment's segment as ``_LINE`` cuts them (the
        comment's starts ``-m``)."""
        return self._piece(seg) if seg.startswith("-m") else self._basic_piece(seg)

    def _basic_piece(self, seg: str) -> _Piece | None:
        """:meth:`_piece` of a basic option's segment as ``_LINE`` cuts it (``[! ]-X VALUE``, the
        value neither starting with '-' or '!' nor holding white space or quotes: its words are
        these, and ``_segment`` would take them)."""
        neg = seg[0] == "!"
        key, val = (seg[3], seg[5:]) if neg else (seg[1], seg[3:])
        bkey = (key, val, neg)
        got = self._basic.get(bkey, _MISSING)
        if got is _MISSING:
            try:
                got = basic_match(key, val, neg)
            except (LineError, MeshsolveError):
                return None
            self._basic[bkey] = got
        return ("b", key, got, (val,))  # type: ignore[return-value]

    def _module_run(self, text: str) -> tuple[Match, ...] | None:
        """The matches of consecutive module segments (``-m A ... -m B ...``), each read as
        :meth:`parse_text` reads it; None when one is not a module segment it takes."""
        segs = _SEGMENT.findall(text)
        if " ".join(segs) != text:
            return None
        pieces = self._pieces
        out: list[Match] = []
        for seg in segs:
            piece = pieces.get(seg, _UNSEEN)
            if piece is _UNSEEN:
                piece = pieces[seg] = self._piece(seg)
            if piece is None or piece[0] != "m":
                return None
            if piece[2] is not None:
                out.append(piece[2])
        return tuple(out)

    # -- segments ----------------------------------------------------------------------------
    def _piece(self, seg: str) -> _Piece | None:
        """The piece of one segment's text, read with the word door's logic; None unless its words
        make exactly one segment of the kind the text promises."""
        c = _COMMENT.fullmatch(seg)
        if c is not None and c.group(1) not in STRING_OPTS:
            # kube-proxy's many distinct comments: the words and the option scan are known here
            mkey = ("comment", "--comment", c.group(1))
            got = self._modules.get(mkey, _MISSING)
            if got is _MISSING:
                try:
                    got = build_module("comment", [Opt("--comment", False, [c.group(1)])])
                except (LineError, MeshsolveError):
                    return None
                self._modules[mkey] = got
            return ("m", "", got, ())  # type: ignore[return-value]
        try:
            toks = restore_words(seg)
            got = self._segment(toks, 0)
        except (LineError, MeshsolveError):
            return None
        if got is None or got[1] != len(toks):
            return None
        piece = got[0]
        if piece[0] == "m" and toks[-1] in STRING_OPTS:
            return None  # its value would be the next segment's first word
        return piece

    def _segment(self, toks: list[str], i: int) -> tuple[_Piece, int] | None:
        """The segment starting at ``toks[i]`` and the index after it; None for a shape left to
        the full parser. A target segment's piece holds its words (its reading needs the -p value)."""
        n = len(toks)
        t = toks[i]
        neg = t == "!"
        if neg:
            i += 1
            if i >= n:
                return None
            t = toks[i]
        key = BASIC.get(t)
        if key is not None:
            if i + 1 >= n:
                return None
            val = toks[i + 1]
            if val == "!" or val in TERMINATORS:
                return None
            bkey = (key, val, neg)
            got = self._basic.get(bkey, _MISSING)
            if got is _MISSING:
                got = self._basic[bkey] = basic_match(key, val, neg)
            return ("b", key, got, (val,)), i + 2  # type: ignore[return-value]
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
            return ("m", "", got, ()), end  # type: ignore[return-value]
        if t in _TARGET_OPTS:
            if i + 1 >= n or toks[i + 1].startswith("-"):
                return None
            _, end = collect_raw(toks, i + 2)
            return ("t", "", None, tuple(toks[i:end])), end
        return None

    def _target(self, words: tuple[str, ...], protocol: str | None) -> tuple[Target, str | None]:
        """``-j/-g NAME options...`` read as the full parser reads it after ``-p protocol``."""
        tkey = (words[0], words[1], protocol, words[2:])
        hit = self._targets.get(tkey)
        if hit is None:
            hit = self._targets[tkey] = target_of(words[0], words[1], list(words[2:]), protocol)
        return hit
