"""meshsolve.strategies as users see them: documented, and generating values the layers accept."""

from __future__ import annotations

import inspect
import ipaddress

import attrs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import meshsolve.strategies as S
from meshsolve import App, Flow, ProxyBehavior, Rule, Socket, World, WorldError, interpret, world_from_flags

DOC_SPACE = [ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24",
                                               "127.0.0.0/8", "2001:db8::/32", "::1/128", "::6/128")]
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_every_public_strategy_is_documented() -> None:
    for name in S.__all__:
        value = getattr(S, name)
        if callable(value):
            assert inspect.getdoc(value), name
    for name in ("addresses", "binds", "sockets", "rules", "rulesets", "worlds", "small_worlds", "flows"):
        assert name in S.__all__
        assert f"``{name}(" in (S.__doc__ or ""), f"{name} missing from the module overview"


@FAST
@given(st.sampled_from(["ipv4", "ipv6"]).flatmap(lambda fam: st.tuples(st.just(fam), S.addresses(fam))))
def test_addresses_stay_in_documentation_space(pair: tuple[str, ipaddress.IPv4Address]) -> None:
    fam, addr = pair
    assert (addr.version == 4) == (fam == "ipv4")
    assert any(addr in n for n in DOC_SPACE if n.version == addr.version)


@FAST
@given(st.lists(S.sockets("ipv4", ports=(8080, 8081)), max_size=2, unique_by=lambda s: s.port))
def test_sockets_make_valid_apps(socks: list[Socket]) -> None:
    world = world_from_flags(["-p", "15001", "-u", "1337", "-b", "*"], apps=(App("web", sockets=tuple(socks)),))
    for s in socks:
        assert s.bind in (ipaddress.ip_address("0.0.0.0"), ipaddress.ip_address("127.0.0.1"), world.pod_ips[0])


@FAST
@given(st.data())
def test_flows_always_start_in_their_world(data: st.DataObject) -> None:
    """Any flow ``flows(world)`` draws is accepted by the interpreter (no WorldError), for both
    world strategies; and it is deterministic."""
    world: World = data.draw(st.one_of(S.small_worlds(), S.worlds()))
    flow: Flow = data.draw(S.flows(world))
    try:
        result = interpret(world, flow)
    except WorldError as exc:  # pragma: no cover - the failure message is the point
        raise AssertionError(f"flows() drew {flow} that cannot start in the world: {exc}") from None
    assert result == interpret(world, flow)
    if flow.client == "peer":
        assert flow.dst in world.pod_ips


def test_flows_reach_every_kind_of_end() -> None:
    """The strategy is not degenerate: over a few hundred draws it finds deliveries, egress,
    refusals and loops."""
    kinds: set[str] = set()

    @settings(max_examples=300, deadline=None, database=None)
    @given(st.data())
    def collect(data: st.DataObject) -> None:
        world = data.draw(S.small_worlds())
        kinds.add(type(interpret(world, data.draw(S.flows(world))).outcome).__name__)

    collect()
    assert {"Delivered", "Egress", "Refused", "Loop"} <= kinds, kinds


@FAST
@given(S.proxy_behaviors(("ipv4", "ipv6")))
def test_proxy_behaviors_fit_a_world(proxy: ProxyBehavior) -> None:
    World(pod_ips=("192.0.2.10", "2001:db8::10"), peer_ips=("192.0.2.20",), proxy=proxy)


# --- the kind tables: one entry per match / target kind --------------------------------------------

def test_the_kind_tables_are_keyed_by_the_registry() -> None:
    """One table entry per registered match / target kind: nothing is left undrawn, and the
    tables know no kind the registry does not (``meshsolve.model.kinds``)."""
    from meshsolve.model.kinds import MATCH_KINDS, TARGET_KINDS
    from meshsolve.strategies._rules import BASIC_MATCHES, MODULE_MATCHES, TARGETS

    assert not set(BASIC_MATCHES) & set(MODULE_MATCHES)
    assert {*BASIC_MATCHES, *MODULE_MATCHES} == set(MATCH_KINDS)
    assert set(TARGETS) == set(TARGET_KINDS)


def test_every_table_entry_is_drawn_as_its_kind() -> None:
    """Each entry builds its own kind (a new entry cannot be keyed by one class and build another),
    and every kind of the tables is reached through the public ``rules()`` and ``targets()``."""
    from hypothesis import Phase

    from meshsolve.strategies._rules import BASIC_MATCHES, MODULE_MATCHES, TARGETS, Place

    place = Place("ipv4", "filter", "OUTPUT", proto="tcp", jumpable=("A",), nft=True)
    entries = [(kind, entry) for table in (BASIC_MATCHES, MODULE_MATCHES, TARGETS) for kind, entry in table.items()]
    assert all(entry.fits(place) for _, entry in entries)
    # the nftables-only kinds fit only a native nftables table's rule
    iptables_place = attrs.evolve(place, nft=False)
    nft_only = {kind for kind, entry in entries if not entry.fits(iptables_place)}
    assert {k.__module__ for k in nft_only} == {"meshsolve.model.nftrules"}, nft_only
    collect = settings(max_examples=600, deadline=None, database=None, derandomize=True, phases=[Phase.generate],
                       suppress_health_check=list(HealthCheck))
    reached: set[type] = set()

    @settings(collect, max_examples=20)
    @given(st.data())
    def build_each(data: st.DataObject) -> None:
        for kind, entry in entries:
            value = data.draw(entry.build(place))
            assert type(value) is kind, (kind, value)

    @collect
    @given(S.rules("ipv4", "filter", "OUTPUT", nft=True))
    def from_rules(rule: Rule) -> None:
        reached.update(type(m) for m in rule.matches)

    @collect
    @given(S.targets("ipv4", "filter", "OUTPUT", ("A",), proto="tcp", nft=True))
    def from_targets(target: object) -> None:
        reached.add(type(target))

    build_each()
    from_rules()
    from_targets()
    kinds = {kind for kind, _ in entries}
    assert reached == kinds, kinds - reached
