"""The benchmark cases. Each runs in its own child process (``benchmarks.run`` starts it) and returns
a JSON-able dict; the parent adds the wall time and the child's peak RSS (``wait4``).

Timing is ``time.perf_counter``; every repeated measurement keeps all runs and their median.
"""

from __future__ import annotations

import cProfile
import itertools
import pstats
import statistics
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _timed(fn: Any) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


# ------------------------------------------------------------------------------------------------
# Profile: where the time of one check goes


_PHASES = (
    ("parse", "iptables/parse.py", "parse_text"),
    ("world", "model/world.py", "validate_world"),
    ("encode", "smt/encode.py", "_encode_flow"),
    ("solve", "z3/z3.py", "check"),
    ("replay", "semantics/interpret.py", "interpret"),
)


def profile_phases(fn: Any) -> dict[str, float]:
    """Run ``fn`` under cProfile; the cumulative seconds of parsing, world validation, encoding,
    Z3 solving (``Solver.check``/``Optimize.check``) and interpreter replay, plus the total."""
    prof = cProfile.Profile()
    t = time.perf_counter()
    prof.enable()
    fn()
    prof.disable()
    total = time.perf_counter() - t
    stats = pstats.Stats(prof)
    out = {name: 0.0 for name, _f, _n in _PHASES}
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for (path, _line, func), (_cc, _nc, _tt, ct, _callers) in raw.items():
        for name, suffix, fname in _PHASES:
            if func == fname and path.replace("\\", "/").endswith(suffix):
                # recursive entries are counted once by cProfile's cumulative time
                out[name] = max(out[name], ct)
    out["total (under the profiler)"] = total
    return out


# ------------------------------------------------------------------------------------------------
# 1. Istio goldens: one property and every default property, warm in-process


def golden(params: dict[str, Any]) -> dict[str, Any]:
    from meshsolve.analysis.check import check, enumerate_scope, holds
    from meshsolve.analysis.goldens import golden_entries
    from meshsolve.analysis.properties import CaptureOutbound, default_properties
    from meshsolve.analysis.worlds import world_from_config
    from meshsolve.iptables import parse_file

    repeats = int(params["repeats"])
    entry = next(e for e in golden_entries() if e.file == params["file"])
    one = CaptureOutbound()

    def build() -> Any:
        return world_from_config(entry.config, rules=parse_file(entry.path))

    parse_s, rules = _timed(lambda: parse_file(entry.path))
    world = build()
    props = default_properties(world)
    # warm-up: imports, z3 context, first encodings
    check(world, one)
    for p in props:
        check(world, p)
    one_same, all_same, one_fresh, all_fresh = [], [], [], []
    verdict_one = verdicts_all = None
    for _ in range(repeats):
        dt, verdict_one = _timed(lambda: check(world, one))
        one_same.append(dt)
        dt, verdicts_all = _timed(lambda: [check(world, p) for p in props])
        all_same.append(dt)
        # a fresh world object each time: parse + build + encode + solve, in a warm process
        dt, _ = _timed(lambda: check(build(), one))
        one_fresh.append(dt)

        def fresh_all() -> None:
            w = build()
            for p in default_properties(w):
                check(w, p)

        dt, _ = _timed(fresh_all)
        all_fresh.append(dt)
    # baseline (a): interpret every flow of the finite version of the same scopes
    enum_runs = []
    flows = 0
    enum_ok = True
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        flows = 0
        enum_ok = True
        for scope, pred in one.checks(world):
            for _flow, _w, result in enumerate_scope(world, scope):
                flows += 1
                enum_ok &= holds(pred, result)
        enum_runs.append(time.perf_counter() - t)
    phases = profile_phases(lambda: check(build(), one))
    return {
        "file": entry.file,
        "rules_v4": rules.ipv4.rule_count(),
        "rules_v6": rules.ipv6.rule_count(),
        "families": list(world.families),
        "parse_s": parse_s,
        "one_prop": one.title(),
        "one_verdict": getattr(verdict_one, "kind", "?"),
        "all_verdicts": [v.kind for v in verdicts_all or []],
        "n_default_props": len(props),
        "one_same_world_s": one_same,
        "all_same_world_s": all_same,
        "one_fresh_world_s": one_fresh,
        "all_fresh_world_s": all_fresh,
        "enum_flows": flows,
        "enum_holds": enum_ok,
        "enum_s": enum_runs,
        "profile": phases,
    }


