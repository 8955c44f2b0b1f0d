"""Istio golden vectors shared by the tests/test_istio_*.py modules (read at collection time)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
GOLDENS = Path(os.environ.get("MESHSOLVE_SHARED", ROOT.parent / "shared")) / "reference" / "istio-goldens"


def _manifest() -> dict[str, Any]:
    path = GOLDENS / "MANIFEST.yaml"
    if not path.is_file():  # test_manifest_has_the_28_master_goldens then fails with the reason
        return {"goldens": [], "base_config": {"set_by_base": []}}
    loaded: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return loaded


MANIFEST = _manifest()
BASE: dict[str, Any] = {e["field"]: e["value"] for e in MANIFEST["base_config"]["set_by_base"]}
MASTER: list[dict[str, Any]] = [g for g in MANIFEST["goldens"] if "/" not in g["file"]]
NON_MASTER: list[dict[str, Any]] = [g for g in MANIFEST["goldens"]
                                    if g["file"].startswith("non-master/pr-59544/")]
