"""Whose rules are these, which Istio wrote them, and were they installed whole?

* :func:`mesh_of_text` / :func:`mesh_of_rules` name the set-up: Istio's sidecar (``ISTIO_INBOUND`` /
  ``ISTIO_OUTPUT`` / ``ISTIO_REDIRECT``), Istio ambient's in-pod rules (``ISTIO_PRERT``), Linkerd's
  proxy-init (``PROXY_INIT_*``), Kuma (``MESH_*`` / ``KUMA_MESH_*``), Consul (``CONSUL_PROXY_*``), or
  no mesh (Docker's ``DOCKER`` chains, kube-proxy's ``KUBE-*``, or nothing that captures).
* :func:`config_of_rules` reads back the istio-iptables settings a sidecar ruleset shows (ports,
  proxy ids, interception mode, inbound port list, CIDRs), *inferred* from its rules.
* :func:`versions_of` says which Istio versions write exactly such rules: every version's rules are
  generated (``meshsolve.istio.generate``) with the settings read back, and the fingerprints that
  changed across versions are compared (the loopback rule's target and owner split, ``127.0.0.6``,
  the 15008 ``RETURN``, the ``--dport 22`` ``RETURN``, ``! --dport 15008`` on the loopback rule,
  ``-p tcp`` on the ``OUTPUT`` jump, where ``ISTIO_IN_REDIRECT`` sends, the trailing ``RETURN``).
  An istio-init log's header narrows it further: it prints ``PROXY_TUNNEL_PORT`` from 1.7,
  ``ISTIO_EXCLUDE_INTERFACES`` from 1.12 and ``OUTBOUND_OWNER_GROUPS_*`` from 1.14 (the releases that
  added those settings, ``../shared/reference/istio-capture-facts.md`` §2.2). The answer is a
  :class:`VersionRange` with its reasons.
* :func:`partial_state` finds an Istio ruleset that was not installed whole: the capture chains
  present but empty, or present but not reached from their hook.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping

import attrs

from meshsolve.errors import MeshsolveError
from meshsolve.istio.config import KNOWN_MINORS, CaptureConfig, minor_of
from meshsolve.istio.generate import generate
from meshsolve.model.rules import (
    Destination,
    Goto,
    Jump,
    MultiportMatch,
    OutInterface,
    OwnerMatch,
    PortMatch,
    Protocol,
    Redirect,
    Return,
    Rule,
    Ruleset,
    Rulesets,
    Source,
    Table,
    Tproxy,
)

__all__ = ["Mesh", "VersionRange", "config_of_rules", "mesh_of_rules", "mesh_of_text", "partial_state",
           "versions_of"]

VERSIONS: tuple[str, ...] = tuple(f"1.{m}" for m in KNOWN_MINORS)


@attrs.frozen
class Mesh:
    """Who wrote a ruleset: ``kind`` is ``istio``, ``istio-ambient``, ``linkerd``, ``kuma``, ``consul``
    or ``none``; ``evidence`` says what showed it."""

    kind: str
    name: str
    evidence: str

    @property
    def istio_sidecar(self) -> bool:
        return self.kind == "istio"


#: (kind, name, pattern, needles): the pattern is searched only in a text holding one of the
#: needles (plain substrings every match contains): a pattern with no literal start is tried at
#: every position, which on a dump of 50,000 rules took a second.
_MESH_TEXT: tuple[tuple[str, str, re.Pattern[str], tuple[str, ...]], ...] = (
    ("istio-ambient", "Istio's ambient mode (ztunnel's in-pod capture)", re.compile(r"\bISTIO_(?:PRERT|POSTRT)\b"),
     ("ISTIO_PRERT", "ISTIO_POSTRT")),
    ("linkerd", "Linkerd's proxy-init", re.compile(r"\bPROXY_INIT_(?:REDIRECT|OUTPUT)\b|\blinkerd-init\b"),
     ("PROXY_INIT_", "linkerd-init")),
    ("kuma", "Kuma's transparent proxy", re.compile(r"\b(?:KUMA_MESH_\w+|MESH_(?:INBOUND|OUTBOUND|OUTPUT|REDIRECT|"
                                                    r"IN_REDIRECT)\w*)\b"), ("MESH_",)),
    ("consul", "Consul's transparent proxy", re.compile(r"\bCONSUL_(?:PROXY|DNS)_\w+\b"), ("CONSUL_",)),
)
_ISTIO_SIDECAR = re.compile(r"\bISTIO_(?:INBOUND|OUTPUT|REDIRECT|IN_REDIRECT)\b")


def mesh_of_text(text: str, numbered: Iterable[tuple[int, str]] = ()) -> Mesh | None:
    """Another mesh (or Istio ambient) named by the chains in ``text``; ``None`` when the text shows
    Istio's sidecar chains or no mesh's chains at all. ``numbered`` (line number, text) lines let
    the evidence name the input's line."""
    for kind, name, rx, needles in _MESH_TEXT:
        m = rx.search(text) if any(n in text for n in needles) else None
        if m and (kind == "istio-ambient" or "ISTIO_" not in text or not _ISTIO_SIDECAR.search(text)):
            line = next((n for n, t in numbered if m.group(0) in t), None)
            return Mesh(kind, name, m.group(0) + ("" if line is None else f" (line {line})"))
    return None


