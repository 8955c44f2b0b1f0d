"""Every ``$ meshsolve ...`` command shown in a ```console block of the README and docs/*.md is run,
and its output (stdout and stderr, as a terminal shows them, without colour) must match the block.

To refresh the blocks after an intended change in output:
``MESHSOLVE_UPDATE_DOCS=1 .venv/bin/python -m pytest tests/test_project_docs.py``, then read the diff.

The demo excerpt in docs/tutorial.md (a ```text block after ``$ make demo``) is checked line by line
against one run of the demo.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK_RE = re.compile(r"^```console\n(.*?)^```\n", re.S | re.M)
UPDATE = os.environ.get("MESHSOLVE_UPDATE_DOCS") == "1"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(NO_COLOR="1", TERM="dumb", COLUMNS="120")
    return env


def run_command(line: str) -> str:
    argv = shlex.split(line)
    assert argv[0] == "meshsolve", f"docs may only show meshsolve commands in console blocks: {line}"
    proc = subprocess.run([sys.executable, "-m", "meshsolve.cli", *argv[1:]], cwd=ROOT, env=_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    return proc.stdout


def parse_block(body: str) -> list[tuple[str, str]]:
    """``[(command, expected output)]`` of one console block."""
    items: list[tuple[str, list[str]]] = []
    for line in body.splitlines(keepends=True):
        if line.startswith("$ "):
            items.append((line[2:].strip(), []))
        else:
            assert items, f"console block output before any command: {line!r}"
            items[-1][1].append(line)
    return [(cmd, "".join(out)) for cmd, out in items]


def commands() -> list[tuple[str, int, str, str]]:
    out = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for m in BLOCK_RE.finditer(text):
            lineno = text[:m.start()].count("\n") + 1
            for cmd, expected in parse_block(m.group(1)):
                out.append((doc.name, lineno, cmd, expected))
    return out


def _update() -> None:
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")

        def redo(m: re.Match[str]) -> str:
            parts = []
            for cmd, _ in parse_block(m.group(1)):
                got = run_command(cmd)
                parts.append(f"$ {cmd}\n{got}" + ("" if got.endswith("\n") or not got else "\n"))
            return "```console\n" + "".join(parts) + "```\n"

        new = BLOCK_RE.sub(redo, text)
        if new != text:
            doc.write_text(new, encoding="utf-8")


if UPDATE:
    _update()

CASES = commands()


def test_docs_show_commands() -> None:
    assert len(CASES) >= 10, "the README and docs should show meshsolve at work"
    shown = {c.split()[1] for _, _, c, _ in CASES if len(c.split()) > 1}
    assert {"check", "diff", "audit"} <= shown


@pytest.mark.parametrize(("doc", "lineno", "command", "expected"), CASES,
                         ids=[f"{d}:{n}:{c[:50]}" for d, n, c, _ in CASES])
def test_doc_command_output_matches(doc: str, lineno: int, command: str, expected: str) -> None:
    got = run_command(command)
    assert got == expected, f"{doc}:{lineno}: output of `{command}` changed:\n{got}"


def _demo_excerpt() -> list[str]:
    text = (ROOT / "docs" / "tutorial.md").read_text(encoding="utf-8")
    m = re.search(r"^\$ make demo\n```\n\s*```text\n(.*?)^```\n", text, re.S | re.M)
    assert m, "docs/tutorial.md shows an excerpt of `make demo` in a ```text block after `$ make demo`"
    return [line for line in m.group(1).splitlines() if line.strip() and line.strip() != "..."]


def test_demo_excerpt_in_tutorial_matches_the_demo(tmp_path: Path) -> None:
    excerpt = _demo_excerpt()
    proc = subprocess.run([sys.executable, "-m", "meshsolve.demo", "--script", str(tmp_path / "init.sh")],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    missing = [line for line in excerpt if line not in lines]
    assert not missing, f"demo output no longer contains: {missing}"
    assert (tmp_path / "init.sh").read_text().startswith("#!/bin/sh")
