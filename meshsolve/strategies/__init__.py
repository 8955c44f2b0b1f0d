"""Hypothesis strategies for meshsolve values (public: import them in your own property tests).

Everything public, by what it draws (all addresses are documentation or loopback addresses):

* addresses and ports: ``addresses(family)``, ``networks(family)``, ``port_ranges()``, and
  ``binds(family)`` (wildcard, loopback, pod IP: the columns of the bind matrix);
  ``SPECIAL_DESTINATIONS`` (what ``connect()`` rewrites or refuses: 0.0.0.0, broadcast, multicast,
  link-local);
* rules: ``matches()``, ``targets()``, ``rules()``, ``chains()`` (user chain names from
  ``chain_names``), ``tables()``;
* rulesets: ``rulesets(family)``, ``rulesets_pair()`` (IPv4 + IPv6), ``capture_rulesets()``
  (istio-init-shaped nat tables);
* worlds: ``worlds()`` (the kernel oracle's: one to three apps, dual-stack possible, addresses from
  ``WORLD_ADDRS``), ``small_worlds()`` (one app, one family: the solver differential test's,
  addresses ``SMALL_WORLD_ADDRS``, app ports ``SMALL_WORLD_PORTS``, the proxy's own listener
  ``SMALL_WORLD_OWN_PORT``, rules of every kind in every
  table at every hook, ``SMALL_WORLD_CHAINS``, with values from ``small_world_palette(family)``),
  ``proxy_behaviors()``, ``sockets(family)``;
* flows: ``flows(world)`` (any flow that can start in a given world), ``world_flows(world)`` (the
  bind matrix, not a strategy), ``worlds_and_flows()``.

Rules, chains, tables and rulesets are in the *normal form* the parser produces, so
``parse(render(x)) == x`` holds for all of them; with ``kernel=True`` the real kernel accepts them
too (see :mod:`meshsolve.strategies._rules` for where each kind may be drawn, one table entry per
match or target kind).

A user's own property test::

    from hypothesis import given, strategies as st
    from meshsolve import interpret
    from meshsolve.strategies import flows, small_worlds

    @given(st.data())
    def test_no_flow_is_undetermined(data):
        world = data.draw(small_worlds())
        result = interpret(world, data.draw(flows(world)))
        assert result.outcome.token != "undetermined", str(result)
"""

from meshsolve.strategies._addresses import (
    SMALL_WORLD_ADDRS,
    SPECIAL_DESTINATIONS,
    WORLD_ADDRS,
    addresses,
    binds,
    networks,
    port_ranges,
)
from meshsolve.strategies._flows import flows, world_flows, worlds_and_flows
from meshsolve.strategies._rules import (
    chain_names,
    chains,
    matches,
    rules,
    rulesets,
    rulesets_pair,
    tables,
    targets,
)
from meshsolve.strategies._worlds import (
    SMALL_WORLD_CHAINS,
    SMALL_WORLD_OWN_PORT,
    SMALL_WORLD_PORTS,
    capture_rulesets,
    proxy_behaviors,
    small_world_palette,
    small_worlds,
    sockets,
    worlds,
)

__all__ = [
    # addresses and ports
    "addresses", "binds", "networks", "port_ranges",
    # rules and rulesets
    "capture_rulesets", "chain_names", "chains", "matches", "rules", "rulesets", "rulesets_pair", "tables",
    "targets",
    # worlds
    "SMALL_WORLD_ADDRS", "SMALL_WORLD_CHAINS", "SMALL_WORLD_OWN_PORT", "SMALL_WORLD_PORTS", "SPECIAL_DESTINATIONS",
    "WORLD_ADDRS",
    "proxy_behaviors", "small_world_palette", "small_worlds", "sockets", "worlds",
    # flows
    "flows", "world_flows", "worlds_and_flows",
]
