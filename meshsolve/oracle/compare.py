"""Compare an interpreter ``Result`` with a kernel ``Result``, and say how to replay a disagreement.

Two results agree when the outcome kinds are equal (delivered, egress, refused, rejected, dropped,
failed, loop, undetermined), a delivery names the same app, socket and source address, an egress the
same destination, port and source (the address the remote server saw), a failure the same errno (or
none: a failure without an errno is a connection nobody answers), a rejection the same errno (when the
kernel's client saw one within its time bound), and the proxy sides were observed
in the same order. With ``hits``, the rule a ``Dropped``/``Rejected`` names and the nat rules that
matched are compared too (the kernel names the rule whose counter moved). Loop reasons and failure
texts are not compared.
"""

from __future__ import annotations

import re
import shlex
from collections import Counter

from meshsolve.model.net import family_of
from meshsolve.model.rules import Goto, Jump, RuleRef
from meshsolve.model.world import Flow, World
from meshsolve.semantics.trace import Delivered, Dropped, Egress, Failed, Loop, Rejected, Result

__all__ = ["differences", "errno_of", "explain", "matrix_flows", "nat_hits", "nft_nat_chains", "replay_command"]

_ERRNO = re.compile(r"\b(E[A-Z]{3,})\b")


def nat_hits(result: Result, nat_chains: frozenset[tuple[str, str]] = frozenset()) -> Counter[RuleRef]:
    """How often each nat rule matched during the flow (nat sees one packet per connection, so the
    kernel's packet counters count connections, comparable with the interpreter's hits): iptables'
    nat table and the native nftables chains in ``nat_chains`` (``nft_nat_chains``)."""
    return Counter(ref for ref in result.rule_hits if ref.table == "nat" or (ref.table, ref.chain) in nat_chains)


def nft_nat_chains(world: World) -> frozenset[tuple[str, str]]:
    """The (table, chain) of every native nftables chain only nat-type base chains reach."""
    out: set[tuple[str, str]] = set()
    for rs in (world.rules.ipv4, world.rules.ipv6):
        for t in rs.nft:
            kinds: dict[str, set[str]] = {}
            for b in t.bases:
                stack, seen = [b.chain], set()
                while stack:
                    name = stack.pop()
                    if name in seen:
                        continue
                    seen.add(name)
                    kinds.setdefault(name, set()).add(b.type)
                    chain = t.table.chain(name)
                    for r in chain.rules if chain is not None else ():
                        if isinstance(r.target, Jump | Goto):
                            stack.append(r.target.chain)
            out |= {(t.key, name) for name, types in kinds.items() if types == {"nat"}}
    return frozenset(out)


def errno_of(outcome: object) -> str | None:
    """The errno a ``Failed`` outcome names (``EINVAL``, ``ENETUNREACH``, ...), or None (no answer)."""
    if not isinstance(outcome, Failed):
        return None
    m = _ERRNO.search(outcome.reason)
    return m.group(1) if m else None


