"""Istio's own golden rule files, checked for capture, bypass and no loops.

``python -m meshsolve.analysis.goldens [DIR]`` prints the table that the README and
``tests/test_analysis_goldens.py`` pin. ``DIR`` defaults to ``$MESHSOLVE_SHARED/reference/istio-goldens``
or ``../shared/reference/istio-goldens`` beside the repository.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import attrs
import yaml

import meshsolve.defaults as defaults
from meshsolve.analysis.check import Verdict, check
from meshsolve.analysis.properties import Bypass, CaptureOutbound, NoLoops, Property
from meshsolve.analysis.worlds import world_from_config
from meshsolve.errors import SpecError
from meshsolve.iptables import parse_file
from meshsolve.istio import CaptureConfig, from_go_fields

__all__ = ["GOLDEN_PROPERTIES", "GoldenEntry", "GoldenRow", "check_golden", "golden_entries", "goldens_dir"]

GOLDEN_PROPERTIES: tuple[Property, ...] = (CaptureOutbound(), Bypass(), NoLoops())


def goldens_dir() -> Path:
    shared = os.environ.get("MESHSOLVE_SHARED")
    base = Path(shared) if shared else Path(__file__).resolve().parents[2].parent / "shared"
    return base / "reference" / "istio-goldens"


@attrs.frozen
class GoldenEntry:
    file: str
    path: Path
    config: CaptureConfig
    note: str = ""


@attrs.frozen
class GoldenRow:
    file: str
    verdicts: tuple[Verdict, ...]
    note: str = ""


def golden_entries(directory: Path | None = None) -> list[GoldenEntry]:
    """Every golden of the manifest with its configuration (base ⊕ the case's settings).

    The draft goldens of an unmerged pull request set fields that Istio later dropped
    (``OwnerUsersInclude``...): those run with the base configuration, noted as such.
    """
    d = directory or goldens_dir()
    manifest: dict[str, Any] = yaml.safe_load((d / "MANIFEST.yaml").read_text(encoding="utf-8"))
    base = {e["field"]: e["value"] for e in manifest["base_config"]["set_by_base"]}
    out = []
    for g in manifest["goldens"]:
        note = ""
        try:
            cfg = from_go_fields({**base, **(g.get("set") or {})})
        except SpecError as exc:
            cfg = from_go_fields(base)
            note = f"base configuration (the case's settings are not istio-iptables fields: {exc.message})"
        out.append(GoldenEntry(g["file"], d / g["file"], cfg, note))
    return out


def check_golden(entry: GoldenEntry, props: tuple[Property, ...] = GOLDEN_PROPERTIES, *,
                 timeout_ms: int = defaults.TIMEOUT_MS) -> GoldenRow:
    """The golden's row; ``timeout_ms`` is each solver call's wall limit (its resource limit, which
    does not depend on the machine's load, stays ``defaults.RLIMIT``)."""
    world = world_from_config(entry.config, rules=parse_file(entry.path))
    return GoldenRow(entry.file, tuple(check(world, p, timeout_ms=timeout_ms) for p in props), entry.note)


def _cell(v: Verdict) -> str:
    if v.kind == "refuted":
        return f"refuted ({getattr(v, 'flow', '')})"
    if v.kind == "unknown":
        return "unknown (owner name)" if "name" in getattr(v, "reason", "") else "unknown"
    return v.kind


def main(argv: list[str]) -> int:
    d = Path(argv[0]) if argv else None
    print("| golden | capture (outbound) | bypass | no loops |")
    print("|---|---|---|---|")
    for e in golden_entries(d):
        row = check_golden(e)
        print(f"| `{row.file}` | " + " | ".join(_cell(v) for v in row.verdicts) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
