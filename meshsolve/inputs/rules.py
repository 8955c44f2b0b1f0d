"""A rules input (``--rules``: a dump, a listing, a log) → the state to analyse, or why there is none.

In order: forms that are not rules are refused by the reader (``iptables -L``, ``kubectl describe``,
nftables, sockets, manifests, each naming what to give instead); rules of another mesh (Linkerd,
Kuma, Consul) or of Istio's ambient mode are refused naming the mesh; a log that shows a failed
run becomes an ``MSH0110`` problem (nothing is analysed unless the log shows the state after the
failure); an input that ends early is refused as such; rules that capture nothing are refused as
"no mesh"; an Istio ruleset that was not installed whole is an ``MSH0111`` problem. What is left is
analysed, with the Istio versions its fingerprints fit (``meshsolve.istio.fingerprint``).

:func:`listeners_of_rules` says which app listeners the rules make possible: the inbound ports they
name, and, when they capture every port alike, one port that stands for all the ports no rule names
(the lowest port above 1023 that no rule mentions).

With ``ambient=True`` (the pod is in ambient mode, ``meshsolve.inputs.build``) it is the other way
round: ambient mode's rules (iptables, or nft tables ``istio-ambient-*``) are read, and a sidecar's
are refused.
"""

from __future__ import annotations

import os
import re

import attrs

import meshsolve.defaults as defaults
from meshsolve.errors import ParseError, UnsupportedError
from meshsolve.inputs.values import Problem
from meshsolve.iptables import Reading, file_text, read_unwrapped, unwrap_text
from meshsolve.istio.fingerprint import Mesh, VersionRange, mesh_of_rules, mesh_of_text, partial_state, versions_of
from meshsolve.model.rules import (
    Goto,
    Jump,
    MultiportMatch,
    PortMatch,
    Redirect,
    Return,
    Rule,
    Rulesets,
    Tproxy,
)
from meshsolve.nftables import is_nft
from meshsolve.nftables.loadcheck import load_rulesets

__all__ = ["Listeners", "RulesRead", "listeners_of_rules", "read_rules", "read_rules_text", "rules_source"]


@attrs.frozen
class RulesRead:
    """A rules input as read: the state to analyse (``None`` when a problem leaves none)."""

    reading: Reading
    rulesets: Rulesets | None
    problems: tuple[Problem, ...] = ()
    notes: tuple[str, ...] = ()
    versions: VersionRange | None = None
    mesh: Mesh | None = None

    @property
    def variables(self) -> dict[str, str]:
        return {n: v for n, v, _ in self.reading.variables}


def _other_mesh(mesh: Mesh) -> str:
    """For a mesh meshsolve has a profile of: how to check the rules with it instead."""
    if mesh.kind in ("linkerd", "kuma", "consul"):
        return f" (check them with {mesh.kind}'s proxy: --mesh {mesh.kind}, or give its pod)"
    return ""


def _header_notes(reading: Reading) -> list[str]:
    out = []
    for name, value, line in reading.variables:
        if re.fullmatch(r"-[A-Za-z]", value.strip()):
            out.append(f"line {line}: {name}={value}: a flag took the next flag ({value}) as its value, so "
                       f"{value} itself was never set (the command line had no value after the first flag)")
    if reading.argv is not None:
        n, cmd = reading.argv
        out.append(f"line {n} is the istio-iptables command line `{cmd.strip()}`: `meshsolve generate --istio "
                   "VERSION -- FLAGS` shows what it installs")
    return out


_OPENED = re.compile(r"table (\w+) \(opened at line (\d+)\)")
_TO_PORTS = re.compile(r"^-A ISTIO_IN_REDIRECT .*--to-ports? (\d+)")


