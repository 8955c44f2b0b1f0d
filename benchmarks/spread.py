"""Run-to-run spread of one whole ``meshsolve check --rules`` process on a kube-proxy-style dump.

    nice -n 5 .venv/bin/python -m benchmarks.spread --rules 10000 --runs 10 -p capture-out

Writes ``kube_dump(N)`` to a file, runs ``meshsolve check --rules FILE -p PROP`` ``--runs`` times
one after another (the package from this tree, or ``--tree DIR``), and prints each run's wall
time, CPU time (user + system) and peak memory, then the median, min and max and the max/median
ratios. Every run must give the same exit code and output (it stops otherwise).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.command import MAIN
from benchmarks.kubeproxy import kube_dump


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rules", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("-p", "--property", dest="props", action="append", default=[])
    ap.add_argument("--tree", type=Path, help="another package tree (a directory holding meshsolve/)")
    args = ap.parse_args()
    tree = str(args.tree or Path(__file__).resolve().parent.parent)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = tree
    print(f"# {time.strftime('%Y-%m-%d %H:%M %Z')}, {platform.node()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, tree {tree}")
    walls: list[float] = []
    cpus: list[float] = []
    rss: list[int] = []
    first: tuple[int, bytes] | None = None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"kube{args.rules}.txt"
        path.write_text(kube_dump(args.rules))
        cmd = [sys.executable, "-c", MAIN, "check", "--rules", str(path)]
        for p in args.props or ["capture-out"]:
            cmd += ["-p", p]
        print(f"# {path.read_text().count(chr(10))} lines; meshsolve {' '.join(cmd[3:])}")
        for k in range(args.runs):
            t = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd="/")
            assert proc.stdout is not None
            out = proc.stdout.read()
            _pid, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - t
            proc.returncode = os.waitstatus_to_exitcode(status)
            got = (proc.returncode, out)
            if first is None:
                first = got
            elif got != first:
                sys.exit(f"run {k + 1} answered differently from run 1 (exit {proc.returncode})")
            walls.append(wall)
            cpus.append(usage.ru_utime + usage.ru_stime)
            rss.append(usage.ru_maxrss)
            print(f"run {k + 1:2d}: {wall:6.2f} s wall  {cpus[-1]:6.2f} s CPU  {rss[-1] / 1024:6.0f} MiB  "
                  f"exit {proc.returncode}", flush=True)
    for name, xs in (("wall", walls), ("CPU", cpus)):
        med = statistics.median(xs)
        print(f"{name}: median {med:.2f} s, min {min(xs):.2f}, max {max(xs):.2f}, max/median {max(xs) / med:.2f}")
    print(f"peak memory: median {statistics.median(rss) / 1024:.0f} MiB, max {max(rss) / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
