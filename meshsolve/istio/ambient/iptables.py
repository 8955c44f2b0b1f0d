"""istio-cni's ambient iptables rules as data: an ``AmbientConfig`` → the command stream the node
agent issues in the pod (and, for kubelet's probes, on the node), the text Istio's tests record,
and the ``Rulesets`` it builds.

Each rule is kept as Istio spells it (``-p tcp -m tcp -j ACCEPT``, ``--to-port 15053``): the
stream renders to the very text of Istio's goldens, and each rule's words go through meshsolve's
one rule reader (``meshsolve.iptables.parse_rule``) into the rule model. Per family the stream is
replayed like the kernel does (``istio.builder.RuleBuilder``).

Text forms: from 1.24 one ``iptables-restore`` document per family (tables in the order the
stream first touches them, each with ``-N`` for its chains — those that get a rule first, in the
order of their first rule, then those only jumped to — and its ``-A``/``-I`` lines in stream
order); 1.21–1.23 one ``iptables -t TABLE`` command per chain creation, then per rule.
"""

from __future__ import annotations

import attrs

from meshsolve.iptables import parse_rule
from meshsolve.istio.ambient.config import (
    CONNMARK,
    CONNMARK_MASK,
    DNS_LISTENER_PORT,
    DNS_PORT,
    HBONE_PORT,
    INBOUND_PLAINTEXT_PORT,
    INPOD_MARK,
    INPOD_MASK,
    OUTBOUND_PORT,
    PROBE_SET,
    RESTORE_MASK,
    AmbientConfig,
)
from meshsolve.istio.builder import RuleBuilder
from meshsolve.model.net import Family
from meshsolve.model.rules import BUILTIN_CHAINS, Goto, Jump, Rulesets

__all__ = ["Op", "host_ops", "host_rules", "host_text", "inpod_ops", "inpod_rules", "inpod_text", "render",
           "rulesets_of"]

PRERT, OUTPUT, POSTRT = "ISTIO_PRERT", "ISTIO_OUTPUT", "ISTIO_POSTRT"
_MARK = f"{INPOD_MARK:#x}/{INPOD_MASK:#x}"
_CONNMARK = f"{CONNMARK:#x}/{CONNMARK_MASK:#x}"


@attrs.frozen
class Op:
    """One command: ``-A`` (``insert`` None) or ``-I CHAIN n`` of ``args`` (Istio's words)."""

    family: Family
    table: str
    chain: str
    args: tuple[str, ...]
    insert: int | None = None

    @property
    def line(self) -> str:
        verb = f"-A {self.chain}" if self.insert is None else f"-I {self.chain} {self.insert}"
        return f"{verb} {' '.join(self.args)}"


class _Stream:
    def __init__(self, fam: Family) -> None:
        self.fam = fam
        self.ops: list[Op] = []

    def add(self, table: str, chain: str, *args: str, insert: int | None = None) -> None:
        self.ops.append(Op(self.fam, table, chain, tuple(" ".join(args).split()), insert))


# ---------------------------------------------------------------------------------------------
# The pod's rules


def inpod_ops(c: AmbientConfig) -> tuple[Op, ...]:
    """The commands the node agent issues in the pod for ``c`` (IPv4, then IPv6 when enabled)."""
    out: list[Op] = []
    for fam in c.families:
        s = _Stream(fam)
        (_tproxy_era if c.is_tproxy else _redirect_era)(s, c)
        out += s.ops
    return tuple(out)


