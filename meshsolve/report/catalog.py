"""The finding catalog: every message meshsolve reports, with a code that is never reused.

Codes are ``MSH`` + four digits, kept in code order. ``MSH01xx`` are properties of one pod's
traffic capture (a refuted property is a finding); ``MSH0120``–``MSH0122`` are about rules other
writers put next to the mesh's (the cohabitation audit); ``MSH0143``/``MSH0144`` keep the numbers of the
Istio analyzer messages they overlap with (``IST0143`` localhost listener, ``IST0144`` app uid
1337); ``MSH0199`` is an inconclusive check. Retired codes stay listed in ``RETIRED`` so that they
are never handed out again.

Levels follow istioctl: ``Error`` > ``Warning`` > ``Info``.
"""

from __future__ import annotations

from typing import Literal, TypeAlias

import attrs

__all__ = ["CATALOG", "LEVELS", "RETIRED", "Level", "MessageType", "catalog_markdown", "documentation_anchor",
           "message_type"]

Level: TypeAlias = Literal["Error", "Warning", "Info"]
# Severity order, highest first.
LEVELS: tuple[Level, ...] = ("Error", "Warning", "Info")


@attrs.frozen
class MessageType:
    """One catalog entry: ``template`` is a ``str.format`` template over named parameters."""

    code: str
    name: str
    level: Level
    template: str
    description: str
    related: str | None = None  # the overlapping istioctl analyze code, if any

    def format(self, **params: object) -> str:
        return self.template.format(**params)


_ENTRIES: tuple[MessageType, ...] = (
    MessageType(
        "MSH0101", "InboundNotCaptured", "Error",
        "Inbound {flow} ends as {outcome} without passing the sidecar's inbound side{at}",
        "A connection from a remote peer to a port that should be captured is not handed to the "
        "sidecar's inbound listener: server-side policy and telemetry do not apply to it."),
    MessageType(
        "MSH0102", "OutboundNotCaptured", "Error",
        "Outbound {flow} of a non-proxy process ends as {outcome} without passing the sidecar's "
        "outbound side{at}",
        "A connection an application opens to a remote address is not handed to the sidecar's "
        "outbound listener: client-side routing, mTLS and telemetry do not apply to it."),
    MessageType(
        "MSH0103", "ProxyTrafficCaptured", "Error",
        "The sidecar's own {flow} is captured again ({outcome}){at}",
        "A connection the proxy itself opens is redirected back to the proxy: the bypass of the "
        "proxy's uid/gid does not work for it."),
    MessageType(
        "MSH0104", "CaptureLoop", "Error",
        "{flow} loops through the sidecar ({outcome}){at}",
        "A connection is captured, forwarded by the proxy and captured again, forever: it never "
        "reaches a socket. The seed's first patch (pod-IP inbound endpoint with the loopback rule) "
        "does this."),
    MessageType(
        "MSH0105", "TelemetrySideLost", "Warning",
        "{flow} is observed {observed} instead of {expected}{at}",
        "A connection that should pass the sidecar on both sides (client side, then server side) "
        "misses one of them, so that side's policy and telemetry are lost — e.g. a pod calling its "
        "own service once the loopback rule is gone."),
    MessageType(
        "MSH0106", "Unreachable", "Error",
        "{flow} does not reach {target}: {outcome}{at}",
        "A connection that should be delivered to an application socket is not."),
    MessageType(
        "MSH0120", "ForeignRuleChangesCapture", "Error",
        "{rule_text} ({where}), outside {mesh}'s rules, changes {flow}: {with_it} with it, {without} "
        "without it{order}",
        "A rule another tool wrote into the pod (a traffic agent, a debugging tool, a CNI plugin) changes "
        "how a connection ends compared with the mesh's rules alone: it takes traffic out of capture, "
        "steals it, or sends it elsewhere. The witness connection is replayed with and without the rule."),
    MessageType(
        "MSH0121", "BothBackendsPopulated", "Warning",
        "{family}: iptables-legacy ({legacy}) and iptables-nft ({nft}) tables both hold rules; the kernel "
        "runs the backend whose tables were created last first, which a dump does not show: {consequence}",
        "Two iptables backends in one pod: each registers its own tables at the same priorities, and for "
        "nat the first table that rewrites a connection ends the lookup. Which backend that is depends "
        "on the order the tables were created, so a tool writing with the other backend than the mesh "
        "may run before the mesh's rules or never. Both orders are analysed."),
    MessageType(
        "MSH0122", "MeshHookMissing", "Error",
        "{mesh}'s chain {table}::{chain} holds rules but no built-in chain jumps to it{hook}: the mesh's "
        "set-up stopped half way, and what the chain should capture is not captured",
        "The mesh's init step created and filled its chain but the jump from the hook is missing (an "
        "init container that failed between the two commands, as linkerd2-proxy-init did with a "
        "backend mismatch). Nothing reaches the chain."),
    MessageType(
        "MSH0143", "LocalhostListenerExposed", "Warning",
        "Port {port} binds {bind} only, yet {flow} reaches it ({outcome}){at}",
        "A socket bound to a loopback address is meant to be reachable from inside the pod only, "
        "but the sidecar forwards inbound traffic to localhost and exposes it to other pods.",
        related="IST0143"),
    MessageType(
        "MSH0144", "ApplicationRunsAsProxyId", "Warning",
        "App {app} runs as {what} {ident}, the sidecar proxy's {what}: its traffic bypasses capture",
        "The capture rules exempt the proxy's uid and gid; an application sharing them is never "
        "captured.", related="IST0144"),
    MessageType(
        "MSH0145", "PodIPListenerUnreachable", "Error",
        "Port {port} binds the pod IP {bind} only, and {flow} does not reach it: {outcome}{at}",
        "A socket bound to the pod IP cannot be reached through the sidecar because the proxy "
        "forwards inbound traffic to localhost (Istio before 1.10).", related="IST0143"),
    MessageType(
        "MSH0199", "Inconclusive", "Warning",
        "Could not decide '{prop}': {reason}",
        "The solver gave up or the answer depends on a rule meshsolve does not model; the property "
        "may or may not hold."),
)

