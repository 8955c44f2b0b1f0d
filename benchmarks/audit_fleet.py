"""Benchmark ``meshsolve audit``: a generated ``kubectl get pods -A -o json`` (or ``-o yaml``) List of N
pods with G distinct capture set-ups (Istio versions × container ports, injected istio-init
arguments as each version's injector writes them), written item by item as kubectl writes it.

    python benchmarks/audit_fleet.py [--pods 10000] [--setups 50] [--jobs N] [--format yaml|json]
                                     [--keep FILE] [--tree DIR]... [--repeat N]

The audit runs as the command line does (``meshsolve audit FILE -o json -q``), in a child process,
once per tree (``--tree``: another checkout's package, e.g. the previous commit's, side by side;
default this one). For each run it prints the wall time, the CPU time of the whole process tree
(the audit, its fork server and every worker: this process is their subreaper, so every descendant's
CPU is collected when it is reaped) and of the audit's own process (reading, grouping, output: its
last value sampled from ``/proc``) and the peak of the tree's summed resident memory (sampled
every 20 ms from ``/proc``), with the load average before the run.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

from meshsolve.istio.pod import injector_args

try:  # run as a script (python benchmarks/audit_fleet.py) or as a module
    from benchmarks.command import MAIN
except ImportError:
    from command import MAIN  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent.parent


class _NoAliases(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    """kubectl never writes YAML anchors/aliases; neither does the generator."""

    def ignore_aliases(self, data: object) -> bool:
        return True


VERSIONS = ("1.2", "1.5", "1.10", "1.20", "current")
IMAGE_TAG = {"1.2": "1.2.2", "1.5": "1.5.4", "1.10": "1.10.2", "1.20": "1.20.1", "current": "1.27.0"}


def pods(count: int, setups: int) -> Iterator[dict[str, object]]:
    """The fleet's pods, one at a time: pod ``i`` has set-up ``i % setups``."""
    templates = []
    for g in range(setups):
        version = VERSIONS[g % len(VERSIONS)]
        port = 8000 + g
        shape = {"kind": "Pod", "metadata": {"name": "x"},
                 "spec": {"containers": [{"name": "app", "ports": [{"containerPort": port}]}]}}
        argv, _, _ = injector_args(shape, version)
        assert argv is not None
        templates.append((IMAGE_TAG[version], list(argv), port))
    for i in range(count):
        tag, args, port = templates[i % setups]
        ip = f"{'198.51.100' if i % 2 else '203.0.113'}.{i % 250 + 1}"
        yield {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"app-{i:05d}", "namespace": f"ns-{i % 37}", "labels": {"app": f"a{i % 50}"}},
            "spec": {"initContainers": [{"name": "istio-init", "image": f"docker.io/istio/proxyv2:{tag}",
                                         "args": list(args)}],
                     "containers": [{"name": "app", "image": "example/app:1",
                                     "ports": [{"containerPort": port, "protocol": "TCP"}]},
                                    {"name": "istio-proxy", "image": f"docker.io/istio/proxyv2:{tag}"}]},
            "status": {"podIP": ip, "podIPs": [{"ip": ip}]},
        }


def write_fleet(path: Path, count: int, setups: int, fmt: str) -> int:
    """Write the List as ``kubectl get pods -A -o json|yaml`` lays it out; the bytes written."""
    with path.open("w", encoding="utf-8") as f:
        if fmt == "json":
            f.write('{\n    "apiVersion": "v1",\n    "items": [')
            for i, pod in enumerate(pods(count, setups)):
                body = json.dumps(pod, indent=4).replace("\n", "\n        ")
                f.write(("," if i else "") + "\n        " + body)
            f.write('\n    ],\n    "kind": "List",\n    "metadata": {\n        "resourceVersion": ""\n    }\n}\n')
        else:
            f.write("apiVersion: v1\nitems:\n")
            for pod in pods(count, setups):
                f.write(yaml.dump([pod], Dumper=_NoAliases, sort_keys=False))
            f.write("kind: List\nmetadata:\n  resourceVersion: \"\"\n")
        return f.tell()


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


