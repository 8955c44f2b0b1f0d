"""The finding catalog: every message meshsolve reports, with a code that is never reused.

Codes are ``MSH`` + four digits, kept in code order. ``MSH01xx`` are properties of one pod's
traffic capture (a refuted property is a finding); ``MSH0110``–``MSH0113`` are what the inputs
themselves show (a failed istio-init, rules not installed whole, a version the rules or the pod
contradict);
``MSH0120``–``MSH0122`` are about rules other writers put next to the mesh's (the cohabitation
audit); ``MSH0143``/``MSH0144`` keep the numbers of the Istio analyzer messages they overlap with
(``IST0143`` localhost listener, ``IST0144`` app uid 1337); ``MSH0199`` is an inconclusive check.
Retired codes stay listed in ``RETIRED`` so that they are never handed out again.

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
        "MSH0110", "IstioInitFailed", "Error",
        "{message}",
        "The input shows that istio-init (or the istio-cni plugin) failed: an `iptables-restore` that "
        "could not load a table, a traced command that iptables refused, a non-zero exit. The message "
        "says what that run did not install (iptables-restore commits table by table, so the tables "
        "of its input before the failing one were applied). The rules are never analysed as if they "
        "had been applied; only a dump of the state after the failure, when the log shows one, is."),
    MessageType(
        "MSH0111", "IstioRulesPartial", "Error",
        "{message}",
        "Istio's chains are there but not whole: a capture chain is empty, or no hook jumps to it. "
        "istio-init stopped half way (or the listing is cut); capture is not analysed from it."),
    MessageType(
        "MSH0112", "IstioVersionMismatch", "Warning",
        "{message}",
        "The Istio version given (or read from the pod's istio-init image) does not write rules "
        "like the ones given: the pod may run another version than the one assumed, and the sidecar's "
        "behaviour meshsolve uses may be the wrong one."),
    MessageType(
        "MSH0113", "IstioVersionContradictsPod", "Warning",
        "{message}",
        "The Istio version meshsolve uses (given with --istio, read from the istio-init image, inferred "
        "from the rules or assumed) is not the one the pod's own fields say: the image tags of its "
        "istio-init and istio-proxy containers, the `sidecar.istio.io/proxyImage` annotation, the "
        "revision the injector recorded in `sidecar.istio.io/status`, or an `istio.io/rev` revision "
        "named after a release. The sidecar's behaviour meshsolve uses may be the wrong one."),
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
        "MSH0150", "NftTransactionRefused", "Error",
        "nft refuses the whole transaction ({where}): {reason}; nothing of it is loaded",
        "nft applies an nft -f file as one transaction: one command it refuses (an insert at an index "
        "the chain does not have, as Istio's native nftables backend did for an empty chain; a chain or "
        "set that does not exist) and none of the rules are loaded. The pod runs without them (istio-init "
        "fails). The other findings are about the pod as it is then."),
    MessageType(
        "MSH0151", "NameResolvedAtLoad", "Error",
        "nft resolves the {what} when it loads the rules ({where}): on a host without it the whole "
        "transaction is refused",
        "nft turns user and group names (meta skuid/skgid) into ids on the host that loads the rules — "
        "for a sidecar, the init container — and refuses the whole transaction when that host does not "
        "know the name (\"Group does not exist\"), as Istio's owner-group options do with the app "
        "container's group names. What the name matches is undetermined unless the world names it."),
    MessageType(
        "MSH0152", "Ipv6RulesWithoutIpv6", "Warning",
        "{count} nftables rule(s) about IPv6 (first: {rule}) in a pod without IPv6: on a host without "
        "IPv6 support nft refuses them and the whole transaction fails",
        "Rules that test IPv6 (an ip6 table, ip6 addresses, meta nfproto ipv6, tproxy ip6) in a pod "
        "that has no IPv6 address: Istio's native nftables backend wrote them even with IPv6 disabled, "
        "and on platforms without IPv6 support that made the load fail. If the pod does have IPv6, say "
        "so (--family dual)."),
    MessageType(
        "MSH0153", "BackendsDiffer", "Warning",
        "The {b} set-up ends {flow} as {b_outcome}; the {a} set-up as {a_outcome}",
        "Two capture set-ups meant to be the same configuration (Istio's iptables and native nftables "
        "backends) treat a connection differently: one of them does not do what the other does."),
    MessageType(
        "MSH0154", "Ipv6CapturedWithIpv6Off", "Warning",
        "With IPv6 off, the nftables set-up still captures {flow} ({b_outcome}); the iptables set-up "
        "leaves it alone ({a_outcome})",
        "Istio's native nftables backend writes one inet table for both families and drops only the "
        "rules that name IPv6 when IPv6 is off: the family-free rules (jump to the redirect chains) still "
        "send IPv6 TCP to the proxy, which serves no IPv6 (fail closed); the iptables backend writes no "
        "ip6tables rules at all, so the same connection bypasses the proxy (fail open)."),
    MessageType(
        "MSH0160", "AmbientCaptureBypassed", "Error",
        "{flow} does not reach ztunnel: it ends {outcome}{at}",
        "Ambient mode: a TCP connection of the pod that lands neither on ztunnel's capture listeners "
        "(15001 outbound, 15006 inbound) nor on its own (15008 HBONE, 15053 DNS), and is none of the "
        "stated exemptions (the node's probe address, inbound in ingress mode), escapes ztunnel: "
        "authorization policy, mTLS and telemetry do not apply to it. Istio's docs: if ztunnel can be "
        "bypassed, authorization policies can be bypassed."),
    MessageType(
        "MSH0161", "AmbientLoop", "Error",
        "{flow} loops through ztunnel ({outcome}){at}",
        "Ambient mode: a connection is captured, forwarded by ztunnel and captured again, forever. "
        "ztunnel's sockets carry its mark 0x539 so that the rules let them through; a rule that "
        "captures a marked connection again makes this loop."),
    MessageType(
        "MSH0162", "AmbientMarkSpoofing", "Warning",
        "A process allowed CAP_NET_ADMIN that sets SO_MARK {mark} on its socket bypasses ztunnel: {flow} "
        "ends {outcome}{at}",
        "Ambient capture tells ztunnel's traffic apart by its packet mark alone (0x539 under mask "
        "0xfff), so any process of the pod allowed to set SO_MARK (CAP_NET_ADMIN) can put that mark on "
        "its own connections and leave the mesh — the ambient counterpart of a sidecar app running as "
        "the proxy's uid 1337. Keep NET_ADMIN away from application containers (Pod Security "
        "Standards 'baseline' forbids adding it)."),
    MessageType(
        "MSH0163", "AmbientReturnPathBroken", "Error",
        "{flow} is taken by ztunnel, but ztunnel's connection to the app from the client's address does "
        "not complete: it ends {outcome}{at}",
        "ztunnel connects to the app from the client's own address (a transparent socket), so the app's "
        "replies are addressed to a host outside the pod. They come back to ztunnel only through three "
        "things together: the mangle rule that marks ztunnel's connections (connmark 0x111), the one "
        "that restores that mark on the replies, and the policy route (fwmark 0x111/0xfff lookup 100, "
        "local default route in table 100). Without one of them the reply leaves the pod and the "
        "connection never completes — as HBONE to a pod in ingress mode timed out before Istio 1.29."),
    MessageType(
        "MSH0164", "AmbientProbeExemptionNotExact", "Error",
        "The probe exemption is not exact: {flow} ends {outcome}{at}",
        "Only kubelet's probes, which the node gives the source 169.254.7.127 (HOST_PROBE_SNAT_ADDRESS), "
        "may skip ztunnel; a connection from any other source — a NodePort or load balancer client "
        "keeps its own — must reach ztunnel. A probe that is captured fails when policy denies it; "
        "another source that is exempt bypasses policy."),
    MessageType(
        "MSH0165", "AmbientHbonePlaintextSplit", "Error",
        "HBONE and plaintext are not told apart on port {port}: {flow} ends {outcome}{at}",
        "A connection to 15008 is HBONE (the mesh's mTLS tunnel) and must reach ztunnel's HBONE "
        "listener as it is; a plaintext connection to any other port must be redirected to ztunnel's "
        "inbound side (15006), unless inbound capture is off (ingress mode)."),
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
