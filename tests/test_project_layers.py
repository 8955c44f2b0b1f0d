"""The layers stay visible: only meshsolve/smt imports z3, only meshsolve/cli.py imports click, and
the lower layers load without the solver."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tempfile
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


def test_reading_rules_loads_no_world_values() -> None:
    """``meshsolve parse`` needs addresses and rules only: the world's values load on first use."""
    code = ("import sys; from meshsolve.cli import main; "
            "code = main(['parse', '--test', sys.argv[1]]); "
            "print(code, 'meshsolve.model.world' in sys.modules); "
            "from meshsolve.model import World; print('meshsolve.model.world' in sys.modules)")
    rules = "*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -d 192.0.2.1/32 -j RETURN\nCOMMIT\n"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rules.txt"
        path.write_text(rules, encoding="utf-8")
        out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                             check=True).stdout
    assert out.split() == ["0", "False", "True"]


# --- DEVELOPERS.md's layer table against the real import graph ------------------------------------

DEVELOPERS = PKG.parent / "DEVELOPERS.md"


def _unit(module: str) -> str:
    """The table row a ``meshsolve.x.y`` module belongs to: ``x`` for a package, ``x.py`` for a
    module, ``__init__.py`` for the package root."""
    parts = module.split(".")
    assert parts[0] == "meshsolve", module
    if len(parts) == 1:
        return "__init__.py"
    return parts[1] if (PKG / parts[1]).is_dir() else f"{parts[1]}.py"


def _units() -> set[str]:
    return {p.name for p in PKG.iterdir()
            if (p.is_dir() and (p / "__init__.py").exists()) or p.suffix == ".py"}


def _table() -> dict[str, set[str] | None]:
    """Row (``model``, ``inputs.py`` …) → the rows it may import (``None``: all)."""
    text = DEVELOPERS.read_text(encoding="utf-8")
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    units = _units()
    by_name = {u.removesuffix(".py"): u for u in units}
    table: dict[str, set[str] | None] = {}
    for line in section.splitlines():
        m = re.fullmatch(r"\| `meshsolve/([^`]+)` \|(.*)\| ([^|]+) \|", line.strip())
        if not m:
            continue
        row = m.group(1).rstrip("/")
        cell = re.sub(r"\([^)]*\)", "", m.group(3)).strip()
        if cell == "all":
            table[row] = None
        elif cell == "—":
            table[row] = set()
        else:
            names = [n.strip().strip("`") for n in cell.split(",")]
            unknown = [n for n in names if n not in by_name]
            assert not unknown, f"row {row}: {unknown} name nothing in meshsolve/"
            table[row] = {by_name[n] for n in names}
    return table


def _meshsolve_imports(path: Path) -> set[tuple[str, int]]:
    """(row imported, line) for every import of meshsolve in ``path``, at any depth."""
    rel = path.relative_to(PKG.parent).with_suffix("")
    module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            # ``from meshsolve import defaults`` imports a module; ``from meshsolve import World`` the root
            targets = [f"{base}.{a.name}" if base == "meshsolve" and _is_module(a.name) else base
                       for a in node.names]
        out |= {(_unit(t), node.lineno) for t in targets if t.split(".")[0] == "meshsolve"}
    return out


def _is_module(name: str) -> bool:
    return (PKG / name).is_dir() or (PKG / f"{name}.py").is_file()


def test_every_part_of_the_package_has_a_row() -> None:
    table = _table()
    assert set(table) == _units(), (sorted(_units() - set(table)), sorted(set(table) - _units()))


def test_imports_follow_the_layer_table() -> None:
    table = _table()
    wrong = []
    for path in sorted(PKG.rglob("*.py")):
        row = _unit(".".join(path.relative_to(PKG.parent).with_suffix("").parts).removesuffix(".__init__"))
        allowed = table[row]
        if allowed is None:
            continue
        for target, line in sorted(_meshsolve_imports(path)):
            if target != row and target not in allowed:
                wrong.append(f"{path.relative_to(PKG.parent)}:{line} imports {target} ({row} may import "
                             f"{', '.join(sorted(allowed)) or 'nothing'})")
    assert not wrong, "\n".join(wrong)


def test_the_layer_check_sees_imports_at_every_depth() -> None:
    """The checker itself: function-level, TYPE_CHECKING and relative imports are all seen."""
    sample = PKG / "report" / "findings.py"
    seen = {t for t, _ in _meshsolve_imports(sample)}
    assert {"analysis", "model", "semantics"} <= seen
    api = {t for t, _ in _meshsolve_imports(PKG / "api.py")}
    assert {"analysis", "inputs", "semantics"} <= api  # function-level and TYPE_CHECKING only
    table = _table()
    assert table["model"] == {"errors.py", "defaults.py"} and table["cli.py"] is None
