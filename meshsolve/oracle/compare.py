"""Compare an interpreter ``Result`` with a kernel ``Result``, and say how to replay a disagreement.

Two results agree when the outcome kinds are equal, a delivery names the same app, socket and source
address, an egress the same destination and port, and the proxy sides were observed in the same
order. Reasons (loop reasons, the rule that dropped) are not compared: the kernel cannot name a rule.
"""

from __future__ import annotations

import shlex

from meshsolve.model.world import Flow, World
from meshsolve.semantics.trace import Delivered, Egress, Result

__all__ = ["differences", "explain", "replay_command"]


def differences(expected: Result, actual: Result) -> tuple[str, ...]:
    """What differs between the interpreter's ``expected`` and the kernel's ``actual`` (empty = agree)."""
    out: list[str] = []
    a, b = expected.outcome, actual.outcome
    if type(a) is not type(b):
        out.append(f"outcome: interpreter {type(a).__name__} ({a}), kernel {type(b).__name__} ({b})")
    elif isinstance(a, Delivered) and isinstance(b, Delivered):
        for field in ("app", "socket", "source"):
            x, y = getattr(a, field), getattr(b, field)
            if x != y:
                out.append(f"delivered {field}: interpreter {x}, kernel {y}")
    elif isinstance(a, Egress) and isinstance(b, Egress) and (a.dst, a.port) != (b.dst, b.port):
        out.append(f"egress: interpreter {a.token}, kernel {b.token}")
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
    return shlex.join(argv)


def explain(world: World, flow: Flow, expected: Result, actual: Result, replay: str) -> str:
    """A readable report of one disagreement: the world, the flow, both results and the replay."""
    diffs = "\n".join(f"  - {d}" for d in differences(expected, actual))
    return (f"interpreter and kernel disagree on {flow}\n{diffs}\n"
            f"world: {world!r}\n"
            f"--- interpreter ---\n{expected}\n--- kernel ---\n{actual}\n"
            f"replay: {replay}")
