"""From nft's syntax to the rule model: what a native nftables ruleset *does*, for the one semantics.

``lower(ruleset)`` turns each ``ip``/``ip6``/``inet`` table into an ``NftTable`` of the rule model
(``meshsolve.model.rules``): its chains, which of them are base chains (hook, priority, type,
policy), and every rule as model matches and one target. An ``inet`` table goes into both families'
rulesets, an ``ip`` table into IPv4's, an ``ip6`` table into IPv6's; ``arp`` and ``bridge`` tables
never see the pod's IP path and are left out; a ``netdev`` table or an ``ingress`` chain with rules
is refused (``UnsupportedError``: the model has no ingress hook).

A rule is lowered from its kernel form (``kernel_form``: what nft stores, e.g. ``tcp dport != 5 tcp
sport != 6`` as one compare of both ports). Matches mean what the iptables kind of the same name
means where that is so (``ip daddr X`` → ``Destination``, ``tcp dport`` → ``PortMatch``, ``meta mark
& M != V`` → ``MarkMatch``, ``ct state`` → ``ConntrackMatch``, ``iifname`` → ``InInterface``, ``meta
l4proto`` → ``Protocol``); nft's own meanings lower to the kinds of ``meshsolve.model.nftrules``:

* in an ``inet`` table an ``ip``/``ip6`` field (and ``dnat ip``/``tproxy ip6``) adds a
  ``FamilyMatch``: ``ip daddr != 127.0.0.1`` does not hold for an IPv6 packet;
* sets (anonymous, named — resolved from the table's set, ranges, compares with ``<``/``>``) lower to
  ``AddressSet``/``InterfaceSet``/``ProtocolSet``/``MarkRanges``, a port set to ``PortMatch`` (the
  protocol) + ``MultiportMatch``; a second match on a field the rule already tests lowers the same way;
  an address set the ruleset does not fill (not declared here, or declared without elements: filled
  at run time, like ambient's probe sets) is a ``SetMatch``, its members the world's (``World.ip_sets``);
* ``meta skuid``/``skgid`` → ``SocketOwner`` (no socket: no match, ``!=`` included);
* ``tproxy [ip|ip6] to [ADDR]:PORT [meta mark set M] accept`` → a ``TproxySocket`` guard and a
  ``Tproxy`` target: without a transparent socket nft ends the rule and the chain goes on.

Statements: ``counter``, ``log`` and comments do nothing to the packet and are dropped. Verdicts are
the iptables targets of the same name (``continue``: none). ``redirect``, ``dnat``, ``snat``,
``masquerade``, ``reject`` are ``Redirect``/``Dnat``/``Snat``/``Masquerade``/``Reject``. Mark setters
are ``SetMark``/``ConnmarkTarget`` when one iptables target writes the same value, else
``MarkStatements``; ``ct zone set`` is ``CtTarget``. What the rule model cannot say is opaque, never
dropped: an unmodelled match is an ``OpaqueMatch`` (it may or may not hold), an unmodelled statement,
a mark set followed by a verdict other than ``drop``, or a match after a statement that changes the
packet make the target an ``OpaqueTarget`` (the rule's end is undetermined when its matches hold).

Each rule keeps its origin and its nft text (``Origin.text``: traces show the rule as nft writes
it), and each table its ``nft -f`` text (``NftTable.text``: what the kernel oracle loads).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Literal

from meshsolve.errors import UnsupportedError
from meshsolve.model import rules as m
from meshsolve.model.net import Family, IPNetwork, PortRange
from meshsolve.nftables.kinds import L4_PAYLOADS, ValueKind
from meshsolve.nftables.model import (
    M32,
    AnonSet,
    Counter,
    Element,
    Flags,
    Item,
    Log,
    MarkValue,
    Match,
    Nat,
    Opaque,
    Range,
    Redirect,
    Reject,
    Rule,
    Ruleset,
    SetCtZone,
    SetMark,
    SetRef,
    Table,
    Tproxy,
    Verdict,
)
from meshsolve.nftables.normal import kernel_rule
from meshsolve.nftables.render import item_text, render, rule_text

__all__ = ["lower", "lower_rule", "lower_table"]

_HOOKS = {"prerouting": "PREROUTING", "input": "INPUT", "forward": "FORWARD", "output": "OUTPUT",
          "postrouting": "POSTROUTING"}
_FAMILIES: dict[str, tuple[Family, ...]] = {"ip": ("ipv4",), "ip6": ("ipv6",), "inet": ("ipv4", "ipv6")}
_L3_FAMILY: dict[str, Family] = {"ip": "ipv4", "ip6": "ipv6"}
#: Opaque items that start like an expression (a match the model does not decide) rather than a
#: statement; ``limit``/``quota`` stop a rule like a match does.
_EXPRESSIONS = frozenset((
    "fib", "icmp", "icmpv6", "ip", "ip6", "tcp", "udp", "th", "sctp", "dccp", "udplite", "meta", "ct", "ether",
    "vlan", "arp", "socket", "osf", "rt", "ipsec", "numgen", "jhash", "symhash", "exthdr", "frag", "hbh", "dst",
    "mh", "srh", "ah", "esp", "comp", "igmp", "gre", "vxlan", "geneve", "limit", "quota", "iif", "oif", "iifname",
    "oifname", "mark", "skuid", "skgid", "iiftype", "oiftype", "pkttype", "cpu", "cgroup", "dscp",
))
#: What nft's reject reasons are in iptables' words (``--reject-with``), where they are one.
_REJECT = {"tcp reset": "tcp-reset", "icmp port-unreachable": "icmp-port-unreachable",
           "icmp host-unreachable": "icmp-host-unreachable", "icmp net-unreachable": "icmp-net-unreachable",
           "icmp prot-unreachable": "icmp-proto-unreachable", "icmp net-prohibited": "icmp-net-prohibited",
           "icmp host-prohibited": "icmp-host-prohibited", "icmp admin-prohibited": "icmp-admin-prohibited",
           "icmpv6 port-unreachable": "icmp6-port-unreachable", "icmpv6 no-route": "icmp6-no-route",
           "icmpv6 admin-prohibited": "icmp6-adm-prohibited", "icmpv6 addr-unreachable": "icmp6-addr-unreachable",
           "icmpx port-unreachable": None}


class _Opaque(Exception):
    """Internal: this item (or the rule's statements) cannot be said in the rule model."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def lower(ruleset: Ruleset) -> m.Rulesets:
    """The rule model of an nft ruleset: its ``ip``/``ip6``/``inet`` tables as ``NftTable``s of the
    families they serve (see the module docstring)."""
    per: dict[Family, list[m.NftTable]] = {"ipv4": [], "ipv6": []}
    for table in ruleset.tables:
        if table.family in ("arp", "bridge"):
            continue
        lowered = lower_table(table, ruleset)
        for fam in _FAMILIES[table.family]:
            per[fam].append(lowered)
    return m.Rulesets(m.Ruleset("ipv4", (), tuple(per["ipv4"])), m.Ruleset("ipv6", (), tuple(per["ipv6"])))


def lower_table(table: Table, ruleset: Ruleset | None = None) -> m.NftTable:
    """One ``ip``/``ip6``/``inet`` table as an ``NftTable`` (``ruleset``: its text comes from there
    when given, so it loads with the table's sets)."""
    if table.family not in _FAMILIES:
        raise UnsupportedError(f"nft table {table.family} {table.name}: the {table.family} family is not "
                               "modelled (its ingress/egress hooks run outside the IP path meshsolve models)")
    key = f"{table.family} {table.name}"
    chains: list[m.Chain] = []
    bases: list[m.BaseChain] = []
    for c in table.chains:
        policy: str | None = None
        if c.hook is not None:
            hook = _HOOKS.get(c.hook.hook)
            if hook is None:
                if not c.rules and c.hook.policy == "accept":
                    continue  # an empty accepting ingress chain does nothing
                raise UnsupportedError(f"nft chain {key} {c.name}: hook {c.hook.hook} is not modelled "
                                       "(it runs before prerouting)")
            policy = "DROP" if c.hook.policy == "drop" else "ACCEPT"
            bases.append(m.BaseChain(c.name, hook, c.hook.priority, c.hook.type))
        rules = tuple(lower_rule(r, table) for r in c.rules)
        chains.append(m.Chain(c.name, rules, policy, origin=c.origin))
    text = render(Ruleset((table,)))
    return m.NftTable(table.family, table.name, m.Table(key, tuple(chains), nft=True), tuple(bases),  # type: ignore[arg-type]
                      text=text)


def lower_rule(rule: Rule, table: Table) -> m.Rule:
    """One rule of ``table`` in the rule model (see the module docstring)."""
    text = rule_text(rule, table.family)
    o = rule.origin
    origin = m.Origin(o.source, o.lineno, text) if o is not None else m.Origin("<nft>", 0, text)
    items = list(kernel_rule(rule, table.family).items)
    b = _Builder(table)
    stmts: list[Item] = []
    target: m.Target | None
    try:
        k = 0
        while k < len(items):
            item = items[k]
            if isinstance(item, Match):
                if stmts:
                    raise _Opaque(f"a match after a statement ({_text(item, table)}) is not modelled")
                if k + 1 < len(items) and _port_pair(item, items[k + 1]):
                    nxt = items[k + 1]
                    assert isinstance(nxt, Match)
                    b.port_pair(item, nxt)
                    k += 2
                    continue
                b.match(item)
            elif isinstance(item, Counter | Log):
                pass
            elif isinstance(item, Opaque) and _is_expression(item.text):
                if stmts:
                    raise _Opaque(f"a match after a statement ({item.text}) is not modelled")
                b.add(m.OpaqueMatch("nft", (item.text,)))
            elif isinstance(item, Opaque) and item.text.split(" ", 1)[0] in ("counter", "log"):
                pass  # a named counter, a log with options: no effect on the packet
            else:
                stmts.append(item)
            k += 1
        target = _statements(stmts, b, table)
    except _Opaque as exc:
        target = m.OpaqueTarget("nft", (exc.why,))
    return m.Rule(tuple(b.matches), target, origin=origin)


# ------------------------------------------------------------------------------------------------
# Matches


def _text(item: Item, table: Table) -> str:
    return item_text(item, table.family)


def _is_expression(text: str) -> bool:
    head = text.split(" ", 1)[0]
    padded = f" {text} "
    return head in _EXPRESSIONS and " set " not in padded and " vmap " not in padded and \
        " add @" not in padded and " update @" not in padded


def _port_pair(a: Item, b: Item) -> bool:
    """Two adjacent port compares nft 1.0.6 stores as one ``(sport, dport) != (x, y)``."""
    return (isinstance(a, Match) and isinstance(b, Match) and a.op == "!=" and b.op == "!="
            and a.selector.key == "sport" and b.selector.key == "dport" and a.selector.base == b.selector.base
            and a.selector.base in (*L4_PAYLOADS, "th") and a.mask is None and b.mask is None
            and isinstance(a.value, int) and isinstance(b.value, int)
            and not isinstance(a.value, bool) and not isinstance(b.value, bool))


class _Builder:
    """The model matches of one rule, in order (a basic kind at most once: then a set kind)."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self.matches: list[m.Match] = []
        self.families: set[Family] = set()

    def add(self, x: m.Match) -> None:
        self.matches.append(x)

    def has(self, cls: type) -> bool:
        return any(type(x) is cls for x in self.matches)

    def family(self, fam: Family) -> None:
        """The packet must be of ``fam``: said once, and only where the table serves both families or
        another one."""
        if fam in self.families:
            return
        self.families.add(fam)
        if self.table.family == "inet" or _FAMILIES[self.table.family] != (fam,):
            self.add(m.FamilyMatch(fam))

    # -- values
    def elements(self, x: Match) -> tuple[list[Element], bool]:
        """The values a match tests and whether it is negated (``==``/``in``: one of them)."""
        value = x.value
        if isinstance(value, SetRef):
            s = self.table.named_set(value.name)
            if s is None or s.kind != "set" or any(isinstance(e, Opaque) for e in s.elements) or not s.elements:
                raise _Opaque(f"set @{value.name} is not modelled")
            els: list[Element] = [e for e in s.elements if not isinstance(e, Opaque)]
        elif isinstance(value, AnonSet):
            els = list(value.elements)
        elif isinstance(value, Flags):
            els = list(value.names)
        else:
            els = [value]
        if x.op in ("==", "in"):
            return els, False
        if x.op == "!=":
            return els, True
        # a compare: one value, a number
        if len(els) != 1 or not isinstance(els[0], int) or isinstance(els[0], bool):
            raise _Opaque(f"{x.op} on {x.selector} is not modelled")
        v, top = els[0], (65535 if x.selector.kind is ValueKind.PORT else M32)
        lo, hi = {"<": (0, v - 1), "<=": (0, v), ">": (v + 1, top), ">=": (v, top)}[x.op]
        if lo > hi:
            return [], False  # never holds: an empty set
        return [Range(lo, hi)], False

    def match(self, x: Match) -> None:
        sel, kind = x.selector, x.selector.kind
        key = (sel.base, sel.key)
        if kind in (ValueKind.ADDR4, ValueKind.ADDR6):
            self.address(x)
        elif key in (("meta", "l4proto"), ("ip", "protocol"), ("ip6", "nexthdr")):
            if sel.base in _L3_FAMILY:
                self.family(_L3_FAMILY[sel.base])
            self.protocol(x)
        elif kind is ValueKind.PORT:
            self.port(x)
        elif kind in (ValueKind.NFPROTO, ValueKind.ETHERTYPE):
            self.nfproto(x)
        elif kind is ValueKind.IFNAME:
            self.interface(x)
        elif kind in (ValueKind.UID, ValueKind.GID):
            els, neg = self.elements(x)
            who: Literal["uid", "gid"] = "uid" if kind is ValueKind.UID else "gid"
            self.add(m.SocketOwner(who, tuple(_id_token(e) for e in els), neg) if els else _never())
        elif kind is ValueKind.MARK:
            self.mark(x)
        elif kind is ValueKind.CTSTATE:
            els, neg = self.elements(x)
            names = [str(e).upper() for e in els]
            if x.op == "==" and isinstance(x.value, Flags) and len(names) > 1:
                names = []  # one state, compared to the value of several bits: never equal
            self.add(m.ConntrackMatch(tuple(names), neg))
        else:
            raise _Opaque(f"{sel} is not modelled")

    def address(self, x: Match) -> None:
        fam = _L3_FAMILY[x.selector.base]
        self.family(fam)
        src = x.selector.key == "saddr"
        if isinstance(x.value, SetRef) and x.op in ("==", "in", "!="):
            s = self.table.named_set(x.value.name)
            if s is None or (s.kind == "set" and not s.elements):  # members filled at run time: the world's
                self.add(m.SetMatch(x.value.name, "src" if src else "dst", x.op == "!="))
                return
        els, neg = self.elements(x)
        nets: list[IPNetwork] = []
        for e in els:
            if isinstance(e, ipaddress.IPv4Network | ipaddress.IPv6Network):
                nets.append(e)
            elif isinstance(e, Range) and not isinstance(e.lo, int) and not isinstance(e.hi, int):
                nets.extend(ipaddress.summarize_address_range(e.lo, e.hi))
            else:
                raise _Opaque(f"{x.selector} {e} is not modelled")
        if not nets:
            self.add(_never())
            return
        cls = m.Source if src else m.Destination
        if len(nets) == 1 and not self.has(cls):
            self.add(cls(nets[0], neg))
        else:
            self.add(m.AddressSet("src" if src else "dst", tuple(nets), neg))

    def protocol(self, x: Match) -> None:
        els, neg = self.elements(x)
        names = []
        for e in els:
            if isinstance(e, Range):
                raise _Opaque(f"a range of protocols ({e.lo}-{e.hi}) is not modelled")
            names.append(m.Protocol(str(e)).name)
        if not names:
            self.add(_never())
        elif len(names) == 1 and not self.has(m.Protocol):
            self.add(m.Protocol(names[0], neg))
        else:
            self.add(m.ProtocolSet(tuple(names), neg))

    def port(self, x: Match) -> None:
        base, field = x.selector.base, x.selector.key
        els, neg = self.elements(x)
        ranges = [_port_range(e, base) for e in els]
        if not ranges:
            self.add(_never())
            return
        if base != "th" and len(ranges) == 1:
            r = ranges[0]
            self.add(m.PortMatch(base, sport=r if field == "sport" else None,  # type: ignore[arg-type]
                                 dport=r if field == "dport" else None,
                                 sport_negated=neg and field == "sport", dport_negated=neg and field == "dport"))
            return
        if base != "th":
            self.add(m.PortMatch(base))  # type: ignore[arg-type]
        self.add(m.MultiportMatch("sports" if field == "sport" else "dports", tuple(ranges), neg))

    def port_pair(self, a: Match, b: Match) -> None:
        assert isinstance(a.value, int) and isinstance(b.value, int)
        self.add(m.PortPair(a.selector.base, a.value, b.value, True))

    def nfproto(self, x: Match) -> None:
        els, neg = self.elements(x)
        want: set[Family] = set()
        for e in els:
            fam = {"ipv4": "ipv4", "ip": "ipv4", 2: "ipv4", 0x0800: "ipv4",
                   "ipv6": "ipv6", "ip6": "ipv6", 10: "ipv6", 0x86DD: "ipv6"}.get(e)
            if fam is not None:
                want.add(fam)  # type: ignore[arg-type]
        if neg:
            want = {"ipv4", "ipv6"} - want  # type: ignore[assignment]
        if want == {"ipv4", "ipv6"}:
            return
        if not want:
            self.add(_never())
            return
        (fam,) = want
        self.add(m.FamilyMatch(fam))

    def interface(self, x: Match) -> None:
        els, neg = self.elements(x)
        names = []
        for e in els:
            if not isinstance(e, str):
                raise _Opaque(f"{x.selector} {e} is not modelled")
            names.append(e[:-1] + "+" if e.endswith("*") else e)
        inbound = x.selector.key in ("iifname", "iif")
        cls = m.InInterface if inbound else m.OutInterface
        if not names:
            self.add(_never())
        elif len(names) == 1 and not names[0].endswith("+") and not self.has(cls):
            self.add(cls(names[0], neg))
        else:
            self.add(m.InterfaceSet("in" if inbound else "out", tuple(names), neg))

    def mark(self, x: Match) -> None:
        source: Literal["meta", "ct"] = "ct" if x.selector.base == "ct" else "meta"
        mask = M32 if x.mask is None else x.mask
        els, neg = self.elements(x)
        ranges = []
        for e in els:
            if isinstance(e, Range) and isinstance(e.lo, int) and isinstance(e.hi, int):
                ranges.append((e.lo, e.hi))
            elif isinstance(e, int) and not isinstance(e, bool):
                ranges.append((e, e))
            else:
                raise _Opaque(f"{x.selector} {e} is not modelled")
        if not ranges:
            self.add(_never())
        elif len(ranges) == 1 and ranges[0][0] == ranges[0][1] and ranges[0][0] & ~mask & M32 == 0:
            cls = m.MarkMatch if source == "meta" else m.ConnmarkMatch
            self.add(cls(ranges[0][0], mask, neg))
        else:
            self.add(m.MarkRanges(source, tuple(ranges), mask, neg))


def _never() -> m.Match:
    """A match that never holds (an empty set, a compare nothing meets, ``!= { ipv4, ipv6 }``): a
    protocol no packet has."""
    return m.ProtocolSet(("(none)",))


def _id_token(e: Element) -> str:
    if isinstance(e, Range):
        return f"{e.lo}-{e.hi}"
    return str(e)


def _port_range(e: Element, base: str) -> PortRange:
    if isinstance(e, Range) and isinstance(e.lo, int) and isinstance(e.hi, int):
        return PortRange(e.lo, e.hi)
    if isinstance(e, int) and not isinstance(e, bool):
        return PortRange(e, e)
    if isinstance(e, str):
        protos = [base] if base in ("tcp", "udp") else ["tcp", "udp"]
        for proto in protos:
            try:
                return PortRange.single(socket.getservbyname(e, proto))
            except OSError:
                continue
        raise _Opaque(f"service name {e!r} is not known on this host")
    raise _Opaque(f"port {e} is not modelled")


# ------------------------------------------------------------------------------------------------
# Statements


def _statements(stmts: list[Item], b: _Builder, table: Table) -> m.Target | None:
    """The rule's statements (no counters or logs) as one target (see the module docstring)."""
    if not stmts:
        return None
    for s in stmts:
        if isinstance(s, Opaque):
            raise _Opaque(f"statement {s.text} is not modelled")
    last = stmts[-1]
    pre = stmts[:-1]
    if isinstance(last, Verdict):
        if pre and isinstance(pre[0], Tproxy):
            return _tproxy(pre, last, b, table)
        if last.kind == "drop":
            return m.Drop()  # what was set before no longer matters
        if pre:
            if last.kind == "continue":
                return _setters(pre)
            raise _Opaque(f"{_text(pre[-1], table)} before {last.kind}: a mark set and a verdict in one "
                          "rule are not modelled")
        return _verdict(last)
    if pre and not isinstance(last, SetMark | SetCtZone | Tproxy):
        raise _Opaque(f"{_text(pre[-1], table)} before {_text(last, table)} is not modelled")
    if isinstance(last, Redirect):
        return _redirect(last)
    if isinstance(last, Nat):
        return _nat(last, b, table)
    if isinstance(last, Reject):
        return m.Reject(_REJECT.get(last.reason or "", last.reason) if last.reason is not None else None)
    if any(isinstance(s, Tproxy) for s in stmts):
        raise _Opaque("tproxy without accept: the packet goes on with its socket assigned (not modelled)")
    return _setters(stmts)


def _verdict(v: Verdict) -> m.Target | None:
    if v.kind == "accept":
        return m.Accept()
    if v.kind == "drop":
        return m.Drop()
    if v.kind == "return":
        return m.Return()
    if v.kind == "continue":
        return None
    assert v.chain is not None
    return m.Jump(v.chain) if v.kind == "jump" else m.Goto(v.chain)


def _redirect(r: Redirect) -> m.Target:
    if set(r.flags) - {"random"}:
        raise _Opaque(f"redirect flags {','.join(r.flags)} are not modelled")
    ports = None if r.port is None else PortRange(r.port, r.port if r.port_max is None else r.port_max)
    return m.Redirect(ports, "random" in r.flags)


def _nat_text(n: Nat) -> str:
    host = ""
    if n.address is not None:
        a = f"[{n.address}]" if n.address.version == 6 and n.port is not None else str(n.address)
        host = a
        if n.address_max is not None:
            host += "-" + (f"[{n.address_max}]" if n.address_max.version == 6 and n.port is not None
                           else str(n.address_max))
    port = "" if n.port is None else f":{n.port}" + (f"-{n.port_max}" if n.port_max is not None else "")
    return host + port


def _nat(n: Nat, b: _Builder, table: Table) -> m.Target:
    if n.family is not None and table.family == "inet":
        b.family(_L3_FAMILY[n.family])
    extra = tuple(f"--{f}" for f in n.flags)
    if n.kind == "masquerade":
        ports = None if n.port is None else PortRange(n.port, n.port if n.port_max is None else n.port_max)
        return m.Masquerade(ports, extra)
    if n.address is None and n.port is None:
        raise _Opaque(f"{n.kind} without an address is not modelled")
    return (m.Dnat if n.kind == "dnat" else m.Snat)(_nat_text(n), extra)


def _tproxy(pre: list[Item], v: Verdict, b: _Builder, table: Table) -> m.Target:
    t = pre[0]
    assert isinstance(t, Tproxy)
    rest = pre[1:]
    if v.kind != "accept":
        raise _Opaque(f"tproxy followed by {v.kind} is not modelled")
    if t.port is None:
        raise _Opaque("tproxy to an address without a port is not modelled")
    mark: int | None = None
    mask = M32
    if rest:
        s = rest[0]
        if len(rest) > 1 or not isinstance(s, SetMark) or s.key != "meta" or s.value.source == "ct":
            raise _Opaque("tproxy with statements other than one meta mark set is not modelled")
        mark, mask = s.value.xor, ~s.value.mask & M32
    if t.family is not None and table.family == "inet":
        b.family(_L3_FAMILY[t.family])
    b.add(m.TproxySocket(t.port))
    return m.Tproxy(t.port, t.address, mark, mask)


def _setters(stmts: Iterable[Item]) -> m.Target:
    items = list(stmts)
    if len(items) == 1 and isinstance(items[0], SetCtZone):
        return m.CtTarget(items[0].zone)
    steps: list[m.MarkStep] = []
    for s in items:
        if not isinstance(s, SetMark):
            raise _Opaque("a conntrack zone set with other statements is not modelled")
        steps.append(_step(s.key, s.value))
    if len(steps) == 1:
        one = _single(steps[0])
        if one is not None:
            return one
    return m.MarkStatements(tuple(steps))


def _step(key: str, v: MarkValue) -> m.MarkStep:
    src = None if v.source is None else ("mark" if v.source == "meta" else "ctmark")
    return m.MarkStep("mark" if key == "meta" else "ctmark", src, v.mask, v.xor)  # type: ignore[arg-type]


def _single(s: m.MarkStep) -> m.Target | None:
    """One setter as the iptables target that writes the same value, if there is one."""
    if s.source is None or s.source == s.key:  # (self & mask) ^ xor: MARK / CONNMARK --set-xmark
        keep = 0 if s.source is None else s.mask
        if s.key == "mark":
            return m.SetMark(s.xor, ~keep & M32)
        return m.ConnmarkTarget("set-xmark", s.xor, ~keep & M32)
    if s.xor != 0:
        return None
    if s.key == "mark":  # meta mark set ct mark & M: CONNMARK --restore-mark --ctmask M
        return m.ConnmarkTarget("restore-mark", 0, M32, M32, s.mask)
    return m.ConnmarkTarget("save-mark", 0, M32, s.mask, M32)  # ct mark set meta mark & M

