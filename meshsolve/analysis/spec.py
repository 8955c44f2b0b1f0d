"""Synthesis specs: a pod world, the goals, the search space and what "minimal" means (YAML).

A spec reads like this (the shipped ones are under ``specs/``)::

    name: istio-1.2-design-space
    family: ipv4                      # or ipv6
    pod: {ip: 192.0.2.10, peer: 192.0.2.20}
    apps:
      - {name: details, uid: 1000, gid: 1000, listen: ["0.0.0.0:9001"]}
    proxy: {uid: 1337, gid: 1337, outbound_port: 15001, inbound_port: 15006}
    routing:                          # optional: the pod's policy routing, as ip commands
      - ip rule add fwmark 1337 lookup 133
      - ip route add local default dev lo table 133
    services:
      - {name: price, vip: 198.51.100.1, port: 9003, endpoints: ["192.0.2.10:9003"]}
    rules: |                          # the fixed part, any form meshsolve parses
      *nat
      ...
    goals:
      - {name: pod-IP listener reachable, reachable: {client: peer, port: 9003}}
      - {name: no loops, no_loops: {}}
    search:
      chain: ISTIO_OUTPUT             # a nat chain of the fixed rules, rewritten by the search
      max_rules: 5
      conditions: ["-o lo", "! -d 127.0.0.1/32", "-m owner --uid-owner 1337"]
      targets: [RETURN, ISTIO_REDIRECT, ISTIO_IN_REDIRECT]
      knobs: {inbound_endpoint: [localhost, original_dst], inbound_source: [none, passthrough]}
    minimize: [rules, conditions]
    flows:                            # named flows: the oracle replays them, equivalence uses them
      - {client: peer, dst: 192.0.2.10, port: 9003}

The proxy may also say ``transparent`` (IP_TRANSPARENT listeners, as TPROXY needs),
``inbound_original_source`` (the inbound side connects upstream from the client's address) and
``upstream_mark`` (SO_MARK on that upstream socket). ``routing`` lines are ``ip [-4|-6] rule add
[not] fwmark V[/M] lookup T [pref P]`` and ``ip [-4|-6] route add [TYPE] PREFIX|default [dev D]
table T``.

Goal kinds: ``reachable`` (client, port, dst?, app?) — every such connection that ends is
delivered (termination is the ``no_loops`` goal's business: partial correctness), ``private``
(localhost-only sockets are not reachable from a peer), ``observed`` (client, dst, port, sides,
delivered?), ``leaves`` (client, dst, port, sides?, exactly? — the
connection leaves the pod, seen by the proxy on those sides, or on exactly those),
``captured_outbound`` (exclude_ports?), ``no_loops`` (ports? — only connections to those ports),
``captured_inbound`` (ports?), ``bypass``.
Every error names the spec file and line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import yaml

import meshsolve.defaults as defaults
from meshsolve.analysis.properties import (
    Bypass,
    CaptureInbound,
    CaptureOutbound,
    Direct,
    Exempt,
    LeavesPod,
    NoExposure,
    NoLoops,
    Observation,
    Property,
    Reachable,
)
from meshsolve.analysis.vocabulary import derive_conditions, derive_targets
from meshsolve.errors import MeshsolveError, ParseError, SpecError
from meshsolve.iproute import parse_routing
from meshsolve.iptables import parse_text
from meshsolve.model.kinds import COARSENINGS
from meshsolve.model.net import Family, IPAddress, to_address, to_port
from meshsolve.model.routing import Route, Routing, RoutingRule
from meshsolve.model.rules import Rulesets, Target
from meshsolve.model.world import App, Endpoint, Flow, ProxyBehavior, Service, Socket, World
from meshsolve.smt.query import Condition
from meshsolve.yamllines import node_line, yaml_tree

__all__ = ["Goal", "SearchSpace", "Spec", "load_spec", "parse_spec"]

GOAL_KINDS = ("reachable", "private", "observed", "leaves", "no_loops", "captured_outbound",
              "captured_inbound", "bypass", "direct", "exempt")
KNOBS = {"inbound_endpoint": ("localhost", "original_dst"), "inbound_source": ("none", "passthrough")}


@attrs.frozen
class Goal:
    """A named property, in the user's words, with the spec line it came from."""

    name: str
    prop: Property
    line: int = attrs.field(default=0, eq=False)

    def __str__(self) -> str:
        return self.name