# ------------------------------------------------------------------------------------------------
# 2. Synthesis of a shipped spec


def _synth_runs(text: str, name: str, repeats: int, profile: bool) -> dict[str, Any]:
    """Synthesize the spec ``text`` ``repeats`` times (wall and CPU seconds of each) and describe
    the answer and the vocabulary."""
    from meshsolve.analysis.spec import parse_spec
    from meshsolve.analysis.synth import synthesize

    runs: list[float] = []
    cpu: list[float] = []
    res: Any = None
    load_s, spec = _timed(lambda: parse_spec(text, name))
    for _ in range(repeats):
        spec = parse_spec(text, name)
        c0 = time.process_time()
        dt, res = _timed(lambda: synthesize(spec))  # noqa: B023 - called at once
        cpu.append(time.process_time() - c0)
        runs.append(dt)
    phases = profile_phases(lambda: synthesize(parse_spec(text, name))) if profile else None
    conds = spec.search.conditions
    return {
        "kind": res.kind,
        "seconds": runs,
        "cpu_seconds": cpu,
        "reported_seconds": res.seconds,
        "iterations": res.iterations,
        "solver_calls": res.solver_calls,
        "examples": getattr(res, "examples", None),
        "rules": len(res.rules) if res.kind == "synthesized" else None,
        "rule_texts": [_rule_text(r) for r in res.rules] if res.kind == "synthesized" else None,
        "conflict_goals": [g.name for g in res.goals] if res.kind == "conflict" else None,
        "proved": all(v.kind == "proved" for v in res.proofs) if res.kind == "synthesized" else None,
        "conditions": len(conds),
        "alternatives": sum(len(c.alternatives) for c in conds),
        "apps": len(spec.world.apps),
        "load_s": load_s,
        "profile": phases,
    }


def _rule_text(rule: Any) -> str:
    from meshsolve.iptables import rule_text

    return rule_text(rule)


def synth(params: dict[str, Any]) -> dict[str, Any]:
    """A shipped spec, with its own vocabulary (``vocabulary: given``) or without its ``conditions``
    list (``derived``: the vocabulary comes from the world)."""
    from benchmarks.growth import derived_text

    path = ROOT / "specs" / params["spec"]
    vocab = params.get("vocabulary", "given")
    text = path.read_text() if vocab == "given" else derived_text(path.read_text())
    out = _synth_runs(text, str(path), int(params["repeats"]), bool(params.get("profile")))
    return {"spec": params["spec"], "vocabulary": vocab, **out}


def synth_growth(params: dict[str, Any]) -> dict[str, Any]:
    """The modern-goals world grown by ``apps`` apps, ``addresses`` service addresses and ``ports``
    ports (``benchmarks.growth``), synthesized with the world's vocabulary."""
    from benchmarks.growth import grown_spec

    a, n, p = int(params["apps"]), int(params["addresses"]), int(params["ports"])
    out = _synth_runs(grown_spec(apps=a, addresses=n, ports=p), f"grown-{a}-{n}-{p}", int(params["repeats"]),
                      False)
    return {"added": [a, n, p], **out}


# ------------------------------------------------------------------------------------------------
# Baseline (b): brute-force synthesis over the same vocabulary


