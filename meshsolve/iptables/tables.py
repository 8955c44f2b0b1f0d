"""Tables being built, and the table commands replayed on them.

``-A`` appends, ``-I CHAIN [n]`` inserts at position n (1 by default), ``-D`` deletes by position or by
rule, ``-C`` checks, ``-N`` creates a user chain, ``-F`` flushes, ``-X`` deletes an empty, unreferenced
user chain and ``-P`` sets a built-in chain's policy. A well-formed command that the state refuses
(``-N`` of an existing chain, ``-C``/``-D`` of a missing rule, a rule for an undeclared chain...) raises
:class:`CommandFailed`, which a shell ``a || b`` turns into running ``b``; any other problem is a plain
``ParseError``. Jumps are checked when a table is complete (``COMMIT``, or the end of a script): a jump
to a chain that does not exist is refused, as iptables-restore refuses it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from meshsolve.errors import ParseError
from meshsolve.iptables.fastrule import FastRules
from meshsolve.iptables.rule import parse_rule_tokens
from meshsolve.iptables.targets import KNOWN_TARGETS, OTHER_TARGET_EXTENSIONS
from meshsolve.iptables.tokens import Line, LineError
from meshsolve.model.rules import BUILTIN_CHAINS, Origin, Rule

# The rule options iptables refuses after -N/-F/-X ("Illegal option ... with this command").
_RULE_OPTIONS = frozenset({"-p", "--protocol", "-s", "--source", "--src", "-d", "--destination", "--dst",
                           "-i", "--in-interface", "-o", "--out-interface", "-j", "--jump", "-g", "--goto",
                           "-f", "--fragment", "-c", "--set-counters"})


_CHAIN_NAME = re.compile(r"[^\s!'\"-][^\s'\"]*")
_COMMAND_ALIASES = {"--append": "-A", "--insert": "-I", "--new-chain": "-N", "--new": "-N",
                    "--delete-chain": "-X", "--flush": "-F", "--policy": "-P", "--delete": "-D",
                    "--check": "-C"}


class CommandFailed(ParseError):
    """A well-formed command that the current state refuses (``-N`` of an existing chain...).

    Alone it is a ParseError like any other; in a shell ``a || b`` it makes ``b`` run.
    """


@dataclass(slots=True)
class ChainState:
    """A chain being filled: its rules so far and the jumps to check when the table is complete."""

    name: str
    policy: str | None
    rules: list[Rule] = field(default_factory=list)
    jumps: list[tuple[str, int, str]] = field(default_factory=list)  # (target chain, lineno, line)
    counters: tuple[int, int] | None = None
    lineno: int | None = None


@dataclass
class TableState:
    """A table being built; it starts with its built-in chains, policy ACCEPT and empty."""

    name: str
    lineno: int
    chains: dict[str, ChainState] = field(default_factory=dict)

    @classmethod
    def new(cls, name: str, lineno: int) -> TableState:
        t = cls(name, lineno)
        for c in BUILTIN_CHAINS[name]:
            t.chains[c] = ChainState(c, "ACCEPT")
        return t


#: Whether rule arguments go through ``fastrule.FastRules`` first (tests turn it off to compare).
FAST_RULES = True


class CommandReplay:
    """Replays ``-A/-I/-D/-C/-N/-F/-X/-P`` commands on tables; the errors it raises name ``source``."""

    def __init__(self, source: str, fast: bool | None = None) -> None:
        self.source = source
        use = FAST_RULES if fast is None else fast
        self.fast = FastRules() if use else None  # None: every rule through the full parser

    def fail(self, msg: str, line: Line) -> CommandFailed:
        """A command the current state refuses (what makes ``a || b`` run ``b``)."""
        return CommandFailed(msg, source=self.source, lineno=line.lineno, line=line.text)

    def err(self, msg: str, line: Line | None) -> ParseError:
        """Bad input at ``line`` (or in the whole input, for ``None``)."""
        if line is None:
            return ParseError(msg, source=self.source)
        return ParseError(msg, source=self.source, lineno=line.lineno, line=line.text)

    def check_jumps(self, t: TableState) -> None:
        """Every jump/goto of a complete table names a chain of that table."""
        for c in t.chains.values():
            for name, lineno, text in c.jumps:
                if name not in t.chains:
                    raise ParseError(
                        f"jump to chain {name!r}, which does not exist in table {t.name} "
                        "(and is not a known target)", source=self.source, lineno=lineno, line=text)

    def check_chain_name(self, name: str, ln: Line) -> None:
        """A user chain name iptables accepts: at most 28 characters, not an option or a target."""
        if len(name) > 28 or not _CHAIN_NAME.fullmatch(name) or name.startswith("-"):
            raise self.err(f"bad chain name {name!r}", ln)
        if name in KNOWN_TARGETS or name in OTHER_TARGET_EXTENSIONS:
            raise self.err(f"chain name {name!r} is a target name", ln)

    # -- commands ----------------------------------------------------------------------------
    def chain_command_args(self, cmd: str, rest: list[str], ln: Line) -> list[str]:
        """The chain name of ``-N``/``-F``/``-X``. iptables 1.8.9 accepts match modules after it
        (``-N X -m comment --comment x``: loaded, the match discarded, as Linkerd's proxy-init
        writes it) but refuses the rule options (``-N X -p tcp``: "Illegal option `-p' with this
        command", exit 2); both measured in a network namespace (tests/test_iptables_restore_kernel)."""
        for i, tok in enumerate(rest):
            if tok in _RULE_OPTIONS:
                raise self.err(f"{cmd}: illegal option {tok!r} with this command", ln)
            if tok in ("-m", "--match"):
                words = rest[i:]
                bad = next((w for w in words if w in _RULE_OPTIONS), None)
                if bad is not None:
                    raise self.err(f"{cmd}: illegal option {bad!r} with this command", ln)
                if len(words) < 2:
                    raise self.err(f"{cmd}: -m needs a match name", ln)
                return rest[:i]
        return rest

    def command(self, toks: list[str], t: TableState, ln: Line, counters: tuple[int, int] | None,
                restore: bool) -> None:
        cmd = toks[0]
        rest = toks[1:]
        cmd = _COMMAND_ALIASES.get(cmd, cmd)
        if cmd in ("-A", "-I", "-D", "-C"):
            if not rest or rest[0].startswith("-"):
                raise self.err(f"{cmd} needs a chain name", ln)
            chain = rest[0]
            args = rest[1:]
            pos: int | None = None
            if cmd in ("-I", "-D") and args and re.fullmatch(r"\d+", args[0]):
                if len(args[0]) > 10:  # int() refuses > 4300 digits with a bare ValueError
                    raise self.err(f"{cmd} {chain}: rule position {args[0][:20]}... is out of range", ln)
                pos = int(args[0])
                args = args[1:]
            c = t.chains.get(chain)
            if c is None:
                raise self.fail(f"chain {chain!r} does not exist in table {t.name} (declare it with "
                               f"{':' + chain + ' - [0:0]' if restore else '-N ' + chain} first)", ln)
            if cmd == "-D" and pos is not None:
                if args:
                    raise self.err("-D CHAIN N takes no rule arguments", ln)
                if not 1 <= pos <= len(c.rules):
                    raise self.fail(f"-D {chain} {pos}: no such rule (chain has {len(c.rules)})", ln)
                del c.rules[pos - 1]
                return
            quick = self.fast.parse(args, counters, Origin(self.source, ln.lineno)) if self.fast else None
            if quick is not None:
                rule, jump = quick
            else:
                try:
                    rule, jump, copt = parse_rule_tokens(args)
                except LineError as exc:
                    raise self.err(str(exc), ln) from None
                ctr = counters if counters is not None else copt
                rule = Rule(rule.matches, rule.target, ctr, Origin(self.source, ln.lineno))
            if cmd == "-D":
                for k, r in enumerate(c.rules):
                    if r == rule:
                        del c.rules[k]
                        return
                raise self.fail(f"-D {chain}: no matching rule in the chain", ln)
            if cmd == "-C":
                if rule not in c.rules:
                    raise self.fail(f"-C {chain}: no matching rule in the chain", ln)
                return
            if jump is not None:
                c.jumps.append((jump, ln.lineno, ln.text))
            if cmd == "-A":
                c.rules.append(rule)
            else:
                p = 1 if pos is None else pos
                if not 1 <= p <= len(c.rules) + 1:
                    raise self.fail(f"-I {chain} {p}: index of insertion too big (chain has "
                                   f"{len(c.rules)} rules)", ln)
                c.rules.insert(p - 1, rule)
            return
        if cmd in ("-N", "-F", "-X"):
            rest = self.chain_command_args(cmd, rest, ln)
        if cmd == "-N":
            if len(rest) != 1:
                raise self.err("-N takes exactly one chain name", ln)
            name = rest[0]
            self.check_chain_name(name, ln)
            if name in t.chains:
                raise self.fail(f"chain {name} already exists in table {t.name}", ln)
            t.chains[name] = ChainState(name, None, lineno=ln.lineno)
            return
        if cmd == "-F":
            if len(rest) > 1:
                raise self.err("-F takes at most one chain name", ln)
            names = rest or list(t.chains)
            for nm in names:
                if nm not in t.chains:
                    raise self.fail(f"-F: chain {nm!r} does not exist in table {t.name}", ln)
                t.chains[nm].rules.clear()
                t.chains[nm].jumps.clear()
            return
        if cmd == "-X":
            if len(rest) > 1:
                raise self.err("-X takes at most one chain name", ln)
            names = rest or [c.name for c in t.chains.values() if c.policy is None]
            for nm in names:
                c = t.chains.get(nm)
                if c is None:
                    raise self.fail(f"-X: chain {nm!r} does not exist in table {t.name}", ln)
                if c.policy is not None:
                    raise self.err(f"-X: cannot delete built-in chain {nm}", ln)
                if c.rules:
                    raise self.fail(f"-X: chain {nm} is not empty", ln)
                if any(j[0] == nm for other in t.chains.values() for j in other.jumps):
                    raise self.fail(f"-X: chain {nm} is still referenced", ln)
                del t.chains[nm]
            return
        if cmd == "-P":
            if len(rest) != 2:
                raise self.err("-P takes a chain and a policy", ln)
            nm, pol = rest
            if nm not in BUILTIN_CHAINS[t.name]:
                raise self.err(f"-P: {nm} is not a built-in chain of table {t.name}", ln)
            if pol not in ("ACCEPT", "DROP"):
                raise self.err(f"-P: policy must be ACCEPT or DROP, got {pol!r}", ln)
            t.chains[nm].policy = pol
            return
        raise self.err(f"expected a command -A, -I, -D, -N, -X, -F or -P, got {toks[0]!r}", ln)
