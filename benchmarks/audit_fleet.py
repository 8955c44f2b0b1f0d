"""Benchmark ``meshsolve audit``: a generated ``kubectl get pods -A -o yaml`` List of N pods with G
distinct capture set-ups (Istio versions × container ports, injected istio-init arguments as each
version's injector writes them).

    python benchmarks/audit_fleet.py [--pods 10000] [--setups 50] [--jobs N] [--format yaml|json] [--keep FILE]

Prints the generation time, the audit's wall time, pods, groups and findings.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import yaml

from meshsolve.fleet import audit
from meshsolve.istio.pod import injector_args


class _NoAliases(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    """kubectl never writes YAML anchors/aliases; neither does the generator."""

    def ignore_aliases(self, data: object) -> bool:
        return True


VERSIONS = ("1.2", "1.5", "1.10", "1.20", "current")
IMAGE_TAG = {"1.2": "1.2.2", "1.5": "1.5.4", "1.10": "1.10.2", "1.20": "1.20.1", "current": "1.27.0"}


def fleet(pods: int, setups: int) -> dict[str, object]:
    templates = []
    for g in range(setups):
        version = VERSIONS[g % len(VERSIONS)]
        port = 8000 + g
        shape = {"kind": "Pod", "metadata": {"name": "x"},
                 "spec": {"containers": [{"name": "app", "ports": [{"containerPort": port}]}]}}
        argv, _, _ = injector_args(shape, version)
        assert argv is not None
        tag = IMAGE_TAG[version]
        templates.append((tag, list(argv), port))
    items = []
    for i in range(pods):
        tag, argv, port = templates[i % setups]
        ip = f"{'198.51.100' if i % 2 else '203.0.113'}.{i % 250 + 1}"
        items.append({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"app-{i:05d}", "namespace": f"ns-{i % 37}", "labels": {"app": f"a{i % 50}"}},
            "spec": {"initContainers": [{"name": "istio-init", "image": f"docker.io/istio/proxyv2:{tag}",
                                         "args": list(argv)}],
                     "containers": [{"name": "app", "image": "example/app:1",
                                     "ports": [{"containerPort": port, "protocol": "TCP"}]},
                                    {"name": "istio-proxy", "image": f"docker.io/istio/proxyv2:{tag}"}]},
            "status": {"podIP": ip, "podIPs": [{"ip": ip}]},
        })
    return {"apiVersion": "v1", "kind": "List", "items": items}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=10_000)
    ap.add_argument("--setups", type=int, default=50)
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("--keep", type=Path, default=None, help="write the generated List here")
    ap.add_argument("--format", choices=["yaml", "json"], default="yaml",
                    help="kubectl get pods -A -o yaml (default) or -o json")
    args = ap.parse_args()
    t0 = time.monotonic()
    doc = fleet(args.pods, args.setups)
    as_json = args.format == "json"
    text = json.dumps(doc, indent=4) if as_json else yaml.dump(doc, Dumper=_NoAliases, sort_keys=False)
    path = args.keep or Path(tempfile.mkstemp(prefix="msrp-fleet-", suffix=f".{args.format}")[1])
    path.write_text(text, encoding="utf-8")
    t1 = time.monotonic()
    try:
        res = audit(path, jobs=args.jobs)
    finally:
        if args.keep is None:
            os.unlink(path)
    t2 = time.monotonic()
    print(f"generated {args.pods} pods ({len(text) / 1e6:.1f} MB) in {t1 - t0:.1f} s")
    print(f"audit: {res.pods} pods, {res.groups} capture set-ups, {len(res.report.findings)} findings, "
          f"{res.report.counts()} in {t2 - t1:.1f} s wall ({os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
