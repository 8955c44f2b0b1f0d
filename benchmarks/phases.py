"""Where one property's time goes on a kube-proxy dump, phase by phase, in one process.

    .venv/bin/python -m benchmarks.phases --rules 50000 -p capture-out
    .venv/bin/python -m benchmarks.phases --rules 50000 --tree /tmp/enc3-prev   # another package tree

Writes ``kube_dump(N)`` to a file, then in a child process (the package from this tree, or
``--tree DIR``) times each phase of ``meshsolve check --rules FILE -p PROP`` for the property's
first question: reading the rules, building the world, encoding the flow, asserting the query in
the solver ``search`` picks (Z3 simplifies it then), and Z3's check. Wall and CPU seconds
(``time.process_time``) a phase, and the answer. Z3's rewriter settings for the kind
(``smt.solve.rewriting``, absent from older trees) hold while asserting and checking, as in
``search``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.kubeproxy import kube_dump

CHILD = r"""
import contextlib, inspect, sys, time
import z3
from meshsolve.inputs import from_rules, read_rules
from meshsolve.inputs.properties import parse_property
from meshsolve.smt import encode as E, solve as S

last = [time.perf_counter(), time.process_time()]
def phase(name):
    w, c = time.perf_counter(), time.process_time()
    print(f"{name:8s} wall {w - last[0]:6.2f} s  CPU {c - last[1]:6.2f} s", flush=True)
    last[:] = [w, c]

rules = read_rules(sys.argv[1]); phase("parse")
world = from_rules(rules); world = getattr(world, "world", world); phase("world")
props = parse_property(sys.argv[2], world)
prop = props[0] if isinstance(props, tuple) else props
scope, pred = prop.checks(world)[0]
hops = 1 if S._first_hop_only(pred) else S.defaults.HOPS
enc, h0, client = E.encode_flow(world, scope.family, hops=hops,
                                first="peer" if scope.client == "peer" else "local",
                                marks=S._marked(world, scope))
query = [*enc.constraints, *S._scope(scope, world, enc, h0, client), z3.Not(S._pred(pred, enc))]
phase("encode")
# the kind follows the client alone; older trees also took the number of connections
by = (scope.client,) if "hops" not in inspect.signature(S.solver_kind).parameters else (hops, scope.client)
kind = S.solver_kind(*by)
scoped = getattr(S, "rewriting", None)
with (scoped(kind) if scoped else contextlib.nullcontext()):
    s = S.configure(S._solver(*by), S.defaults.TIMEOUT_MS, S.defaults.RLIMIT)
    s.add(*query); phase("assert")
    r = s.check(); phase("check")
print(f"{kind}: {r} ({world.rules.for_family(scope.family).rule_count()} rules, {hops} hop(s), scope {scope})")
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rules", type=int, default=50000)
    ap.add_argument("-p", "--property", dest="prop", default="capture-out")
    ap.add_argument("--tree", type=Path, help="another package tree (a directory holding meshsolve/)")
    args = ap.parse_args()
    env = dict(os.environ, PYTHONPATH=str(args.tree or Path(__file__).resolve().parent.parent))
    print(f"# {time.strftime('%Y-%m-%d %H:%M %Z')}, load {' '.join(f'{x:.2f}' for x in os.getloadavg())}, "
          f"tree {env['PYTHONPATH']}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"kube{args.rules}.txt"
        path.write_text(kube_dump(args.rules))
        subprocess.run([sys.executable, "-c", CHILD, str(path), args.prop], env=env, check=True, cwd="/",
                       stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
