"""Checking a world's properties and collecting the findings into a ``Report``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from meshsolve.analysis.check import check_each
from meshsolve.analysis.properties import Property
from meshsolve.model.provenance import Part
from meshsolve.model.world import World
from meshsolve.report.catalog import Level
from meshsolve.report.findings import Finding, findings_for, lint_world, rests_on, subject_of
from meshsolve.report.progress import Progress
from meshsolve.report.render import Checked, Report

__all__ = ["check_world"]


def check_world(world: World, props: Sequence[Property], *, app_references: Mapping[str, str] | None = None,
                failure_threshold: Level = "Info", progress: Progress | None = None,
                parts: Sequence[Part] = ()) -> Report:
    """Prove or refute each property; findings for the refuted/unknown ones plus ``lint_world``
    (a finding identical to an earlier one, word for word, is reported once). Each finding names
    the assumed ``parts`` (see ``meshsolve.model.provenance``) it rests on."""
    findings: list[Finding] = list(lint_world(world, app_references=dict(app_references or {})))
    checked: list[Checked] = []
    subject = subject_of(world)
    for p, v in zip(props, check_each(world, props), strict=True):
        checked.append(Checked(subject, p.title(), v.kind))
        seen = {(f.code, f.subject, f.reference, f.message) for f in findings}
        # two properties refuted by the same witness (a loop is also an unreachable port) say it once
        findings.extend(rests_on(f, tuple(parts)) for f in findings_for(world, v)
                        if (f.code, f.subject, f.reference, f.message) not in seen)
        if progress is not None:
            progress.step()
    if progress is not None:
        progress.done()
    return Report(tuple(findings), tuple(checked), failure_threshold)
