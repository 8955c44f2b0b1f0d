"""The solver against exhaustive concrete enumeration on generated worlds.

For a finite scope (a few destinations, a few ports, a few process ids) the solver's verdict —
no counterexample, or a counterexample that replays — must equal what interpreting every flow of
the scope says. ``check`` already raises ``InternalError`` when a witness does not replay; here we
also catch the other direction: a proof where enumeration finds a violation.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshsolve.analysis.check import enumerate_scope, holds
from meshsolve.model import (
    App,
    Chain,
    Destination,
    Endpoint,
    Jump,
    MarkMatch,
    OutInterface,
    OwnerMatch,
    PortMatch,
    Protocol,
    ProxyBehavior,
    Redirect,
    Return,
    Rule,
    Ruleset,
    Rulesets,
    Service,
    SetMark,
    Socket,
    Source,
    Table,
    World,
    to_address,
)
from meshsolve.semantics.interpret import interpret
from meshsolve.semantics.trace import Delivered, Result
from meshsolve.smt.query import (
    AllOf,
    Captured,
    DeliveredTo,
    EndsAs,
    Not,
    Observed,
    ObservedExactly,
    Pred,
    Scope,
    SourceIs,
)
from meshsolve.smt.solve import Candidate, NoWitness, search

EXAMPLES = int(os.environ.get("MESHSOLVE_DIFF_EXAMPLES", "500"))

FAM = {
    "ipv4": dict(pod="192.0.2.10", peer="192.0.2.20", vip="198.51.100.1", remote="203.0.113.5",
                 lo="127.0.0.1", src6="127.0.0.6", any="0.0.0.0", lonet="127.0.0.1/32",
                 srcnet="127.0.0.6/32", podnet="192.0.2.10/32"),
    "ipv6": dict(pod="2001:db8::10", peer="2001:db8::20", vip="2001:db8:100::1", remote="2001:db8:203::5",
                 lo="::1", src6="::6", any="::", lonet="::1/128", srcnet="::6/128",
                 podnet="2001:db8::10/128"),
}
PORTS = (9001, 9002, 9003)


@st.composite
def worlds(draw: st.DrawFn) -> World:
    fam = draw(st.sampled_from(["ipv4", "ipv4", "ipv6"]))
    a = FAM[fam]
    # app sockets: distinct (bind, port)
    binds = [a["any"], a["lo"], a["pod"]]
    socks = draw(st.lists(st.tuples(st.sampled_from(binds), st.sampled_from(PORTS)), max_size=3,
                          unique_by=lambda t: t[1]))
    app = App("app", uid=1000, gid=1000, sockets=tuple(Socket(b, p) for b, p in socks))
    inbound_port = draw(st.sampled_from([15006, None]))
    proxy = ProxyBehavior(
        uid=1337, gid=1337, outbound_port=15001, inbound_port=inbound_port,
        virtual_inbound_dispatch=inbound_port is None or draw(st.booleans()),
        inbound_ports=draw(st.sampled_from([None, PORTS, PORTS[:1]])),
        inbound_endpoint=draw(st.sampled_from(["localhost", "original_dst"])),
        inbound_source_v4=draw(st.sampled_from([None, "127.0.0.6"])),
        inbound_source_v6=draw(st.sampled_from([None, "::6"])),
    )
    eps = draw(st.sampled_from([(Endpoint(a["pod"], 9001),), (Endpoint(a["pod"], 9003), Endpoint(a["remote"], 80))]))
    svc = Service("svc", a["vip"], 9001, eps)
    in_port = inbound_port or 15001

    matches = st.sampled_from([
        OutInterface("lo"), OutInterface("lo", True), Destination(a["lonet"]), Destination(a["lonet"], True),
        Source(a["srcnet"]), Destination(a["podnet"]), OwnerMatch(uid="1337"), OwnerMatch(uid="1337", uid_negated=True),
        OwnerMatch(gid="1337"), PortMatch("tcp", dport=9002), PortMatch("tcp", dport=9001, dport_negated=True),
        MarkMatch(0x53A), OwnerMatch(gid="1337", gid_negated=True),
    ])
    targets = st.sampled_from([Return(), Jump("ISTIO_REDIRECT"), Jump("ISTIO_IN_REDIRECT")])
    out_rules = draw(st.lists(st.builds(lambda ms, t: Rule((Protocol("tcp"), *ms), t),
                                        st.lists(matches, max_size=3, unique_by=type), targets), max_size=6))
    inbound_rules = draw(st.lists(st.sampled_from([
        Rule((Protocol("tcp"), PortMatch("tcp", dport=p)), Return()) for p in (*PORTS, 15008)]),
        max_size=2, unique=True))
    inbound_rules.append(Rule((Protocol("tcp"),), Jump("ISTIO_IN_REDIRECT")))
    nat_chains = [
        Chain("PREROUTING", (Rule((Protocol("tcp"),), Jump("ISTIO_INBOUND")),) if draw(st.booleans()) else (),
              "ACCEPT"),
        Chain("OUTPUT", (Rule((Protocol("tcp"),), Jump("ISTIO_OUTPUT")),), "ACCEPT"),
        Chain("ISTIO_INBOUND", tuple(inbound_rules)),
        Chain("ISTIO_OUTPUT", tuple(out_rules)),
        Chain("ISTIO_REDIRECT", (Rule((Protocol("tcp"),), Redirect(15001)),)),
        Chain("ISTIO_IN_REDIRECT", (Rule((Protocol("tcp"),), Redirect(in_port)),)),
    ]
    tables = [Table("nat", tuple(nat_chains))]
    if draw(st.booleans()):  # mangle OUTPUT marks the proxy's lo traffic (seen by nat's mark match)
        tables.append(Table("mangle", (Chain("OUTPUT", (
            Rule((OutInterface("lo"), Protocol("tcp"), OwnerMatch(uid="1337")), SetMark(0x53A)),), "ACCEPT"),)))
    rs = Ruleset(fam, tuple(tables))
    rules = Rulesets(ipv4=rs) if fam == "ipv4" else Rulesets(ipv6=rs)
    return World(pod_ips=(a["pod"],), peer_ips=(a["peer"],), apps=(app,), proxy=proxy, services=(svc,),
                 rules=rules)


PREDS = [Not(EndsAs({"loop"})), EndsAs({"delivered"}), Observed("out"), Observed("in"), Captured(),
         Captured("out"), DeliveredTo(port=9001), Not(EndsAs({"refused", "dropped"})),
         EndsAs({"egress", "delivered"})]


def scopes(w: World) -> list[Scope]:
    fam = w.families[0]
    a = FAM[fam]
    dsts = tuple(to_address(a[k]) for k in ("pod", "lo", "vip", "remote", "src6"))
    nets = tuple(str(d) for d in dsts)
    ports = tuple(str(p) for p in (*PORTS, 15001, 15006, 80))
    return [
        Scope(family=fam, client="peer", dports=ports),
        Scope(family=fam, client="app", app="app", dst=nets, dports=ports),
        Scope(family=fam, client="proxy", dst=nets, dports=ports),
        Scope(family=fam, client="any-app", ids=((1000, 1000), (1337, 1000), (1000, 1337)), dst=nets,
              dports=ports),
    ]


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds(), st.sampled_from(PREDS), st.integers(0, 3))
def test_solver_agrees_with_enumeration(world: World, pred: object, which: int) -> None:
    scope = scopes(world)[which]
    fam = world.families[0]
    dsts = [to_address(FAM[fam][k]) for k in ("pod", "lo", "vip", "remote", "src6")]
    ports = [*PORTS, 15001, 15006, 80]
    violations = [(f, r) for f, _w, r in enumerate_scope(world, scope, dsts=dsts, dports=ports)
                  if not holds(pred, r)]  # type: ignore[arg-type]
    ans = search(world, scope, pred)  # type: ignore[arg-type]
    if isinstance(ans, NoWitness):
        assert not violations, f"solver proved '{pred}' over {scope}, but {violations[0][0]} gives " \
                               f"{violations[0][1].summary}\n{violations[0][1]}"
    else:
        assert isinstance(ans, Candidate), ans
        r = interpret(ans.world, ans.flow)
        assert not holds(pred, r), f"solver witness {ans.flow} does not violate '{pred}': {r.summary}\n{r}"  # type: ignore[arg-type]
        assert violations, f"solver found {ans.flow} but enumeration found no violation"


def signature(r: Result) -> Pred:
    """Everything the solver models about a concrete result, as one predicate."""
    from meshsolve.analysis.check import outcome_kind

    parts: list[Pred] = [EndsAs({outcome_kind(r)}), ObservedExactly(r.observed)]
    if isinstance(r.outcome, Delivered):
        o = r.outcome
        parts += [DeliveredTo(app=o.app, bind=o.socket.bind, port=o.socket.port), SourceIs(o.source)]
    return AllOf(parts)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds(), st.data())
def test_solver_reproduces_each_flow_exactly(world: World, data: st.DataObject) -> None:
    """Point checks: for single flows, the solver proves the interpreter's exact end."""
    fam = world.families[0]
    a = FAM[fam]
    for _ in range(3):
        client = data.draw(st.sampled_from(["peer", "app", "proxy"]))
        dst = a["pod"] if client == "peer" else data.draw(st.sampled_from([a[k] for k in ("pod", "lo", "vip", "remote", "src6")]))
        port = data.draw(st.sampled_from([*PORTS, 15001, 15006, 80]))
        flow_kw = dict(client=client, dst=dst, dport=port)
        from meshsolve.model import Flow

        r = interpret(world, Flow(**flow_kw))  # type: ignore[arg-type]
        scope = Scope(family=fam, client=client if client != "app" else "app",  # type: ignore[arg-type]
                      app="app" if client == "app" else None, dst=(dst,), dports=(str(port),))
        sig = signature(r)
        ans = search(world, scope, sig)
        if isinstance(ans, Candidate):
            # another endpoint choice of the same flow may end differently: that is not a disagreement
            other = interpret(ans.world, ans.flow)
            assert ans.flow.endpoint != 0 and other.summary != r.summary, (
                f"the solver says {ans.flow} does not end as the interpreter says ({r.summary}; "
                f"replayed: {other.summary})\n{r}")
        else:
            assert isinstance(ans, NoWitness), ans


@pytest.mark.slow
@settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds(), st.sampled_from(PREDS), st.integers(0, 3))
def test_solver_agrees_with_enumeration_slow(world: World, pred: object, which: int) -> None:
    test_solver_agrees_with_enumeration.hypothesis.inner_test(world, pred, which)  # type: ignore[attr-defined]