_BUILTIN_NAMES = frozenset({"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"})


def _chains(rulesets: Rulesets) -> set[str]:
    return {c.name for rs in (rulesets.ipv4, rulesets.ipv6) for t in rs.tables for c in t.chains}


def mesh_of_rules(rulesets: Rulesets) -> Mesh:
    """Who wrote ``rulesets`` (see the module notes)."""
    names = _chains(rulesets)
    text = " ".join(sorted(names))
    other = mesh_of_text(text)
    if other is not None:
        own = sorted(n for n in names if n not in _BUILTIN_NAMES)
        return attrs.evolve(other, evidence=f"its chains {', '.join(own)}")
    sidecar = sorted(n for n in names if _ISTIO_SIDECAR.fullmatch(n))
    if sidecar:
        return Mesh("istio", "Istio's sidecar (istio-init)", f"its chains {', '.join(sidecar)}")
    hosts = sorted(n for n in names if n.startswith(("DOCKER", "KUBE-")))
    if hosts:
        who = "Docker" if any(n.startswith("DOCKER") for n in hosts) else "kube-proxy"
        return Mesh("none", f"{who}'s rules, no mesh", f"its chains {', '.join(hosts[:4])}")
    captures = any(isinstance(r.target, Redirect | Tproxy) for rs in (rulesets.ipv4, rulesets.ipv6)
                   for t in rs.tables for c in t.chains for r in c.rules)
    if captures:
        return Mesh("custom", "a capture set-up of its own (no Istio chain names)",
                    "REDIRECT/TPROXY rules in chains " + ", ".join(sorted(names)))
    return Mesh("none", "no mesh: nothing in these rules captures traffic",
                "no REDIRECT or TPROXY rule" + (f" (chains: {', '.join(sorted(names))})" if names else ""))


# -- reading the settings back --------------------------------------------------------------------

def _chain_rules(t: Table | None, name: str) -> tuple[Rule, ...]:
    c = None if t is None else t.chain(name)
    return () if c is None else c.rules


def _target_chain(r: Rule) -> str | None:
    return r.target.chain if isinstance(r.target, Jump | Goto) else None


def _dports(r: Rule) -> tuple[int, ...] | None:
    """The single destination ports a rule matches (``None``: no port match, or a range/negation)."""
    for m in r.matches:
        if isinstance(m, PortMatch) and m.dport is not None:
            if m.dport_negated or m.dport.lo != m.dport.hi:
                return None
            return (m.dport.lo,)
        if isinstance(m, MultiportMatch) and m.kind == "dports" and not m.negated:
            if any(p.lo != p.hi for p in m.ports):
                return None
            return tuple(p.lo for p in m.ports)
    return ()


def _plain(r: Rule, *allowed: type) -> bool:
    """Only ``-p tcp``/a bare tcp module besides the match kinds in ``allowed``."""
    for m in r.matches:
        if isinstance(m, Protocol) or (isinstance(m, PortMatch) and m.dport is None and m.sport is None):
            continue
        if isinstance(m, allowed):
            continue
        return False
    return True


