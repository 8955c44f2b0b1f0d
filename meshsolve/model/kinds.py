"""The registry of rule kinds: every match and target class meshsolve knows, with where the kernel's
loader accepts it.

Every backend is a table keyed by these classes — the semantics (``meshsolve.semantics.kernel``),
the renderer (``meshsolve.iptables.render``), the strategies and the synthesis vocabulary — and a
test asserts that their key sets are the registry's, so a kind cannot be handled by one backend and
forgotten by another. ``COARSENINGS`` lists what the semantics deliberately does not decide; each of
those answers ``Unknown`` (an undetermined outcome in the interpreter, a free choice in the solver),
never a guess.

The ``tables``/``hooks`` of a kind are where the kernel's loader (``iptables-restore``) accepts it:
a rule reachable from another hook, or in another table, is refused at load time, so a world
holding one cannot exist (``validate_rulesets``). nftables places rules by its own rules:
``nft_types``/``nft_hooks`` are the base-chain types and hooks from which the kernel accepts the
kind in a native nftables table (None: any) — ``drop`` in a nat chain and ``meta skuid`` on
prerouting load there, ``redirect`` outside a nat chain does not.
"""

from __future__ import annotations

import attrs

from meshsolve.model.path import Hook
from meshsolve.model.rules import (
    Accept,
    AddressSet,
    AddrtypeMatch,
    CommentMatch,
    ConnmarkMatch,
    ConnmarkTarget,
    ConntrackMatch,
    CtTarget,
    Destination,
    Dnat,
    Drop,
    FamilyMatch,
    Goto,
    InInterface,
    InterfaceSet,
    Jump,
    Log,
    MarkMatch,
    MarkRanges,
    MarkStatements,
    Masquerade,
    MultiportMatch,
    OpaqueMatch,
    OpaqueTarget,
    OutInterface,
    OwnerMatch,
    PortMatch,
    PortPair,
    Protocol,
    ProtocolSet,
    Redirect,
    Reject,
    Return,
    Ruleset,
    SetMark,
    SetMatch,
    Snat,
    SocketMatch,
    SocketOwner,
    Source,
    StateMatch,
    Tproxy,
    TproxySocket,
    Trace,
)

__all__ = [
    "COARSENINGS",
    "MATCH_KINDS",
    "REJECT_ERRNO",
    "TARGET_KINDS",
    "Coarsening",
    "Kind",
    "coarsened_options",
    "coarsening",
    "coarsenings_markdown",
    "enables_conntrack",
    "kind_of",
]


@attrs.frozen
class Kind:
    """One match or target kind: its class, the name users write (``owner``, ``REDIRECT``), and the
    tables / hooks the loader accepts it in (``None``: any)."""

    cls: type
    name: str
    tables: frozenset[str] | None = None
    hooks: frozenset[Hook] | None = None
    conntrack: bool = False  # a rule of this kind switches connection tracking on in the namespace
    builtin_only: bool = False  # the hook check applies only in a built-in chain (iptables' own check)
    nft_types: frozenset[str] | None = None  # nftables: the base-chain types that may reach it
    nft_hooks: frozenset[Hook] | None = None  # nftables: the hooks it may be reached from

    def allowed(self, table: str, hooks: frozenset[str], chain: str | None = None) -> str | None:
        """Why a rule of this kind in ``table``, reached from ``hooks`` (in built-in ``chain``, if it is
        one), is refused by the loader (None: accepted)."""
        if self.tables is not None and table not in self.tables:
            return f"{self.name} is only valid in the {'/'.join(sorted(self.tables))} table"
        if self.builtin_only:
            if chain is not None and self.hooks is not None and chain not in self.hooks:
                return f"iptables refuses {self.name} in {chain} (\"Can't use {self.name} with {chain}\")"
            return None
        if self.hooks is not None and hooks - self.hooks:
            bad = ", ".join(sorted(hooks - self.hooks))
            return f"{self.name} is only valid in {'/'.join(h for h in _HOOK_ORDER if h in self.hooks)}, " \
                   f"but this rule is reached from {bad}"
        return None


    def allowed_nft(self, chain_type: str, hooks: frozenset[str]) -> str | None:
        """Why nft refuses a rule of this kind reached from base chains of ``chain_type`` on
        ``hooks`` (None: accepted)."""
        if self.nft_types is not None and chain_type not in self.nft_types:
            return f"nft: {self.name} needs a {'/'.join(sorted(self.nft_types))} chain, not type {chain_type}"
        if self.nft_hooks is not None and hooks - self.nft_hooks:
            bad = ", ".join(h.lower() for h in sorted(hooks - self.nft_hooks))
            good = "/".join(h.lower() for h in _HOOK_ORDER if h in self.nft_hooks)
            return f"nft: {self.name} is only valid on {good}, but this rule is reached from {bad}"
        return None


