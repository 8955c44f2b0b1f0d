"""A CI gate: fail the pipeline when a pod's capture set-up breaks the platform's policy.

    python examples/ci_gate.py MANIFEST... [--istio VERSION] [--allow-unknown]

The policy, per pod: inbound traffic to every declared port is captured and reaches the app;
outbound traffic is captured except where the pod's own settings exclude it; the proxy's own
traffic bypasses capture; nothing loops. Each check is a ``meshsolve.testing`` assertion, so a
failure message carries the counterexample connection and its numbered trace.

Exit status as ``istioctl analyze`` uses it in CI: 0 all checks hold, 79 a check is violated,
80 a check is inconclusive (and nothing is violated), 65 a manifest cannot be read.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from meshsolve import CaptureConfig, MeshsolveError, World, pods_from_file, worlds_from_manifest
from meshsolve.testing import (
    Counterexample,
    Inconclusive,
    assert_bypass,
    assert_captured,
    assert_no_loops,
    assert_reachable,
)

EXIT_OK, EXIT_DATA, EXIT_VIOLATED, EXIT_INCONCLUSIVE = 0, 65, 79, 80


def policy(world: World, config: CaptureConfig, allow_unknown: bool) -> list[tuple[str, Callable[[], object]]]:
    """The checks for one pod, as (title, thunk) pairs."""
    u = allow_unknown
    checks: list[tuple[str, Callable[[], object]]] = [
        ("inbound captured", lambda: assert_captured(world, "inbound", allow_unknown=u)),
        ("outbound captured", lambda: assert_captured(
            world, "outbound", exclude_ports=config.outbound_ports_exclude,
            exclude_cidrs=[str(n) for n in config.outbound_cidrs_exclude], allow_unknown=u)),
        ("proxy bypasses capture", lambda: assert_bypass(world, allow_unknown=u)),
        ("no loops", lambda: assert_no_loops(world, allow_unknown=u)),
    ]

    def reach(app: str, port: int) -> Callable[[], object]:
        return lambda: assert_reachable(world, "peer", port, app=app, allow_unknown=u)

    checks += [(f"peer reaches {app.name}:{sock.port}", reach(app.name, sock.port))
               for app in world.apps for sock in app.sockets]
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifests", nargs="+")
    parser.add_argument("--istio", default=None)
    parser.add_argument("--allow-unknown", action="store_true")
    args = parser.parse_args(argv)

    violated = inconclusive = passed = 0
    for path in args.manifests:
        try:
            pods = zip(pods_from_file(path, version=args.istio),
                       worlds_from_manifest(path, version=args.istio), strict=True)
        except MeshsolveError as exc:
            print(f"ERROR {exc}", file=sys.stderr)
            return EXIT_DATA
        for capture, world in pods:
            for title, run in policy(world, capture.config, args.allow_unknown):
                where = f"{world.namespace}/{world.name}"
                try:
                    run()
                except Counterexample as failure:
                    violated += 1
                    print(f"FAIL  {where}: {title}")
                    print("\n".join("      " + line for line in str(failure).splitlines()))
                except Inconclusive as failure:
                    inconclusive += 1
                    print(f"UNKNOWN {where}: {title}: {failure.reason}")
                else:
                    passed += 1
                    print(f"ok    {where}: {title}")
    print(f"{passed} passed, {violated} violated, {inconclusive} inconclusive")
    if violated:
        return EXIT_VIOLATED
    return EXIT_INCONCLUSIVE if inconclusive else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
