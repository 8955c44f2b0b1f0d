"""The same check gives the same queries, verdicts and witnesses whatever Python's hash seed.

Each case runs in two fresh interpreters with different ``PYTHONHASHSEED`` values (which reorder
every set and dict of strings); the SMT-LIB text of every query (``smt.solve.QUERY_LOG``) and the
printed verdicts, witnesses included, must be identical.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_SCRIPT = r"""
import sys
from pathlib import Path
sys.path.insert(0, {root!r})
out_path, work = sys.argv[1], Path(sys.argv[2])
import meshsolve.smt.solve as S
S.QUERY_LOG = []
from meshsolve.analysis.check import check
from meshsolve.analysis.properties import CaptureOutbound, Reachable
from meshsolve.semantics.setups import setup_world
out = []
for family in ("ipv4",):
    for name, prop in (("A", Reachable("peer", 9003)), ("E", CaptureOutbound())):
        v = check(setup_world(name, family), prop)
        out.append(f"{{name}} {{family}} {{type(v).__name__}}: {{v}}")
        flow = getattr(v, "flow", None)
        if flow is not None:
            out.append(f"  witness {{flow}}")
from benchmarks.kubeproxy import kube_dump
dump = work / "kube.txt"
dump.write_text(kube_dump(100))
from meshsolve.cli import main
sys.argv = ["meshsolve", "check", "--rules", str(dump), "-p", "capture-out", "-p", "no-loops"]  # no-loops: templates
try:
    main()
except SystemExit as exc:
    out.append(f"exit {{exc.code}}")
Path(out_path).write_text("\n".join(out) + "\n")
Path(out_path + ".smt2").write_text("\n;;;;\n".join(S.QUERY_LOG))
"""


def _run(seed: str, tmp: Path) -> tuple[str, str, str]:
    out = tmp / f"out-{seed}.txt"
    env = {**os.environ, "PYTHONHASHSEED": seed}
    proc = subprocess.run([sys.executable, "-c", _SCRIPT.format(root=str(ROOT)), str(out), str(tmp)],
                          env=env, capture_output=True, text=True, timeout=600, cwd=tmp, check=False)
    assert proc.returncode == 0, proc.stderr
    return out.read_text(), Path(str(out) + ".smt2").read_text(), proc.stdout


def test_queries_and_answers_do_not_depend_on_the_hash_seed(tmp_path: Path) -> None:
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a_dir.mkdir()
    b_dir.mkdir()
    verdicts_a, smt_a, stdout_a = _run("1", a_dir)
    verdicts_b, smt_b, stdout_b = _run("4242", b_dir)
    queries = smt_a.split("\n;;;;\n")
    assert len(queries) > 4 and len(set(queries)) > 2  # it recorded distinct queries
    assert "Refuted" in verdicts_a and "witness" in verdicts_a and "Proved" in verdicts_a
    assert verdicts_a == verdicts_b
    assert stdout_a.replace(str(a_dir), "") == stdout_b.replace(str(b_dir), "")
    assert smt_a == smt_b
    assert "template!" not in smt_a  # every template variable was substituted