def _redirect_era(s: _Stream, c: AmbientConfig) -> None:
    """1.24 on (REDIRECT)."""
    lo, snat = c.loopback(s.fam), c.probe_snat(s.fam)
    dns = c.dns
    s.add("mangle", "PREROUTING", f"-j {PRERT}")
    s.add("mangle", "OUTPUT", f"-j {OUTPUT}")
    s.add("nat", "OUTPUT", f"-j {OUTPUT}")
    if dns:
        s.add("raw", "PREROUTING", f"-j {PRERT}")
        s.add("raw", "OUTPUT", f"-j {OUTPUT}")
    s.add("nat", "PREROUTING", f"-j {PRERT}")
    for nic in c.virtual_interfaces:  # inbound on a virtual interface is treated as outbound
        s.add("nat", PRERT, f"-i {nic} -p tcp -j REDIRECT --to-ports {OUTBOUND_PORT}")
        s.add("nat", PRERT, f"-i {nic} -p tcp -j RETURN")
    if c.ingress_connmark:
        s.add("mangle", PRERT, f"-m mark --mark {_MARK} -j CONNMARK --set-xmark {_CONNMARK}")
    if not c.ingress:
        s.add("nat", PRERT, f"-s {snat} -p tcp -m tcp -j ACCEPT")
    s.add("nat", OUTPUT, f"-d {snat} -p tcp -m tcp -j ACCEPT")
    if not c.ingress:
        s.add("nat", PRERT, f"! -d {lo} -p tcp ! --dport {HBONE_PORT} -m mark ! --mark {_MARK} "
                            f"-j REDIRECT --to-ports {INBOUND_PLAINTEXT_PORT}")
    _restore(s)
    if dns:
        _dns(s, c)
    _output_tail(s, c)


def _tproxy_era(s: _Stream, c: AmbientConfig) -> None:
    """1.21–1.23, and 1.24's TPROXY option."""
    lo, snat = c.loopback(s.fam), c.probe_snat(s.fam)
    dns = c.dns
    s.add("mangle", "PREROUTING", f"-j {PRERT}")
    s.add("mangle", "OUTPUT", f"-j {OUTPUT}")
    s.add("nat", "OUTPUT", f"-j {OUTPUT}")
    if dns and not c.command_form:
        s.add("raw", "PREROUTING", f"-j {PRERT}")
        s.add("raw", "OUTPUT", f"-j {OUTPUT}")
    s.add("mangle", PRERT, f"-m mark --mark {_MARK} -j CONNMARK --set-xmark {_CONNMARK}")
    s.add("mangle", PRERT, f"-s {snat} -p tcp -m tcp -j ACCEPT")
    s.add("nat", OUTPUT, f"-d {snat} -p tcp -m tcp -j ACCEPT")
    s.add("mangle", PRERT, f"! -d {lo} -p tcp -i lo -j ACCEPT")
    s.add("mangle", PRERT, f"-p tcp -m tcp --dport {HBONE_PORT} -m mark ! --mark {_MARK} "
                           f"-j TPROXY --on-port {HBONE_PORT} --tproxy-mark {_CONNMARK}")
    s.add("mangle", PRERT, "-p tcp -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")
    s.add("mangle", PRERT, f"! -d {lo} -p tcp -m mark ! --mark {_MARK} "
                           f"-j TPROXY --on-port {INBOUND_PLAINTEXT_PORT} --tproxy-mark {_CONNMARK}")
    _restore(s)
    if dns and c.command_form:  # 1.21: one UDP rule, no mark test, no conntrack zones
        s.add("nat", OUTPUT, f"! -o lo -p udp -m udp --dport {DNS_PORT} -j REDIRECT --to-port {DNS_LISTENER_PORT}")
    elif dns:
        _dns(s, c)
    _output_tail(s, c)


def _restore(s: _Stream) -> None:
    s.add("mangle", OUTPUT, f"-m connmark --mark {_CONNMARK} -j CONNMARK --restore-mark "
                            f"--nfmask {RESTORE_MASK:#x} --ctmask {RESTORE_MASK:#x}")


def _dns(s: _Stream, c: AmbientConfig) -> None:
    lo = c.loopback(s.fam)
    s.add("nat", OUTPUT, f"! -o lo -p udp -m mark ! --mark {_MARK} -m udp --dport {DNS_PORT} "
                         f"-j REDIRECT --to-port {DNS_LISTENER_PORT}")
    s.add("nat", OUTPUT, f"! -d {lo} -p tcp --dport {DNS_PORT} -m mark ! --mark {_MARK} "
                         f"-j REDIRECT --to-ports {DNS_LISTENER_PORT}")
    # ztunnel's queries upstream and their answers get a conntrack zone of their own
    s.add("raw", OUTPUT, f"-p udp -m mark --mark {_MARK} -m udp --dport {DNS_PORT} -j CT --zone 1")
    s.add("raw", PRERT, f"-p udp -m mark ! --mark {_MARK} -m udp --sport {DNS_PORT} -j CT --zone 1")


