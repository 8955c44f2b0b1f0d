"""Synthesis from goals alone: specs without a ``conditions`` list take their vocabulary from the
world (holes the solver fills with the world's addresses, ids and ports), goals in users' words
(``direct``, ``exempt``, ``observed exactly``, ``bypass by uid-or-gid``), and nothing of Istio's
numbers built in: a renumbered world gets a result of the same shape."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from meshsolve.analysis.spec import load_spec, parse_spec
from meshsolve.analysis.synth import Conflict, Synthesized, synthesize
from meshsolve.iptables import rule_text

SPECS = Path(__file__).resolve().parent.parent / "specs"


def _without_conditions(text: str) -> str:
    return re.sub(r"\n  conditions:\n(    - .*\n)+", "\n", text)


def test_the_modern_goals_spec_has_no_vocabulary_and_is_met_and_proved() -> None:
    spec = load_spec(SPECS / "istio-modern-goals.yaml")
    assert all(c.hole for c in spec.search.conditions)  # derived: every condition a hole
    res = synthesize(spec)
    assert isinstance(res, Synthesized), str(res)
    assert all(v.kind == "proved" for v in res.proofs)
    texts = [rule_text(r) for r in res.rules]
    # the proxy's self-call to its own pod IP goes to the inbound side, the tunnel port left alone
    assert any("ISTIO_IN_REDIRECT" in t and "--uid-owner 1337" in t and "! --dport 15008" in t for t in texts)
    # everything else a non-proxy process sends out is captured
    assert any("ISTIO_REDIRECT" in t and "! --uid-owner 1337" in t and "! --gid-owner 1337" in t for t in texts)


@pytest.mark.parametrize("name", sorted(p.name for p in SPECS.glob("*.yaml") if "conditions:" in p.read_text()))
def test_every_shipped_spec_runs_without_its_conditions_list(name: str) -> None:
    """The same or a smaller result: fewer rules, or the same conflict. A spec whose point is a
    restricted vocabulary (uid conditions only) is met once the vocabulary is the world's."""
    text = (SPECS / name).read_text()
    given = synthesize(load_spec(SPECS / name))
    derived = synthesize(parse_spec(_without_conditions(text), f"{name}[derived]"))
    if isinstance(given, Synthesized):
        assert isinstance(derived, Synthesized), str(derived)
        assert len(derived.rules) <= len(given.rules)
        assert all(v.kind == "proved" for v in derived.proofs)
    else:
        assert isinstance(given, Conflict)
        if name == "app-with-proxy-uid-uid-only.yaml":  # the world's vocabulary has gid conditions
            assert isinstance(derived, Synthesized), str(derived)
        else:
            assert isinstance(derived, Conflict), str(derived)
            assert {g.name for g in derived.goals} == {g.name for g in given.goals}


def test_the_1_2_conflict_core_is_unchanged_with_the_worlds_vocabulary() -> None:
    text = _without_conditions((SPECS / "istio-1.2-design-space.yaml").read_text())
    res = synthesize(parse_spec(text, "1.2[derived]"))
    assert isinstance(res, Conflict)
    assert {g.name for g in res.goals} == {"pod-IP listener reachable", "no loops",
                                           "self-call through the service observed server side"}


_RENUMBER = (("1337", "2102"), ("15001", "4140"), ("15006", "4143"), ("15008", "4444"),
             ("192.0.2.10", "203.0.113.70"), ("192.0.2.20", "203.0.113.80"), ("198.51.100.", "203.0.113.1"),
             ("ISTIO_OUTPUT", "MESH_OUT"), ("ISTIO_IN_REDIRECT", "MESH_INBOUND_TO"),
             ("ISTIO_REDIRECT", "MESH_OUT_TO"), ("ISTIO_INBOUND", "MESH_IN"), ("9001", "8001"), ("9003", "8003"),
             ("9002", "8002"))


def _renumbered(text: str) -> str:
    for a, b in _RENUMBER:
        text = text.replace(a, b)
    return text


@pytest.mark.parametrize("name", ["istio-modern-goals.yaml", "istio-modern-goals-ipv6.yaml"])
def test_a_renumbered_world_gets_a_result_of_the_same_shape(name: str) -> None:
    """Other proxy ids and ports, tunnel port, pod and peer addresses, chain names — IPv4 and IPv6."""
    text = _renumbered((SPECS / name).read_text())
    text = text.replace("2001:db8::10", "2001:db8::70").replace("2001:db8::20", "2001:db8::80")
    spec = parse_spec(text, f"renumbered {name}")
    assert spec.world.proxy.uid == 2102 and spec.world.proxy.tunnel_port == 4444
    res = synthesize(spec)
    assert isinstance(res, Synthesized), str(res)
    assert all(v.kind == "proved" for v in res.proofs)
    texts = [rule_text(r) for r in res.rules]
    assert len(res.rules) == 2, texts
    assert any("MESH_INBOUND_TO" in t and "--uid-owner 2102" in t and "! --dport 4444" in t for t in texts)
    assert any("MESH_OUT_TO" in t and "! --uid-owner 2102" in t for t in texts)


