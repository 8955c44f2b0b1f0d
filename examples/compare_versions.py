"""Compare what two Istio versions install for the same pod, and what that changes for its traffic.

    python examples/compare_versions.py [MANIFEST] [--pod NAME] [--old 1.2] [--new current]

The pod's capture configuration is read from its annotations under each version, the rules come
from ``generate``, and ``diff`` proves the two worlds equivalent or shows, per client kind, a
connection that ends differently (with both traces). A few named connections are then followed
concretely in both worlds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from meshsolve import (
    Different,
    DiffUnknown,
    Flow,
    diff,
    generate,
    interpret,
    pods_from_file,
    world_from_config,
    worlds_from_manifest,
)

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest", nargs="?", default=str(HERE / "pods.yaml"))
    parser.add_argument("--pod", default="checkout")
    parser.add_argument("--old", default="1.2")
    parser.add_argument("--new", default="current")
    args = parser.parse_args(argv)

    # the same apps and addresses in both worlds: only the capture set-up changes
    base = next(w for w in worlds_from_manifest(args.manifest) if w.name == args.pod)
    worlds = {}
    for version in (args.old, args.new):
        capture = next(p for p in pods_from_file(args.manifest, version=version) if p.name == args.pod)
        rules = generate(capture.config)
        count = sum(r.rule_count() for r in (rules.ipv4, rules.ipv6))
        print(f"Istio {version}: {count} rules, inbound ports {capture.config.inbound_ports}")
        worlds[version] = world_from_config(capture.config, rules=rules, apps=base.apps,
                                            pod_ips=base.pod_ips, name=f"{args.pod}@{version}")
    old, new = worlds[args.old], worlds[args.new]

    print(f"\n-- diff {args.old} -> {args.new}")
    results = diff(old, new)
    for r in results:
        print(str(r))
        if isinstance(r, Different):
            print(f"   scope: {r.scope}")
            print(f"   {args.old}: {r.a.summary}\n   {args.new}: {r.b.summary}")

    print("\n-- named connections")
    pod = old.pod_ips[0]
    port = base.apps[0].sockets[0].port
    for flow in (Flow("peer", pod, port), Flow(base.apps[0].name, pod, port),
                 Flow(base.apps[0].name, "127.0.0.1", port)):
        a, b = interpret(old, flow), interpret(new, flow)
        mark = "same" if a.summary == b.summary else "CHANGED"
        print(f"{flow!s:<40} {args.old}: {a.summary:<26} {args.new}: {b.summary:<26} {mark}")
    return 2 if any(isinstance(r, DiffUnknown) for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
