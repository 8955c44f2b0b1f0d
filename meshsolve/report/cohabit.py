"""The cohabitation audit as findings: foreign rules that change how connections end (``MSH0120``),
both iptables backends populated (``MSH0121``), a mesh chain without its hook jump (``MSH0122``),
and the capture properties' verdicts (``MSH0102``/``MSH0101`` with their witnesses)."""

from __future__ import annotations

import attrs

from meshsolve.analysis.check import Verdict
from meshsolve.analysis.cohabit import CohabitAudit, OrderAudit
from meshsolve.report.catalog import Level, message_type
from meshsolve.report.findings import Finding, findings_for, subject_of
from meshsolve.report.render import Checked, Report

__all__ = ["cohabitation_report"]


def _verdict_findings(o: OrderAudit, v: Verdict | None, several: bool) -> list[Finding]:
    if v is None:
        return []
    out = list(findings_for(o.world, v))
    if several:
        out = [attrs.evolve(f, message=f"{f.message} ({o.order})") for f in out]
    return out


def _consequence(audit: CohabitAudit) -> str:
    """What the order changes: each order's foreign changes and verdicts, or that it changes nothing."""
    parts = []
    for o in audit.orders:
        changed = sorted({f"{c.flow_text} ends {c.with_it.summary}" for c in o.changes})
        verdicts = f"capture {o.capture.kind}" + ("" if o.inbound is None else f", inbound {o.inbound.kind}")
        parts.append(f"{o.order}: " + ("; ".join(changed) if changed else "no foreign rule changes anything")
                     + f" ({verdicts})")
    same = len({(tuple(sorted(str(c.flow) + c.with_it.summary for c in o.changes)), o.capture.kind,
                 None if o.inbound is None else o.inbound.kind) for o in audit.orders}) == 1
    return "both orders end every connection the same way" if same else "; ".join(parts)


def cohabitation_report(audit: CohabitAudit, *, failure_threshold: Level = "Info") -> Report:
    """The audit's findings and checked properties (one subject: the pod)."""
    world = audit.orders[0].world
    subject = subject_of(world)
    findings: list[Finding] = []
    mesh = audit.mesh.mesh
    for fam, legacy, nft in audit.both_backends:
        mt = message_type("MSH0121")
        findings.append(Finding(mt.code, mt.level, mt.format(family=fam, legacy=",".join(legacy), nft=",".join(nft),
                                                             consequence=_consequence(audit)),
                                subject, "one iptables backend", "refuted"))
    if audit.legacy_warning:
        mt = message_type("MSH0121")
        findings.append(Finding(mt.code, mt.level, mt.format(
            family="the nf_tables dump", legacy="tables it does not show", nft="its own",
            consequence="its header warns that legacy tables are present; give iptables-legacy-save too"),
            subject, "one iptables backend", "refuted"))
    for m in audit.missing_hooks:
        mt = message_type("MSH0122")
        hook = f" (it should be jumped to from {m.table}::{m.hook})" if m.hook else ""
        findings.append(Finding(mt.code, mt.level, mt.format(mesh=mesh, table=m.table, chain=m.chain, hook=hook),
                                subject, f"{mesh}'s chains are reached from their hooks", "refuted",
                                reference=m.source))
    several = len(audit.orders) > 1
    checked: list[Checked] = []
    mt = message_type("MSH0120")
    for o in audit.orders:
        for c in o.changes:
            where = f"{c.backend + ' ' if c.backend else ''}{c.rule}"
            findings.append(Finding(
                mt.code, mt.level,
                mt.format(rule_text=c.rule_text, where=where, mesh=mesh, flow=c.flow_text, with_it=c.with_it.summary,
                          without=c.without.summary, order=f" ({o.order})" if several else ""),
                subject, f"no rule outside {mesh}'s changes a capture verdict", "refuted", c.reference, c.rule,
                str(c.flow), c.with_it.summary, c.with_it))
        for flow, full, alone in o.unexplained:
            mu = message_type("MSH0199")
            findings.append(Finding(mu.code, mu.level, mu.format(
                prop=f"which foreign rule changes {flow}", reason=f"it ends {full.summary} with every rule and "
                f"{alone.summary} with the mesh's alone, and no single foreign rule it meets explains it"),
                subject, "foreign rules", "unknown"))
        for text in o.unknown:
            mu = message_type("MSH0199")
            findings.append(Finding(mu.code, mu.level, mu.format(prop="foreign rules", reason=text), subject,
                                    "foreign rules", "unknown"))
        suffix = f" ({o.order})" if several else ""
        checked.append(Checked(subject, f"no rule outside {mesh}'s changes a capture verdict{suffix}",
                               "refuted" if o.changes else "unknown" if o.unknown or o.unexplained else "proved"))
        for v in (o.capture, o.inbound):
            if v is not None:
                checked.append(Checked(subject, v.prop.title() + suffix, v.kind))
                findings.extend(_verdict_findings(o, v, several))
    unique: list[Finding] = []
    for f in findings:
        if f.line() not in {u.line() for u in unique}:
            unique.append(f)
    return Report(tuple(unique), tuple(checked), failure_threshold)

