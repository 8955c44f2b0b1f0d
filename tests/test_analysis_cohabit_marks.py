"""The cohabitation audit over socket marks: "capture holds for every uid/mark except the proxy's"
ranges over every ``SO_MARK`` a process may set but the proxy's own, and a third party's rule that
lets one mark through is refuted with a witness that carries that mark."""

from __future__ import annotations

import attrs
import pytest

from meshsolve.analysis.check import Proved, Refuted, check
from meshsolve.analysis.cohabit import CaptureExceptProxy, CohabitAudit, Dump, audit_cohabitation
from meshsolve.analysis.worlds import world_from_rules
from meshsolve.iptables import parse_text, render_save
from meshsolve.meshes import default_setup
from meshsolve.model import App, Socket, World
from meshsolve.model.world import ProxyBehavior
from meshsolve.report.cohabit import cohabitation_report
from meshsolve.semantics import interpret
from meshsolve.smt.query import Captured, Scope
from meshsolve.smt.solve import Candidate, NoWitness, search

APP = App("app", sockets=(Socket("0.0.0.0", 8080),))


def _dump(extra: str | None, *, proxy: ProxyBehavior | None = None) -> tuple[Dump, World]:
    """Istio's sidecar rules as a third party found them, with ``extra`` inserted at the head of nat
    ``OUTPUT`` (what ``iptables -t nat -I OUTPUT ...`` does); and the pod's world."""
    s = default_setup("istio")
    lines = render_save(s.rules).splitlines()
    if extra is not None:
        head = next(i for i, ln in enumerate(lines) if ln.startswith("-A OUTPUT"))
        lines.insert(head, f"-A OUTPUT {extra}")
    text = "\n".join(lines) + "\n"
    world = world_from_rules(s.rules, proxy or s.proxy, apps=(APP,), name="pod")
    return Dump("<dump>", "nft", parse_text(text, "<dump>")), world


def _audit(extra: str | None, *, proxy: ProxyBehavior | None = None) -> CohabitAudit:
    dump, world = _dump(extra, proxy=proxy)
    setup = default_setup("istio")
    if proxy is not None:
        setup = attrs.evolve(setup, proxy=proxy)
    return audit_cohabitation([dump], setup, world)


def test_a_third_partys_mark_return_is_refuted_with_a_witness_that_carries_the_mark() -> None:
    a = _audit("-m mark --mark 0x10 -j RETURN")
    (o,) = a.orders
    assert isinstance(o.capture, Refuted)
    witness = o.capture.world.app(o.capture.flow.client)
    assert witness.mark == 0x10 and witness.uid != 1337
    assert o.capture.result.observed == () and "mark 0x10" in o.capture.result.trace[0].text
    # the comparison with the mesh's rules alone finds the rule, and names the mark of its witness
    (c,) = o.changes
    assert (c.rule, c.rule_text) == ("nat::OUTPUT#1", "-m mark --mark 0x10 -j RETURN")
    assert "socket mark 0x10" in c.client and c.with_it.observed == () and c.without.observed == ("out",)
    rep = cohabitation_report(a)
    assert any(f.code == "MSH0102" and "socket mark 0x10" in f.message for f in rep.findings), rep.findings


def test_without_the_rule_capture_holds_for_every_mark() -> None:
    (o,) = _audit(None).orders
    assert isinstance(o.capture, Proved) and o.changes == ()


@pytest.mark.parametrize("mask", ["", "/0xff"])
def test_a_masked_or_negated_mark_match_is_found_too(mask: str) -> None:
    (o,) = _audit(f"-m mark ! --mark 0x0{mask} -j RETURN").orders
    assert isinstance(o.capture, Refuted)
    mark = o.capture.world.app(o.capture.flow.client).mark
    assert mark is not None and (mark & (0xFF if mask else 0xFFFFFFFF)) != 0


def test_the_proxys_own_mark_is_left_out() -> None:
    """A rule that lets the proxy's socket mark through is the proxy's exemption: the property leaves
    that mark out (as it leaves out the proxy's uid) and holds; any other mark is still captured."""
    proxy = attrs.evolve(default_setup("istio").proxy, socket_mark=0x539)
    (o,) = _audit("-m mark --mark 0x539 -j RETURN", proxy=proxy).orders
    # (the rule does change the proxy's own marked connections: those are its changes, none of a
    # process with a mark)
    assert isinstance(o.capture, Proved) and not any("socket mark" in c.client for c in o.changes)
    (o,) = _audit("-m mark --mark 0x53a -j RETURN", proxy=proxy).orders
    assert isinstance(o.capture, Refuted) and o.capture.world.app(o.capture.flow.client).mark == 0x53A
    # the marks left out can be given; then the proxy's own is in the range
    dump, world = _dump("-m mark --mark 0x539 -j RETURN", proxy=proxy)
    w = attrs.evolve(world, rules=dump.rules)
    assert isinstance(check(w, CaptureExceptProxy(uids=(1337,), gids=(1337,))), Proved)
    v = check(w, CaptureExceptProxy(uids=(1337,), gids=(1337,), marks=(0x1,)))
    assert isinstance(v, Refuted) and v.world.app(v.flow.client).mark == 0x539


def test_a_scope_without_marks_does_not_see_the_marked_bypass() -> None:
    """The default scope (no mark) is unchanged: the same question without ``any_mark`` is proved,
    with it refuted; ``mark_not`` leaves the one mark out."""
    dump, world = _dump("-m mark --mark 0x10 -j RETURN")
    w = attrs.evolve(world, rules=dump.rules)
    base = Scope(family="ipv4", client="any-app", uid_not=(1337,), gid_not=(1337,), local=False)
    assert isinstance(search(w, base, Captured("out")), NoWitness)
    ans = search(w, attrs.evolve(base, any_mark=True), Captured("out"))
    assert isinstance(ans, Candidate) and ans.world.app(ans.flow.client).mark == 0x10
    assert not interpret(ans.world, ans.flow).observed
    assert isinstance(search(w, attrs.evolve(base, any_mark=True, mark_not=(0x10,)), Captured("out")), NoWitness)


def test_an_app_with_a_mark_is_its_own_scope() -> None:
    """An app whose sockets carry the mark is refuted as the app (no made-up process); the same app
    without it is captured."""
    dump, world = _dump("-m mark --mark 0x10 -j RETURN")
    w = attrs.evolve(world, rules=dump.rules, apps=(*world.apps, App("marked", uid=1000, mark=0x10)))
    scope = Scope(family="ipv4", client="app", app="marked", local=False)
    ans = search(w, scope, Captured("out"))
    assert isinstance(ans, Candidate) and ans.flow.client == "marked" and ans.world is w
    assert isinstance(search(w, attrs.evolve(scope, app="app"), Captured("out")), NoWitness)
