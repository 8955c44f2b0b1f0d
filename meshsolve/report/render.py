"""Rendering a report: istioctl-analyze text lines, JSON with a schema version, and colour rules.

Text: one line per finding, ``<Level> [<CODE>] (<Kind> <ns/name> [file:line]) <message>``, then a
summary line. Only the level word is coloured, only when the stream is a terminal, and never with
``NO_COLOR`` set or ``TERM=dumb``. ``explain=True`` adds the witness's numbered trace under each
refuted finding.

Exit codes (``Report.exit_code``): 0 when every property holds, 79 when some property is refuted
(whether or not others are inconclusive — a counterexample is definite), 80 when none is refuted
but some are inconclusive.
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from json.encoder import encode_basestring  # json.dumps(text, ensure_ascii=False) of a str
from typing import IO, Any

import attrs

from meshsolve.exits import EXIT_FINDINGS, EXIT_OK, EXIT_UNKNOWN
from meshsolve.report.catalog import LEVELS, Level
from meshsolve.report.findings import Finding, Subject

__all__ = ["EXIT_FINDINGS", "EXIT_OK", "EXIT_UNKNOWN", "SCHEMA_VERSION", "Checked", "Report",
           "colour_enabled", "json_chunks", "render_json", "render_text"]

SCHEMA_VERSION = 1

_COLOURS: dict[str, str] = {"Error": "\x1b[1;31m", "Warning": "\x1b[33m", "Info": ""}
_RESET = "\x1b[0m"


@attrs.frozen
class Checked:
    """One property checked for one subject, and its verdict kind (proved/refuted/unknown)."""

    subject: Subject
    property: str
    verdict: str


def _findings(values: Iterable[Finding]) -> tuple[Finding, ...]:
    return tuple(values)


def _checked(values: Iterable[Checked]) -> tuple[Checked, ...]:
    return tuple(values)


def _at_least(level: Level, threshold: Level) -> bool:
    return LEVELS.index(level) <= LEVELS.index(threshold)


@attrs.frozen
class Report:
    """Findings plus what was checked; ``failure_threshold`` decides which findings fail the run."""

    findings: tuple[Finding, ...] = attrs.field(default=(), converter=_findings)
    checked: tuple[Checked, ...] = attrs.field(default=(), converter=_checked)
    failure_threshold: Level = "Info"
    suppressed: int = 0  # findings dropped by ``suppress``

    @property
    def exit_code(self) -> int:
        failing = [f for f in self.findings if _at_least(f.level, self.failure_threshold)]
        if any(f.verdict != "unknown" for f in failing):  # refuted, lint and input findings
            return EXIT_FINDINGS
        if any(f.verdict == "unknown" for f in self.findings) or any(
                c.verdict == "unknown" for c in self.checked):
            return EXIT_UNKNOWN
        return EXIT_OK

    def counts(self) -> dict[str, int]:
        out = {"proved": 0, "refuted": 0, "unknown": 0}
        for c in self.checked:
            out[c.verdict] = out.get(c.verdict, 0) + 1
        return out

    def level_counts(self) -> dict[str, int]:
        return {lvl: sum(1 for f in self.findings if f.level == lvl) for lvl in LEVELS}

    def suppress(self, patterns: Iterable[str]) -> Report:
        """Without the findings matching any ``CODE`` or ``CODE=Kind namespace/name`` pattern
        (``*`` wildcards, as istioctl's ``--suppress``)."""
        rules = []
        for p in patterns:
            code, _, subject = p.partition("=")
            rules.append((code.strip(), subject.strip() or "*"))
        kept = tuple(f for f in self.findings if not any(
            fnmatch.fnmatchcase(f.code, c) and fnmatch.fnmatchcase(str(f.subject), s) for c, s in rules))
        return attrs.evolve(self, findings=kept, suppressed=self.suppressed + len(self.findings) - len(kept))

    def filtered(self, output_threshold: Level) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if _at_least(f.level, output_threshold))

    def summary(self) -> str:
        subjects = list(dict.fromkeys(c.subject for c in self.checked)) or list(
            dict.fromkeys(f.subject for f in self.findings))
        what = str(subjects[0]) if len(subjects) == 1 else f"{len(subjects)} pods"
        c = self.counts()
        n = len(self.checked)
        hidden = f" ({self.suppressed} suppressed)" if self.suppressed else ""
        if not self.findings:
            head = f"✔ No issues left after suppressing {self.suppressed}" if self.suppressed else \
                "✔ No issues found"
            return f"{head}: {c['proved']} of {n} propert{'ies' if n != 1 else 'y'} proved for {what}"
        lv = self.level_counts()
        parts = [f"{lv[k]} {k.lower()}{'s' if lv[k] != 1 else ''}" for k in LEVELS if lv[k]]
        if n == 0:
            return (f"{len(self.findings)} finding{'s' if len(self.findings) != 1 else ''} "
                    f"({', '.join(parts)}) for {what}: no property checked{hidden}")
        return (f"{len(self.findings)} finding{'s' if len(self.findings) != 1 else ''} "
                f"({', '.join(parts)}) for {what}: {c['proved']} proved, {c['refuted']} refuted, "
                f"{c['unknown']} unknown of {n} propert{'ies' if n != 1 else 'y'}{hidden}")