_HOOK_ORDER = ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING")


def _k(cls: type, name: str, tables: str | None = None, hooks: str | None = None, conntrack: bool = False,
       builtin_only: bool = False, nft_types: str | None = None, nft_hooks: str | None = None) -> Kind:
    def words(text: str | None) -> frozenset[str] | None:
        return None if text is None else frozenset(text.split())

    return Kind(cls, name, words(tables), words(hooks), conntrack, builtin_only,  # type: ignore[arg-type]
                words(nft_types), words(nft_hooks))  # type: ignore[arg-type]


MATCH_KINDS: dict[type, Kind] = {k.cls: k for k in (
    _k(Source, "-s"),
    _k(Destination, "-d"),
    _k(InInterface, "-i", hooks="PREROUTING INPUT FORWARD", builtin_only=True),
    _k(OutInterface, "-o", hooks="FORWARD OUTPUT POSTROUTING", builtin_only=True),
    _k(Protocol, "-p"),
    _k(PortMatch, "tcp/udp"),
    _k(MultiportMatch, "multiport"),
    _k(OwnerMatch, "owner", hooks="OUTPUT POSTROUTING"),
    _k(MarkMatch, "mark"),
    _k(ConnmarkMatch, "connmark", conntrack=True),
    _k(ConntrackMatch, "conntrack", conntrack=True),
    _k(StateMatch, "state", conntrack=True),
    _k(AddrtypeMatch, "addrtype"),
    _k(CommentMatch, "comment"),
    _k(SocketMatch, "socket", hooks="PREROUTING INPUT", nft_hooks="PREROUTING INPUT OUTPUT"),
    _k(SetMatch, "set"),
    _k(OpaqueMatch, "(unmodelled module)"),
    # nftables only (meshsolve.model.nftrules): iptables cannot load them
    _k(FamilyMatch, "meta nfproto"),
    _k(AddressSet, "address set"),
    _k(InterfaceSet, "interface set"),
    _k(ProtocolSet, "protocol set"),
    _k(PortPair, "port pair"),
    _k(SocketOwner, "meta skuid/skgid"),
    _k(MarkRanges, "mark set lookup"),
    _k(TproxySocket, "tproxy socket", nft_hooks="PREROUTING"),
)}

TARGET_KINDS: dict[type, Kind] = {k.cls: k for k in (
    _k(Accept, "ACCEPT"),
    _k(Drop, "DROP", tables="raw mangle filter security"),  # iptables: "nat is not intended for filtering"
    _k(Reject, "REJECT", tables="filter", hooks="INPUT FORWARD OUTPUT", nft_hooks="PREROUTING INPUT FORWARD OUTPUT"),
    _k(Return, "RETURN"),
    _k(Jump, "jump"),
    _k(Goto, "goto"),
    _k(Redirect, "REDIRECT", tables="nat", hooks="PREROUTING OUTPUT", conntrack=True,
       nft_types="nat", nft_hooks="PREROUTING OUTPUT"),
    _k(Dnat, "DNAT", tables="nat", hooks="PREROUTING OUTPUT", conntrack=True,
       nft_types="nat", nft_hooks="PREROUTING OUTPUT"),
    _k(Snat, "SNAT", tables="nat", hooks="INPUT POSTROUTING", conntrack=True,
       nft_types="nat", nft_hooks="INPUT POSTROUTING"),
    _k(Masquerade, "MASQUERADE", tables="nat", hooks="POSTROUTING", conntrack=True,
       nft_types="nat", nft_hooks="POSTROUTING"),
    _k(Tproxy, "TPROXY", tables="mangle", hooks="PREROUTING", nft_hooks="PREROUTING"),
    _k(SetMark, "MARK"),
    _k(ConnmarkTarget, "CONNMARK", conntrack=True),
    _k(CtTarget, "CT", tables="raw", conntrack=True, nft_hooks="PREROUTING OUTPUT"),
    _k(Log, "LOG"),
    _k(Trace, "TRACE", tables="raw"),
    _k(OpaqueTarget, "(unmodelled target)"),
    _k(MarkStatements, "mark statements"),
)}