def differences(expected: Result, actual: Result, *, hits: bool = False,
                nat_chains: frozenset[tuple[str, str]] = frozenset()) -> tuple[str, ...]:
    """What differs between the interpreter's ``expected`` and the kernel's ``actual`` (empty = agree).

    With ``hits``, also the nat rules (iptables', and the nftables ones in ``nat_chains``) that matched
    and how often (not for loops: the interpreter
    stops at the first repeated sighting, the stand-in a few rounds later), and the rule a
    ``Dropped`` names.
    """
    out: list[str] = []
    a, b = expected.outcome, actual.outcome
    if type(a) is not type(b):
        out.append(f"outcome: interpreter {type(a).__name__} ({a}), kernel {type(b).__name__} ({b})")
    elif isinstance(a, Delivered) and isinstance(b, Delivered):
        for field in ("app", "socket", "source"):
            x, y = getattr(a, field), getattr(b, field)
            if x != y:
                out.append(f"delivered {field}: interpreter {x}, kernel {y}")
    elif isinstance(a, Egress) and isinstance(b, Egress):
        if (a.dst, a.port) != (b.dst, b.port):
            out.append(f"egress: interpreter {a.token}, kernel {b.token}")
        if a.source is not None and b.source is not None and a.source != b.source:
            out.append(f"egress source: interpreter {a.source}, kernel {b.source} (as the remote server saw it)")
    elif isinstance(a, Failed) and isinstance(b, Failed) and errno_of(a) != errno_of(b):
        out.append(f"failure errno: interpreter {errno_of(a) or 'none (no answer)'}, "
                   f"kernel {errno_of(b) or 'none (no answer)'}")
    elif isinstance(a, Rejected) and isinstance(b, Rejected) and _ERRNO.fullmatch(b.errno) and a.errno != b.errno:
        out.append(f"rejection errno: interpreter {a.errno}, kernel {b.errno}")
    if hits and not isinstance(a, Loop) and not isinstance(b, Loop):
        if isinstance(a, Dropped) and isinstance(b, Dropped) and a.rule != b.rule:
            out.append(f"dropped by: interpreter {a.rule}, kernel {b.rule}")
        if isinstance(a, Rejected) and isinstance(b, Rejected) and a.rule != b.rule:
            out.append(f"rejected by: interpreter {a.rule}, kernel {b.rule}")
        ea, eb = nat_hits(expected, nat_chains), nat_hits(actual, nat_chains)
        if ea != eb:
            def show(c: Counter[RuleRef]) -> str:
                return " ".join(f"{r}x{n}" if n > 1 else str(r) for r, n in sorted(
                    c.items(), key=lambda kv: (kv[0].chain, kv[0].index))) or "-"
            out.append(f"nat rule hits: interpreter {show(ea)}, kernel {show(eb)}")
    if expected.observed != actual.observed:
        out.append(f"observed: interpreter {', '.join(expected.observed) or '-'}, "
                   f"kernel {', '.join(actual.observed) or '-'}")
    return tuple(out)


def replay_command(flow: Flow, *, setup: str | None = None, family: str | None = None,
                   world_file: str | None = None) -> str:
    """A one-line command that reruns ``flow`` on the kernel and in the interpreter."""
    argv = ["python", "-m", "meshsolve.oracle", "replay"]
    if setup is not None:
        argv += ["--setup", setup]
    if family is not None:
        argv += ["--family", family]
    if world_file is not None:
        argv += ["--world", world_file]
    argv += ["--client", flow.client, "--dst", str(flow.dst), "--port", str(flow.dport)]
    if flow.endpoint:
        argv += ["--endpoint", str(flow.endpoint)]
    if flow.src is not None:
        argv += ["--src", str(flow.src)]
    if flow.inner is not None:
        argv += ["--inner", str(flow.inner)]
    return shlex.join(argv)


def explain(world: World, flow: Flow, expected: Result, actual: Result, replay: str) -> str:
    """A readable report of one disagreement: the world, the flow, both results and the replay."""
    diffs = "\n".join(f"  - {d}" for d in differences(expected, actual))
    return (f"interpreter and kernel disagree on {flow}\n{diffs}\n"
            f"world: {world!r}\n"
            f"--- interpreter ---\n{expected}\n--- kernel ---\n{actual}\n"
            f"replay: {replay}")


def matrix_flows(world: World) -> tuple[Flow, ...]:
    """The bind matrix of ``world``, per family: the peer → pod IP, the first app → loopback, pod IP
    and each service VIP of the family, on every port some app listens on (VIPs on their own port)."""
    ports = sorted({s.port for app in world.apps for s in app.sockets})
    client = world.apps[0].name if world.apps else "proxy"
    flows: list[Flow] = []
    for fam in world.families:
        pod = world.pod_ip(fam)
        assert pod is not None
        lo = "::1" if fam == "ipv6" else "127.0.0.1"
        for port in ports:
            if world.peer_ip(fam) is not None:
                flows.append(Flow("peer", pod, port))
            flows += [Flow(client, lo, port), Flow(client, pod, port)]
        flows += [Flow(client, svc.vip, svc.port) for svc in world.services if family_of(svc.vip) == fam]
    return tuple(flows)
