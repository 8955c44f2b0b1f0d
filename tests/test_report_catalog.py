"""The finding catalog: one module, unique codes never reused, templates, the generated docs page."""

from __future__ import annotations

import re
import string
from pathlib import Path

from meshsolve.report.catalog import CATALOG, LEVELS, RETIRED, catalog_markdown, message_type

ROOT = Path(__file__).resolve().parent.parent


def test_codes_are_unique_ordered_and_well_formed() -> None:
    codes = list(CATALOG)
    assert codes == sorted(codes)
    assert len({m.name for m in CATALOG.values()}) == len(codes)
    for code, m in CATALOG.items():
        assert re.fullmatch(r"MSH\d{4}", code) and m.code == code
        assert int(code[3:]) > 100, "0000-0100 are reserved, as in istioctl's catalog"
        assert m.level in LEVELS
        assert m.description.strip() and m.template.strip()
    assert not set(RETIRED) & set(codes), "a retired code may not come back"


def test_istio_overlaps_are_named() -> None:
    assert message_type("MSH0143").related == "IST0143"
    assert message_type("MSH0144").related == "IST0144"
    assert message_type("MSH0145").related == "IST0143"


def test_templates_format_with_their_own_fields() -> None:
    for m in CATALOG.values():
        fields = {f for _, f, _, _ in string.Formatter().parse(m.template) if f}
        text = m.format(**{f: f"<{f}>" for f in fields})
        assert "{" not in text and all(f"<{f}>" in text for f in fields)


def test_unknown_code_is_a_key_error_naming_it() -> None:
    try:
        message_type("MSH9999")
    except KeyError as exc:
        assert "MSH9999" in str(exc)
    else:
        raise AssertionError("expected KeyError")


def test_docs_findings_page_is_generated_from_the_catalog() -> None:
    page = (ROOT / "docs" / "findings.md").read_text(encoding="utf-8")
    assert page == catalog_markdown(), "regenerate: python -m meshsolve.report.catalog > docs/findings.md"
    for code in CATALOG:
        assert f"## {code}" in page