def brute(params: dict[str, Any]) -> dict[str, Any]:
    """Enumerate candidate rule lists (size 0, 1, ... up to the synthesizer's size; for each size
    every knob combination, then every list of vocabulary rules) and check each goal of each with
    ``check`` until one is not proved, for at most ``budget`` seconds. A vocabulary rule is a subset
    of the spec's conditions (at most one of each basic match, as the synthesizer allows) with one of
    its targets."""
    from meshsolve.analysis.check import Proved, check
    from meshsolve.analysis.spec import load_spec
    from meshsolve.analysis.synth import _search, synthesize
    from meshsolve.model.rules import Destination, InInterface, OutInterface, Protocol, Source
    from meshsolve.smt.synth import Candidate

    spec = load_spec(ROOT / "specs" / params["spec"])
    budget = float(params["budget"])
    search = _search(spec)
    basic = (Source, Destination, InInterface, OutInterface, Protocol)
    n_cond = len(spec.search.conditions)
    types = [{type(m) for _t, ms in c.alternatives for m in ms if isinstance(m, basic)} for c in spec.search.conditions]
    subsets: list[tuple[int, ...]] = []
    for r in range(n_cond + 1):
        for combo in itertools.combinations(range(n_cond), r):
            seen: set[type] = set()
            ok = True
            for c in combo:
                if seen & types[c]:
                    ok = False
                    break
                seen |= types[c]
            if ok:
                subsets.append(combo)
    targets = [t for _text, t in spec.search.targets]
    vocab = [(c, ti) for c in subsets for ti in range(len(targets))]
    knob_names = [k for k, _v in spec.search.knobs]
    knob_values = [v for _k, v in spec.search.knobs]
    knob_combos = [tuple(zip(knob_names, combo, strict=True)) for combo in itertools.product(*knob_values)] \
        or [()]
    V, K = len(vocab), len(knob_combos)

    # the synthesizer's answer (its size, and its position in this enumeration order)
    target_size = params.get("size")
    answer: Any = None
    if target_size is None:
        answer = synthesize(spec)
        target_size = len(answer.rules) if answer.kind == "synthesized" else spec.search.max_rules
    target_size = int(target_size)
    position = None
    if answer is not None and answer.kind == "synthesized":
        idx = 0
        for conds, rule in zip(answer.conditions, answer.rules, strict=True):
            ti = next(i for i, t in enumerate(targets) if t == rule.target)
            idx = idx * V + vocab.index((tuple(sorted(conds)), ti))
        kidx = next((i for i, kc in enumerate(knob_combos) if dict(kc) == dict(answer.knobs)), 0)
        position = sum(V ** j * K for j in range(target_size)) + kidx * V ** target_size + idx + 1
    space = sum(V ** j * K for j in range(target_size + 1))

    examined = 0
    checks = 0
    found = None
    t0 = time.perf_counter()
    done = True
    for size in range(target_size + 1):
        for knobs in knob_combos:
            for combo in itertools.product(range(V), repeat=size):
                if time.perf_counter() - t0 > budget:
                    done = False
                    break
                rules = tuple(search.rule(vocab[i][0], targets[vocab[i][1]]) for i in combo)
                world = search.concrete_world(Candidate(rules, knobs, 0))
                examined += 1
                good = True
                for g in spec.goals:
                    checks += 1
                    if not isinstance(check(world, g.prop), Proved):
                        good = False
                        break
                if good:
                    found = (size, examined)
                    break
            if found or not done:
                break
        if found or not done:
            break
    elapsed = time.perf_counter() - t0
    per = elapsed / examined if examined else float("nan")
    return {
        "spec": params["spec"],
        "vocabulary_rules": V,
        "knob_combinations": K,
        "size": target_size,
        "space_up_to_size": space,
        "answer_position": position,
        "examined": examined,
        "goal_checks": checks,
        "finished": found is not None,
        "found_at": found,
        "budget_s": budget,
        "elapsed_s": elapsed,
        "per_candidate_s": per,
        "extrapolated_to_answer_s": None if position is None else position * per,
        "extrapolated_space_s": space * per,
        "synth_s": None if answer is None else answer.seconds,
    }


# ------------------------------------------------------------------------------------------------
# 3. Scale: one property on generated kube-proxy + Istio rulesets; parsing


