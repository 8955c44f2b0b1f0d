"""The kernel's path for a packet, as data: which hooks it meets, and in each hook which tables run,
in what order. The interpreter (``meshsolve.semantics``) and the solver (``meshsolve.smt``) both walk
these tuples, so neither can skip a table the other runs.

Each iptables table registers one base chain per hook it has, at a fixed priority; within a hook
the kernel runs them lowest priority first. Connection tracking sits between them: it runs at
priority -200 in PREROUTING and OUTPUT, so ``raw`` (-300) sees a packet before conntrack has
looked it up. For the first packet of a connection that means no conntrack entry yet: ``-m
conntrack``/``-m state`` see ``INVALID`` there. A packet that re-enters through ``lo`` carries the
entry its OUTPUT pass created, so ``raw PREROUTING`` sees ``NEW`` for it. ``nat`` chains see only
the first packet of a connection that has no NAT binding yet; a connection opened in the pod gets
its binding in ``nat OUTPUT`` / ``POSTROUTING``, so its loopback re-entry skips ``nat PREROUTING``
and ``nat INPUT``.

Several base chains on one hook (iptables' tables, native nftables base chains: :func:`kernel_order`)
run lowest priority first; on equal priority the one registered last runs first (the kernel inserts
a new hook before those of its priority). Every nat chain of a hook — iptables' ``nat`` table and
each nftables ``type nat`` base chain — runs inside one nat hook, registered at the nat priority
(``NAT_HOOK_PRIORITY``: -100 where the destination is rewritten, 100 where the source is) when the
family's first nat chain appears. Inside it the nat chains run in their own priority order only
until one binds the connection (a NAT target or statement runs); the rest never see the
connection, and a connection none of them binds gets a null binding. So a nat chain's own priority
orders it among nat chains only: among the other base chains it runs at the nat hook's place.

Path kinds of a first packet (the SYN of one connection):

``local-out``
    opened by a process in the pod: OUTPUT (the output interface is the one routed for the
    original destination, fixed for the whole hook), re-route when nat or a mark changed the
    packet, POSTROUTING (the re-routed interface);
``loopback-in``
    a ``local-out`` packet routed to a local address re-enters through ``lo``: PREROUTING (nat
    skipped), input routing, INPUT (nat skipped);
``remote-in``
    a packet from another host arriving on the pod interface: PREROUTING, input routing, INPUT.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal, TypeAlias

import attrs

__all__ = [
    "CONNTRACK_PRIORITY",
    "EPHEMERAL_PORTS",
    "HOOKS",
    "NAT_HOOK_PRIORITY",
    "PATHS",
    "TABLE_HOOKS",
    "TABLE_ORDER",
    "Hook",
    "PathKind",
    "Stage",
    "kernel_order",
    "stages",
]

Hook: TypeAlias = Literal["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"]
HOOKS: tuple[Hook, ...] = ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING")
PathKind: TypeAlias = Literal["local-out", "loopback-in", "remote-in"]

# Priority at which conntrack attaches its entry to a packet (NF_IP_PRI_CONNTRACK).
CONNTRACK_PRIORITY = -200
# The source ports the kernel picks for a connection (Linux's default net.ipv4.ip_local_port_range).
EPHEMERAL_PORTS = (32768, 60999)

# Each table's built-in chains (iptables-save order) and the priority it registers at per hook
# (NF_IP_PRI_RAW, _MANGLE, _NAT_DST / _NAT_SRC, _FILTER, _SECURITY).
_TABLES: dict[str, dict[Hook, int]] = {
    "raw": {"PREROUTING": -300, "OUTPUT": -300},
    "mangle": {"PREROUTING": -150, "INPUT": -150, "FORWARD": -150, "OUTPUT": -150, "POSTROUTING": -150},
    "filter": {"INPUT": 0, "FORWARD": 0, "OUTPUT": 0},
    "nat": {"PREROUTING": -100, "INPUT": 100, "OUTPUT": -100, "POSTROUTING": 100},
    "security": {"INPUT": 50, "FORWARD": 50, "OUTPUT": 50},
}
# Where the nat hook itself registers (NF_IP_PRI_NAT_DST / NF_IP_PRI_NAT_SRC): every nat chain of the
# hook runs there, whatever its own priority.
NAT_HOOK_PRIORITY: dict[Hook, int] = {"PREROUTING": -100, "OUTPUT": -100, "INPUT": 100, "POSTROUTING": 100}
# The hooks each table has, in iptables-save order (= its built-in chains).
TABLE_HOOKS: dict[str, tuple[Hook, ...]] = {t: tuple(h for h in HOOKS if h in hooks) for t, hooks in _TABLES.items()}
# Order in which tables are kept in a Ruleset (alphabetical, as Istio writes them).
TABLE_ORDER: tuple[str, ...] = ("filter", "mangle", "nat", "raw", "security")


@attrs.frozen
class Stage:
    """One base chain at one hook: an iptables table's built-in chain (``chain`` None: the hook's
    name), or a native nftables base chain (``table`` is its ``FAMILY NAME`` key, ``chain`` its name,
    ``type`` filter/nat/route). ``before_conntrack``: conntrack has not yet looked the packet up
    here; ``nat``: consulted only for a connection without a NAT binding."""

    table: str
    hook: Hook
    priority: int
    chain: str | None = None
    type: str | None = None

    @property
    def before_conntrack(self) -> bool:
        return self.hook in ("PREROUTING", "OUTPUT") and self.priority < CONNTRACK_PRIORITY

    @property
    def nat(self) -> bool:
        return self.type == "nat" if self.type is not None else self.table == "nat"

    @property
    def place(self) -> int:
        """The priority this stage runs at among the hook's base chains: a nat stage runs inside the
        nat hook (``NAT_HOOK_PRIORITY``), its own priority ordering it among nat stages only."""
        return NAT_HOOK_PRIORITY.get(self.hook, self.priority) if self.nat else self.priority

    @property
    def kind(self) -> str:
        """The iptables table a rule here is placed like (for the loader's placement rules)."""
        if self.type is None:
            return self.table
        return {"nat": "nat", "route": "mangle"}.get(self.type, "filter")

    def __str__(self) -> str:
        return f"{self.table} {self.chain or self.hook}"


_STAGES: dict[Hook, tuple[Stage, ...]] = {
    hook: tuple(sorted((Stage(t, hook, pr[hook]) for t, pr in _TABLES.items() if hook in pr),
                       key=lambda s: s.priority))
    for hook in HOOKS
}


def kernel_order(hook: Hook, registered: Iterable[Stage], present: Callable[[Stage], bool] = lambda _s: True
                 ) -> tuple[Stage, ...]:
    """The stages of ``hook`` in the order the kernel runs them, given every stage of the family in
    the order their base chains were registered (``registered``: all hooks; the nat hook registers
    with the first nat stage that is ``present``, a chain that exists). By place (the nat hook's
    priority for nat stages); on a tie the later registration first; nat stages, together at the
    nat hook's place, by their own priority, on a tie the later registration first."""
    order = tuple(registered)
    nat_at = next((i for i, s in enumerate(order) if s.nat and present(s)), None)

    def key(item: tuple[int, Stage]) -> tuple[int, int, int, int]:
        i, s = item
        if s.nat:
            return (s.place, -(i if nat_at is None else nat_at), s.priority, -i)
        return (s.priority, -i, 0, 0)

    return tuple(s for _i, s in sorted(((i, s) for i, s in enumerate(order) if s.hook == hook), key=key))


def stages(hook: Hook, *, nat: bool = True) -> tuple[Stage, ...]:
    """The tables run at ``hook``, in kernel order; ``nat=False`` leaves out nat (a connection whose
    NAT binding already exists)."""
    return _STAGES[hook] if nat else tuple(s for s in _STAGES[hook] if not s.nat)


# The hooks of each path kind, in order, and whether nat is consulted on it.
PATHS: dict[PathKind, tuple[tuple[Hook, ...], bool]] = {
    "local-out": (("OUTPUT", "POSTROUTING"), True),
    "loopback-in": (("PREROUTING", "INPUT"), False),
    "remote-in": (("PREROUTING", "INPUT"), True),
}
