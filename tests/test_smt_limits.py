"""Solver limits: every solver call is bounded; hitting a bound gives ``Unknown(reason)``
(exit code 80 from the CLI), never a hang and never a wrong verdict."""

from __future__ import annotations

import functools
import ipaddress
import time
from typing import Any

import attrs
import pytest
import z3

import meshsolve.analysis.check as check_mod
from meshsolve.analysis.check import Proved, Refuted, Unknown, check
from meshsolve.analysis.properties import CaptureInbound, CaptureOutbound, NoLoops
from meshsolve.cli import EXIT_UNKNOWN, main
from meshsolve.model.rules import Destination, PortMatch, Protocol, Return, Rule, Table
from meshsolve.model.world import World
from meshsolve.semantics.setups import setup_world
from meshsolve.smt import solve as solve_mod
from meshsolve.smt.solve import Candidate, NoWitness, SolverGaveUp, search

E = setup_world("E")


def big_world(n: int) -> World:
    """Set-up E with ``n`` generated exclusions (``-d 203.0.x.y -p tcp --dport P -j RETURN``) at the
    top of ISTIO_OUTPUT: outbound capture is then refuted, and finding that takes real work."""
    rs = E.rules.ipv4
    nat = rs.table("nat")
    assert nat is not None
    extra = tuple(Rule((Destination(ipaddress.ip_network(f"203.0.{(i >> 8) & 255}.{i & 255}/32")),
                        Protocol("tcp"), PortMatch("tcp", dport=1000 + i)), Return()) for i in range(n))
    chain = nat.chain("ISTIO_OUTPUT")
    assert chain is not None
    new_chain = attrs.evolve(chain, rules=extra + chain.rules)
    new_nat = Table("nat", tuple(new_chain if c.name == "ISTIO_OUTPUT" else c for c in nat.chains))
    new_rs = attrs.evolve(rs, tables=(*tuple(t for t in rs.tables if t.name != "nat"), new_nat))
    return attrs.evolve(E, rules=attrs.evolve(E.rules, ipv4=new_rs))


BIG = big_world(1000)


def test_timeout_on_a_large_ruleset_gives_unknown_quickly() -> None:
    for prop in (CaptureOutbound(), NoLoops()):
        t0 = time.monotonic()
        v = check(BIG, prop, timeout_ms=1)
        elapsed = time.monotonic() - t0
        assert isinstance(v, Unknown) and not isinstance(v, Proved | Refuted), v
        assert "solver gave up" in v.reason and "timeout" in v.reason, v.reason
        assert elapsed < 10, elapsed  # ~0.1 s in z3; the rest is building the encoding


def test_tiny_resource_limit_gives_solver_gave_up() -> None:
    world = big_world(200)
    (scope, pred), = CaptureOutbound().checks(world)
    ans = search(world, scope, pred, rlimit=1)
    assert isinstance(ans, SolverGaveUp)
    assert "resource limit" in ans.reason or "canceled" in ans.reason, ans.reason


def test_search_sets_timeout_and_rlimit_on_every_solver(monkeypatch: pytest.MonkeyPatch) -> None:
    """Spy on the solvers ``search`` creates (each kind it picks): both bounds are set before
    ``check``."""
    seen: list[dict[str, Any]] = []
    real = solve_mod._solver

    def spy(client: str) -> Any:
        s = real(client)
        params: dict[str, Any] = {}
        seen.append(params)
        orig_set = s.set

        def set_(*args: Any, **kw: Any) -> None:
            if len(args) == 2:
                params[args[0]] = args[1]
            params.update(kw)
            orig_set(*args, **kw)

        s.set = set_
        return s

    monkeypatch.setattr(solve_mod, "_solver", spy)
    for prop in (CaptureInbound(), CaptureOutbound(), NoLoops()):
        for scope, pred in prop.checks(E):
            search(E, scope, pred, timeout_ms=1234, rlimit=5678)
    assert len(seen) >= 2
    assert seen and all(p.get("timeout") == 1234 and p.get("rlimit") == 5678 for p in seen), seen


