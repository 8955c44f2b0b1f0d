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

from typing import Literal, TypeAlias

import attrs

__all__ = [
    "CONNTRACK_PRIORITY",
    "EPHEMERAL_PORTS",
    "HOOKS",
    "PATHS",
    "TABLE_HOOKS",
    "TABLE_ORDER",
    "Hook",
    "PathKind",
    "Stage",
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