def scale(params: dict[str, Any]) -> dict[str, Any]:
    from benchmarks.kubeproxy import ISTIO_CONFIG, kube_dump
    from meshsolve.analysis.check import check
    from meshsolve.analysis.properties import CaptureOutbound
    from meshsolve.analysis.worlds import world_from_rules
    from meshsolve.iptables import parse_text
    from meshsolve.istio import proxy_behavior

    n = int(params["rules"])
    gen_s, text = _timed(lambda: kube_dump(n))
    parse_s, rules = _timed(lambda: parse_text(text))
    proxy = proxy_behavior(ISTIO_CONFIG.version, ISTIO_CONFIG)
    world_s, _world = _timed(lambda: world_from_rules(rules, proxy))
    prop = CaptureOutbound()
    runs: list[float] = []
    cpu: list[float] = []
    verdict: Any = None
    for _ in range(int(params["repeats"])):
        w = world_from_rules(rules, proxy)  # a new world object: nothing cached
        c0 = time.process_time()
        dt, verdict = _timed(lambda: check(w, prop))  # noqa: B023 - called at once
        cpu.append(time.process_time() - c0)
        runs.append(dt)
    return {
        "rules": rules.ipv4.rule_count(),
        "requested": n,
        "lines": text.count("\n"),
        "gen_s": gen_s,
        "parse_s": parse_s,
        "world_s": world_s,
        "prop": prop.title(),
        "verdict": getattr(verdict, "kind", "?"),
        "assumes": len(getattr(verdict, "assumes", ())),
        "check_s": runs,
        "check_cpu_s": cpu,
    }


