"""Policy routing from the text users have: ``ip rule show`` / ``ip route show table all`` output and
``ip rule add`` / ``ip route add`` commands (what istio-init's TPROXY mode runs) → ``Routing``.

Only what decides where a pod's packets go is kept: rules with a ``fwmark`` (or none) and a
``lookup`` table, and the routes of tables other than ``local`` (the kernel's own ``local`` table
is the pod's addresses, which the World already has; its ``main`` default route is the pod
interface). The kernel's own rules (``0: lookup local``, ``32766: lookup main``, ``32767: lookup
default``) are implied. A rule on anything else (source prefixes, interfaces, uids) is refused with
the line, not ignored.
"""

from __future__ import annotations

import shlex

from meshsolve.errors import ParseError, WorldError
from meshsolve.model.net import Family, to_network
from meshsolve.model.routing import LOCAL_TABLE, MAIN_TABLE, Route, Routing, RoutingRule, table_id

__all__ = ["parse_routing"]

_KERNEL_RULES = {(0, LOCAL_TABLE), (32766, MAIN_TABLE), (32767, 253)}
_ROUTE_TYPES = ("unicast", "local", "blackhole", "unreachable", "prohibit", "throw")
_IGNORED_ROUTE_TYPES = ("broadcast", "anycast", "multicast", "nat")
_OBJECTS = ("rule", "ru", "route", "r", "ro")
_SHOWS = ("show", "list", "lst", "sh", "ls", "l", "s")


def _family_flag(words: list[str], family: Family) -> tuple[list[str], Family]:
    out: list[str] = []
    i = 0
    while i < len(words):
        w = words[i]
        if w == "-6":
            family = "ipv6"
        elif w == "-4":
            family = "ipv4"
        elif w == "-f" and i + 1 < len(words):
            family = "ipv6" if words[i + 1] in ("inet6", "6") else "ipv4"
            i += 1
        elif w.startswith("-") and not out:
            raise WorldError(f"unknown ip option {w!r}")
        else:
            out.append(w)
        i += 1
    return out, family


def _shown_route_family(words: list[str], family: Family) -> Family:
    """The family of one line of ``ip route show`` output. ``ip route show table all`` without
    ``-4`` lists both families, and an IPv6 default route reads like an IPv4 one: an IPv6 address
    (destination or ``via``) or ``pref`` (which ``ip`` prints for every IPv6 route and no IPv4 one)
    says IPv6; otherwise the family given."""
    kinds = ("default", *_ROUTE_TYPES, *_IGNORED_ROUTE_TYPES)
    dst = next((w for w in words if w not in kinds), "")
    via = words[words.index("via") + 1] if "via" in words[:-1] else ""
    if ":" in dst or ":" in via or "pref" in words:
        return "ipv6"
    return family


def _rule(words: list[str], family: Family, priority: int | None) -> RoutingRule | None:
    invert = False
    fwmark: int | None = None
    mask = 0xFFFFFFFF
    table: int | None = None
    i = 0
    while i < len(words):
        w = words[i]
        nxt = words[i + 1] if i + 1 < len(words) else None
        if w == "not":
            invert = True
        elif w == "from" and nxt is not None:
            if nxt != "all" and to_network(nxt).prefixlen != 0:
                raise WorldError(f"a rule on the source address ({nxt}) is not modelled")
            i += 1
        elif w == "to" and nxt is not None:
            if nxt != "all" and to_network(nxt).prefixlen != 0:
                raise WorldError(f"a rule on the destination address ({nxt}) is not modelled")
            i += 1
        elif w == "fwmark" and nxt is not None:
            value, _, m = nxt.partition("/")
            fwmark = int(value, 0)
            mask = int(m, 0) if m else 0xFFFFFFFF
            i += 1
        elif w in ("lookup", "table") and nxt is not None:
            table = table_id(nxt)
            i += 1
        elif w in ("priority", "pref", "preference", "order") and nxt is not None:
            priority = int(nxt)
            i += 1
        elif w in ("proto", "protocol") and nxt is not None:
            i += 1
        else:
            raise WorldError(f"{w!r} in a routing rule is not modelled")
        i += 1
    if table is None:
        raise WorldError("a routing rule without 'lookup TABLE'")
    if priority is None:
        priority = 32765  # what `ip rule add` picks first: one below main's
    if fwmark is None and not invert and (priority, table) in _KERNEL_RULES:
        return None
    return RoutingRule(family, priority, table, fwmark, mask, invert)