def colour_enabled(stream: IO[str] | None, env: Mapping[str, str] | None = None) -> bool:
    """Colour only on a terminal, and not with ``NO_COLOR`` (any value) or ``TERM=dumb``."""
    env = os.environ if env is None else env
    if "NO_COLOR" in env or env.get("TERM", "") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _level_word(level: str, colour: bool) -> str:
    code = _COLOURS.get(level, "")
    return f"{code}{level}{_RESET}" if colour and code else level


def render_text(report: Report, *, colour: bool = False, explain: bool = False,
                output_threshold: Level = "Info") -> str:
    """The findings as istioctl-analyze lines and a summary line (see the module docstring)."""
    lines: list[str] = []
    for f in report.filtered(output_threshold):
        line = f.line()
        if colour:
            line = _level_word(f.level, True) + line[len(f.level):]
        lines.append(line)
        if explain and f.result is not None:
            lines.extend("    " + t for t in str(f.result).splitlines())
    lines.append(report.summary())
    return "\n".join(lines) + "\n"


def render_json(report: Report, *, output_threshold: Level = "Info",
                extra: Mapping[str, Any] | None = None) -> str:
    """``{"schemaVersion": 1, "findings": [...], "checked": [...], "summary": {...}}``."""
    return "".join(json_chunks(report, output_threshold=output_threshold, extra=extra))


def json_chunks(report: Report, *, output_threshold: Level = "Info",
                extra: Mapping[str, Any] | None = None) -> Iterator[str]:
    """:func:`render_json`'s text in pieces, a finding or a check at a time, for a report too big to
    hold as one document and one string (a fleet's hundreds of thousands of checks); the pieces
    joined are ``json.dumps`` of the whole document with ``indent=2``."""
    head: dict[str, Any] = {"schemaVersion": SCHEMA_VERSION}
    if extra:
        head.update(extra)
    summary = {**report.counts(), **{k.lower(): v for k, v in report.level_counts().items()},
               "suppressed": report.suppressed, "exitCode": report.exit_code}
    for key, value in head.items():
        yield ("{\n  " if key == "schemaVersion" else ",\n  ") + f"{json.dumps(key)}: " + \
            json.dumps(value, indent=2, ensure_ascii=False).replace("\n", "\n  ")
    shared: dict[int, dict[str, str]] = {}
    yield ',\n  "findings": ['
    first = True
    for f in report.filtered(output_threshold):  # each as json.dumps(entry, indent=2) writes it, two levels down
        yield ("\n    " if first else ",\n    ") + _finding_json(f, shared).replace("\n", "\n    ")
        first = False
    yield "]" if first else "\n  ]"
    yield ',\n  "checked": ['
    first = True
    for piece in _checked_json(report.checked):
        yield piece
        first = False
    yield "]" if first else "\n  ]"
    yield ',\n  "summary": ' + json.dumps(summary, indent=2, ensure_ascii=False).replace("\n", "\n  ") + "\n}\n"


def _nested(value: Any) -> str:
    """``value`` as ``json.dumps(..., indent=2)`` writes it one level down in a document."""
    return json.dumps(value, indent=2, ensure_ascii=False).replace("\n", "\n  ")


def _finding_json(f: Finding, shared: dict[int, dict[str, str]]) -> str:
    """``json.dumps(f.to_dict(), indent=2, ensure_ascii=False)``; the trace and rule references
    written once per witness (``shared``, by the ``Result``'s identity: a fleet's pods of one group
    share it, and the report keeps it alive while it is written)."""
    if f.result is None:
        return json.dumps(f.to_dict(), indent=2, ensure_ascii=False)
    texts = shared.get(id(f.result))
    if texts is None:
        texts = shared[id(f.result)] = {k: _nested(v) for k, v in f.evidence().items()}
    fields = f.to_dict(evidence=dict.fromkeys(texts))
    return "{\n  " + ",\n  ".join(f"{encode_basestring(k)}: {texts[k] if k in texts else _nested(v)}"
                                  for k, v in fields.items()) + "\n}"


def _checked_json(checked: Iterable[Checked]) -> Iterator[str]:
    """The checks as ``json.dumps(..., indent=2, ensure_ascii=False)`` writes them two levels down,
    each after its separator, one piece per run of checks of one subject (a fleet has hundreds of
    thousands: each string is escaped once)."""
    tails: dict[tuple[str, str], str] = {}
    last: Subject | None = None
    run: list[str] = []
    head = ""
    sep = "\n    "
    for c in checked:
        if c.subject is not last:
            if run:
                yield "".join(run)
                run.clear()
            last, head = c.subject, '{\n      "origin": ' + encode_basestring(str(c.subject))
        tail = tails.get((c.property, c.verdict))
        if tail is None:
            tail = tails[(c.property, c.verdict)] = (
                ',\n      "property": ' + encode_basestring(c.property)
                + ',\n      "verdict": ' + encode_basestring(c.verdict) + "\n    }")
        run.append(sep + head + tail)
        sep = ",\n    "
    if run:
        yield "".join(run)


def merge(reports: Iterable[Report], failure_threshold: Level = "Info") -> Report:
    """One report of many (findings and checks in order)."""
    fs: list[Finding] = []
    cs: list[Checked] = []
    for r in reports:
        fs.extend(r.findings)
        cs.extend(r.checked)
    return Report(tuple(fs), tuple(cs), failure_threshold)
