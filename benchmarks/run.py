"""meshsolve benchmarks: speed and scale, side by side with the naive way.

    .venv/bin/python -m benchmarks.run            # the full run (about 10-15 minutes on 2 cores)
    .venv/bin/python -m benchmarks.run --quick    # fewer goldens/specs/sizes, small repeats
    .venv/bin/python -m benchmarks.run --smoke    # seconds: what tests/test_project_benchmarks_smoke.py runs

Writes ``benchmarks/results/results.json`` (every run of every case), ``results.md`` (the tables and
the targets, met or not) and ``scale.svg`` (the plot; hand-written SVG, no plotting dependency).
``--out DIR`` writes elsewhere; ``--only goldens,cli,synth,growth,brute,scale,parse,nft`` runs some
sections (``nft``: one property on Istio's native nftables set-ups beside their iptables twins;
``synth``: every shipped spec with the world's vocabulary, and with its own list where it has one;
``growth``: the modern-goals world with more apps, addresses and ports, ``benchmarks/growth.py``).

Every case runs in a fresh child process (``python -m benchmarks.run --child ...``), one after the
other, never in parallel: its wall time and peak resident memory (``ru_maxrss`` from ``wait4``) are
the child's own. Inside a child, repeated measurements report their median. A case that passes its
time limit is killed and reported as such (with the limit as a lower bound), never dropped.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PY = sys.executable

PROFILES: dict[str, dict[str, Any]] = {
    "smoke": {"goldens": 1, "repeats": 1, "cli_runs": 1, "specs": [], "brute_specs": ["istio-later-knobs.yaml"],
              "brute_budget": 0.5, "brute_size": 1, "scale": [8], "scale_timeout": 60, "enum_budget": 5,
              "parse": [1_000], "timeout": 120, "cli_commands": 1, "profile_synth": [], "nft": ["empty.golden"],
              "growth": [(0, 0, 0)], "growth_repeats": 1},
    "quick": {"goldens": 4, "repeats": 3, "cli_runs": 3, "specs": ["istio-later-knobs.yaml", "tproxy.yaml"],
              "brute_specs": ["istio-later-knobs.yaml"], "brute_budget": 10.0, "brute_size": None,
              "scale": [100, 1_000], "scale_timeout": 60, "enum_budget": 60, "parse": [100_000], "timeout": 300,
              "cli_commands": 3, "profile_synth": ["istio-later-knobs.yaml"],
              "nft": ["empty.golden", "ipv6-uid-gid.golden", "tproxy.golden"],
              "growth": [(0, 0, 0), (2, 0, 0), (0, 2, 0), (0, 0, 2)], "growth_repeats": 1},
    "full": {"goldens": None, "repeats": 3, "cli_runs": 5, "specs": None,
             "brute_specs": ["istio-later-knobs.yaml", "excluded-ports.yaml"], "brute_budget": 30.0,
             "brute_size": None, "scale": [100, 1_000, 10_000, 50_000], "scale_timeout": 90, "enum_budget": 60,
             "parse": [100_000, 700_000], "timeout": 600, "cli_commands": 3,
             "profile_synth": ["istio-later-knobs.yaml", "istio-1.2-design-space.yaml"], "nft": None,
             "growth": None, "growth_repeats": 3},
}
SECTIONS = ("idle", "goldens", "cli", "synth", "growth", "brute", "scale", "parse", "nft")

TARGETS = {
    "one_prop_s": 0.050, "all_props_s": 0.5, "cli_s": 1.5, "synth_s": 5.0, "synth_derived_s": 10.0,
    "brute_ratio": 100.0,
    "scale_10k_s": 3.0, "scale_50k_s": 20.0, "parse_lines_per_s": 100_000.0, "nft_ratio": 2.0,
}
#: The iptables goldens whose nft twin the kernel refuses (group names): not in the nft section.
NFT_REFUSED = ("outbound-owner-groups.golden", "outbound-owner-groups-exclude.golden",
               "ipv6-dns-outbound-owner-groups.golden", "ipv6-dns-outbound-owner-groups-exclude.golden")


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


# ------------------------------------------------------------------------------------------------
# Child processes


def _wait(pid: int, timeout: float) -> tuple[int | None, float, float]:
    """(exit status or None on timeout, wall seconds, peak RSS in MiB) of a child, via wait4."""
    t0 = time.perf_counter()
    while True:
        got, status, usage = os.wait4(pid, os.WNOHANG)
        if got == pid:
            code = os.waitstatus_to_exitcode(status)
            return code, time.perf_counter() - t0, usage.ru_maxrss / 1024
        if time.perf_counter() - t0 > timeout:
            os.kill(pid, 9)
            _got, _status, usage = os.wait4(pid, 0)
            return None, time.perf_counter() - t0, usage.ru_maxrss / 1024
        time.sleep(0.005)


def run_child(case: str, params: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run one case in a fresh interpreter; its result, wall time and peak memory."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        err = Path(tmp) / "stderr"
        with open(err, "w") as ferr:
            proc = subprocess.Popen([PY, "-m", "benchmarks.run", "--child", case, json.dumps(params), str(out)],
                                    cwd=ROOT, stdout=subprocess.DEVNULL, stderr=ferr)
            code, wall, rss = _wait(proc.pid, timeout)
            proc.returncode = code if code is not None else -9  # reaped by wait4
        row: dict[str, Any] = {"case": case, "params": params, "wall_s": wall, "peak_rss_mib": rss}
        if code is None:
            row["status"] = "timeout"
            row["timeout_s"] = timeout
        elif code != 0 or not out.exists():
            row["status"] = "error"
            row["error"] = err.read_text()[-2000:]
        else:
            row["status"] = "ok"
            row["result"] = json.loads(out.read_text())
    print(f"  {case} {json.dumps(params)}: {row['status']} in {wall:.2f}s, {rss:.0f} MiB", flush=True)
    return row


def child_main(case: str, params_json: str, out: str) -> int:
    sys.path.insert(0, str(ROOT))
    tree = os.environ.get("MESHSOLVE_BENCH_TREE")
    if tree:  # measure another copy of the package (e.g. a proposed patch) in the in-process cases
        sys.path.insert(0, tree)
        os.environ.setdefault("MESHSOLVE_SHARED", str(ROOT.parent / "shared"))  # the goldens stay where they are
    from benchmarks.cases import CASES

    result = CASES[case](json.loads(params_json))
    Path(out).write_text(json.dumps(result))
    return 0


def run_command(argv: list[str], runs: int, timeout: float) -> dict[str, Any]:
    """A whole process, start to exit, ``runs`` times (stdout discarded)."""
    walls, rsss, codes = [], [], []
    for _ in range(runs):
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        code, wall, rss = _wait(proc.pid, timeout)
        proc.returncode = code if code is not None else -9
        walls.append(wall)
        rsss.append(rss)
        codes.append(code)
    row = {"case": "command", "argv": [Path(argv[0]).name, *argv[1:]], "runs_s": walls, "median_s": median(walls),
           "peak_rss_mib": max(rsss), "exit_codes": codes, "status": "ok" if None not in codes else "timeout"}
    print(f"  {' '.join(row['argv'])}: median {row['median_s']:.2f}s exit {codes}", flush=True)
    return row


# ------------------------------------------------------------------------------------------------
# Sections


def _golden_files(limit: int | None) -> list[str]:
    sys.path.insert(0, str(ROOT))
    from meshsolve.analysis.goldens import golden_entries

    files = [e.file for e in golden_entries()]
    return files if limit is None else files[:limit]


def _spec_files(names: list[str] | None) -> list[str]:
    return sorted(p.name for p in (ROOT / "specs").glob("*.yaml")) if names is None else names


def _vocabularies(spec: str) -> tuple[str, ...]:
    """The world's vocabulary always; the spec's own list too where it has one."""
    return ("derived", "given") if "\n  conditions:" in (ROOT / "specs" / spec).read_text() else ("derived",)


def _growth_points(points: list[tuple[int, int, int]] | None) -> list[tuple[int, int, int]]:
    if points is not None:
        return points
    sys.path.insert(0, str(ROOT))
    from benchmarks.growth import SERIES

    out: list[tuple[int, int, int]] = []
    for _name, series in SERIES:
        out += [p for p in series if p not in out]
    return out


def run_sections(profile: dict[str, Any], only: set[str]) -> dict[str, Any]:
    res: dict[str, Any] = {}
    rep = profile["repeats"]
    tmo = profile["timeout"]
    if "idle" in only:
        print("idle child (import floor)", flush=True)
        res["idle"] = run_child("idle", {}, tmo)
    if "goldens" in only:
        print("Istio goldens", flush=True)
        res["goldens"] = [run_child("golden", {"file": f, "repeats": rep}, tmo)
                          for f in _golden_files(profile["goldens"])]
    if "cli" in only:
        print("whole processes", flush=True)
        exe = Path(PY).parent / "meshsolve"
        cmd = [str(exe)] if exe.exists() else [PY, "-m", "meshsolve.cli"]
        commands = [[*cmd, "check", "--setup", "E"], [*cmd, "check", "--setup", "E", "-p", "capture-out"],
                    [PY, "-c", "import meshsolve.analysis.check"]]
        res["cli"] = [run_command(c, profile["cli_runs"], tmo) for c in commands[:profile["cli_commands"]]]
    if "synth" in only:
        print("synthesis", flush=True)
        res["synth"] = [run_child("synth", {"spec": s, "vocabulary": v, "repeats": rep,
                                            "profile": s in profile["profile_synth"] and v == "derived"}, tmo)
                        for s in _spec_files(profile["specs"]) for v in _vocabularies(s)]
    if "growth" in only:
        print("synthesis as the world grows", flush=True)
        res["growth"] = [run_child("synth_growth", {"apps": a, "addresses": n, "ports": p,
                                                    "repeats": profile["growth_repeats"]}, tmo)
                         for a, n, p in _growth_points(profile["growth"])]
    if "brute" in only:
        print("brute-force synthesis", flush=True)
        res["brute"] = []
        for s in profile["brute_specs"]:
            params: dict[str, Any] = {"spec": s, "budget": profile["brute_budget"]}
            if profile["brute_size"] is not None:
                params["size"] = profile["brute_size"]
            res["brute"].append(run_child("brute", params, tmo + profile["brute_budget"]))
    if "scale" in only:
        print("scale", flush=True)
        res["scale"] = []
        stop = False
        for n in profile["scale"]:
            if stop:
                res["scale"].append({"case": "scale", "params": {"rules": n}, "status": "skipped",
                                     "reason": "a smaller size passed its time limit"})
            else:
                row = run_child("scale", {"rules": n, "repeats": rep if n <= 1_000 else 1},
                                profile["scale_timeout"])
                res["scale"].append(row)
                stop = row["status"] != "ok"
            res["scale"].append(run_child("scale_enum", {"rules": n, "budget": profile["enum_budget"]},
                                          profile["enum_budget"] + tmo))
    if "nft" in only:
        print("nftables beside iptables", flush=True)
        files = profile["nft"] or [f for f in _golden_files(None) if f not in NFT_REFUSED and "/" not in f
                                   and f != "logging.golden"]
        res["nft"] = [run_child("nft_twin", {"file": f, "repeats": max(rep, 5)}, tmo) for f in files]
    if "parse" in only:
        print("parsing", flush=True)
        res["parse"] = [run_child("parse", {"lines": n, "repeats": rep if n <= 100_000 else 1}, tmo)
                        for n in profile["parse"]]
    return res


# ------------------------------------------------------------------------------------------------
# Report


def _sh(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def environment() -> dict[str, Any]:
    return {
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "loadavg": list(os.getloadavg()),
        "uptime": _sh(["uptime"]),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_head": _sh(["git", "rev-parse", "--short", "HEAD"]),
        "git_dirty": _sh(["git", "status", "--short", "--untracked-files=no"]).splitlines(),
    }


def _ms(x: float | None) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x * 1000:.0f} ms"


def _s(x: float | None, nd: int = 2) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f} s"


def _mib(row: dict[str, Any]) -> str:
    return f"{row['peak_rss_mib']:.0f}" if "peak_rss_mib" in row else "–"


def _sci(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if x < 1e5:
        return f"{x:,.0f}"
    e = math.floor(math.log10(x))
    return f"{x / 10 ** e:.1f}e{e}"


def _dur(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    for unit, sec in (("years", 3.15e7), ("days", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if x >= sec:
            return f"{x / sec:,.1f} {unit}"
    return f"{x:.2f} s" if x < 10 else f"{x:.1f} s"


def _status(row: dict[str, Any]) -> str:
    if row.get("status") == "timeout":
        return f"> {row['timeout_s']:.0f} s (killed)"
    if row.get("status") == "skipped":
        return "not run (" + row.get("reason", "") + ")"
    if row.get("status") == "error":
        return "error: " + row.get("error", "").strip().splitlines()[-1][:80] if row.get("error") else "error"
    return ""


def _answer(x: dict[str, Any]) -> str:
    if x["kind"] == "synthesized":
        return f"{x['rules']} rule(s)" + ("" if x.get("proved", True) else " (not all proved)")
    if x["kind"] == "conflict":
        return f"conflict of {len(x['conflict_goals'])} goals"
    return str(x["kind"])


def summarise(res: dict[str, Any]) -> dict[str, Any]:
    """The numbers the targets are judged on."""
    s: dict[str, Any] = {}
    g = [r["result"] for r in res.get("goldens", []) if r["status"] == "ok"]
    if g:
        one = [median(r["one_same_world_s"]) for r in g]
        allp = [median(r["all_same_world_s"]) for r in g]
        one_f = [median(r["one_fresh_world_s"]) for r in g]
        all_f = [median(r["all_fresh_world_s"]) for r in g]
        s["goldens"] = {"n": len(g), "one_median": median(one), "one_max": max(one),
                        "all_median": median(allp), "all_max": max(allp),
                        "one_fresh_median": median(one_f), "one_fresh_max": max(one_f),
                        "all_fresh_median": median(all_f), "all_fresh_max": max(all_f),
                        "errors": sum(r["status"] != "ok" for r in res.get("goldens", []))}
    if res.get("cli"):
        s["cli_s"] = res["cli"][0]["median_s"]
    sy = [r for r in res.get("synth", []) if r["status"] == "ok" and r["result"].get("vocabulary", "given") == "given"]
    if sy:
        s["synth_max_s"] = max(median(r["result"]["seconds"]) for r in sy)
    sd = [r for r in res.get("synth", []) if r["params"].get("vocabulary") == "derived"]
    if sd:
        times = {r["params"]["spec"]: (median(r["result"]["seconds"]) if r["status"] == "ok" else None) for r in sd}
        s["synth_derived"] = {"n": len(sd), "max_s": max((t for t in times.values() if t is not None), default=None),
                              "missed": {k: t for k, t in times.items() if t is None or t > TARGETS["synth_derived_s"]}}
    ratios = []
    for r in res.get("brute", []):
        if r["status"] == "ok" and r["result"].get("extrapolated_to_answer_s") and r["result"].get("synth_s"):
            ratios.append(r["result"]["extrapolated_to_answer_s"] / r["result"]["synth_s"])
    if ratios:
        s["brute_ratio_min"] = min(ratios)
    nft = [r["result"] for r in res.get("nft", []) if r["status"] == "ok"]
    if nft:
        s["nft"] = {"n": len(nft), "ratio_same_max": max(x["ratio_same"] for x in nft),
                    "ratio_same_median": median([x["ratio_same"] for x in nft]),
                    "ratio_fresh_max": max(x["ratio_fresh"] for x in nft)}
    return s


def targets(res: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) rows."""
    s = summarise(res)
    rows: list[tuple[str, str, str]] = []

    def verdict(ok: bool | None) -> str:
        return "–" if ok is None else ("**met**" if ok else "**not met**")

    g = s.get("goldens")
    if g:
        rows.append(("one property, Istio golden, warm in-process: ≤ 50 ms",
                     f"median {_ms(g['one_median'])}, worst {_ms(g['one_max'])} over {g['n']} goldens "
                     f"(same world object; a fresh world each time: median {_ms(g['one_fresh_median'])}, "
                     f"worst {_ms(g['one_fresh_max'])})", verdict(g["one_max"] <= TARGETS["one_prop_s"])))
        rows.append(("all default properties, warm: ≤ 0.5 s",
                     f"median {_s(g['all_median'])}, worst {_s(g['all_max'])} (fresh world: median "
                     f"{_s(g['all_fresh_median'])}, worst {_s(g['all_fresh_max'])})",
                     verdict(g["all_max"] <= TARGETS["all_props_s"])))
    if "cli_s" in s:
        rows.append(("`meshsolve check --setup E`, start to exit: ≤ 1.5 s", _s(s["cli_s"]),
                     verdict(s["cli_s"] <= TARGETS["cli_s"])))
    if "synth_max_s" in s:
        rows.append(("synthesis of each shipped spec with its own `conditions` list: ≤ 5 s",
                     f"slowest {_s(s['synth_max_s'])}", verdict(s["synth_max_s"] <= TARGETS["synth_s"])))
    if "synth_derived" in s:
        x = s["synth_derived"]
        missed = ", ".join(f"`{k}` {_s(t) if t is not None else 'failed'}" for k, t in x["missed"].items())
        goal = f"≤ {TARGETS['synth_derived_s']:.0f} s"
        rows.append((f"synthesis of each shipped spec with the world's vocabulary: {goal}",
                     f"slowest {_s(x['max_s'])} over {x['n']} specs" + (f"; over {goal}: {missed}" if missed else ""),
                     verdict(not x["missed"])))
    if "brute_ratio_min" in s:
        rows.append(("synthesis ≥ 100× faster than brute force", f"≥ {s['brute_ratio_min']:,.0f}× (extrapolated)",
                     verdict(s["brute_ratio_min"] >= TARGETS["brute_ratio"])))
    sc = {r["params"]["rules"]: r for r in res.get("scale", []) if r["case"] == "scale"}
    en = {r["params"]["rules"]: r for r in res.get("scale", []) if r["case"] == "scale_enum"}
    for n, key in ((10_000, "scale_10k_s"), (50_000, "scale_50k_s")):
        if n in sc:
            r = sc[n]
            if r["status"] == "ok":
                t = median(r["result"]["check_s"])
                rows.append((f"{n:,} rules, one property: ≤ {TARGETS[key]:.0f} s", _s(t), verdict(t <= TARGETS[key])))
            else:
                rows.append((f"{n:,} rules, one property: ≤ {TARGETS[key]:.0f} s", _status(r), verdict(False)))
    for r in res.get("parse", []):
        if r["status"] == "ok":
            lps = r["result"]["lines_per_s"]
            rows.append((f"parsing ≥ 100,000 lines/s ({r['result']['lines']:,}-line dump)", f"{lps:,.0f} lines/s",
                         verdict(lps >= TARGETS["parse_lines_per_s"])))
        else:
            rows.append((f"parsing ≥ 100,000 lines/s ({r['params']['lines']:,} lines)", _status(r), verdict(False)))
    if "nft" in s:
        x = s["nft"]
        rows.append(("one property on an Istio nft set-up within 2× of its iptables twin",
                     f"nft/iptables median {x['ratio_same_median']:.2f}×, worst {x['ratio_same_max']:.2f}× over "
                     f"{x['n']} twins (fresh worlds: worst {x['ratio_fresh_max']:.2f}×)",
                     verdict(x["ratio_same_max"] <= TARGETS["nft_ratio"])))
    wins = []
    for n in sorted(sc):
        if n < 1_000 or n not in en:
            continue
        e = en[n]
        e_t = e["result"]["extrapolated_s"] if e["status"] == "ok" else None
        if sc[n]["status"] == "ok" and e_t is not None:
            wins.append((n, "yes" if median(sc[n]["result"]["check_s"]) < e_t else "no"))
        elif sc[n]["status"] == "timeout" and e_t is not None and e_t <= sc[n]["timeout_s"]:
            wins.append((n, "no"))
        else:
            wins.append((n, "undecided (symbolic " + (_status(sc[n]) or "not run") + ")"))
    if wins:
        rows.append(("symbolic check beats exhaustive (class-complete) enumeration from 1,000 rules up",
                     ", ".join(f"{n:,}: {w}" for n, w in wins),
                     verdict(all(w == "yes" for _n, w in wins))))
    return rows


