"""Ambient pods checked: the properties A1–A5 of an ambient configuration, proved or refuted.

``ambient_properties(config, world)`` states what an ambient pod must satisfy, with its
exemptions written out from the configuration: the probe address (outbound, and as the one
inbound source exempt), no inbound capture in ingress mode, TCP arriving on a virtual interface
treated as outbound, HBONE's port. ``check_ambient`` proves each one (``AmbientRow``: the property
A1…A5, the verdict). ``python -m meshsolve.analysis.ambient`` prints the table for Istio's
ambient goldens (``docs/ambient.md``).

In the TPROXY era (1.21–1.23, 1.24's option) HBONE's port is TPROXYed to ztunnel's own
transparent 15008 listener, which takes it as the kernel does (``kernel-facts.md``, fact 13c), so
A1, A4 and A5 are asked there as in the REDIRECT eras. A3 asks HBONE natively in every era: a
peer's connection to the tunnel listener naming the app's port (``Flow.inner``) is ztunnel's
inbound side, which connects to the app from the peer's address.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Iterable

import attrs

import meshsolve.defaults as defaults
from meshsolve.analysis.ambient_properties import (
    AmbientNoBypass,
    AmbientNoLoops,
    HboneSplit,
    MarkSpoofing,
    ProbeExemption,
    ReturnPath,
)
from meshsolve.analysis.check import Refuted, Verdict, check
from meshsolve.analysis.properties import Property
from meshsolve.istio.ambient.config import HBONE_PORT, INBOUND_PLAINTEXT_PORT, INPOD_MARK, OUTBOUND_PORT, AmbientConfig
from meshsolve.istio.ambient.profile import ambient_world
from meshsolve.model.net import IPAddress
from meshsolve.model.world import World

__all__ = ["AmbientRow", "ambient_properties", "app_ports", "check_ambient", "golden_table", "probe_neighbours",
           "standard_cases"]


@attrs.frozen
class AmbientRow:
    """One property of an ambient pod and its verdict (``key``: ``A1`` … ``A5``)."""

    key: str
    prop: Property
    verdict: Verdict

    def __str__(self) -> str:
        return f"{self.key:3} {self.verdict}"


def app_ports(world: World) -> tuple[int, ...]:
    """The app ports a peer can reach through the pod's address (not bound to loopback only)."""
    return tuple(sorted({s.port for a in world.apps for s in a.sockets if not s.bind.is_loopback}))


def probe_neighbours(probe: IPAddress) -> tuple[IPAddress, ...]:
    """Sources next to the probe address (one below, one above): they must not be exempt."""
    out: list[IPAddress] = []
    for delta in (-1, 1):
        try:
            out.append(ipaddress.ip_address(int(probe) + delta) if probe.version == 4 else
                       ipaddress.IPv6Address(int(probe) + delta))
        except ValueError:
            continue
    return tuple(out)


def ambient_properties(c: AmbientConfig, world: World) -> tuple[tuple[str, Property], ...]:
    """What an ambient pod captured with ``c`` must satisfy (see the module docstring), keyed A1…A5."""
    probes = tuple(c.probe_snat(f) for f in world.families)
    ports = app_ports(world)
    inbound = not c.ingress
    out: list[tuple[str, Property]] = [
        ("A1", AmbientNoBypass(exempt_dsts=probes, inbound=inbound)),
    ]
    for nic in c.virtual_interfaces:
        out.append(("A1", AmbientNoBypass(outbound=False, interface=nic)))
    out.append(("A2", AmbientNoLoops(skip_ports=(OUTBOUND_PORT, INBOUND_PLAINTEXT_PORT))))
    out.append(("A2", MarkSpoofing(mark=INPOD_MARK)))
    if ports:
        if inbound:
            out.append(("A3", ReturnPath(ports)))
        out.append(("A3", ReturnPath(ports, tunnel=True)))
    if inbound and ports:
        others = tuple(a for f in world.families for a in (world.peer_ip(f),) if a is not None)
        others += tuple(n for p in probes for n in probe_neighbours(p))
        out.append(("A4", ProbeExemption(probes, others, ports)))
    out.append(("A5", HboneSplit(HBONE_PORT, plaintext=inbound)))
    return tuple(out)