def run_audit(path: Path, tree: Path, jobs: int | None) -> dict[str, object]:
    """One ``meshsolve audit`` of ``path`` with the package of ``tree``: wall, CPU, peak RSS, exit code."""
    cmd = [sys.executable, "-P", "-c", MAIN, "audit", str(path), "-o", "json", "-q"]
    if jobs is not None:
        cmd += ["-j", str(jobs)]
    env = {**os.environ, "PYTHONPATH": str(tree)}  # and -P: not the current directory's package before it
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]
    own = [0.0]  # the audit process's own CPU (reading, grouping, output), last seen
    stop = threading.Event()
    tick = os.sysconf("SC_CLK_TCK")

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], sum(_rss(p) for p in _tree(proc.pid)))
            try:
                with open(f"/proc/{proc.pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                own[0] = (int(fields[11]) + int(fields[12])) / tick
            except (OSError, IndexError, ValueError):
                pass
            stop.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    wall = time.monotonic() - t0
    stop.set()
    sampler.join()
    while True:  # the fork server and any worker left to this subreaper
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode not in (0, 79, 80):  # findings at a level over the threshold are not failures here
        raise SystemExit(f"audit failed ({proc.returncode}): {err[-2000:]}")
    doc = json.loads(out)
    return {"wall": wall, "cpu": cpu, "main": own[0], "rss": peak[0] / 2**20, "pods": doc["pods"],
            "groups": doc["groups"],
            "findings": len(doc["findings"]), "checked": len(doc["checked"]), "code": proc.returncode,
            "digest": hashlib.sha256(out.encode()).hexdigest()[:12], "output": out}


def read_only(path: Path, fmt: str) -> None:
    """Read and group the List as ``audit`` does, building each group's world, and prove nothing."""
    from meshsolve.fleet import _fleet
    from meshsolve.inputs.podlist import PodListing

    load = os.getloadavg()[0]
    cpu, wall = time.process_time(), time.monotonic()
    pods = groups = 0
    for _pod, _item, loaded in _fleet(PodListing(path), None, worlds=True):
        pods += 1
        groups += loaded is not None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"read {pods} pods ({fmt}), {groups} groups' worlds built: {time.process_time() - cpu:.1f} s CPU, "
          f"{time.monotonic() - wall:.1f} s wall, peak RSS {peak:.0f} MB (load {load:.1f} before)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=10_000)
    ap.add_argument("--setups", type=int, default=50)
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("--keep", type=Path, default=None, help="write the generated List here (and keep it)")
    ap.add_argument("--format", choices=["yaml", "json"], default="json",
                    help="kubectl get pods -A -o json (default) or -o yaml")
    ap.add_argument("--tree", type=Path, action="append", default=None,
                    help="a checkout whose meshsolve package is run (repeatable) [default: this one]")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--save", type=Path, default=None, help="keep each run's JSON output in this directory")
    ap.add_argument("--read-only", action="store_true",
                    help="time only reading and grouping the List (and each group's world), in this process")
    args = ap.parse_args()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphaned descendants are reaped (and counted) here
    t0 = time.monotonic()
    path = args.keep or Path(tempfile.mkstemp(prefix="msrp-fleet-", suffix=f".{args.format}")[1])
    size = write_fleet(path, args.pods, args.setups, args.format)
    print(f"generated {args.pods} pods, {args.setups} set-ups ({size / 1e6:.1f} MB {args.format}) "
          f"in {time.monotonic() - t0:.1f} s")
    try:
        if args.read_only:
            read_only(path, args.format)
            return
        for t, tree in enumerate(args.tree or [ROOT]):
            for n in range(args.repeat):
                load = os.getloadavg()[0]
                r = run_audit(path, tree.resolve(), args.jobs)
                if args.save is not None:
                    args.save.mkdir(parents=True, exist_ok=True)
                    (args.save / f"tree{t}-run{n}.json").write_text(str(r.pop("output")), encoding="utf-8")
                print(f"{tree}: {r['pods']} pods, {r['groups']} set-ups, {r['findings']} findings, "
                      f"{r['checked']} checked, exit {r['code']}, output {r['digest']}: {r['wall']:.1f} s wall, "
                      f"{r['cpu']:.1f} s CPU ({r['main']:.1f} s in the audit's own process), "
                      f"peak RSS {r['rss']:.0f} MB ({os.cpu_count()} cores, "
                      f"load {load:.1f} before)", flush=True)
    finally:
        if args.keep is None:
            os.unlink(path)


if __name__ == "__main__":
    main()
