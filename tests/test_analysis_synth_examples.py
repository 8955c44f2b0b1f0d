"""The goal examples of docs/spec.md, read from the page: each is synthesized on the pod of the
shipped spec it names, and what ``meshsolve synth`` prints must be what the page shows (a
conflict's example flows aside). Every goal kind has an example."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from meshsolve.analysis.spec import GOAL_KINDS, parse_spec
from meshsolve.analysis.synth import Conflict, Synthesized, synthesize

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "spec.md"

_EXAMPLE = re.compile(r"```yaml\n# example (?P<name>\S+) on (?P<base>\S+)\n(?P<body>.*?)```\n\n"
                      r"```text\n(?P<out>.*?)```", re.S)


def _examples() -> list[tuple[str, str, str, str]]:
    return [(m["name"], m["base"], m["body"], m["out"]) for m in _EXAMPLE.finditer(PAGE.read_text())]


def _spec_text(name: str, base: str, body: str) -> str:
    """The base spec with the example's keys (goals, and search where given) in place of its own."""
    doc = yaml.safe_load((ROOT / base).read_text())
    doc.update(yaml.safe_load(body))
    doc["name"] = name
    return yaml.safe_dump(doc, sort_keys=False, width=200)


def _printed(res: object) -> str:
    """What ``meshsolve synth`` prints, without a conflict's example flows."""
    lines = str(res).splitlines()
    if isinstance(res, Conflict) and "  on the flows:" in lines:
        i = lines.index("  on the flows:")
        j = i + 1
        while j < len(lines) and lines[j].startswith("    "):
            j += 1
        lines = lines[:i] + lines[j:]
    return "\n".join(lines) + "\n"


def test_the_page_has_an_example_for_every_goal_kind() -> None:
    examples = _examples()
    assert examples, "no example found on docs/spec.md"
    used: set[str] = set()
    for _name, _base, body, _out in examples:
        for g in yaml.safe_load(body)["goals"]:
            used |= set(g) & set(GOAL_KINDS)
    assert used == set(GOAL_KINDS), f"goal kinds without an example: {sorted(set(GOAL_KINDS) - used)}"
    names = [e[0] for e in examples]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize(("name", "base", "body", "out"), _examples(), ids=[e[0] for e in _examples()])
def test_each_example_gives_what_the_page_shows(name: str, base: str, body: str, out: str) -> None:
    res = synthesize(parse_spec(_spec_text(name, base, body), f"docs/spec.md[{name}]"))
    assert isinstance(res, Synthesized | Conflict), str(res)
    if isinstance(res, Synthesized):
        assert all(v.kind == "proved" for v in res.proofs), str(res)
    else:  # each goal of the conflict is needed: the set-up meeting the others is proved
        assert all(all(v.kind == "proved" for v in sub.proofs) for _names, sub in res.subsets)
    assert _printed(res) == out