def check_ambient(c: AmbientConfig, world: World | None = None, *, hops: int = defaults.HOPS) -> tuple[AmbientRow, ...]:
    """Prove or refute every property of ``ambient_properties`` for an ambient pod (``world``:
    ``c``'s default pod unless given)."""
    w = world if world is not None else ambient_world(c)
    rows: list[AmbientRow] = []
    for key, prop in ambient_properties(c, w):
        rows.append(AmbientRow(key, prop, check(w, prop, hops=hops)))
    return tuple(rows)


# ---------------------------------------------------------------------------------------------
# The table of Istio's goldens


def _cell(v: Verdict) -> str:
    if isinstance(v, Refuted):
        return f"refuted: `{v.flow}` → {v.result.summary}"
    return v.kind


def _label(prop: Property) -> str:
    """Which of a key's properties a cell speaks of."""
    if isinstance(prop, AmbientNoBypass):
        return f"on {prop.interface}" if prop.interface else ("" if prop.inbound else "outbound")
    if isinstance(prop, AmbientNoLoops):
        return "loops"
    if isinstance(prop, MarkSpoofing):
        return "spoofer"
    if isinstance(prop, ReturnPath):
        return "HBONE" if prop.tunnel else "plaintext"
    if isinstance(prop, HboneSplit):
        return "" if prop.plaintext else "HBONE"
    return ""


def golden_table(cases: Iterable[tuple[str, AmbientConfig]]) -> str:
    """A markdown table: one row per configuration, one column per property key (several properties
    of a key: each named — ``on IFACE`` for a virtual interface, ``loops``/``spoofer``,
    ``plaintext``/``HBONE``; ``outbound``: A1 without inbound capture)."""
    lines = ["| configuration | A1 | A2 | A3 | A4 | A5 |", "|---|---|---|---|---|---|"]
    for label, c in cases:
        rows = check_ambient(c)
        cells = []
        for key in ("A1", "A2", "A3", "A4", "A5"):
            mine = [r for r in rows if r.key == key]
            cells.append("; ".join(" ".join(x for x in (_label(r.prop), _cell(r.verdict)) if x) for r in mine) or "—")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def standard_cases() -> tuple[tuple[str, AmbientConfig], ...]:
    """The configurations the table covers: each HEAD mode (default, DNS off, ingress, virtual
    interfaces, each with IPv6), ingress mode before its fix (1.28), the TPROXY eras (1.21, 1.24's
    option). Addresses are the charts' defaults."""
    virt = ("fake1s0f0", "fake1s0f1")
    out: list[tuple[str, AmbientConfig]] = []
    for v6 in (False, True):
        tag = ", IPv6" if v6 else ""
        out += [(f"current, DNS{tag}", AmbientConfig(redirect_dns=True, enable_ipv6=v6)),
                (f"current, pod DNS disabled{tag}", AmbientConfig(dns_override="disabled", enable_ipv6=v6)),
                (f"current, ingress mode{tag}", AmbientConfig(ingress=True, enable_ipv6=v6)),
                (f"current, virtual interfaces{tag}", AmbientConfig(virtual_interfaces=virt, enable_ipv6=v6)),
                (f"current, ingress mode and virtual interfaces{tag}",
                 AmbientConfig(ingress=True, virtual_interfaces=virt, enable_ipv6=v6))]
    out += [("1.28, ingress mode (before the connmark fix)", AmbientConfig(version="1.28", ingress=True)),
            ("1.24, TPROXY option", AmbientConfig(version="1.24", tproxy=True, redirect_dns=True)),
            ("1.21 (TPROXY)", AmbientConfig(version="1.21", redirect_dns=True))]
    return tuple(out)


def main(argv: list[str]) -> int:
    print(golden_table(standard_cases()), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
