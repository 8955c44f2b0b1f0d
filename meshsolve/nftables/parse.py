"""One door for nftables input: detect the form, read it into commands, replay them into a ruleset."""

from __future__ import annotations

import os
import re
from typing import Literal, TypeAlias

from meshsolve.iptables import file_text
from meshsolve.nftables.commands import Command, replay
from meshsolve.nftables.jsonform import parse_json_commands
from meshsolve.nftables.model import Ruleset
from meshsolve.nftables.text import parse_commands

__all__ = ["Form", "detect_form", "is_nft", "parse_file", "parse_text", "read_commands"]

Form: TypeAlias = Literal["commands", "listing", "json"]

_PROMPT = re.compile(r"^(?:\$\s+|sudo\s+)*nft(?:\s+-\S+)*\s+(?:list|monitor|describe)\b")
_COMMAND = re.compile(r"^(?:(?:\$\s+|sudo\s+)*nft(?:\s+-\S+)*\s+)?"
                      r"(?:add|create|insert|replace|delete|destroy|flush|rename)\s+"
                      r"(?:table|chain|rule|set|map|element|ruleset|counter|quota|flowtable)\b")
_TABLE = re.compile(r"^table\s+(?:(?:ip|ip6|inet|arp|bridge|netdev)\s+)?\S+\s*\{")
_JSON = re.compile(r'^\{\s*"nftables"\s*:')


def detect_form(text: str) -> Form | None:
    """Which nft form ``text`` is in (``nft -f`` commands, ``nft list ruleset`` output, ``nft -j``
    JSON), from its first significant line; None when it is not nft text (iptables, YAML...)."""
    head = text[:65536].removeprefix("\ufeff")
    stripped = head.lstrip()
    if stripped.startswith("{"):
        return "json" if _JSON.match(stripped) else None
    for line in head.splitlines():
        s = line.strip()
        if not s or s.startswith("#") or _PROMPT.match(s):
            continue
        if _TABLE.match(s):
            return "listing"
        if _COMMAND.match(s):
            return "commands"
        return None
    return None


def is_nft(text: str) -> bool:
    """True when ``text`` is nftables input in one of the three forms."""
    return detect_form(text) is not None


def read_commands(text: str, source: str = "<string>") -> tuple[tuple[Command, ...], list[str]]:
    """The command stream a text stands for (and its lines): JSON or text, auto-detected."""
    if detect_form(text) == "json":
        return parse_json_commands(text, source)
    return parse_commands(text, source)


def parse_text(text: str, source: str = "<string>") -> Ruleset:
    """Read nft text in any of the three forms (auto-detected) and replay it into a ``Ruleset``.

    Raises ``ParseError`` with the source, the line and what was expected (for JSON, the path of
    the offending value in the document)."""
    commands, lines = read_commands(text, source)
    return replay(commands, source=source, lines=lines)


def read_input(path: str | os.PathLike[str], source: str | None = None) -> tuple[str, str]:
    """A file's text (``"-"``: standard input), refused when larger than ``MAX_INPUT_BYTES`` (before
    reading it) or not UTF-8 (``meshsolve.iptables.file_text``, one reader for both); returns the
    text and the name errors will use."""
    name = source if source is not None else str(path)
    return file_text(path, name), name


def parse_file(path: str | os.PathLike[str], source: str | None = None) -> Ruleset:
    """``parse_text`` of a file (``"-"`` reads standard input)."""
    text, name = read_input(path, source)
    return parse_text(text, name)