def _redirect_port(rules: Iterable[Rule]) -> int | None:
    for r in rules:
        if isinstance(r.target, Redirect) and r.target.to_ports is not None:
            return r.target.to_ports.lo
    return None


def config_of_rules(rulesets: Rulesets, version: str) -> CaptureConfig:
    """The istio-iptables settings an Istio sidecar ruleset shows (best effort; unreadable parts
    keep the defaults), for ``version``."""
    rs = rulesets.ipv4
    nat, mangle = rs.table("nat"), rs.table("mangle")
    kw: dict[str, object] = {"version": version}
    proxy_port = _redirect_port(_chain_rules(nat, "ISTIO_REDIRECT"))
    if proxy_port is not None:
        kw["proxy_port"] = proxy_port
    tproxy = mangle is not None and mangle.chain("ISTIO_TPROXY") is not None
    kw["mode"] = "TPROXY" if tproxy else "REDIRECT"
    in_port = _redirect_port(_chain_rules(nat, "ISTIO_IN_REDIRECT"))
    if tproxy:
        in_port = next((r.target.on_port for r in _chain_rules(mangle, "ISTIO_TPROXY")
                        if isinstance(r.target, Tproxy)), None)
    if in_port is not None and in_port != kw.get("proxy_port", 15001):
        kw["inbound_capture_port"] = in_port
    inbound = _chain_rules(mangle if tproxy else nat, "ISTIO_INBOUND")
    to_in = {"ISTIO_IN_REDIRECT", "ISTIO_TPROXY"}
    catch_all = any(_target_chain(r) in to_in and _dports(r) == () for r in inbound)
    if catch_all:
        kw["inbound_ports"] = "*"
        kw["inbound_ports_exclude"] = tuple(p for r in inbound if isinstance(r.target, Return)
                                            for p in (_dports(r) or ()) if p not in (22, 15008))
    else:
        kw["inbound_ports"] = tuple(dict.fromkeys(p for r in inbound if _target_chain(r) in to_in
                                                  for p in (_dports(r) or ())))
    out = _chain_rules(nat, "ISTIO_OUTPUT")
    uids = [m.uid for r in out for m in r.matches if isinstance(m, OwnerMatch) and m.uid and not m.uid_negated
            and isinstance(r.target, Return)]
    gids = [m.gid for r in out for m in r.matches if isinstance(m, OwnerMatch) and m.gid and not m.gid_negated
            and isinstance(r.target, Return)]
    if uids:
        kw["proxy_uids"] = tuple(dict.fromkeys(uids))
    if gids:
        kw["proxy_gids"] = tuple(dict.fromkeys(gids))
    plain_all = any(_target_chain(r) == "ISTIO_REDIRECT" and not r.matches for r in out)
    include = [m.net for r in out if _target_chain(r) == "ISTIO_REDIRECT" for m in r.matches
               if isinstance(m, Destination) and not m.negated]
    kw["outbound_cidrs"] = "*" if plain_all else tuple(include)
    kw["outbound_cidrs_exclude"] = tuple(
        m.net for r in out if isinstance(r.target, Return) and len(r.matches) == 1
        for m in r.matches if isinstance(m, Destination) and not m.negated and not m.net.network_address.is_loopback)
    kw["outbound_ports_exclude"] = tuple(dict.fromkeys(
        p for r in out if isinstance(r.target, Return) and _plain(r, PortMatch) for p in (_dports(r) or ())))
    kw["enable_ipv6"] = any(c.name.startswith("ISTIO_") for t in rulesets.ipv6.tables for c in t.chains)
    try:
        return CaptureConfig(**kw)  # type: ignore[arg-type]
    except (MeshsolveError, ValueError, TypeError):
        return CaptureConfig(version=version)


# -- fingerprints ---------------------------------------------------------------------------------

def _lo_rule(out: tuple[Rule, ...]) -> Rule | None:
    """The rule that sends the pod's own connections over ``lo`` to a non-loopback address back to
    the proxy (``-o lo ! -d 127.0.0.1/32 ... -j ISTIO_*REDIRECT``)."""
    for r in out:
        lo = any(isinstance(m, OutInterface) and m.name == "lo" and not m.negated for m in r.matches)
        neg = any(isinstance(m, Destination) and m.negated for m in r.matches)
        if lo and neg and _target_chain(r) in ("ISTIO_REDIRECT", "ISTIO_IN_REDIRECT"):
            return r
    return None