CATALOG: dict[str, MessageType] = {m.code: m for m in _ENTRIES}
# Codes handed out once and withdrawn: never reuse them.
RETIRED: tuple[str, ...] = ()


def message_type(code: str) -> MessageType:
    """The catalog entry of ``code`` (``KeyError`` naming the code if it does not exist)."""
    try:
        return CATALOG[code]
    except KeyError:
        raise KeyError(f"no finding code {code!r} in the catalog") from None


def documentation_anchor(code: str) -> str:
    """Where ``code`` is described in the docs: ``docs/findings.md#msh0101``."""
    return f"docs/findings.md#{code.lower()}"


def catalog_markdown() -> str:
    """``docs/findings.md``: the catalog as a page (``python -m meshsolve.report.catalog``)."""
    lines = [
        "# Finding catalog",
        "",
        "<!-- generated by `python -m meshsolve.report.catalog > docs/findings.md`; "
        "tests/test_report_catalog.py checks it is current -->",
        "",
        "Every finding meshsolve reports has a code from this catalog, a level (Error > Warning > "
        "Info) and a message made from the code's template. Codes are never reused; where a code "
        "overlaps an `istioctl analyze` message, the related Istio code is named.",
        "",
        "| code | name | level | related |",
        "|---|---|---|---|",
    ]
    for m in CATALOG.values():
        lines.append(f"| [{m.code}](#{m.code.lower()}) | {m.name} | {m.level} | {m.related or ''} |")
    for m in CATALOG.values():
        lines += ["", f"## {m.code}", "", f"**{m.name}** ({m.level})"
                  + (f", related to Istio's {m.related}" if m.related else ""), "", m.description, "",
                  f"Message template: `{m.template}`"]
    if RETIRED:
        lines += ["", "## Retired codes", "", ", ".join(RETIRED)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(catalog_markdown(), end="")