@attrs.frozen
class SearchSpace:
    """Which chain is rewritten, with which conditions and targets, and which proxy knobs."""

    table: str
    chain: str
    max_rules: int
    conditions: tuple[Condition, ...]  # what a rule may test (holes: several alternatives)
    targets: tuple[tuple[str, Target], ...]
    knobs: tuple[tuple[str, tuple[str, ...]], ...]


@attrs.frozen
class Spec:
    """A synthesis spec (``load_spec``/``parse_spec``): the pod world, the goals, the search space, the
    order of what is minimised, and the example flows that seed the search."""

    name: str
    source: str
    family: Family
    world: World
    goals: tuple[Goal, ...]
    search: SearchSpace
    minimize: tuple[str, ...]
    flows: tuple[Flow, ...]
    description: str = ""


class _Node:
    """A YAML node with its line, converted on demand with errors that name the line."""

    def __init__(self, node: yaml.Node, source: str, path: str) -> None:
        self.node = node
        self.source = source
        self.path = path

    @property
    def line(self) -> int:
        return node_line(self.node)

    def fail(self, message: str) -> SpecError:
        return SpecError(f"{self.path}: {message}", source=self.source, lineno=self.line)

    def mapping(self) -> dict[str, _Node]:
        if not isinstance(self.node, yaml.MappingNode):
            raise self.fail("expected a mapping")
        out: dict[str, _Node] = {}
        for k, v in self.node.value:
            key = str(k.value)
            if key in out:
                raise _Node(k, self.source, self.path).fail(f"key {key!r} appears twice")
            out[key] = _Node(v, self.source, f"{self.path}.{key}" if self.path else key)
        return out

    def sequence(self) -> list[_Node]:
        if not isinstance(self.node, yaml.SequenceNode):
            raise self.fail("expected a list")
        return [_Node(v, self.source, f"{self.path}[{i}]") for i, v in enumerate(self.node.value)]

    def scalar(self) -> str:
        if not isinstance(self.node, yaml.ScalarNode):
            raise self.fail("expected a single value")
        return str(self.node.value)

    def optional_scalar(self) -> str | None:
        if isinstance(self.node, yaml.ScalarNode) and self.node.tag.endswith(":null"):
            return None
        return self.scalar()

    def integer(self) -> int:
        text = self.scalar()
        try:
            return int(text)
        except ValueError:
            raise self.fail(f"expected a whole number, got {text!r}") from None

    def boolean(self) -> bool:
        text = self.scalar().lower()
        if text in ("true", "yes", "on"):
            return True
        if text in ("false", "no", "off"):
            return False
        raise self.fail(f"expected true or false, got {text!r}")


def _check_keys(m: dict[str, _Node], where: _Node, allowed: tuple[str, ...], required: tuple[str, ...] = ()
                ) -> None:
    for k, n in m.items():
        if k not in allowed:
            raise n.fail(f"unknown key {k!r} (expected one of: {', '.join(allowed)})")
    for k in required:
        if k not in m:
            raise where.fail(f"missing key {k!r}")