#: Ids that differ: the proxy's uid and gid, and each app's (uid 500N, gid 600N).
PROXY_UID, PROXY_GID = 2102, 3103


def split_ids(text: str) -> str:
    """A renumbered world (``_renumbered``) whose proxy and apps each have a uid other than their gid."""
    text = text.replace("uid: 1337, gid: 1337", f"uid: {PROXY_UID}, gid: {PROXY_GID}")
    for n, app in enumerate(("details", "admin", "price"), 1):
        text = text.replace(f"{{name: {app}, uid: 1000, gid: 1000,", f"{{name: {app}, uid: {5000 + n}, gid: {6000 + n},")
    text = _renumbered(text)
    return text.replace("2001:db8::10", "2001:db8::70").replace("2001:db8::20", "2001:db8::80")


@pytest.mark.parametrize("name", ["istio-modern-goals.yaml", "istio-modern-goals-ipv6.yaml"])
def test_a_world_whose_uids_and_gids_differ_gets_a_result_of_the_same_shape(name: str) -> None:
    """The proxy runs as uid 2102 and group 3103, each app with a uid and a gid of its own: the
    self-call rule names the proxy's uid, the capture rule excludes the proxy's uid and its group
    (not one id twice), and no app's id is needed."""
    spec = parse_spec(split_ids((SPECS / name).read_text()), f"split ids {name}")
    assert (spec.world.proxy.uid, spec.world.proxy.gid) == (PROXY_UID, PROXY_GID)
    assert all(a.uid != a.gid for a in spec.world.apps) and len({a.uid for a in spec.world.apps}) == 3
    res = synthesize(spec)
    assert isinstance(res, Synthesized), str(res)
    assert all(v.kind == "proved" for v in res.proofs)
    texts = [rule_text(r) for r in res.rules]
    assert len(res.rules) == 2, texts
    inbound = [t for t in texts if "MESH_INBOUND_TO" in t]
    out = [t for t in texts if "MESH_OUT_TO" in t]
    assert len(inbound) == 1 and len(out) == 1, texts
    assert f"-m owner --uid-owner {PROXY_UID}" in inbound[0] or f"-m owner --gid-owner {PROXY_GID}" in inbound[0]
    assert "! --dport 4444" in inbound[0]
    assert f"! --uid-owner {PROXY_UID}" in out[0] and f"! --gid-owner {PROXY_GID}" in out[0]
    assert not re.search(r"-owner [56]00\d", " ".join(texts)), texts


@pytest.mark.parametrize("name", ["istio-modern-goals.yaml", "istio-modern-goals-ipv6.yaml"])
def test_the_modern_goals_result_against_istio_s_own_rules(name: str) -> None:
    """``diff`` over every first connection between the synthesized set-up and the rules
    ``meshsolve.istio`` generates for Istio current on the same pod: in IPv4 the one difference is
    a proxy-uid connection to a loopback address other than 127.0.0.1 (ours goes straight to the
    socket; Istio's rule sends it through the inbound side, from 127.0.0.6) — the choice
    docs/spec.md argues; IPv6 has no such addresses, and the two are equivalent."""
    import ipaddress

    import attrs

    from meshsolve.analysis.diff import Different, DiffUnknown, diff
    from meshsolve.istio import generate, parse_flags

    res = synthesize(load_spec(SPECS / name))
    assert isinstance(res, Synthesized), str(res)
    flags = ["-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-b", "*"]
    config = parse_flags(flags, version="current")
    if name.endswith("-ipv6.yaml"):
        config = config.evolve(enable_ipv6=True)
    istio = attrs.evolve(res.world, rules=generate(config))
    results = diff(res.world, istio)
    assert not [r for r in results if isinstance(r, DiffUnknown)]
    different = [r for r in results if isinstance(r, Different)]
    if name.endswith("-ipv6.yaml"):
        assert different == [], [str(r) for r in different]
        return
    assert len(different) == 1, [str(r) for r in different]
    (d,) = different
    dst = ipaddress.ip_address(d.flow.dst)
    assert dst in ipaddress.ip_network("127.0.0.0/8") and dst != ipaddress.ip_address("127.0.0.1")
    assert d.flow.client != "peer" and "(uid 1337," in str(d.a), str(d.a)  # the proxy's uid opens it
    assert d.a.summary.endswith("<-127.0.0.1") and d.b.summary.startswith("in, ") and d.b.summary.endswith("<-127.0.0.6")


