"""``meshsolve parse`` beside ``iptables-restore --test`` on the same kube-proxy-style dumps.

    nice -n 5 .venv/bin/python -m benchmarks.parse_speed --rules 10000 --rules 70000 --repeat 5

For each size it writes ``kube_dump(N)`` to a file and times, alternating, whole processes:
``meshsolve parse FILE`` (output to /dev/null), ``meshsolve parse --test FILE`` (read and check, no
output: the counterpart of ``iptables-restore --test``) and, when run as root with iptables-restore
installed, ``iptables-restore --test < FILE`` inside a scratch network namespace (made here and
deleted afterwards, also on failure). ``--tree DIR`` adds a column: ``meshsolve parse`` from
another copy of the package. Each process is timed by the wall clock and by its CPU time (user +
system, its children included, from ``getrusage``), and the load average is printed with each
size: on a shared machine CPU time is the steadier figure. It also times ``read_text`` in this
process with the rule fast path on and off, and ``render_save`` of what it read (CPU time).
Medians, with the min and max; lines/s from the medians.

Last, per size, the *floor* of any parse that builds meshsolve's model in this interpreter (CPU,
best of ``--repeat``): a whole ``meshsolve parse`` process of a one-table file (start, imports,
exit); cutting every rule line with the whole-line door's expression alone (``fastrule._LINE``),
nothing looked up; and making the objects the parse returns, from values already known: each
distinct address network from its number and prefix length, each distinct match and target by its class from its own
field values (its converters and validators run), each rule with its origin, each chain. No parse
can do less than their sum; beside it, twice ``iptables-restore --test``'s CPU time (the target).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.command import MAIN
from benchmarks.kubeproxy import kube_dump

NETNS = f"msbench-parse-{os.getpid()}"



def _env(path: str) -> dict[str, str]:
    """The environment of a timed ``meshsolve``: the package from ``path``, compiled modules cached
    as a user's would be (PYTHONDONTWRITEBYTECODE would make every run compile them again)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = path
    return env


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _timed(cmd: list[str], stdin: Path | None = None, env: dict[str, str] | None = None
           ) -> tuple[float, float]:
    """(wall, CPU) seconds of one whole process, its children included (user + system)."""
    with open(stdin or os.devnull, "rb") as fin:
        c = _children_cpu()
        t = time.perf_counter()
        subprocess.run(cmd, stdin=fin, stdout=subprocess.DEVNULL, check=True, env=env, cwd="/")
        return time.perf_counter() - t, _children_cpu() - c


def _stats(xs: list[float]) -> str:
    return f"median {statistics.median(xs):.2f} s (min {min(xs):.2f}, max {max(xs):.2f}, n={len(xs)})"


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rules", type=int, action="append", help="kube-proxy rules (repeatable)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--tree", type=Path, help="another package tree (a directory holding meshsolve/)")
    args = ap.parse_args()
    sizes = args.rules or [10000, 70000]
    restore = shutil.which("iptables-restore") if os.geteuid() == 0 else None
    here = str(Path(__file__).resolve().parent.parent)
    print(f"# {time.strftime('%Y-%m-%d %H:%M %Z')}, {platform.node()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, {_load()}")
    if restore:
        subprocess.run(["ip", "netns", "add", NETNS], check=True)
        ver = subprocess.run([restore, "--version"], capture_output=True, text=True).stdout.strip()
        print(f"# {ver}")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for n in sizes:
                path = Path(tmp) / f"kube{n}.txt"
                path.write_text(kube_dump(n))
                lines = path.read_text().count("\n")
                cols: dict[str, list[tuple[float, float]]] = {"meshsolve parse": [], "meshsolve parse --test": []}
                if args.tree:
                    cols["meshsolve parse (--tree)"] = []
                if restore:
                    cols["iptables-restore --test"] = []
                for k in range(args.repeat + 1):  # the first round is a warm-up (not counted)
                    env = _env(here)
                    t = _timed([sys.executable, "-c", MAIN, "parse", str(path)], env=env)
                    if k:
                        cols["meshsolve parse"].append(t)
                    t = _timed([sys.executable, "-c", MAIN, "parse", "--test", str(path)], env=env)
                    if k:
                        cols["meshsolve parse --test"].append(t)
                    if args.tree:
                        env = _env(str(args.tree))
                        t = _timed([sys.executable, "-c", MAIN, "parse", str(path)], env=env)
                        if k:
                            cols["meshsolve parse (--tree)"].append(t)
                    if restore:
                        t = _timed(["ip", "netns", "exec", NETNS, restore, "--test"], stdin=path)
                        if k:
                            cols["iptables-restore --test"].append(t)
                print(f"\n## kube_dump({n}): {lines} lines ({_load()})")
                for name, xs in cols.items():
                    wall, cpu = [x[0] for x in xs], [x[1] for x in xs]
                    print(f"{name:28s} wall {_stats(wall)}  {lines / statistics.median(wall):,.0f} lines/s")
                    print(f"{'':28s} CPU  {_stats(cpu)}  {lines / statistics.median(cpu):,.0f} lines/s")
                if restore:
                    for mine in ("meshsolve parse", "meshsolve parse --test"):
                        for k, what in ((0, "wall"), (1, "CPU")):
                            ratio = statistics.median(x[k] for x in cols[mine]) / statistics.median(
                                x[k] for x in cols["iptables-restore --test"])
                            print(f"{mine} / iptables-restore --test, {what}: {ratio:.2f}x")
                _in_process(path.read_text(), lines, args.repeat)
                floor = _floor(path, lines, args.repeat)
                if restore:
                    budget = 2 * statistics.median(x[1] for x in cols["iptables-restore --test"])
                    print(f"floor {floor:.2f} s CPU against the target's {budget:.2f} s (2x iptables-restore "
                          f"--test): {'within' if floor <= budget else 'over'} it before any per-line work")
    finally:
        if restore:
            subprocess.run(["ip", "netns", "del", NETNS], check=False)


