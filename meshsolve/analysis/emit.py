"""Emitting a synthesized set-up: istio-init script, iptables-restore file, istio-iptables
arguments and pod annotations (where the set-up is what istio-iptables produces), JSON.

Every output carries, as a header comment, the goals the set-up was proven against and the
sidecar behaviour it assumes — a rule set is only correct together with its proxy.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

import attrs

import meshsolve.defaults as defaults
from meshsolve.analysis.check import Proved
from meshsolve.analysis.diff import Different, Equivalent, diff, signature
from meshsolve.analysis.synth import Synthesized
from meshsolve.errors import UnsupportedError
from meshsolve.iptables import render_restore, rule_text
from meshsolve.istio import CaptureConfig, generate, proxy_behavior, render_script, to_flags
from meshsolve.istio.pod import to_annotations
from meshsolve.model.world import World
from meshsolve.semantics.interpret import interpret

__all__ = ["IstioMatch", "emit", "header", "istio_match", "spec_flows_agree"]

FORMATS = ("script", "restore", "args", "annotations", "json")


def _proxy_lines(world: World) -> list[str]:
    p = world.proxy
    src = p.inbound_source_v4 or p.inbound_source_v6
    lines = [f"proxy uid {p.uid}, gid {p.gid}; outbound listener {p.outbound_port}; inbound listener "
             f"{p.inbound_port if p.inbound_port is not None else p.outbound_port}"
             + (" (one virtual listener dispatching to the inbound side)" if p.virtual_inbound_dispatch else ""),
             "inbound side forwards to " + ("127.0.0.1/::1 (localhost)" if p.inbound_endpoint == "localhost"
                                            else "the original destination (Istio >=1.10 default)")
             + (f", from source {src}" if src is not None else ", source chosen by the kernel")]
    return lines


def _hops(result: Synthesized) -> int:
    """The hop bound the goals were proven within (the default when no proof says)."""
    return min((p.hops for p in result.proofs if isinstance(p, Proved)), default=defaults.HOPS)


def header(result: Synthesized) -> list[str]:
    """The comment lines every emitted form starts with."""
    spec = result.spec
    lines = [f"meshsolve: set-up synthesized for spec '{spec.name}' ({spec.source})",
             f"minimal: {len(result.rules)} rule(s) in {spec.search.table}::{spec.search.chain} "
             "(removing any rule or condition breaks a goal)",
             f"proven goals (every connection, up to {_hops(result)} proxy hops):"]
    lines += [f"  - {g.name}" for g in spec.goals]
    lines.append("assumes the sidecar behaves as follows:")
    lines += [f"  {x}" for x in _proxy_lines(result.world)]
    return lines


@attrs.frozen
class IstioMatch:
    """How the synthesized set-up compares with what istio-iptables (current) installs."""

    config: CaptureConfig
    equivalent: bool
    witness: str = ""


def istio_match(result: Synthesized) -> IstioMatch:
    """Compare with istio-iptables' own rules for this pod (current version, ``-b '*' -i '*'``)."""
    w = result.world
    p = w.proxy
    cfg = CaptureConfig(proxy_port=p.outbound_port, inbound_capture_port=p.inbound_port,
                        proxy_uids=(str(p.uid),), proxy_gids=(str(p.gid),), inbound_ports="*",
                        outbound_cidrs="*", enable_ipv6=result.spec.family == "ipv6")
    istio_world = attrs.evolve(w, rules=generate(cfg), proxy=proxy_behavior(cfg.version, cfg))
    res = diff(w, istio_world)
    if len(res) == 1 and isinstance(res[0], Equivalent):
        return IstioMatch(cfg, True)
    witness = next((f"{r.flow}: {r.a.summary} here, {r.b.summary} with istio-iptables"
                    for r in res if isinstance(r, Different)), "undecided")
    return IstioMatch(cfg, False, witness)


def spec_flows_agree(a: World, b: World, flows: Any) -> list[str]:
    """The spec flows on which two worlds end differently (empty when they agree on all)."""
    out = []
    for f in flows:
        ra, rb = interpret(a, f), interpret(b, f)
        if signature(ra) != signature(rb):
            out.append(f"{f}: {ra.summary} vs {rb.summary}")
    return out


def _comment(lines: list[str]) -> str:
    """Comment lines; a value with a line break (a spec name, say) stays inside the comment."""
    return "".join(f"# {part}\n" for x in lines for part in (x.splitlines() or [""]))


def emit(result: Synthesized, form: str) -> str:
    """The set-up in one of ``FORMATS``."""
    if form == "script":
        return render_script(result.world.rules, header="\n".join(header(result)), routing=result.world.routing)
    if form == "restore":
        return _comment(header(result)) + render_restore(result.world.rules)
    if form in ("args", "annotations"):
        m = istio_match(result)
        if not m.equivalent:
            raise UnsupportedError("the synthesized set-up is not what istio-iptables produces, so no flags or "
                                   f"annotations express it; it differs on {m.witness}. Use -o script or -o restore.")
        if form == "args":
            argv, env = to_flags(m.config)
            envs = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()))
            return _comment(header(result)) + (envs + " " if envs else "") + "istio-iptables " + shlex.join(argv) + "\n"
        ann, notes = to_annotations(m.config)
        body = "".join(f"    {k}: {json.dumps(v)}\n" for k, v in sorted(ann.items())) or "    {}\n"
        return _comment(header(result) + list(notes)) + "metadata:\n  annotations:\n" + body
    if form == "json":
        s = result.spec
        doc = {
            "schemaVersion": 1,
            "spec": s.name,
            "source": s.source,
            "result": "synthesized",
            "chain": f"{s.search.table}::{s.search.chain}",
            "rules": [f"-A {s.search.chain} {rule_text(r)}" for r in result.rules],
            "knobs": dict(result.knobs),
            "proxy": _proxy_lines(result.world),
            "goals": [{"name": g.name, "verdict": v.kind} for g, v in zip(s.goals, result.proofs, strict=True)],
            "iterations": result.iterations,
            "solverCalls": result.solver_calls,
            "examples": result.examples,
        }
        return json.dumps(doc, indent=2) + "\n"
    raise UnsupportedError(f"unknown output form {form!r} (expected one of: {', '.join(FORMATS)})")