def test_search_difference_sets_an_rlimit(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[set[str]] = []
    real = z3.SolverFor

    def spy(logic: str) -> Any:
        s = real(logic)
        keys: set[str] = set()
        seen.append(keys)
        orig_set = s.set

        def set_(*args: Any, **kw: Any) -> None:
            if len(args) == 2:
                keys.add(args[0])
            keys.update(kw)
            orig_set(*args, **kw)

        s.set = set_
        return s

    monkeypatch.setattr(solve_mod.z3, "SolverFor", spy)
    (scope, _pred), = CaptureOutbound().checks(E)
    solve_mod.search_difference(E, E, scope)
    assert seen and all({"timeout", "rlimit"} <= k for k in seen), seen


@pytest.mark.parametrize("rlimit", [1, 10_000, 300_000, 3_000_000])
def test_any_limit_gives_the_true_verdict_or_unknown(rlimit: int) -> None:
    """Whatever the bound, the answer is the unbounded one or Unknown: never a different verdict."""
    world = big_world(60)
    props = (CaptureOutbound(), CaptureInbound(ports=(9001, 9003)), NoLoops())
    truth = {p.title(): check(world, p).kind for p in props}
    assert truth[CaptureOutbound().title()] == "refuted" and truth[props[1].title()] == "proved"
    limited = functools.partial(search, rlimit=rlimit)
    for p in props:
        (scope, pred), *_ = p.checks(world)
        ans = limited(world, scope, pred)
        if isinstance(ans, SolverGaveUp):
            continue
        assert isinstance(ans, NoWitness) == (truth[p.title()] == "proved"), (p.title(), rlimit, ans)
        assert isinstance(ans, Candidate) == (truth[p.title()] != "proved"), (p.title(), rlimit, ans)


def test_cli_check_exits_80_when_the_solver_gives_up(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """A real ``meshsolve check`` run whose every solver call gets a resource limit of 1."""
    def limited(*args: Any, **kw: Any) -> Any:
        return search(*args, **{**kw, "rlimit": 1})

    monkeypatch.setattr(check_mod, "search", limited)
    rc = main(["check", "--setup", "E"])
    out = capsys.readouterr()
    assert rc == EXIT_UNKNOWN == 80, out
    assert "unknown" in (out.out + out.err).lower()


def test_cli_check_exits_0_without_the_limit(capsys: pytest.CaptureFixture[str]) -> None:
    """The control for the test above: the same run unbounded proves everything."""
    rc = main(["check", "--setup", "E"])
    assert rc == 0, capsys.readouterr()



def test_synth_exits_80_when_its_solver_gives_up(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from pathlib import Path

    import meshsolve.smt.synth as smt_synth

    real_init = smt_synth.SlotSearch.__init__

    def tiny(self: Any, *args: Any, **kw: Any) -> None:
        real_init(self, *args, **kw)
        self.timeout_ms = 1

    monkeypatch.setattr(smt_synth.SlotSearch, "__init__", tiny)
    spec = Path(__file__).resolve().parent.parent / "specs/istio-later-knobs.yaml"
    rc = main(["synth", str(spec)])
    capsys.readouterr()
    assert rc == EXIT_UNKNOWN


def test_a_limit_while_choosing_the_witness_keeps_a_true_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """The search found a violation, then a limit stops the canonical choice of its witness, at
    each of the choice's checks in turn: the witness is the model found so far, a real violation
    (``check`` replays it in the interpreter), never a crash and never another verdict."""
    world = big_world(60)
    want = check(world, CaptureOutbound())
    assert isinstance(want, Refuted)
    real = solve_mod.run_check
    pushed: list[int] = []  # the choice's checks so far (each of them pushed)
    limit = [0]

    def limited(s: Any, *assumptions: Any) -> Any:
        if s.num_scopes() > 0:
            pushed.append(s.num_scopes())
            if len(pushed) > limit[0]:
                return z3.unknown
        return real(s, *assumptions)

    monkeypatch.setattr(solve_mod, "run_check", limited)
    limit[0] = 10**9
    check(world, CaptureOutbound())
    total = len(pushed)
    assert total > 5, total
    for k in range(total + 1):
        pushed.clear()
        limit[0] = k
        got = check(world, CaptureOutbound())
        assert isinstance(got, Refuted), (k, got)
        assert got.scope == want.scope and got.expected == want.expected  # the same question, refuted


@pytest.mark.parametrize("kind", sorted(solve_mod.SOLVERS))
def test_each_solver_kind_takes_its_settings_silently(kind: str, capfd: pytest.CaptureFixture[str]) -> None:
    """Z3 accepts every setting of every kind: a setting it cannot use is a warning on the
    process's standard error (and the setting is not used), which a user would see."""
    x = z3.BitVec("x", 32)
    s = solve_mod.configure(solve_mod.SOLVERS[kind](), 10_000, 1_000_000)
    s.add(z3.ULT(x, 10), x != 3)
    assert s.check() == z3.sat
    out = capfd.readouterr()
    assert "WARNING" not in out.err and "WARNING" not in out.out, out