def _in_process(text: str, lines: int, repeat: int) -> None:
    import gc

    import meshsolve.iptables.tables as tables
    from meshsolve.iptables import read_text, render_save

    for fast in (True, False):
        tables.FAST_RULES = fast
        xs, rs = [], []
        for _ in range(repeat):
            gc.collect()
            t = time.process_time()
            reading = read_text(text, "kube.txt")
            xs.append(time.process_time() - t)
            t = time.process_time()
            render_save(reading.require_rulesets())
            rs.append(time.process_time() - t)
            del reading
        print(f"read_text in-process, fast path {'on ' if fast else 'off'} CPU {_stats(xs)}  "
              f"{lines / statistics.median(xs):,.0f} lines/s; render_save after it CPU {_stats(rs)}")
    tables.FAST_RULES = True


def _floor(path: Path, lines: int, repeat: int) -> float:
    """The floor described in the module notes, printed part by part; its sum (CPU seconds)."""
    import gc

    import attrs

    from meshsolve.iptables import read_text
    from meshsolve.iptables.fastrule import _LINE
    from meshsolve.model.rules import Chain, Origin, Rule

    tiny = path.with_name("one-table.txt")
    tiny.write_text("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n")
    env = _env(str(Path(__file__).resolve().parent.parent))
    start = min(_timed([sys.executable, "-c", MAIN, "parse", str(tiny)], env=env)[1] for _ in range(repeat))
    text = path.read_text()
    rs = read_text(text, "kube.txt").require_rulesets()
    rule_lines = [s for s in text.splitlines() if s.startswith("-A ")]
    chains = [c for r in (rs.ipv4, rs.ipv6) for t in r.tables for c in t.chains]
    rules = [x for c in chains for x in c.rules]
    pieces = {id(p): p for x in rules for p in (*x.matches, x.target) if p is not None}
    made = [(type(p), {f.name: getattr(p, f.name) for f in attrs.fields(type(p)) if f.init})
            for p in pieces.values()]
    nets = sorted({(type(kw["net"]), int(kw["net"].network_address), kw["net"].prefixlen)
                   for _, kw in made if "net" in kw}, key=str)

    def best(work: object) -> float:
        out = []
        for _ in range(repeat):
            gc.disable()
            t = time.process_time()
            work()  # type: ignore[operator]
            out.append(time.process_time() - t)
            gc.enable()
        return min(out)

    parts = {
        "start, imports and exit (one-table file)": start,
        f"cutting {len(rule_lines):,} rule lines (_LINE alone)": best(
            lambda: [_LINE.fullmatch(s).groups() for s in rule_lines]),  # type: ignore[union-attr]
        f"{len(nets):,} address networks (number, prefix length)": best(
            lambda: [cls((n, p)) for cls, n, p in nets]),
        f"{len(made):,} distinct matches and targets": best(lambda: [cls(**kw) for cls, kw in made]),
        f"{len(rules):,} rules with their origins": best(
            lambda: [Rule(x.matches, x.target, x.counters, Origin("kube.txt", 1)) for x in rules]),
        f"{len(chains):,} chains": best(lambda: [Chain(c.name, c.rules, c.policy) for c in chains]),
    }
    for name, sec in parts.items():
        print(f"floor: {name:52s} {sec:.3f} s CPU")
    total = sum(parts.values())
    print(f"floor: sum {total:.2f} s CPU = {lines / total:,.0f} lines/s at most")
    return total


if __name__ == "__main__":
    main()
