"""Worlds that grow: the modern-goals spec with more apps, addresses or ports, and shipped specs
without their vocabulary list (what the synthesis benchmarks run).

``grown_spec(apps=a, addresses=n, ports=p)`` is ``specs/istio-modern-goals.yaml`` (3 apps, 2
services, no ``conditions`` list) plus

* ``a`` apps, each with its own uid and gid (2001…, 3001…) and a socket on the pod IP (7001…):
  each adds an alternative to the four owner conditions and one to the two port conditions;
* ``n`` services on VIPs 198.51.100.11… (port 9003, to the price app): each adds an alternative to
  the four address conditions;
* ``p`` extra wildcard ports of the details app (8101…): each adds an alternative to the two port
  conditions.

The goals are the spec's own; ``any-app`` goals (direct, captured outbound) range over the new apps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "specs" / "istio-modern-goals.yaml"


def _dump(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False, width=200)


def derived_text(text: str) -> str:
    """A spec's text without its ``search.conditions`` list: the vocabulary is derived from the world."""
    doc = yaml.safe_load(text)
    doc["search"].pop("conditions", None)
    return _dump(doc)


def grown_spec(*, apps: int = 0, addresses: int = 0, ports: int = 0) -> str:
    """The text of the modern-goals spec grown by ``apps`` apps, ``addresses`` service addresses and
    ``ports`` listening ports (module docstring)."""
    doc = yaml.safe_load(BASE.read_text())
    pod = doc["pod"]["ip"]
    for i in range(1, apps + 1):
        doc["apps"].append({"name": f"app{i}", "uid": 2000 + i, "gid": 3000 + i, "listen": [f"{pod}:{7000 + i}"]})
    details = next(a for a in doc["apps"] if a["name"] == "details")
    details["listen"] += [f"0.0.0.0:{8100 + i}" for i in range(1, ports + 1)]
    for i in range(1, addresses + 1):
        doc["services"].append({"name": f"extra{i}", "vip": f"198.51.100.{10 + i}", "port": 9003,
                                "endpoints": [f"{pod}:9003"]})
    doc["name"] = f"istio-modern-goals+{apps}apps+{addresses}addresses+{ports}ports"
    return _dump(doc)


#: The series the benchmark runs: (apps, addresses, ports) added to the base world.
SERIES: tuple[tuple[str, tuple[tuple[int, int, int], ...]], ...] = (
    ("apps", ((0, 0, 0), (1, 0, 0), (2, 0, 0), (4, 0, 0), (8, 0, 0))),
    ("addresses", ((0, 1, 0), (0, 2, 0), (0, 4, 0))),
    ("ports", ((0, 0, 1), (0, 0, 2), (0, 0, 4), (0, 0, 8))),
)
