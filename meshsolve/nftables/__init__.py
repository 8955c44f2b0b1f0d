"""nftables as input: the three forms users have, one syntax model, a canonical renderer.

Public entry points:

- :func:`parse_text` / :func:`parse_file` → :class:`Ruleset`, from ``nft -f`` input (knftables
  style ``add table``/``add chain``/``add rule``/``insert rule ... index N``/``flush``/``delete``),
  ``nft list ruleset`` output (nested blocks, also what ``nft -f`` reads) or ``nft -j list
  ruleset`` JSON (also JSON commands), auto-detected; ``ParseError`` names the file, the line (for
  JSON also the path in the document) and what was expected;
- :func:`detect_form` / :func:`is_nft` — which form a text is in, if any (for auto-detection);
- :func:`read_commands` / :func:`replay` — the command stream a text stands for, and its replay;
- :func:`render` — the canonical ``nft -f`` text (``parse_text(render(x)) == x``); :func:`rule_text`
  one rule's items;
- :func:`kernel_form` — the ruleset as the kernel keeps it and ``nft list ruleset`` prints it.

The model (``meshsolve.nftables.model``) is syntax: tables of a family, base chains with type, hook
and numeric priority, rules as sequences of typed matches and statements; what meshsolve does not
model is kept as ``Opaque`` text.
"""

from meshsolve.nftables.commands import Command, replay
from meshsolve.nftables.lexer import MAX_INPUT_BYTES, MAX_LINE_CHARS
from meshsolve.nftables.model import (
    AnonSet,
    Chain,
    Counter,
    Flags,
    HookSpec,
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
    Selector,
    SetCtZone,
    SetMark,
    SetRef,
    Table,
    Tproxy,
    Verdict,
)
from meshsolve.nftables.normal import kernel_form
from meshsolve.nftables.parse import Form, detect_form, is_nft, parse_file, parse_text, read_commands
from meshsolve.nftables.render import render, rule_text

__all__ = [
    "MAX_INPUT_BYTES",
    "MAX_LINE_CHARS",
    "AnonSet",
    "Chain",
    "Command",
    "Counter",
    "Flags",
    "Form",
    "HookSpec",
    "Item",
    "Log",
    "MarkValue",
    "Match",
    "NamedSet",
    "Nat",
    "Opaque",
    "Range",
    "Redirect",
    "Reject",
    "Rule",
    "Ruleset",
    "Selector",
    "SetCtZone",
    "SetMark",
    "SetRef",
    "Table",
    "Tproxy",
    "Verdict",
    "detect_form",
    "is_nft",
    "kernel_form",
    "parse_file",
    "parse_text",
    "read_commands",
    "render",
    "replay",
    "rule_text",
]
