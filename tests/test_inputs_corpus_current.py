"""tests/data/corpus/CURRENT.md against what meshsolve says today: every run of its table is run
again (in-process, from the corpus directory, as its header says) and must give the exit code, the
number of notes and the first line the table records; the summary's counts must be the table's.

With ``MESHSOLVE_UPDATE_DOCS=1`` the measured columns and the summary are rewritten instead (the
verdict column is prose: read it again where a row changed).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

import pytest

from meshsolve.cli import main

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "corpus"
CURRENT = CORPUS / "CURRENT.md"
UPDATE = os.environ.get("MESHSOLVE_UPDATE_DOCS") == "1"
WIDTH = 170  # a first line longer than this is cut to WIDTH - 3 characters and "..."

_CELL = re.compile(r"(?<!\\)\|")
_SUMMARY = re.compile(r"^\d+ files, \d+ runs: .*$", re.M)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in _CELL.split(line.strip())[1:-1]]


def rows(text: str) -> list[tuple[int, list[str]]]:
    """The rows of the "Every run" table: (line index, cells)."""
    lines = text.splitlines()
    start = lines.index("## Every run")
    out = []
    for i in range(start, len(lines)):
        if lines[i].startswith("| `"):
            out.append((i, _cells(lines[i])))
    return out


def argv_of(cells: list[str]) -> tuple[str, list[str]]:
    name = cells[0].strip("`")
    command = cells[1].strip("`").split()
    assert command[0] == "meshsolve", cells
    return name, [name if a == "FILE" else a for a in command[1:]]


def measure(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, int, str]:
    """(exit code, notes, first line that is not a note) of one run."""
    code = main(argv)
    out = capsys.readouterr()
    err = out.err.splitlines()
    notes = sum(1 for line in err if line.startswith("note: "))
    first = next((line for line in out.out.splitlines() if line.strip()), None) or \
        next((line for line in err if line.strip() and not line.startswith("note: ")), "")
    if len(first) > WIDTH:
        first = first[:WIDTH - 3] + "..."
    return code, notes, first


def _first_cell(first: str) -> str:
    return "`` " + first.replace("|", "\\|") + " ``"


def summary(table: list[list[str]]) -> str:
    files = {c[0] for c in table}
    codes = Counter(c[2] for c in table)
    order = sorted(codes, key=lambda k: (("65", "79", "0").index(k) if k in ("65", "79", "0") else 3, k))
    return f"{len(files)} files, {len(table)} runs: " + ", ".join(f"exit {k} {codes[k]} times" for k in order) + "."


def test_every_corpus_file_has_a_row_and_the_summary_counts_the_table() -> None:
    text = CURRENT.read_text(encoding="utf-8")
    table = [c for _i, c in rows(text)]
    named = {c[0].strip("`") for c in table}
    corpus = {p.name for p in CORPUS.iterdir() if p.name not in ("SOURCES.md", "CURRENT.md")}
    assert named == corpus
    if not UPDATE:
        found = _SUMMARY.search(text)
        assert found is not None and found.group(0) == summary(table)
    # the verdict of each file is its first row's; the summary counts them
    labels: dict[str, str] = {}
    for c in table:
        verdict = c[5]
        label = next((k for k in ("right (for our cut copy)", "right", "doubtful") if verdict.startswith(k)), None)
        if c[0] not in labels:
            assert label is not None, f"{c[0]}: the verdict {verdict!r} names no kind"
            labels[c[0]] = label
    for kind, n in Counter(labels.values()).items():
        assert re.search(rf"^- {re.escape(kind)}: {n} files?\b", text, re.M), f"the summary does not count {n} {kind}"


ROWS = rows(CURRENT.read_text(encoding="utf-8"))


@pytest.mark.parametrize("row", range(len(ROWS)),
                         ids=[f"{c[0].strip('`')}:{c[1].split()[1]}" for _i, c in ROWS])
def test_each_row_says_what_meshsolve_says(row: int, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    if UPDATE:
        pytest.skip("MESHSOLVE_UPDATE_DOCS=1: test_update_current_md rewrites the table")
    monkeypatch.chdir(CORPUS)
    monkeypatch.setenv("NO_COLOR", "1")
    cells = ROWS[row][1]
    code, notes, first = measure(argv_of(cells)[1], capsys)
    assert cells[2:5] == [str(code), str(notes), _first_cell(first)], (
        f"CURRENT.md is stale for {cells[0]} {cells[1]} (MESHSOLVE_UPDATE_DOCS=1 rewrites it)")


@pytest.mark.skipif(not UPDATE, reason="rewrites CURRENT.md: MESHSOLVE_UPDATE_DOCS=1")
def test_update_current_md(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(CORPUS)
    monkeypatch.setenv("NO_COLOR", "1")
    text = CURRENT.read_text(encoding="utf-8")
    lines = text.splitlines()
    table: list[list[str]] = []
    for index, cells in rows(text):
        code, notes, first = measure(argv_of(cells)[1], capsys)
        measured = [str(code), str(notes), _first_cell(first)]
        if cells[2:5] != measured:
            cells = [*cells[:2], *measured, *cells[5:]]
            lines[index] = "| " + " | ".join(cells) + " |"
        table.append(cells)
    CURRENT.write_text(_SUMMARY.sub(summary(table), "\n".join(lines) + "\n", count=1), encoding="utf-8")
