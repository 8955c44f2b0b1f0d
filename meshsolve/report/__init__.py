"""Findings in the ecosystem's shape: the catalog, findings from verdicts, text and JSON rendering."""

from meshsolve.report.catalog import CATALOG, LEVELS, Level, MessageType, message_type
from meshsolve.report.findings import Finding, Subject, findings_for, lint_world, subject_of
from meshsolve.report.progress import Progress
from meshsolve.report.render import (
    EXIT_FINDINGS,
    EXIT_OK,
    EXIT_UNKNOWN,
    SCHEMA_VERSION,
    Checked,
    Report,
    colour_enabled,
    merge,
    render_json,
    render_text,
)

__all__ = [
    "CATALOG", "EXIT_FINDINGS", "EXIT_OK", "EXIT_UNKNOWN", "LEVELS", "SCHEMA_VERSION", "Checked",
    "Finding", "Level", "MessageType", "Progress", "Report", "Subject", "colour_enabled", "findings_for",
    "lint_world", "merge", "message_type", "render_json", "render_text", "subject_of",
]