def _output_tail(s: _Stream, c: AmbientConfig) -> None:
    lo = c.loopback(s.fam)
    s.add("nat", OUTPUT, f"-p tcp -m mark --mark {_CONNMARK} -j ACCEPT")
    s.add("nat", OUTPUT, f"! -d {lo} -o lo -j ACCEPT")  # an app calling its own pod IP stays direct
    s.add("nat", OUTPUT, f"! -d {lo} -p tcp -m mark ! --mark {_MARK} -j REDIRECT --to-ports {OUTBOUND_PORT}")


# ---------------------------------------------------------------------------------------------
# The node's rule for kubelet's probes


def host_ops(c: AmbientConfig) -> tuple[Op, ...]:
    """The node's nat rule that gives kubelet's probes (any connection from a socket of the node
    to a pod in the probe set) the source the pod rules exempt."""
    out: list[Op] = []
    for fam in c.families:
        s = _Stream(fam)
        if c.command_form:
            s.add("nat", "POSTROUTING", f"-j {POSTRT}")
            name = PROBE_SET
        else:
            s.add("nat", "POSTROUTING", f"-j {POSTRT}", insert=1)
            name = f"{PROBE_SET}-{'v4' if fam == 'ipv4' else 'v6'}"
        s.add("nat", POSTRT, f"-m owner --socket-exists -p tcp -m set --match-set {name} dst "
                             f"-j SNAT --to-source {c.probe_snat(fam)}")
        out += s.ops
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# Text and rules


def _declarations(ops: list[Op]) -> list[tuple[str, str]]:
    """(table, chain) of the user chains: those that get a rule, in order of their first rule,
    then those only jumped to."""
    owners: list[tuple[str, str]] = []
    targets: list[tuple[str, str]] = []
    for op in ops:
        builtins = BUILTIN_CHAINS.get(op.table, ())
        if op.chain not in builtins and (op.table, op.chain) not in owners:
            owners.append((op.table, op.chain))
        jump = op.args[op.args.index("-j") + 1] if "-j" in op.args else None
        if jump is not None and jump.startswith("ISTIO_") and (op.table, jump) not in targets:
            targets.append((op.table, jump))
    return owners + [t for t in targets if t not in owners]


def render(ops: tuple[Op, ...], *, command_form: bool = False) -> str:
    """The text Istio's tests record for ``ops``: ``iptables-restore`` input per family, or the
    ``iptables``/``ip6tables`` commands (1.21–1.23)."""
    lines: list[str] = []
    for fam in ("ipv4", "ipv6"):
        mine = [op for op in ops if op.family == fam]
        if not mine:
            continue
        if command_form:
            tool = "iptables" if fam == "ipv4" else "ip6tables"
            lines += [f"{tool} -t {t} -N {ch}" for t, ch in _declarations(mine)]
            lines += [f"{tool} -t {op.table} {op.line}" for op in mine]
            continue
        for table in dict.fromkeys(op.table for op in mine):
            ops_t = [op for op in mine if op.table == table]
            lines.append(f"* {table}")
            lines += [f"-N {ch}" for _t, ch in _declarations(ops_t)]
            lines += [op.line for op in ops_t]
            lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def rulesets_of(ops: tuple[Op, ...]) -> Rulesets:
    """The rules ``ops`` build, each read by ``meshsolve.iptables.parse_rule``."""
    b = RuleBuilder()
    for op in ops:
        rule = parse_rule(list(op.args))
        target = rule.target
        if isinstance(target, Jump | Goto):
            b.declare(op.family, op.table, target.chain)
        if op.insert is None:
            b.append(op.family, op.table, op.chain, *rule.matches, target=target)
        else:
            b.insert(op.family, op.table, op.chain, op.insert, *rule.matches, target=target)
    return b.build()


def inpod_rules(c: AmbientConfig) -> Rulesets:
    """The iptables rules in the pod for ``c``."""
    return rulesets_of(inpod_ops(c))


def inpod_text(c: AmbientConfig) -> str:
    return render(inpod_ops(c), command_form=c.command_form)


def host_rules(c: AmbientConfig) -> Rulesets:
    """The node's probe rule (nat ``POSTROUTING``) for ``c``."""
    return rulesets_of(host_ops(c))


def host_text(c: AmbientConfig) -> str:
    return render(host_ops(c), command_form=c.command_form)