def test_searching_fewer_rule_slots_first_gives_the_full_search_s_minimum() -> None:
    """``synthesize`` tries 1, 2, 4 rule slots before ``max_rules`` (6); one search over all 6 slots
    finds an answer of the same size (rules, then conditions). With conditions minimised first, a
    small search could miss a larger answer with fewer conditions, so only the full one is run."""
    from meshsolve.analysis.synth import _run, _search, slot_counts

    text = _without_conditions((SPECS / "istio-later-knobs.yaml").read_text())
    spec = parse_spec(text, "later-knobs[derived]")
    assert slot_counts(spec) == (1, 2, 4, 6)
    staged = synthesize(spec)
    full = _run(spec, list(range(len(spec.goals))), _search(spec), None, 0.0)
    assert isinstance(staged, Synthesized) and full is not None, str(staged)
    assert len(staged.rules) == len(full.rules) == 2
    assert sum(map(len, staged.conditions)) == sum(map(len, full.conditions))
    assert staged.solver_calls > full.solver_calls  # the 1-slot search was run first
    conditions_first = parse_spec(text.replace("minimize: [rules, conditions]", "minimize: [conditions, rules]"), "c")
    assert conditions_first.minimize == ("conditions", "rules") and slot_counts(conditions_first) == (6,)


# --- the derived vocabulary is keyed by the kind registry -----------------------------------------


def test_the_vocabulary_tables_are_keyed_by_the_registry() -> None:
    """Every registered match / target kind is either proposed by the derived vocabulary or declared
    not proposed with its reason — never both, never neither; and what the semantics leaves wholly
    undecided is never proposed."""
    from meshsolve.analysis import vocabulary as V
    from meshsolve.model.kinds import COARSENINGS, MATCH_KINDS, TARGET_KINDS

    assert not set(V.MATCH_PROPOSALS) & set(V.NOT_PROPOSED_MATCHES)
    assert {*V.MATCH_PROPOSALS, *V.NOT_PROPOSED_MATCHES} == set(MATCH_KINDS)
    assert not set(V.TARGET_PROPOSALS) & set(V.NOT_PROPOSED_TARGETS)
    assert {*V.TARGET_PROPOSALS, *V.NOT_PROPOSED_TARGETS} == set(TARGET_KINDS)
    reasons = {**V.NOT_PROPOSED_MATCHES, **V.NOT_PROPOSED_TARGETS}
    assert all(isinstance(r, str) and len(r) > 20 for r in reasons.values())
    undecided = {c.kind for c in COARSENINGS if not c.option}
    assert undecided <= set(reasons) and all("undecided" in reasons[k] for k in undecided)
    assert not V.DIVERTING & set(V.TARGET_PROPOSALS)  # diverted to through a jump, not written


def test_each_proposal_builds_its_own_kind_and_derive_uses_them_all() -> None:
    """A proposal keyed by a kind yields conditions made of that kind (a port condition carries its
    protocol); the derived vocabulary of a chain reached from OUTPUT and one from PREROUTING uses
    every proposed kind, and the derived targets every proposed target kind."""
    from meshsolve.analysis import vocabulary as V
    from meshsolve.model.rules import Protocol

    spec = load_spec(SPECS / "istio-1.2-design-space.yaml")
    world, fam = spec.world, spec.family
    seen: set[type] = set()
    for chain in ("ISTIO_OUTPUT", "PREROUTING"):
        tbl = world.rules.for_family(fam).table("nat")
        assert tbl is not None
        place = V.Place(world, fam, V.reaching_hooks(tbl, chain))
        for kind, propose in V.MATCH_PROPOSALS.items():
            for cond in propose(place):
                assert cond is not None and cond.alternatives
                for _text, matches in cond.alternatives:
                    assert kind in {type(m) for m in matches}, (kind, cond)
                    assert {type(m) for m in matches} <= {kind, Protocol}, (kind, cond)
        derived = V.derive_conditions(world, fam, "nat", chain)
        seen |= {type(m) for c in derived for _t, ms in c.alternatives for m in ms}
    assert seen - {Protocol} == set(V.MATCH_PROPOSALS)
    targets = V.derive_targets(world, fam, "nat", "ISTIO_OUTPUT")
    assert {type(t) for _n, t in targets} == set(V.TARGET_PROPOSALS)