def markdown(res: dict[str, Any], env: dict[str, Any], command: str) -> str:
    out = ["# meshsolve benchmark results", "",
           f"`{command}` — {env['date_utc']} UTC, {env['cpus']} CPUs, load average before the run "
           f"{', '.join(f'{x:.2f}' for x in env['loadavg'])}"
           + (f", after {', '.join(f'{x:.2f}' for x in env['loadavg_after'])}" if "loadavg_after" in env else "")
           + f"; Python {env['python']}; git {env['git_head']}"
           + (f" with uncommitted changes in {len(env['git_dirty'])} file(s)" if env["git_dirty"] else "")
           + ("" if env.get("tree", str(ROOT / "meshsolve")) == str(ROOT / "meshsolve") else
              f"; **meshsolve imported from `{env['tree']}`** in the child cases") + ".",
           "", "Medians over repeated runs; each case in its own child process; memory = the child's peak RSS "
           "(MiB), which includes the interpreter, z3 and meshsolve themselves"
           + (f" (an idle child that only imports them: {res['idle']['peak_rss_mib']:.0f} MiB, "
              f"{res['idle']['wall_s']:.2f} s)" if res.get("idle", {}).get("status") == "ok" else "") + ".", ""]
    rows = targets(res)
    if rows:
        out += ["## Targets", "", "| target | measured | |", "|---|---|---|"]
        out += [f"| {a} | {b} | {c} |" for a, b, c in rows]
        out.append("")
    if res.get("goldens"):
        out += ["## 1. Istio goldens (capture outbound; all default properties)", "",
                "One property = *all outbound traffic of the pod's apps is captured*; all = "
                "`default_properties(world)` (5). *Same world*: the world object is reused after one warm-up "
                "(meshsolve reuses its encoding); *fresh world*: parse + build + encode + solve each time, in the "
                "same warm process. *Enumeration*: `enumerate_scope` over the property's scopes (the interpreter "
                "on each concrete flow of its finite default space).", "",
                "| golden | rules v4/v6 | one (same world) | one (fresh world) | all 5 (same) | all 5 (fresh) "
                "| enumeration (flows) | verdicts | peak MiB |", "|---|---|---|---|---|---|---|---|---|"]
        for r in res["goldens"]:
            if r["status"] != "ok":
                out.append(f"| `{r['params']['file']}` | | {_status(r)} | | | | | | {_mib(r)} |")
                continue
            x = r["result"]
            out.append(f"| `{x['file']}` | {x['rules_v4']}/{x['rules_v6']} | {_ms(median(x['one_same_world_s']))} "
                       f"| {_ms(median(x['one_fresh_world_s']))} | {_ms(median(x['all_same_world_s']))} "
                       f"| {_ms(median(x['all_fresh_world_s']))} | {_ms(median(x['enum_s']))} ({x['enum_flows']}) "
                       f"| {' '.join(v[0].upper() for v in x['all_verdicts'])} | {_mib(r)} |")
        out += ["", "Verdicts: P proved, R refuted, U unknown, for capture-out, capture-in, bypass, no loops, "
                "no exposure.", ""]
        prof = [r["result"]["profile"] for r in res["goldens"] if r["status"] == "ok"]
        if prof:
            keys = list(prof[0])
            out += ["Where the time of one fresh check goes (cProfile cumulative seconds, median over goldens; "
                    "the profiler itself slows Python code down):", "",
                    "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys),
                    "| " + " | ".join(_ms(median([p[k] for p in prof])) for k in keys) + " |", ""]
    if res.get("nft"):
        out += ["## nftables beside iptables (capture outbound)", "",
                "The same Istio configuration with its iptables golden and with its native nftables golden "
                "(`frontier/istio-nftables-sidecar`); *same world* warm, *fresh world*: read + build + encode + "
                "solve each time in a warm process.", "",
                "| configuration | rules ipt / nft | iptables (same) | nft (same) | ratio | iptables (fresh) "
                "| nft (fresh) | ratio | verdicts | peak MiB |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in res["nft"]:
            if r["status"] != "ok":
                out.append(f"| `{r['params']['file']}` | | {_status(r)} | | | | | | | {_mib(r)} |")
                continue
            x = r["result"]
            i, n = x["iptables"], x["nftables"]
            out.append(f"| `{x['file']}` | {i['rules']} / {n['rules']} | {_ms(median(i['same_world_s']))} "
                       f"| {_ms(median(n['same_world_s']))} | {x['ratio_same']:.2f}× "
                       f"| {_ms(median(i['fresh_world_s']))} | {_ms(median(n['fresh_world_s']))} "
                       f"| {x['ratio_fresh']:.2f}× | {i['verdict'][0].upper()} {n['verdict'][0].upper()} | {_mib(r)} |")
        out.append("")
    if res.get("cli"):
        out += ["## Whole processes, start to exit", "", "| command | median | runs | exit codes | peak MiB |",
                "|---|---|---|---|---|"]
        for r in res["cli"]:
            out.append(f"| `{' '.join(r['argv'])}` | {_s(r['median_s'])} | {', '.join(_s(x) for x in r['runs_s'])} "
                       f"| {r['exit_codes']} | {r['peak_rss_mib']:.0f} |")
        out.append("")
    if res.get("synth"):
        out += ["## 2. Synthesis of the shipped specs", "",
                "*derived*: without the spec's `conditions` list (the vocabulary comes from the world: conditions "
                "with holes, and the alternatives that fill them); *given*: the spec's own list. Wall time (median "
                "and each run) and the CPU time of the same runs (steadier when the machine is shared).", "",
                "| spec | vocabulary (conditions / alternatives) | answer | median | runs | CPU median | solver calls "
                "| CEGIS iterations | examples | encode / solve / replay (profiled) | peak MiB |",
                "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in res["synth"]:
            vocab = r["params"].get("vocabulary", "given")
            if r["status"] != "ok":
                out.append(f"| `{r['params']['spec']}` | {vocab} | {_status(r)} | | | | | | | | {_mib(r)} |")
                continue
            x = r["result"]
            p = x["profile"] or {}
            out.append(f"| `{x['spec']}` | {vocab} ({x.get('conditions', '–')} / {x.get('alternatives', '–')}) "
                       f"| {_answer(x)} | {_s(median(x['seconds']))} "
                       f"| {', '.join(_s(t) for t in x['seconds'])} | {_s(median(x.get('cpu_seconds', [])))} "
                       f"| {x['solver_calls']} | {x['iterations']} "
                       f"| {x['examples'] if x['examples'] is not None else '–'} "
                       f"| {_s(p.get('encode'))} / {_s(p.get('solve'))} / {_s(p.get('replay'))} | {_mib(r)} |")
        out.append("")
    if res.get("growth"):
        out += ["## Synthesis as the world grows", "",
                "`specs/istio-modern-goals.yaml` (3 apps, 2 services, 6 ports, the world's vocabulary) plus the "
                "apps (own uid and gid, a pod-IP socket), service addresses and wildcard ports of "
                "`benchmarks/growth.py`. The answer should stay 2 rules: the world grows, the intent does not.", "",
                "| added apps / addresses / ports | apps | conditions / alternatives | answer | median | runs "
                "| CPU median | solver calls | examples | peak MiB |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in res["growth"]:
            pa = r["params"]
            added = f"+{pa['apps']} / +{pa['addresses']} / +{pa['ports']}"
            if r["status"] != "ok":
                out.append(f"| {added} | | | {_status(r)} | | | | | | {_mib(r)} |")
                continue
            x = r["result"]
            out.append(f"| {added} | {x['apps']} | {x['conditions']} / {x['alternatives']} | {_answer(x)} "
                       f"| {_s(median(x['seconds']))} | {', '.join(_s(t) for t in x['seconds'])} "
                       f"| {_s(median(x['cpu_seconds']))} | {x['solver_calls']} "
                       f"| {x['examples'] if x['examples'] is not None else '–'} | {_mib(r)} |")
        out.append("")
    if res.get("brute"):
        out += ["## Baseline (b): brute-force synthesis", "",
                "Candidates: rule lists of size 0, 1, … up to the synthesizer's size over the same vocabulary "
                "(every subset of the spec's conditions with at most one of each basic match, × each target), "
                "× every knob combination; each checked goal by goal with `check` until a goal is not proved. "
                "Capped at the time budget; the time to reach the synthesizer's answer is extrapolated from the "
                "measured time per candidate and the answer's position in the enumeration order.", "",
                "| spec | vocabulary rules × knobs | size | candidates up to size | examined (budget) "
                "| per candidate | answer's position | brute force to the answer (extrapolated) | synthesis "
                "| ratio |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in res["brute"]:
            if r["status"] != "ok":
                out.append(f"| `{r['params']['spec']}` | {_status(r)} | | | | | | | | |")
                continue
            x = r["result"]
            to_ans = x["extrapolated_to_answer_s"]
            ratio = to_ans / x["synth_s"] if to_ans and x["synth_s"] else None
            out.append(f"| `{x['spec']}` | {x['vocabulary_rules']:,} × {x['knob_combinations']} | {x['size']} "
                       f"| {_sci(x['space_up_to_size'])} | {x['examined']:,} ({x['budget_s']:.0f} s"
                       f"{', finished' if x['finished'] else ''}) | {_ms(x['per_candidate_s'])} "
                       f"| {_sci(x['answer_position'])} | {_dur(to_ans)} | {_s(x['synth_s'])} "
                       f"| {_sci(ratio) + '×' if ratio else '–'} |")
        out.append("")
    if res.get("scale"):
        out += ["## 3. Scale: kube-proxy-like rulesets + Istio, one property", "",
                "Property: *all outbound traffic of the pod's apps is captured* (CaptureOutbound) over every "
                "destination, port, source port and uid/gid; checked on a new world object each run (nothing "
                "cached). Baseline (a), the interpreter on concrete flows of the app: *sample* = one packet to "
                "each service VIP:port and each endpoint (what kube-proxy's tests do) plus `enumerate_scope`'s "
                "default space — it does not cover all packets; *class-complete* = every address × every port "
                "any rule or the world mentions, plus one of each no rule mentions — the finite space that "
                "covers the same packets as the proof. Each is capped at its budget and extrapolated (≈) when "
                "cut short.", "",
                "| rules (requested) | dump lines | parse | build world | symbolic check | verdict | peak MiB "
                "| sample: flows, time | class-complete: flows, time | class-complete / symbolic "
                "| peak MiB (enum) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        sc = [r for r in res["scale"] if r["case"] == "scale"]
        en = {r["params"]["rules"]: r for r in res["scale"] if r["case"] == "scale_enum"}

        def part(x: dict[str, Any]) -> str:
            t = _dur(x["elapsed_s"]) if x["finished"] else f"≈ {_dur(x['extrapolated_s'])}"
            return f"{_sci(x['space'])}, {t}"

        for r in sc:
            n = r["params"]["rules"]
            e = en.get(n)
            if e and e["status"] == "ok":
                ex = e["result"]
                e_cells = (part(ex["sample"]), part(ex["complete"]), ex["complete"]["extrapolated_s"], _mib(e))
            else:
                e_cells = ("–", _status(e) if e else "–", None, _mib(e) if e else "–")
            if r["status"] == "ok":
                x = r["result"]
                t = median(x["check_s"])
                ratio = f"{e_cells[2] / t:,.1f}" if e_cells[2] else "–"
                cpu = f" (CPU {_s(median(x['check_cpu_s']))})" if x.get("check_cpu_s") else ""
                out.append(f"| {x['rules']:,} ({n:,}) | {x['lines']:,} | {_s(x['parse_s'])} | {_s(x['world_s'])} "
                           f"| {_s(t)}{cpu} | {x['verdict']} | {_mib(r)} | {e_cells[0]} | {e_cells[1]} | {ratio} "
                           f"| {e_cells[3]} |")
            else:
                lower = r.get("timeout_s")
                ratio = f"< {e_cells[2] / lower:,.1f}" if e_cells[2] and lower else "–"
                rules_n = e["result"]["rules"] if e and e["status"] == "ok" else None
                out.append(f"| {f'{rules_n:,} ' if rules_n else ''}({n:,}) | | | | {_status(r)} | | {_mib(r)} "
                           f"| {e_cells[0]} | {e_cells[1]} | {ratio} | {e_cells[3]} |")
        out.append("")
    if res.get("parse"):
        out += ["## Parsing (`iptables.parse_text`, generated kube-proxy dumps)", "",
                "| lines | MB | rules | median | lines/s | peak MiB |", "|---|---|---|---|---|---|"]
        for r in res["parse"]:
            if r["status"] != "ok":
                out.append(f"| {r['params']['lines']:,} | | | {_status(r)} | | {_mib(r)} |")
                continue
            x = r["result"]
            out.append(f"| {x['lines']:,} | {x['bytes'] / 1e6:.1f} | {x['rules']:,} | {_s(median(x['parse_s']))} "
                       f"| {x['lines_per_s']:,.0f} | {_mib(r)} |")
        out.append("")
    if res.get("scale"):
        out += ["![scale](scale.svg)", ""]
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------
# The plot (hand-written SVG: no plotting dependency)


def svg_plot(series: list[tuple[str, str, list[tuple[float, float, bool]]]], title: str, xlabel: str,
             ylabel: str, hlines: list[tuple[float, str]] = ()) -> str:  # type: ignore[assignment]
    """A log-log line plot. ``series``: (label, colour, [(x, y, lower_bound_only)])."""
    W, H, L, R, T, B = 720, 440, 70, 200, 40, 50
    pts = [(x, y) for _l, _c, ps in series for x, y, _b in ps if x > 0 and y > 0]
    pts += [(pts[0][0] if pts else 1.0, y) for y, _t in hlines]
    if not pts:
        return f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}"></svg>\n'
    x0 = math.floor(math.log10(min(p[0] for p in pts)))
    x1 = math.ceil(math.log10(max(p[0] for p in pts)))
    y0 = math.floor(math.log10(min(p[1] for p in pts)))
    y1 = math.ceil(math.log10(max(p[1] for p in pts)))
    x1 = max(x1, x0 + 1)
    y1 = max(y1, y0 + 1)

    def px(x: float) -> float:
        return L + (math.log10(x) - x0) / (x1 - x0) * (W - L - R)

    def py(y: float) -> float:
        return H - B - (math.log10(y) - y0) / (y1 - y0) * (H - T - B)

    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" '
         f'font-size="12">', f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{L}" y="22" font-size="14" font-weight="bold">{title}</text>']
    for e in range(x0, x1 + 1):
        x = px(10 ** e)
        o.append(f'<line x1="{x:.1f}" y1="{T}" x2="{x:.1f}" y2="{H - B}" stroke="#ddd"/>')
        o.append(f'<text x="{x:.1f}" y="{H - B + 16}" text-anchor="middle">{10 ** e:,}</text>')
    for e in range(y0, y1 + 1):
        y = py(10 ** e)
        o.append(f'<line x1="{L}" y1="{y:.1f}" x2="{W - R}" y2="{y:.1f}" stroke="#ddd"/>')
        label = f"{10.0 ** e:g}"
        o.append(f'<text x="{L - 6}" y="{y + 4:.1f}" text-anchor="end">{label}</text>')
    o.append(f'<rect x="{L}" y="{T}" width="{W - L - R}" height="{H - T - B}" fill="none" stroke="#333"/>')
    o.append(f'<text x="{(L + W - R) / 2}" y="{H - 12}" text-anchor="middle">{xlabel}</text>')
    o.append(f'<text x="16" y="{(T + H - B) / 2}" text-anchor="middle" '
             f'transform="rotate(-90 16 {(T + H - B) / 2})">{ylabel}</text>')
    for y, text in hlines:
        yy = py(y)
        o.append(f'<line x1="{L}" y1="{yy:.1f}" x2="{W - R}" y2="{yy:.1f}" stroke="#999" stroke-dasharray="4 3"/>')
        o.append(f'<text x="{W - R - 4}" y="{yy - 4:.1f}" text-anchor="end" fill="#666">{text}</text>')
    for k, (label, colour, ps) in enumerate(series):
        good = [(x, y, b) for x, y, b in ps if x > 0 and y > 0]
        if len(good) > 1:
            path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y, _b in good)
            o.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for x, y, lower in good:
            if lower:  # only a lower bound (the case was killed at its limit)
                o.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="5" fill="white" stroke="{colour}" '
                         f'stroke-width="2"/>')
                o.append(f'<text x="{px(x):.1f}" y="{py(y) - 9:.1f}" text-anchor="middle" fill="{colour}">≥</text>')
            else:
                o.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="4" fill="{colour}"/>')
        ly = T + 16 + 20 * k
        o.append(f'<line x1="{W - R + 12}" y1="{ly}" x2="{W - R + 36}" y2="{ly}" stroke="{colour}" stroke-width="2"/>')
        o.append(f'<text x="{W - R + 42}" y="{ly + 4}">{label}</text>')
    o.append(f'<text x="{W - R + 12}" y="{T + 16 + 20 * len(series) + 10}" fill="#666">open ≥: killed at limit</text>')
    o.append("</svg>")
    return "\n".join(o) + "\n"


def scale_plot(res: dict[str, Any]) -> str:
    sym, enum, sample, parse = [], [], [], []
    for r in res.get("scale", []):
        n = r["params"]["rules"]
        if r["case"] == "scale":
            if r["status"] == "ok":
                sym.append((float(r["result"]["rules"]), median(r["result"]["check_s"]), False))
                parse.append((float(r["result"]["rules"]), r["result"]["parse_s"], False))
            elif r["status"] == "timeout":
                sym.append((float(n), float(r["timeout_s"]), True))
        elif r["status"] == "ok":
            x = r["result"]
            enum.append((float(x["rules"]), x["complete"]["extrapolated_s"], False))
            sample.append((float(x["rules"]), x["sample"]["extrapolated_s"], False))
    return svg_plot([("symbolic check", "#c0392b", sym), ("enum. (class-complete)", "#2471a3", enum),
                     ("enum. (sample)", "#85c1e9", sample), ("parsing", "#229954", parse)],
                    "One property vs ruleset size (kube-proxy + Istio)", "rules", "seconds",
                    [(5.0, "target 10k: 5 s"), (60.0, "target 50k: 60 s")])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="a shorter run")
    g.add_argument("--smoke", action="store_true", help="seconds: minimal sizes (CI)")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"sections, comma-separated: {','.join(SECTIONS)}")
    ap.add_argument("--out", default=str(RESULTS), help="output directory")
    ap.add_argument("--tree", default=None, help="import meshsolve from this directory in the child cases "
                    "(a patched copy to compare; whole-process commands still run the installed one)")
    ap.add_argument("--specs", default=None, help="override the synthesis section's specs, e.g. tproxy.yaml")
    ap.add_argument("--scale", default=None, help="override the scale sizes, e.g. 100,1000")
    ap.add_argument("--scale-timeout", type=float, default=None, help="override the scale cases' time limit (s)")
    ap.add_argument("--child", nargs=3, metavar=("CASE", "PARAMS", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child_main(*args.child)
    name = "smoke" if args.smoke else "quick" if args.quick else "full"
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = only - set(SECTIONS)
    if unknown:
        ap.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    profile = dict(PROFILES[name])
    if args.specs:
        profile["specs"] = [x.strip() for x in args.specs.split(",") if x.strip()]
    if args.scale:
        profile["scale"] = [int(x) for x in args.scale.split(",")]
    if args.scale_timeout:
        profile["scale_timeout"] = args.scale_timeout
    if args.tree:
        os.environ["MESHSOLVE_BENCH_TREE"] = str(Path(args.tree).resolve())
    command = "python -m benchmarks.run" + (f" --{name}" if name != "full" else "") + \
        (f" --only {args.only}" if only != set(SECTIONS) else "") + \
        (f" --specs {args.specs}" if args.specs else "") + \
        (f" --scale {args.scale}" if args.scale else "") + \
        (f" --scale-timeout {args.scale_timeout:g}" if args.scale_timeout else "") + \
        (f" --tree {args.tree}" if args.tree else "")
    env = environment()
    print(f"{command}: load average {env['loadavg']}", flush=True)
    res = run_sections(profile, only)
    env["loadavg_after"] = list(os.getloadavg())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env["tree"] = os.environ.get("MESHSOLVE_BENCH_TREE") or str(ROOT / "meshsolve")
    doc = {"command": command, "profile": name, "environment": env, "targets": TARGETS,
           "summary": summarise(res), "results": res}
    (out / "results.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out / "results.md").write_text(markdown(res, env, command))
    if res.get("scale"):
        (out / "scale.svg").write_text(scale_plot(res))
    print(f"wrote {out / 'results.md'}, results.json" + (", scale.svg" if res.get("scale") else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