def _route(words: list[str], family: Family) -> Route | None:
    kind = "unicast"
    if words and words[0] in _ROUTE_TYPES:
        kind = words.pop(0)
    elif words and words[0] in _IGNORED_ROUTE_TYPES:
        return None
    if not words:
        raise WorldError("a route without a destination")
    dst_text = words.pop(0)
    dst = ("0.0.0.0/0" if family == "ipv4" else "::/0") if dst_text == "default" else dst_text
    net = to_network(dst)
    dev: str | None = None
    table = MAIN_TABLE
    i = 0
    while i < len(words):
        w = words[i]
        nxt = words[i + 1] if i + 1 < len(words) else None
        if w == "dev" and nxt is not None:
            dev = nxt
        elif w == "table" and nxt is not None:
            table = table_id(nxt)
        elif w in ("via", "src", "proto", "scope", "metric", "mtu", "pref", "expires", "hoplimit") and nxt is not None:
            pass
        elif w in ("onlink", "linkdown", "offload", "rt_offload"):
            i += 1
            continue
        else:
            raise WorldError(f"{w!r} in a route is not modelled")
        i += 2
    if kind == "local" and "via" in words:
        raise WorldError("a local route goes to a device, not via a gateway (expected: local PREFIX dev DEV)")
    if table == LOCAL_TABLE:
        return None  # the pod's own addresses: the World has them
    if net.version == 6 and net.network_address.is_link_local:
        return None
    return Route(net, kind, dev, table)  # type: ignore[arg-type]


def parse_routing(text: str, *, family: Family = "ipv4", source: str = "<routing>") -> Routing:
    """Read ``ip rule``/``ip route`` show output or add commands (one per line; ``#`` comments).

    ``family`` is the family of ``ip rule show`` output (``ip -6 rule show`` output looks like the
    IPv4 one) unless the pasted text names its command: a line ``ip -6 rule show`` (``$`` prompt
    allowed) sets the family of the output after it. ``ip route show`` lines say their own family
    where they can (``_shown_route_family``); command lines say theirs. Errors are ``ParseError``
    with the line."""
    rules: list[RoutingRule] = []
    routes: list[Route] = []
    given = family
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            words = shlex.split(line)
            if words[0] == "$" and len(words) > 1:  # a pasted prompt: `$ ip -6 rule show`
                words = words[1:]
            fam = family
            if words and words[0] in ("ip", "/sbin/ip", "/usr/sbin/ip", "/bin/ip"):
                words, fam = _family_flag(words[1:], given)
                if words and words[0] in _OBJECTS and (len(words) == 1 or words[1] in _SHOWS):
                    family = fam  # a pasted `ip [-6] rule show`: the output that follows is of its family
                    continue
                if len(words) < 2 or words[1] not in ("add", "append", "replace", "a"):
                    raise WorldError("only 'ip rule add' and 'ip route add' change the routing")
                what, words = words[0], words[2:]
                if what in ("rule", "ru"):
                    r = _rule(words, fam, None)
                    if r is not None:
                        rules.append(r)
                elif what in ("route", "r", "ro"):
                    rt = _route(words, fam)
                    if rt is not None:
                        routes.append(rt)
                else:
                    raise WorldError(f"'ip {what}' is not routing")
            elif words[0].endswith(":") and words[0][:-1].isdigit():  # ip rule show
                rule = _rule(words[1:], fam, int(words[0][:-1]))
                if rule is not None:
                    rules.append(rule)
            else:  # ip route show: the family is the destination's, or the gateway's, or `pref`'s
                fam = _shown_route_family(words, fam)
                rt = _route(list(words), fam)
                if rt is not None:
                    routes.append(rt)
        except (WorldError, ValueError) as exc:
            raise ParseError(str(exc), source=source, lineno=n, line=raw) from None
    return Routing(tuple(rules), tuple(routes))