def _wrap(n: _Node, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except SpecError:
        raise
    except (MeshsolveError, ValueError) as exc:
        raise n.fail(str(exc)) from None


def _hostport(n: _Node) -> tuple[IPAddress, int]:
    text = n.scalar().strip()
    if text.startswith("["):
        host, _, port = text[1:].partition("]:")
    else:
        host, _, port = text.rpartition(":")
    if not host or not port:
        raise n.fail(f"expected ADDRESS:PORT (IPv6 as [ADDRESS]:PORT), got {text!r}")
    return _wrap(n, to_address, host), _wrap(n, to_port, port)


def _goal(n: _Node, apps: tuple[App, ...]) -> Goal:
    m = n.mapping()
    name = m["name"].scalar() if "name" in m else ""
    kinds = [k for k in m if k != "name"]
    if len(kinds) != 1 or kinds[0] not in GOAL_KINDS:
        raise n.fail(f"a goal needs a name and exactly one kind of: {', '.join(GOAL_KINDS)}"
                     + (f" (got {', '.join(kinds)})" if kinds else ""))
    kind = kinds[0]
    body = m[kind]
    args = body.mapping() if isinstance(body.node, yaml.MappingNode) else {}
    app_names = {a.name for a in apps}

    def client(key: str = "client") -> str:
        if key not in args:
            raise body.fail(f"missing key {key!r}")
        c = args[key].scalar()
        if c not in ("peer", "proxy") and c not in app_names:
            raise args[key].fail(f"unknown client {c!r} (expected peer, proxy or an app: "
                                 f"{', '.join(sorted(app_names))})")
        return c

    prop: Property
    if kind == "reachable":
        _check_keys(args, body, ("client", "port", "dst", "app"), ("client", "port"))
        prop = Reachable(client(), args["port"].integer(),
                         dst=_wrap(args["dst"], to_address, args["dst"].scalar()) if "dst" in args else None,
                         app=args["app"].scalar() if "app" in args else None, partial=True, name=name)
    elif kind == "private":
        _check_keys(args, body, ())
        prop = NoExposure(name=name)
    elif kind == "observed":
        _check_keys(args, body, ("client", "dst", "port", "sides", "delivered", "exactly"),
                    ("client", "dst", "port"))
        sides = tuple(x.scalar() for x in args["sides"].sequence()) if "sides" in args else ("out", "in")
        for x, sn in zip(sides, args["sides"].sequence() if "sides" in args else [], strict=False):
            if x not in ("out", "in"):
                raise sn.fail(f"a side is 'out' (client side) or 'in' (server side), got {x!r}")
        dst = _wrap(args["dst"], to_address, args["dst"].scalar())
        prop = Observation(client(), dst, args["port"].integer(), sides=sides,  # type: ignore[arg-type]
                           delivered=args["delivered"].boolean() if "delivered" in args else False,
                           exactly=args["exactly"].boolean() if "exactly" in args else False, name=name)
    elif kind == "leaves":
        _check_keys(args, body, ("client", "dst", "port", "sides", "exactly"), ("client", "dst", "port"))
        sides = tuple(x.scalar() for x in args["sides"].sequence()) if "sides" in args else ("out",)
        prop = LeavesPod(client(), _wrap(args["dst"], to_address, args["dst"].scalar()), args["port"].integer(),
                         sides=sides, exactly=args["exactly"].boolean() if "exactly" in args else False,  # type: ignore[arg-type]
                         name=name)
    elif kind == "no_loops":
        _check_keys(args, body, ("ports",))
        loop_ports = tuple(p.integer() for p in args["ports"].sequence()) if "ports" in args else None
        prop = NoLoops(ports=loop_ports, name=name)
    elif kind == "captured_outbound":
        _check_keys(args, body, ("exclude_ports",))
        ex = tuple(p.integer() for p in args["exclude_ports"].sequence()) if "exclude_ports" in args else ()
        prop = CaptureOutbound(exclude_ports=ex, name=name)
    elif kind == "captured_inbound":
        _check_keys(args, body, ("ports",))
        ports = tuple(p.integer() for p in args["ports"].sequence()) if "ports" in args else None
        prop = CaptureInbound(ports=ports, name=name)
    elif kind == "direct":
        _check_keys(args, body, ("client", "dst", "port"), ("client", "dst"))
        who = args["client"].scalar() if args["client"].scalar() == "any-app" else client()
        prop = Direct(who, _wrap(args["dst"], to_address, args["dst"].scalar()),
                      args["port"].integer() if "port" in args else None, name=name)
    elif kind == "exempt":
        _check_keys(args, body, ("ports", "directions"), ("ports",))
        ports = tuple(p.integer() for p in args["ports"].sequence())
        if "directions" in args:
            dirs = tuple(x.scalar() for x in args["directions"].sequence())
            prop = _wrap(args["directions"], lambda: Exempt(ports, dirs, name=name))
        else:
            prop = Exempt(ports, name=name)
    else:
        _check_keys(args, body, ("by",))
        by = args["by"].scalar() if "by" in args else "proxy"
        if by not in ("proxy", "uid-or-gid"):
            raise args["by"].fail(f"bypass is by 'proxy' or 'uid-or-gid', got {by!r}")
        prop = Bypass(name=name, by_uid_or_gid=by == "uid-or-gid")
    return Goal(name or prop.title(), prop, n.line)


def _conditions(n: _Node, source: str, family: Family) -> tuple[Condition, ...]:
    out = []
    marker = "# ipv6\n" if family == "ipv6" else ""
    for c in n.sequence():
        text = c.scalar()
        where = f"{source}:{c.line}"
        rules = _wrap(c, lambda t=text, w=where: parse_text(
            f"{marker}*nat\n:X - [0:0]\n-A X {t} -j RETURN\nCOMMIT\n", source=w))
        chain = rules.for_family(family).chain("nat", "X")
        assert chain is not None
        (rule,) = chain.rules
        if not rule.matches:
            raise c.fail(f"condition {text!r} matches everything: leave it out")
        for m in rule.matches:
            _refuse_undecided(c, f"condition {text!r}", m)
        out.append(Condition(text, ((text, rule.matches),)))
    if not out:
        raise n.fail("the search needs at least one condition (an empty vocabulary can only express "
                     "unconditional rules)")
    return tuple(out)


def _refuse_undecided(n: _Node, what: str, value: object) -> None:
    """A condition or target of a kind the semantics leaves wholly undecided (``COARSENINGS``) can
    never be proved: refused with the line."""
    c = next((c for c in COARSENINGS if c.kind is type(value) and not c.option), None)
    if c is not None:
        raise n.fail(f"{what} is {c.rule}, which meshsolve leaves undecided ({c.why}): a rule made of it "
                     "cannot be proved")


def _named(goals: tuple[Goal, ...], world: World) -> dict[str, Any]:
    """The single addresses and ports the goals' scopes name (for the derived vocabulary)."""
    nets, ports = [], []
    for g in goals:
        for scope, _pred in g.prop.checks(world):
            nets += [n for n in scope.dst or () if n.num_addresses == 1]
            for r in (*(scope.dports or ()), *scope.dports_not):
                if r.lo == r.hi:
                    ports.append(r.lo)
    return {"nets": nets, "ports": ports}


def _targets(n: _Node, rules: Rulesets, family: Family, table: str) -> tuple[tuple[str, Target], ...]:
    out = []
    tbl = rules.for_family(family).table(table)
    user = [c.name for c in tbl.chains if not c.builtin] if tbl is not None else []
    decl = "".join(f":{c} - [0:0]\n" for c in user if c != "X")
    for t in n.sequence():
        text = t.scalar()
        marker = "# ipv6\n" if family == "ipv6" else ""
        parsed = _wrap(t, lambda x=text, m=marker: parse_text(f"{m}*{table}\n:X - [0:0]\n{decl}-A X -j {x}\nCOMMIT\n"))
        chain = parsed.for_family(family).chain(table, "X")
        assert chain is not None
        target = chain.rules[0].target
        assert target is not None
        _refuse_undecided(t, f"target {text!r}", target)
        name = getattr(target, "chain", None)
        if name is not None and rules.for_family(family).chain(table, name) is None:
            raise t.fail(f"target chain {name} is not in the spec's rules (table {table})")
        out.append((text, target))
    if not out:
        raise n.fail("the search needs at least one target")
    return tuple(out)


def parse_spec(text: str, source: str = "<spec>") -> Spec:
    """Parse a spec from YAML text; every error is a ``SpecError`` naming the line."""
    root_node = yaml_tree(text, source)
    if root_node is None:
        raise SpecError("the spec is empty", source=source, lineno=1)
    root = _Node(root_node, source, "")
    top = root.mapping()
    _check_keys(top, root, ("name", "description", "family", "pod", "apps", "proxy", "routing", "services",
                            "rules", "goals", "search", "minimize", "flows"),
                ("name", "pod", "apps", "rules", "goals", "search"))
    family_text = top["family"].scalar() if "family" in top else "ipv4"
    if family_text not in ("ipv4", "ipv6"):
        raise top["family"].fail(f"family is ipv4 or ipv6, got {family_text!r}")
    family: Family = "ipv4" if family_text == "ipv4" else "ipv6"

    pod = top["pod"].mapping()
    _check_keys(pod, top["pod"], ("ip", "peer", "interface", "name", "namespace"), ("ip", "peer"))
    pod_ip = _wrap(pod["ip"], to_address, pod["ip"].scalar())
    peer_ip = _wrap(pod["peer"], to_address, pod["peer"].scalar())
    for n, a in ((pod["ip"], pod_ip), (pod["peer"], peer_ip)):
        if (a.version == 4) != (family == "ipv4"):
            raise n.fail(f"{a} is not an {family} address")
    if pod_ip == peer_ip:
        raise pod["peer"].fail("the peer cannot have the pod's own address")

    apps: list[App] = []
    for an in top["apps"].sequence():
        am = an.mapping()
        _check_keys(am, an, ("name", "uid", "gid", "listen"), ("name",))
        socks = []
        for ln in am["listen"].sequence() if "listen" in am else []:
            host, port = _hostport(ln)
            socks.append(Socket(host, port))
        apps.append(App(am["name"].scalar(), uid=am["uid"].integer() if "uid" in am else defaults.APP_UID,
                        gid=am["gid"].integer() if "gid" in am else defaults.APP_GID, sockets=tuple(socks)))

    proxy_kw: dict[str, Any] = {}
    if "proxy" in top:
        pm = top["proxy"].mapping()
        _check_keys(pm, top["proxy"], ("uid", "gid", "outbound_port", "inbound_port",
                                       "virtual_inbound_dispatch", "inbound_ports", "inbound_endpoint",
                                       "inbound_source", "transparent", "inbound_original_source",
                                       "upstream_mark", "tunnel_port"))
        for k in ("transparent", "inbound_original_source"):
            if k in pm:
                proxy_kw[k] = pm[k].boolean()
        if "upstream_mark" in pm:
            v = pm["upstream_mark"].optional_scalar()
            proxy_kw["upstream_mark"] = None if v is None else pm["upstream_mark"].integer()
        for k in ("uid", "gid", "outbound_port", "tunnel_port"):
            if k in pm:
                proxy_kw[k] = pm[k].integer()
        if "inbound_port" in pm:
            v = pm["inbound_port"].optional_scalar()
            proxy_kw["inbound_port"] = None if v is None else pm["inbound_port"].integer()
        if "virtual_inbound_dispatch" in pm:
            proxy_kw["virtual_inbound_dispatch"] = pm["virtual_inbound_dispatch"].boolean()
        if "transparent" in pm:
            proxy_kw["transparent"] = pm["transparent"].boolean()
        if "inbound_ports" in pm:
            proxy_kw["inbound_ports"] = tuple(x.integer() for x in pm["inbound_ports"].sequence())
        if "inbound_endpoint" in pm:
            v = pm["inbound_endpoint"].scalar()
            if v not in KNOBS["inbound_endpoint"]:
                raise pm["inbound_endpoint"].fail(f"expected localhost or original_dst, got {v!r}")
            proxy_kw["inbound_endpoint"] = v
        if "inbound_source" in pm:
            v = pm["inbound_source"].scalar()
            if v not in KNOBS["inbound_source"]:
                raise pm["inbound_source"].fail(f"expected none or passthrough, got {v!r}")
            proxy_kw["inbound_source_v4"] = "127.0.0.6" if v == "passthrough" else None
            proxy_kw["inbound_source_v6"] = "::6" if v == "passthrough" else None
    proxy = _wrap(top.get("proxy", root), lambda: ProxyBehavior(**proxy_kw))

    services = []
    for sn in top["services"].sequence() if "services" in top else []:
        sm = sn.mapping()
        _check_keys(sm, sn, ("name", "vip", "port", "endpoints"), ("name", "vip", "port", "endpoints"))
        eps = [Endpoint(*_hostport(e)) for e in sm["endpoints"].sequence()]
        if not eps:
            raise sm["endpoints"].fail("a service needs at least one endpoint")
        services.append(Service(sm["name"].scalar(), _wrap(sm["vip"], to_address, sm["vip"].scalar()),
                                sm["port"].integer(), tuple(eps)))

    rules_node = top["rules"]
    rules_text = rules_node.scalar()
    if family == "ipv6" and "# ipv6" not in rules_text and "ip6tables" not in rules_text:
        rules_text = "# ipv6\n" + rules_text  # a spec's rules are of the spec's family
    rules = _wrap(rules_node, parse_text, rules_text, f"{source}:{rules_node.line}")
    routing = _routing(top["routing"], family, source) if "routing" in top else Routing()
    world = _wrap(root, lambda: World(
        pod_ips=(pod_ip,), peer_ips=(peer_ip,), apps=tuple(apps), proxy=proxy, services=tuple(services),
        rules=rules, routing=routing, interface=pod["interface"].scalar() if "interface" in pod else "eth0",
        name=pod["name"].scalar() if "name" in pod else "pod",
        namespace=pod["namespace"].scalar() if "namespace" in pod else "default"))

    goals = tuple(_goal(g, world.apps) for g in top["goals"].sequence())
    if not goals:
        raise top["goals"].fail("a spec needs at least one goal")
    names = [g.name for g in goals]
    for g in goals:
        if names.count(g.name) > 1:
            raise SpecError(f"goal name {g.name!r} is used twice", source=source, lineno=g.line)

    sm = top["search"].mapping()
    _check_keys(sm, top["search"], ("table", "chain", "max_rules", "conditions", "targets", "knobs"),
                ("chain",))
    table = sm["table"].scalar() if "table" in sm else "nat"
    chain = sm["chain"].scalar()
    if world.rules.for_family(family).chain(table, chain) is None:
        raise sm["chain"].fail(f"chain {table}::{chain} is not in the spec's rules")
    max_rules = sm["max_rules"].integer() if "max_rules" in sm else 6
    if not 1 <= max_rules <= 12:
        raise sm["max_rules"].fail("max_rules must be between 1 and 12")
    knobs: list[tuple[str, tuple[str, ...]]] = []
    if "knobs" in sm:
        for k, kn in sm["knobs"].mapping().items():
            if k not in KNOBS:
                raise kn.fail(f"unknown knob {k!r} (expected one of: {', '.join(KNOBS)})")
            vals = tuple(x.scalar() for x in kn.sequence())
            for x, xn in zip(vals, kn.sequence(), strict=True):
                if x not in KNOBS[k]:
                    raise xn.fail(f"{k} is one of {', '.join(KNOBS[k])}, got {x!r}")
            if not vals:
                raise kn.fail(f"knob {k} needs at least one value")
            knobs.append((k, vals))
    # without a list, the vocabulary and the targets come from the world (meshsolve.analysis.vocabulary)
    conditions = _conditions(sm["conditions"], source, family) if "conditions" in sm else \
        derive_conditions(world, family, table, chain, **_named(goals, world))
    targets = _targets(sm["targets"], world.rules, family, table) if "targets" in sm else \
        derive_targets(world, family, table, chain)
    if len(targets) < 2:
        raise sm["chain"].fail("no target to choose: list 'targets' (the table has no user chain that redirects)")
    search = SearchSpace(table, chain, max_rules, conditions, targets, tuple(knobs))

    minimize = tuple(x.scalar() for x in top["minimize"].sequence()) if "minimize" in top else ("rules",
                                                                                                "conditions")
    for x, xn in zip(minimize, top["minimize"].sequence() if "minimize" in top else [], strict=False):
        if x not in ("rules", "conditions"):
            raise xn.fail(f"minimize rules and/or conditions, got {x!r}")

    flows = []
    for fn in top["flows"].sequence() if "flows" in top else []:
        fm = fn.mapping()
        _check_keys(fm, fn, ("client", "dst", "port", "endpoint"), ("client", "dst", "port"))
        c = fm["client"].scalar()
        if c not in ("peer", "proxy") and c not in {a.name for a in world.apps}:
            raise fm["client"].fail(f"unknown client {c!r}")
        ep = fm["endpoint"].integer() if "endpoint" in fm else 0
        flows.append(_wrap(fn, lambda fm=fm, c=c, ep=ep: Flow(c, fm["dst"].scalar(), fm["port"].integer(),
                                                              endpoint=ep)))
    return Spec(top["name"].scalar(), source, family, world, goals, search, minimize, tuple(flows),
                top["description"].scalar() if "description" in top else "")


_ROUTE_KINDS = ("unicast", "local", "blackhole", "unreachable", "prohibit", "throw")


def _routing(node: _Node, family: Family, source: str) -> Routing:
    """The spec's ``routing``: ``ip rule add ...`` / ``ip route add ...`` lines (a list, or one text
    block), read by the one routing reader (``meshsolve.iproute``); errors name the spec's line."""
    if isinstance(node.node, yaml.SequenceNode):
        items = [(ln, ln.scalar()) for ln in node.sequence()]
    else:  # a block scalar: its text starts on the line after the key
        items = [(node, text) for text in node.scalar().splitlines()]
    rules: list[RoutingRule] = []
    routes: list[Route] = []
    for i, (item, text) in enumerate(items):
        try:
            r = parse_routing(text, family=family, source=source)
        except ParseError as exc:
            line = item.line if item is not node else node.line + 1 + i
            raise SpecError(exc.message, source=source, lineno=line, line=text) from None
        rules.extend(r.rules)
        routes.extend(r.routes)
    routing: Routing = _wrap(node, lambda: Routing(tuple(rules), tuple(routes)))
    return routing


def load_spec(path: str | Path) -> Spec:
    """Read and parse a spec file (see the module docstring for the format)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"cannot read the spec: {exc.strerror}", source=str(p)) from None
    except UnicodeDecodeError:
        raise SpecError("the spec is not UTF-8 text", source=str(p)) from None
    return parse_spec(text, str(p))