def scale_enum(params: dict[str, Any]) -> dict[str, Any]:
    """Baseline (a) at scale, the interpreter on concrete flows of the app, two declared spaces:

    * *sample* — what kube-proxy's own tests do: one packet to each service VIP:port and to each
      endpoint address:port, plus ``enumerate_scope``'s default space (4 flows a service + ~20);
    * *class-complete* — every destination address × every destination port that any rule or the
      world mentions (VIPs, endpoints, pod/peer/loopback addresses) plus one address and one port
      no rule mentions. The rules only test these exact values (and sources/owners the kernel
      fixes), so this space meets every class of packets the symbolic check covers: it is the
      enumeration that proves the same statement. |addresses| × |ports| flows.

    Each part stops at half the budget; its time is extrapolated from the flows it ran."""
    import ipaddress

    from benchmarks.kubeproxy import ISTIO_CONFIG, kube_dump, service_count, services
    from meshsolve.analysis.check import enumerate_scope, holds, interesting_addresses
    from meshsolve.analysis.properties import CaptureOutbound
    from meshsolve.analysis.worlds import world_from_rules
    from meshsolve.iptables import parse_text
    from meshsolve.istio import proxy_behavior
    from meshsolve.model.world import Flow
    from meshsolve.semantics.interpret import interpret

    n = int(params["rules"])
    rules = parse_text(kube_dump(n))
    world = world_from_rules(rules, proxy_behavior(ISTIO_CONFIG.version, ISTIO_CONFIG))
    prop = CaptureOutbound()
    scope, pred = prop.checks(world)[0]
    client = world.apps[0].name
    half = float(params["budget"]) / 2
    sample: list[tuple[str, int]] = []
    addrs: dict[str, None] = {str(a): None for a in interesting_addresses(world, scope)}
    ports: dict[int, None] = {p: None for p in (1, 80, 443, 15001, 15006, 15008, 15020, 15090, 65535)}
    ports.update({s.port: None for a in world.apps for s in a.sockets})
    for _name, vip, port, eps in services(service_count(n)):
        sample.append((vip, port))
        sample.extend(eps)
        addrs[vip] = None
        ports[port] = None
        for ep, tport in eps:
            addrs[ep] = None
            ports[tport] = None
    addrs["203.0.113.200"] = None  # an address no rule mentions
    ports[33333] = None  # a port no rule mentions
    dsts = [a for a in addrs if not world.is_local(ipaddress.ip_address(a))]  # the scope: remote only

    def run(flows: list[tuple[str, int]] | Any, size: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        done = violations = 0
        finished = True
        for dst, port in flows:
            if time.perf_counter() - t0 > half:
                finished = False
                break
            result = interpret(world, Flow(client, dst, port))
            done += 1
            violations += not holds(pred, result)
        elapsed = time.perf_counter() - t0
        return {"space": size, "flows": done, "violations": violations, "finished": finished,
                "elapsed_s": elapsed, "extrapolated_s": elapsed if finished else elapsed / max(done, 1) * size}

    t0 = time.perf_counter()
    base = [(str(f.dst), f.dport) for f, _w, _r in enumerate_scope(world, scope)]
    base_s = time.perf_counter() - t0
    part1 = run(sample, len(sample))
    part1["space"] += len(base)
    part1["flows"] += len(base)
    part1["elapsed_s"] += base_s
    part1["extrapolated_s"] += base_s
    part2 = run(itertools.product(dsts, list(ports)), len(dsts) * len(ports))
    part2["addresses"], part2["ports"] = len(dsts), len(ports)
    return {"rules": rules.ipv4.rule_count(), "sample": part1, "complete": part2,
            # kept for the table's first columns
            "flows": part1["flows"], "finished": part1["finished"], "elapsed_s": part1["elapsed_s"],
            "extrapolated_s": part2["extrapolated_s"]}


def parse(params: dict[str, Any]) -> dict[str, Any]:
    from benchmarks.kubeproxy import kube_dump
    from meshsolve.iptables import parse_text

    lines = int(params["lines"])
    # about 1.4 lines a rule in the generated dump
    n = int(lines / 1.38)
    text = kube_dump(n)
    got = text.count("\n")
    runs = []
    rules = 0
    for _ in range(int(params["repeats"])):
        dt, rs = _timed(lambda: parse_text(text))
        runs.append(dt)
        rules = rs.ipv4.rule_count()
        del rs
    return {"lines": got, "bytes": len(text.encode()), "rules": rules, "parse_s": runs,
            "lines_per_s": got / _median(runs)}


# ------------------------------------------------------------------------------------------------
# nftables: one property on an Istio nft set-up and on its iptables twin


def nft_twin(params: dict[str, Any]) -> dict[str, Any]:
    """``capture-out`` on the pod of one Istio configuration twice: with its iptables golden and with
    its native nftables golden (``frontier/istio-nftables-sidecar``), same world warm and a fresh
    world each time (read + build + encode + solve) in a warm process."""
    from meshsolve.analysis.check import check
    from meshsolve.analysis.goldens import golden_entries
    from meshsolve.analysis.properties import CaptureOutbound
    from meshsolve.analysis.worlds import read_rules, world_from_config

    repeats = int(params["repeats"])
    entry = next(e for e in golden_entries() if e.file == params["file"])
    nft_path = entry.path.parent.parent / "frontier" / "istio-nftables-sidecar" / entry.file
    one = CaptureOutbound()
    out: dict[str, Any] = {"file": entry.file}
    for backend, path, config in (("iptables", entry.path, entry.config),
                                  ("nftables", nft_path, entry.config.evolve(native_nftables=True))):
        def build(path: Path = path, config: Any = config) -> Any:
            return world_from_config(config, rules=read_rules(str(path)))

        world = build()
        check(world, one)  # warm-up: imports, z3 context, the first encoding
        same, fresh = [], []
        verdict: Any = None
        for _ in range(repeats):
            dt, verdict = _timed(lambda: check(world, one))  # noqa: B023 - called at once
            same.append(dt)
            dt, _ = _timed(lambda: check(build(), one))
            fresh.append(dt)
        out[backend] = {"rules": world.rules.ipv4.rule_count() + world.rules.ipv6.rule_count(),
                        "verdict": getattr(verdict, "kind", "?"), "same_world_s": same, "fresh_world_s": fresh}
    out["ratio_same"] = _median(out["nftables"]["same_world_s"]) / _median(out["iptables"]["same_world_s"])
    out["ratio_fresh"] = _median(out["nftables"]["fresh_world_s"]) / _median(out["iptables"]["fresh_world_s"])
    return out


def idle(params: dict[str, Any]) -> dict[str, Any]:
    """The floor: a child that imports meshsolve's checker and z3 and does nothing."""
    import z3

    from meshsolve.analysis import check  # noqa: F401

    return {"z3": z3.get_version_string()}


CASES = {"golden": golden, "synth": synth, "synth_growth": synth_growth, "brute": brute, "scale": scale,
         "scale_enum": scale_enum, "parse": parse, "idle": idle, "nft_twin": nft_twin}