def _cut_istio_table(reading: Reading, exc: ParseError) -> list[str]:
    """What the cut nat table of an istio-init log already shows. iptables-save declares every
    chain of a table before its first rule, so once a rule line is there the chain list is whole:
    an ``ISTIO_INBOUND`` the header asked for (``INBOUND_PORTS_INCLUDE``) that is not declared was
    not installed; rules come chain by chain in the order of that list, so a first rule in a later
    chain means ``PREROUTING`` holds none; and an ``ISTIO_IN_REDIRECT`` that redirects to another
    port than the header's inbound capture port was written by another run."""
    m = _OPENED.search(exc.message)
    if m is None or m.group(1) != "nat" or not reading.istio_log:
        return []
    opened = int(m.group(2))
    chains: list[str] = []
    rules: list[tuple[int, str]] = []
    for n, text in reading.lines:
        if n <= opened:
            continue
        line = text.strip()
        if line.startswith(":") and not rules:
            chains.append(line[1:].split()[0])
        elif line.startswith("-A "):
            rules.append((n, line))
    if not rules or "ISTIO_REDIRECT" not in chains:
        return []
    header = {name: value.strip() for name, value, _line in reading.variables}
    out: list[str] = []
    istio = [c for c in chains if c.startswith("ISTIO_")]
    if header.get("INBOUND_PORTS_INCLUDE") and "ISTIO_INBOUND" not in chains:
        out.append(f"what the cut table shows: its chains (declared before its first rule, so all of them) are "
                   f"{', '.join(istio)}, without ISTIO_INBOUND, although this run's header asks for inbound "
                   f"capture (INBOUND_PORTS_INCLUDE={header['INBOUND_PORTS_INCLUDE']}): inbound capture was not "
                   "installed")
    first = rules[0][1].split()[1]
    if "PREROUTING" in chains and first in chains and chains.index("PREROUTING") < chains.index(first):
        out.append(f"its first rule (line {rules[0][0]}) is in {first}, and iptables-save lists rules in the order "
                   "of its chains: PREROUTING holds no rule, so no inbound connection is sent to capture")
    key = next((k for k in ("PROXY_INBOUND_CAPTURE_PORT", "INBOUND_CAPTURE_PORT") if header.get(k)), None)
    for n, line in rules:
        port = _TO_PORTS.match(line)
        if port and key is not None and port.group(1) != header[key]:
            out.append(f"ISTIO_IN_REDIRECT redirects to {port.group(1)} (line {n}), but this run's header says "
                       f"{key}={header[key]}: the dump's rules are not this run's")
    return out


def _failure_problem(reading: Reading, shown_state: bool, cut: bool) -> list[Problem]:
    out = []
    for f in reading.failures:
        status = "" if f.status is None else f", exit status {f.status}"
        after = ("The state the netns was left in (the iptables-save dump after it) is analysed below."
                 if shown_state else
                 "Nothing is analysed: the log does not show the state it left"
                 + (" (its dump after the failure is cut)" if cut else "") + ".")
        out.append(Problem(
            "MSH0110",
            f"istio-init failed: `{f.command}` (line {f.lineno}: {f.error}{status}). Not installed by this run: "
            f"{f.not_installed}. Installed by it: {f.installed}. {after}",
            f"{reading.source}:{f.lineno}", blocking=not shown_state))
    return out


def rules_source(path: str | os.PathLike[str], source: str | None = None) -> str:
    """The name a rules input goes by in messages (``<stdin>`` for ``-``)."""
    return source if source is not None else ("<stdin>" if str(path) == "-" else str(path))


def read_rules(path: str | os.PathLike[str], *, source: str | None = None, ambient: bool = False) -> RulesRead:
    """Read ``--rules`` (see the module notes); ``ambient``: the rules of a pod in ambient mode."""
    name = rules_source(path, source)
    return read_rules_text(file_text(path, name), name, ambient=ambient)


def read_rules_text(raw: str, name: str, *, ambient: bool = False) -> RulesRead:
    """:func:`read_rules` of a text already read (``name`` says where from)."""
    if is_nft(raw):
        return _nft_rules(raw, name, ambient)
    unwrapped = unwrap_text(raw, name)
    other = mesh_of_text(unwrapped.text, ((ln.lineno, ln.text) for ln in unwrapped.lines))
    if other is not None and not (ambient and other.kind == "istio-ambient"):
        raise UnsupportedError(f"{name}: these are the rules of {other.name} ({other.evidence}), not Istio's "
                               f"sidecar set-up; meshsolve reports no Istio finding for them{_other_mesh(other)}")
    reading = read_unwrapped(unwrapped, name)
    notes = [*reading.notes, *_header_notes(reading)]
    cut = reading.incomplete is not None
    if reading.failures:
        state = reading.rulesets if not cut else None
        if state is not None and mesh_of_rules(state).kind == "none":
            notes.append("the iptables-save dump after the failure holds no capture rule")
            state = None
        problems = _failure_problem(reading, state is not None, cut)
        if state is None:
            return RulesRead(reading, None, tuple(problems), tuple(notes))
        return _analysable(reading, state, tuple(problems), notes, ambient)
    if reading.incomplete is not None:
        exc = reading.incomplete
        extra = "".join(f"; {n}" for n in (*_cut_istio_table(reading, exc), *_header_notes(reading)))
        raise ParseError(exc.message + extra, source=exc.source, lineno=exc.lineno, line=exc.line)
    return _analysable(reading, reading.require_rulesets(), (), notes, ambient)


