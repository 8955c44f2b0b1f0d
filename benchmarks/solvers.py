"""Which Z3 solver for which question: each question of the default property set on a kube-proxy
dump, solved by each kind of solver ``search`` could make.

    .venv/bin/python -m benchmarks.solvers --rules 10000 --rules 50000

For each size it builds the world of ``kube_dump(N)`` once, then for every (property, scope) of
the default set runs ``smt.solve.search`` with the solver forced to each kind in turn (the
encoding is built once per question and reused: only the solver differs), and prints the CPU
time of building the question's encoding, then of each kind's search with that encoding
(``time.process_time``: asserting, preprocessing, search, canonical witness), the answer, and
the kind ``search`` picks (``smt.solve.solver_kind``). A kind that gives up (Z3's limits) says so.
Two kinds ``search`` does not use are timed beside them: ``propagate+smt`` (simplifying, propagating
values and solving equations, then Z3's SMT core: several connections from any process had it
before) and ``smt-core-activity``, Z3's SMT core as it comes (case splits by activity, values
propagated first), beside ``SOLVERS["smt-core"]`` as ``search`` sets it (``smt.solve._smt_core``).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from typing import Any

import z3

import meshsolve.defaults as defaults
import meshsolve.smt.solve as S
from benchmarks.kubeproxy import ISTIO_CONFIG, kube_dump
from meshsolve.analysis.properties import default_properties
from meshsolve.analysis.worlds import world_from_rules
from meshsolve.iptables import parse_text
from meshsolve.istio import proxy_behavior


#: ``search``'s solver forced to one kind (``smt.solve.SOLVERS``), whatever the question; and the
#: SMT core as Z3 makes it (case splits by activity), beside the one ``search`` uses
def _forced(make: Callable[[], Any]) -> Callable[[str], Any]:
    return lambda client: make()


KINDS: dict[str, Callable[[str], Any]] = {kind: _forced(make) for kind, make in S.SOLVERS.items()}
KINDS["propagate+smt"] = lambda client: z3.Then("simplify", "propagate-values", "solve-eqs", "smt").solver()
KINDS["smt-core-activity"] = lambda client: z3.SimpleSolver()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rules", type=int, action="append", help="kube-proxy rules (repeatable)")
    ap.add_argument("--kind", action="append", choices=list(KINDS), help="only these kinds")
    args = ap.parse_args()
    kinds = args.kind or list(KINDS)
    print(f"# {time.strftime('%Y-%m-%d %H:%M %Z')}, {platform.node()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, z3 {z3.get_version_string()}, "
          f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    real, quick = S._solver, S.QUICK_UNSAT
    S.QUICK_UNSAT = False  # each kind timed alone (the quick try answers first on small rulesets)
    try:
        for n in args.rules or [10000]:
            world = world_from_rules(parse_text(kube_dump(n)), proxy_behavior(ISTIO_CONFIG.version, ISTIO_CONFIG))
            print(f"\n## kube_dump({n})\n")
            print("| property | scope | hops | encoding CPU s | picked | " + " | ".join(f"{k} CPU s" for k in kinds)
                  + " |")
            print("|---|---|---|---|---|" + "---|" * len(kinds))
            for prop in default_properties(world):
                for scope, pred in prop.checks(world):
                    hops = 1 if S._first_hop_only(pred) else defaults.HOPS
                    picked = S.solver_kind(scope.client)
                    t = time.process_time()
                    S.search(world, scope, pred, rlimit=1)  # builds and caches the encoding; Z3 stops at once
                    enc = time.process_time() - t
                    cells = []
                    for kind in kinds:
                        S._solver = KINDS[kind]  # type: ignore[assignment]
                        t = time.process_time()
                        ans = S.search(world, scope, pred)
                        cells.append(f"{time.process_time() - t:.2f} ({type(ans).__name__})")
                    print(f"| {type(prop).__name__} | {scope} | {hops} | {enc:.2f} | {picked} | "
                          + " | ".join(cells) + " |", flush=True)
    finally:
        S._solver, S.QUICK_UNSAT = real, quick


if __name__ == "__main__":
    main()