def _excludes_15008(r: Rule) -> bool:
    for m in r.matches:
        if isinstance(m, PortMatch) and m.dport is not None and m.dport_negated and m.dport.lo <= 15008 <= m.dport.hi:
            return True
        if isinstance(m, MultiportMatch) and m.negated and any(p.lo <= 15008 <= p.hi for p in m.ports):
            return True
    return False


def features(rs: Ruleset) -> dict[str, object]:
    """The fingerprints of one family's sidecar rules (see the module notes); absent ones are left out."""
    nat, mangle = rs.table("nat"), rs.table("mangle")
    out = _chain_rules(nat, "ISTIO_OUTPUT")
    tproxy = mangle is not None and mangle.chain("ISTIO_TPROXY") is not None
    inbound = _chain_rules(nat, "ISTIO_INBOUND") + (_chain_rules(mangle, "ISTIO_INBOUND") if tproxy else ())
    f: dict[str, object] = {}
    lo = _lo_rule(out)
    if out:
        f["loopback rule"] = None if lo is None else _target_chain(lo)
        if lo is not None:
            f["owner on the loopback rule"] = any(isinstance(m, OwnerMatch) for m in lo.matches)
            f["! --dport 15008 on the loopback rule"] = _excludes_15008(lo)
        f["-s 127.0.0.6 RETURN"] = any(isinstance(m, Source) and str(m.net) == "127.0.0.6/32"
                                       for r in out for m in r.matches)
        f["trailing RETURN"] = bool(out) and isinstance(out[-1].target, Return) and not out[-1].matches
    if (nat is not None and nat.chain("ISTIO_INBOUND") is not None) or tproxy:
        f["--dport 15008 RETURN"] = any(isinstance(r.target, Return) and _dports(r) == (15008,) for r in inbound)
        f["--dport 22 RETURN"] = any(isinstance(r.target, Return) and _dports(r) == (22,) for r in inbound)
    jump = [r for r in _chain_rules(nat, "OUTPUT") if _target_chain(r) == "ISTIO_OUTPUT"]
    if jump:
        f["-p tcp on the OUTPUT jump"] = any(isinstance(m, Protocol) for m in jump[0].matches)
    in_port = _redirect_port(_chain_rules(nat, "ISTIO_IN_REDIRECT"))
    if in_port is not None:
        f["ISTIO_IN_REDIRECT's port"] = in_port
    return f


@attrs.frozen
class VersionRange:
    """The Istio versions whose rules fit, and why; empty when none fits."""

    versions: tuple[str, ...]
    reasons: tuple[str, ...] = ()

    @property
    def lowest(self) -> str | None:
        return self.versions[0] if self.versions else None

    @property
    def newest(self) -> str | None:
        return self.versions[-1] if self.versions else None

    def __contains__(self, version: object) -> bool:
        return version in self.versions or (version == "current" and VERSIONS[-1] in self.versions)

    def __str__(self) -> str:
        if not self.versions:
            return "no Istio version"
        lo, hi = self.versions[0], self.versions[-1]
        contiguous = [v for v in VERSIONS if minor_of(lo) <= minor_of(v) <= minor_of(hi)] == list(self.versions)
        if lo == hi:
            text = lo
        elif hi == VERSIONS[-1]:
            text = f"{lo} or later"
        else:
            text = f"{lo}–{hi}"
        return text if contiguous else text + " (not all of them: " + ", ".join(self.versions) + ")"


@functools.lru_cache(maxsize=256)
def _generated(config: CaptureConfig) -> dict[str, object]:
    try:
        return features(generate(config).ipv4)
    except (MeshsolveError, ValueError):
        return {}


# header variables printed from a release on (the release that added the setting)
_HEADER_SINCE: tuple[tuple[str, int], ...] = (
    ("PROXY_TUNNEL_PORT", 7), ("INBOUND_TUNNEL_PORT", 7), ("ISTIO_EXCLUDE_INTERFACES", 12),
    ("OUTBOUND_OWNER_GROUPS_INCLUDE", 14), ("OUTBOUND_OWNER_GROUPS_EXCLUDE", 14),
)


