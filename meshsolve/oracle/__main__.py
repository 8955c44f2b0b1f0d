"""``python -m meshsolve.oracle replay ...``: rerun one flow on the kernel and in the interpreter.

Examples::

    python -m meshsolve.oracle replay --setup C --family ipv4 --client peer --dst 192.0.2.10 --port 9002
    python -m meshsolve.oracle replay --world /tmp/world.json --client app0 --dst 127.0.0.1 --port 9001

Exit status: 0 when both agree, 1 when they differ, 2 on a usage or set-up error.
"""

from __future__ import annotations

import argparse
import sys

from meshsolve.errors import MeshsolveError
from meshsolve.model.world import Flow, World


def _world(args: argparse.Namespace) -> World:
    if args.world:
        from meshsolve.oracle.worldio import load_world

        return load_world(args.world)
    from meshsolve.semantics.setups import setup_world

    return setup_world(args.setup, args.family)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m meshsolve.oracle")
    sub = parser.add_subparsers(dest="command", required=True)
    rp = sub.add_parser("replay", help="run one flow on the kernel and in the interpreter")
    src = rp.add_mutually_exclusive_group(required=True)
    src.add_argument("--setup", help="a built-in set-up A-E")
    src.add_argument("--world", help="a world JSON file (as written by the random campaign)")
    rp.add_argument("--family", default="ipv4", choices=("ipv4", "ipv6"))
    rp.add_argument("--client", required=True, help="peer, proxy or an app name")
    rp.add_argument("--dst", required=True)
    rp.add_argument("--port", required=True, type=int)
    rp.add_argument("--endpoint", default=0, type=int)
    rp.add_argument("--src", default=None, help="the address a peer connects from (default: the world's peer)")
    rp.add_argument("--inner", default=None, type=int,
                    help="the port the connection names as a tunnel's inner target (HBONE to the tunnel listener)")
    rp.add_argument("--loop-limit", default=4, type=int)
    args = parser.parse_args(argv)

    from meshsolve.oracle.compare import differences
    from meshsolve.oracle.run import KernelWorld, OracleConfig
    from meshsolve.semantics.interpret import interpret

    try:
        world = _world(args)
        flow = Flow(args.client, args.dst, args.port, endpoint=args.endpoint, src=args.src, inner=args.inner)
        expected = interpret(world, flow)
        with KernelWorld(world, OracleConfig(loop_limit=args.loop_limit)) as kw:
            actual = kw.run(flow)
    except MeshsolveError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    print(f"world: {world!r}\n")
    print(f"--- interpreter: {expected.summary}\n{expected}\n")
    print(f"--- kernel: {actual.summary}\n{actual}\n")
    diffs = differences(expected, actual)
    print("agree" if not diffs else "DISAGREE:\n" + "\n".join(f"  - {d}" for d in diffs))
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
