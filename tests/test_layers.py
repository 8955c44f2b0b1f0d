"""The layers stay visible: only meshsolve/smt imports z3, only meshsolve/cli.py imports click, and
the lower layers load without the solver."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "meshsolve"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_only_smt_imports_z3_and_only_cli_imports_click() -> None:
    z3_users = sorted(str(p.relative_to(PKG)) for p in PKG.rglob("*.py") if "z3" in _imports(p))
    click_users = sorted(str(p.relative_to(PKG)) for p in PKG.rglob("*.py") if "click" in _imports(p))
    assert z3_users and all(u.startswith("smt/") for u in z3_users), z3_users
    assert click_users == ["cli.py"], click_users


def test_lower_layers_load_without_the_solver() -> None:
    code = ("import sys; import meshsolve.model, meshsolve.iptables, meshsolve.istio, meshsolve.semantics, "
            "meshsolve.smt.query, meshsolve.analysis.properties; "
            "print('z3' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