@attrs.frozen
class Coarsening:
    """One thing the semantics deliberately leaves undecided: a whole ``kind`` (``option`` empty) or
    one of its options or values (``option``: the key the semantics looks it up by), ``rule`` (how
    users write it) and ``why``. Each answers ``Unknown`` — an undetermined outcome in the
    interpreter, a free choice in the solver — never a guess. The semantics looks its coarsenings up
    here (``coarsening``), so it cannot leave undecided what is not declared."""

    kind: type
    option: str
    rule: str
    why: str


# What the semantics deliberately leaves undecided (each answers Unknown, never a guess).
COARSENINGS: tuple[Coarsening, ...] = (
    Coarsening(OpaqueMatch, "", "-m MODULE (a module meshsolve does not model: statistic, limit, ...)",
               "it may or may not hold"),
    Coarsening(PortMatch, "--tcp-option", "-p tcp --tcp-option N",
               "which TCP options a packet carries is not modelled"),
    Coarsening(OwnerMatch, "NAME", "-m owner --uid-owner NAME / --gid-owner NAME",
               "a user or group name the world does not resolve to an id"),
    Coarsening(OwnerMatch, "--suppl-groups", "-m owner --gid-owner G --suppl-groups",
               "the process's supplementary groups are not in the world (its primary group is)"),
    Coarsening(ConntrackMatch, "options", "-m conntrack --ctproto / --ctorigsrc / --ctstatus / ... (any option "
                                          "but --ctstate)", "only the connection's state is modelled"),
    Coarsening(AddrtypeMatch, "--limit-iface", "-m addrtype --limit-iface-in / --limit-iface-out",
               "address types are modelled for the namespace, not per interface"),
    Coarsening(AddrtypeMatch, "TYPE", "-m addrtype --src-type / --dst-type BLACKHOLE, UNREACHABLE, PROHIBIT, "
                                      "ANYCAST, THROW, NAT, XRESOLVE",
               "only UNSPEC, LOCAL, UNICAST, BROADCAST and MULTICAST are modelled"),
    Coarsening(SocketMatch, "--restore-skmark", "-m socket --restore-skmark",
               "copying the socket's mark (SO_MARK) to the packet is not modelled"),
    Coarsening(SocketOwner, "NAME", "meta skuid NAME / meta skgid NAME",
               "a user or group name the world does not resolve to an id"),
    Coarsening(OpaqueTarget, "", "-j TARGET (a target meshsolve does not model: NFQUEUE, NFLOG, ...)",
               "what it does to the packet is not known"),
    Coarsening(SetMatch, "members", "-m set --match-set NAME src/dst, ip saddr/daddr @NAME (a set whose members "
                                   "the input does not give)",
               "a set's members are the host's state at run time: where the input does not give them, they are "
               "not guessed"),
    Coarsening(Snat, "options", "-j SNAT --to-source ADDR-ADDR / :PORT-PORT / --random / --persistent, or a "
                                "--to-source that does not decode",
               "which address and port the kernel picks is not modelled"),
    Coarsening(Masquerade, "", "-j MASQUERADE", "the source the kernel picks for the output interface is not "
                                                "modelled"),
    Coarsening(Dnat, "ADDR-ADDR", "-j DNAT --to-destination ADDR-ADDR",
               "the kernel picks one address of the range per connection"),
    Coarsening(Dnat, "options", "-j DNAT --random / --persistent, or a --to-destination that does not decode",
               "which address and port the kernel picks is not modelled"),
    Coarsening(CtTarget, "--notrack", "-j CT --notrack", "untracked connections are not modelled"),
    Coarsening(CtTarget, "options", "-j CT --helper / --ctevents / --timeout / ... (any option but --zone)",
               "only conntrack zones are modelled"),
)