def _not_ambient(source: str, mesh: Mesh) -> UnsupportedError:
    return UnsupportedError(f"{source}: the pod is in Istio's ambient mode, but these are the rules of {mesh.name} "
                            f"({mesh.evidence}), not istio-cni's in-pod rules; meshsolve reports nothing for them")


def _nft_rules(text: str, name: str, ambient: bool = False) -> RulesRead:
    """nftables rules (``nft -f`` input, ``nft list ruleset``, ``nft -j``): lowered whole; what nft would
    refuse to load travels as the rulesets' ``load_problems``. Istio's native nftables tables are
    named ``istio-proxy-*`` (``istio-ambient-*`` is ambient mode, refused like its iptables rules)."""
    rulesets = load_rulesets(text, name)
    tables = sorted({t.name for rs in (rulesets.ipv4, rulesets.ipv6) for t in rs.nft})
    reading = Reading(source=name, form="nft", rulesets=rulesets, text=text)
    if ambient:
        evidence = f"its tables {', '.join(tables) or '(none)'}"
        if not any(t.startswith("istio-ambient") for t in tables):
            sidecar = any(t.startswith("istio-proxy") for t in tables)
            raise _not_ambient(name, Mesh("istio" if sidecar else "custom", "Istio's sidecar (native nftables)"
                                          if sidecar else "nftables rules of their own", evidence))
        mesh = Mesh("istio-ambient", "Istio's ambient mode (native nftables)", evidence)
        return RulesRead(reading, rulesets, (), ("nftables rules: Istio ambient mode's native nftables tables",),
                         None, mesh)
    if any(t.startswith("istio-ambient") for t in tables):
        raise UnsupportedError(f"{name}: these are the rules of Istio's ambient mode (its tables "
                               f"{', '.join(tables)}), not Istio's sidecar set-up; meshsolve reports nothing for them")
    if any(t.startswith("istio-proxy") for t in tables):
        mesh = Mesh("istio", "Istio's sidecar (native nftables)", f"its tables {', '.join(tables)}")
        return RulesRead(reading, rulesets, (), ("nftables rules: Istio's native nftables mode",), None, mesh)
    mesh = Mesh("custom", "nftables rules of their own (no Istio table names)",
                f"tables {', '.join(tables) or '(none)'}")
    return RulesRead(reading, rulesets, (), (f"these rules are {mesh.name} ({mesh.evidence}): checked with an "
                                              "Istio sidecar as the proxy",), None, mesh)


def _analysable(reading: Reading, rulesets: Rulesets, problems: tuple[Problem, ...], notes: list[str],
                ambient: bool = False) -> RulesRead:
    mesh = mesh_of_rules(rulesets)
    if ambient:
        if mesh.kind != "istio-ambient":
            raise _not_ambient(reading.source, mesh)
        return RulesRead(reading, rulesets, problems, tuple(notes), None, mesh)
    if mesh.kind in ("istio-ambient", "linkerd", "kuma", "consul"):
        raise UnsupportedError(f"{reading.source}: these are the rules of {mesh.name} ({mesh.evidence}), not "
                               "Istio's sidecar set-up; meshsolve reports no Istio finding for them"
                               + _other_mesh(mesh))
    if mesh.kind == "none":
        raise UnsupportedError(f"{reading.source}: not an Istio set-up: {mesh.name} ({mesh.evidence}); "
                               "meshsolve checks Istio's sidecar capture, so it reports nothing for them")
    if mesh.kind == "custom":
        notes.append(f"these rules are {mesh.name} ({mesh.evidence}): checked with an Istio sidecar as the proxy")
    partial = partial_state(rulesets) if mesh.istio_sidecar else None
    if partial is not None:
        where = next((f"{reading.source}:{c.origin.lineno}" for t in rulesets.ipv4.tables for c in t.chains
                      if c.name == "ISTIO_REDIRECT" and c.origin is not None), None)
        problem = Problem("MSH0111", f"Istio's rules are not installed whole: {partial}. istio-init did not "
                          "finish, or the listing is cut; nothing is analysed", where, blocking=True)
        return RulesRead(reading, None, (*problems, problem), tuple(notes), None, mesh)
    versions = versions_of(rulesets, {n: v for n, v, _ in reading.variables}) if mesh.istio_sidecar else None
    return RulesRead(reading, rulesets, problems, tuple(notes), versions, mesh)


