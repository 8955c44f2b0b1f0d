"""Istio's emission order, not just the final chains: the recorded command stream (every -A and
-I n, in order, per family and table) equals the golden's, and -N declarations come in Istio's
order. Golden lines are split here and each rule's arguments go through the iptables parser."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from istio_vectors import BASE, MASTER

from meshsolve.iptables import parse_rule
from meshsolve.istio.config import from_go_fields
from meshsolve.istio.flags import parse_flags
from meshsolve.istio.generate import record
from meshsolve.model import Rule

Key = tuple[str, str]  # (family, table)
Stream = dict[Key, list[tuple[str, int | None, Rule]]]
LEGACY = Path(__file__).parent / "data" / "istio-legacy"


def _transcript(text: str) -> tuple[Stream, dict[Key, list[str]]]:
    """Split a dry-run transcript / restore input into per-(family, table) command streams."""
    stream: Stream = {}
    declared: dict[Key, list[str]] = {}
    family, previous, table = "ipv4", None, "filter"
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line in ("iptables-save", "ip6tables-save", "COMMIT") or line.startswith("#"):
            continue
        if line.startswith("*"):
            table = line[1:].strip()
            if previous is not None and table <= previous:
                family = "ipv6"  # table names rise within one family (golden README)
            previous = table
            continue
        _add(stream, declared, (family, table), line)
    return stream, declared


def _commands(text: str) -> Stream:
    """Split `iptables -t T ...` / `ip6tables ...` command lines into command streams."""
    stream: Stream = {}
    for raw in text.splitlines():
        words = raw.split()
        if not words:
            continue
        family = "ipv6" if words[0] == "ip6tables" else "ipv4"
        rest = words[1:]
        table = "filter"
        if rest[:1] == ["-t"]:
            table, rest = rest[1], rest[2:]
        if rest[0] in ("-A", "-I"):
            _add(stream, {}, (family, table), " ".join(rest))
    return stream


def _add(stream: Stream, declared: dict[Key, list[str]], key: Key, line: str) -> None:
    verb, chain, *rest = line.split(None, 2)
    if verb == "-N":
        declared.setdefault(key, []).append(chain)
        return
    position = None
    args = rest[0] if rest else ""
    if verb == "-I":
        pos, _, args = args.partition(" ")
        position = int(pos)
    assert verb in ("-A", "-I"), line
    stream.setdefault(key, []).append((chain, position, parse_rule(args)))


def _ours(builder: Any) -> Stream:
    stream: Stream = {}
    for op in builder.ops:
        stream.setdefault((op.family, op.table), []).append((op.chain, op.position, op.rule))
    return stream


@pytest.mark.parametrize("entry", MASTER, ids=[g["name"] for g in MASTER])
def test_golden_command_stream(entry: dict[str, Any], goldens_dir: Path) -> None:
    builder = record(from_go_fields({**BASE, **entry["set"]}))
    want, declared = _transcript((goldens_dir / entry["file"]).read_text(encoding="utf-8"))
    assert _ours(builder) == want
    for (family, table), chains in declared.items():
        assert list(builder.declarations(family, table)) == chains, (family, table)


LEGACY_COMMANDS = [p for p in sorted(LEGACY.glob("*.yaml"))
                   if yaml.safe_load(p.read_text(encoding="utf-8"))["rules"].startswith(("iptables", "ip6"))]


@pytest.mark.parametrize("path", LEGACY_COMMANDS, ids=[p.stem for p in LEGACY_COMMANDS])
def test_script_era_command_stream(path: Path) -> None:
    """The shell script's own order, -I PREROUTING 1 lines included, where the vector is a
    command listing (V1.0 … V1.3, mode_redirect, 1.4, the 1.12 golden)."""
    vec = yaml.safe_load(path.read_text(encoding="utf-8"))
    builder = record(parse_flags(vec["args"], vec.get("env") or {}, version=vec["version"]))
    assert _ours(builder) == _commands(vec["rules"])


def test_stream_comparison_can_fail(goldens_dir: Path) -> None:
    """Swapping two adjacent appends to different chains keeps the final chains, not the stream."""
    entry = next(g for g in MASTER if g["name"] == "ipv6-ipnets")
    builder = record(from_go_fields({**BASE, **entry["set"]}))
    before = builder.build()
    i = next(n for n, op in enumerate(builder.ops) if op.chain == "ISTIO_REDIRECT")
    assert builder.ops[i - 1].chain == "ISTIO_INBOUND"
    builder.ops[i - 1], builder.ops[i] = builder.ops[i], builder.ops[i - 1]
    want, _ = _transcript((goldens_dir / entry["file"]).read_text(encoding="utf-8"))
    assert builder.build() == before
    assert _ours(builder) != want