_COARSENING_KEYS: dict[tuple[type, str], Coarsening] = {(c.kind, c.option): c for c in COARSENINGS}


def coarsening(kind: type, option: str = "") -> Coarsening:
    """The declared coarsening of ``kind`` named ``option`` (empty: the whole kind); ``KeyError`` when
    none is declared."""
    c = _COARSENING_KEYS.get((kind, option))
    if c is None:
        raise KeyError(f"{kind.__name__} {option!r} is not declared in COARSENINGS")
    return c


def coarsened_options(kind: type) -> frozenset[str]:
    """The options of ``kind`` the semantics leaves undecided."""
    return frozenset(c.option for c in COARSENINGS if c.kind is kind)


def coarsenings_markdown() -> str:
    """The list of coarsenings as docs/proofs.md shows it (checked by ``tests/test_model_kinds.py``)."""
    rows = ["| rule | why it is left undecided |", "|---|---|"]
    rows += [f"| `{c.rule}` | {c.why} |" for c in COARSENINGS]
    return "\n".join(rows) + "\n"


def kind_of(value: object) -> Kind:
    """The registry entry of a match or target value."""
    k = MATCH_KINDS.get(type(value)) or TARGET_KINDS.get(type(value))
    if k is None:
        raise KeyError(f"{type(value).__name__} is not a registered rule kind")
    return k


# What the client's connect() returns when a REJECT answers its SYN, by --reject-with (seen on the
# kernel; None = the family's default, icmp(6)-port-unreachable).
REJECT_ERRNO: dict[str | None, str] = {
    None: "ECONNREFUSED", "tcp-reset": "ECONNREFUSED", "icmp-port-unreachable": "ECONNREFUSED",
    "icmp-net-unreachable": "ENETUNREACH", "icmp-net-prohibited": "ENETUNREACH",
    "icmp-host-unreachable": "EHOSTUNREACH", "icmp-host-prohibited": "EHOSTUNREACH",
    "icmp-admin-prohibited": "EHOSTUNREACH", "icmp-proto-unreachable": "ENOPROTOOPT",
    "icmp6-port-unreachable": "ECONNREFUSED", "icmp6-no-route": "ENETUNREACH", "no-route": "ENETUNREACH",
    "icmp6-addr-unreachable": "EHOSTUNREACH", "addr-unreach": "EHOSTUNREACH",
    "icmp6-adm-prohibited": "EACCES", "adm-prohibited": "EACCES",
}


def enables_conntrack(ruleset: Ruleset) -> bool:
    """Whether a ruleset switches connection tracking on: a NAT target, a conntrack, state or connmark
    match, a CT or CONNMARK target (seen on the kernel: without one, nat chains never run)."""
    if any(b.type == "nat" for n in ruleset.nft for b in n.bases):
        return True
    for table in ruleset.all_tables():
        for chain in table.chains:
            for rule in chain.rules:
                if rule.target is not None and (TARGET_KINDS[type(rule.target)].conntrack or _reads_ct(rule.target)):
                    return True
                if any(MATCH_KINDS[type(m)].conntrack or _reads_ct(m) for m in rule.matches):
                    return True
    return False


def _reads_ct(value: object) -> bool:
    """nft kinds that need conntrack only for some values (a conntrack mark, not the packet's)."""
    if isinstance(value, MarkRanges):
        return value.source == "ct"
    if isinstance(value, MarkStatements):
        return any("ctmark" in (s.key, s.source) for s in value.steps)
    return False