# -- the listeners the rules make possible ----------------------------------------------------------

@attrs.frozen
class Listeners:
    """Ports the rules name as inbound app ports (with the rule each comes from), whether they capture
    every other port alike, and the port standing for those (``representative``)."""

    named: tuple[tuple[int, str], ...] = ()  # (port, where: "nat::ISTIO_INBOUND#1 (file:line)")
    wildcard: bool = False
    representative: int | None = None
    excluded: tuple[int, ...] = ()  # ports the inbound chain RETURNs before its catch-all


def _dport_ranges(r: Rule) -> list[tuple[int, int]]:
    out = []
    for m in r.matches:
        if isinstance(m, PortMatch):
            for rng in (m.dport, m.sport):
                if rng is not None:
                    out.append((rng.lo, rng.hi))
        elif isinstance(m, MultiportMatch):
            out.extend((p.lo, p.hi) for p in m.ports)
    if isinstance(r.target, Redirect) and r.target.to_ports is not None:
        out.append((r.target.to_ports.lo, r.target.to_ports.hi))
    if isinstance(r.target, Tproxy):
        out.append((r.target.on_port, r.target.on_port))
    return out


def _single_dports(r: Rule) -> tuple[int, ...]:
    for m in r.matches:
        if isinstance(m, PortMatch) and m.dport is not None and not m.dport_negated and m.dport.lo == m.dport.hi:
            return (m.dport.lo,)
        if isinstance(m, MultiportMatch) and m.kind in ("dports", "ports") and not m.negated:
            return tuple(p.lo for p in m.ports if p.lo == p.hi)
    return ()


def listeners_of_rules(rulesets: Rulesets, proxy_ports: tuple[int, ...] = ()) -> Listeners:
    """The app listeners an Istio sidecar ruleset makes possible (see the module notes)."""
    rs = rulesets.ipv4 if not rulesets.ipv4.empty else rulesets.ipv6
    mangle = rs.table("mangle")
    tproxy = mangle is not None and mangle.chain("ISTIO_TPROXY") is not None
    table = "mangle" if tproxy else "nat"
    chain = rs.chain(table, "ISTIO_INBOUND")
    where_name = f"{table}::ISTIO_INBOUND"
    if chain is None:  # Istio's native nftables tables: the same chains, in nft's names
        nft = {n.name: n for n in rs.nft}
        tp = nft.get("istio-proxy-mangle")
        nft_table = tp if tp is not None and tp.table.chain("istio-tproxy") is not None else nft.get("istio-proxy-nat")
        if nft_table is not None:
            chain = nft_table.table.chain("istio-inbound")
            where_name = f"{nft_table.key}::istio-inbound"
    to_proxy = {"ISTIO_IN_REDIRECT", "ISTIO_TPROXY", "ISTIO_DIVERT", "istio-in-redirect", "istio-tproxy",
                "istio-divert"}
    named: dict[int, str] = {}
    excluded: list[int] = []
    wildcard = False
    for n, r in enumerate(() if chain is None else chain.rules, 1):
        target = r.target.chain if isinstance(r.target, Jump | Goto) else None
        if isinstance(r.target, Return) and not wildcard:
            excluded.extend(p for p in _single_dports(r) if p not in excluded)
        if target not in to_proxy:
            continue
        ports = _single_dports(r)
        if ports:
            where = f"{where_name}#{n}" + (f" ({r.origin})" if r.origin is not None else "")
            for p in ports:
                named.setdefault(p, where)
        elif not any(isinstance(m, PortMatch | MultiportMatch) and (getattr(m, "dport", None) is not None
                                                                    or isinstance(m, MultiportMatch))
                     for m in r.matches):
            wildcard = True
    representative = None
    if wildcard:
        used: list[tuple[int, int]] = [(p, p) for p in proxy_ports]
        for ruleset in (rulesets.ipv4, rulesets.ipv6):
            for t in (*ruleset.tables, *(n.table for n in ruleset.nft)):
                for c in t.chains:
                    for r in c.rules:
                        used.extend(_dport_ranges(r))
        port = defaults.REPRESENTATIVE_PORT_FLOOR
        while any(lo <= port <= hi for lo, hi in used):
            port += 1
        representative = port
    return Listeners(tuple(sorted(named.items())), wildcard, representative, tuple(excluded) if wildcard else ())