def versions_of(rulesets: Rulesets, variables: Mapping[str, str] | None = None) -> VersionRange:
    """The Istio versions whose istio-iptables writes ``rulesets`` (for the settings it shows) and,
    when ``variables`` (an istio-init log's header) are given, prints that header."""
    seen = features(rulesets.ipv4)
    reasons: list[str] = []
    fits: list[str] = []
    if seen:
        for v in VERSIONS:
            if _generated(config_of_rules(rulesets, v)) == seen:
                fits.append(v)
        shown = "; ".join(f"{k}: {_show(val)}" for k, val in seen.items())
        reasons.append(f"the rules' fingerprints ({shown})")
    else:
        fits = list(VERSIONS)
    if variables:
        names = set(variables)
        full = len(names) >= 10
        for name, since in _HEADER_SINCE:
            if name in names:
                fits = [v for v in fits if minor_of(v) >= since]
                reasons.append(f"the log's header prints {name} (from 1.{since})")
            elif full and name in ("ISTIO_EXCLUDE_INTERFACES", "OUTBOUND_OWNER_GROUPS_INCLUDE"):
                fits = [v for v in fits if minor_of(v) < since]
                reasons.append(f"the log's header has no {name} (printed from 1.{since})")
    return VersionRange(tuple(fits), tuple(reasons))


def _show(value: object) -> str:
    if value is True:
        return "yes"
    if value is False:
        return "no"
    if value is None:
        return "none"
    return str(value)


# -- installed whole? -----------------------------------------------------------------------------

def partial_state(rulesets: Rulesets) -> str | None:
    """What is missing from an Istio sidecar ruleset that was not installed whole, or ``None``.

    Flagged: ``ISTIO_REDIRECT`` without its ``REDIRECT`` rule; ``ISTIO_OUTPUT`` missing or empty while
    ``ISTIO_REDIRECT`` exists (istio-init always fills it); a chain that would capture (it sends to
    ``ISTIO_REDIRECT``/``ISTIO_IN_REDIRECT``/``ISTIO_TPROXY``) that no hook reaches. A ruleset without
    inbound capture (``-b ""``: no ``PREROUTING`` jump, at most the 15008 ``RETURN``) is whole.
    """
    problems: list[str] = []
    rs = rulesets.ipv4
    nat = rs.table("nat")
    if nat is None:
        return None
    redirect = nat.chain("ISTIO_REDIRECT")
    if redirect is None:
        return None
    if not redirect.rules:
        problems.append("ISTIO_REDIRECT has no rule (istio-init's first REDIRECT rule is missing)")
    out = nat.chain("ISTIO_OUTPUT")
    if out is None:
        problems.append("there is no ISTIO_OUTPUT chain: outbound capture was not installed")
    elif not out.rules:
        problems.append("ISTIO_OUTPUT has no rule: outbound capture was not installed")
    in_redirect = nat.chain("ISTIO_IN_REDIRECT")
    if in_redirect is not None and not in_redirect.rules:
        problems.append("ISTIO_IN_REDIRECT has no rule")
    for t in rs.tables:
        graph = {c.name: {_target_chain(r) for r in c.rules} - {None} for c in t.chains}
        reached: set[str] = set()
        stack = [c.name for c in t.chains if c.builtin]
        while stack:
            n = stack.pop()
            if n in reached:
                continue
            reached.add(n)
            stack.extend(x for x in graph.get(n, ()) if isinstance(x, str))
        for c in t.chains:
            captures = any(_target_chain(r) in ("ISTIO_REDIRECT", "ISTIO_IN_REDIRECT", "ISTIO_TPROXY",
                                                 "ISTIO_DIVERT") for r in c.rules)
            if c.name.startswith("ISTIO_") and captures and c.name not in reached:
                hook = {"ISTIO_INBOUND": "PREROUTING", "ISTIO_OUTPUT": "OUTPUT"}.get(c.name, "a built-in chain")
                problems.append(f"{t.name} {c.name} captures but nothing jumps to it from {hook}")
    return "; ".join(problems) or None
