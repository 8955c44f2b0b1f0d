"""Audit every pod of a Kubernetes manifest: is its traffic captured, does anything loop, is anything
exposed, and is each container's outbound call seen by the sidecar?

    python examples/audit_manifest.py [examples/pods.yaml] [--istio VERSION]

Prints one block per pod: a line per property (PROVED / REFUTED / UNKNOWN) and, for a refuted
one, the counterexample connection and its numbered trace. Exit status 0 when everything is
proved, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from meshsolve import (
    Bypass,
    CaptureInbound,
    CaptureOutbound,
    NoExposure,
    NoLoops,
    Observation,
    Property,
    Refuted,
    audit,
    pods_from_file,
    worlds_from_manifest,
)

HERE = Path(__file__).resolve().parent
# A remote address outside every exclusion of the example manifest (documentation range).
REMOTE = "198.51.100.7"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest", nargs="?", default=str(HERE / "pods.yaml"))
    parser.add_argument("--istio", default=None, help="Istio version (default: from the manifest)")
    args = parser.parse_args(argv)

    captures = pods_from_file(args.manifest, version=args.istio)
    worlds = worlds_from_manifest(args.manifest, version=args.istio)
    failures = 0
    for capture, world in zip(captures, worlds, strict=True):
        config = capture.config
        print(f"== pod {world.namespace}/{world.name}  (Istio {config.version}, from {capture.basis})")
        ports = tuple(sorted({s.port for a in world.apps for s in a.sockets}))
        props: list[Property] = [
            # what the pod's own settings exclude is not a finding
            CaptureOutbound(exclude_ports=config.outbound_ports_exclude,
                            exclude_cidrs=tuple(str(n) for n in config.outbound_cidrs_exclude)),
            CaptureInbound(ports=ports or None, exclude_ports=config.inbound_ports_exclude),
            Bypass(),
            NoLoops(),
            NoExposure(),
            # per container: its outbound call is seen client side (uid 1337 would slip past capture)
            *(Observation(app.name, REMOTE, 443, sides=("out",), delivered=False,
                          name=f"{app.name}'s outbound calls are seen by the sidecar") for app in world.apps),
        ]
        for verdict in audit(world, props):
            print(f"  {str(verdict).splitlines()[0]}")
            if isinstance(verdict, Refuted):
                failures += 1
                print(f"      counterexample: {verdict.flow}  ->  {verdict.result.summary}")
                for line in str(verdict.result).splitlines()[1:]:
                    print(f"      {line}")
            elif verdict.kind == "unknown":
                failures += 1
    print(f"{len(worlds)} pod(s), {failures} finding(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
