"""The meshsolve command line (the only module that imports click).

Exit codes follow sysexits as istioctl does: 0 fine, 64 usage, 65 bad input data,
79 some property refuted (findings), 80 inconclusive (solver unknown / timeout).
"""

from __future__ import annotations

import sys

import click

from meshsolve.errors import MeshsolveError, ParseError

EXIT_OK = 0
EXIT_USAGE = 64
EXIT_DATAERR = 65
EXIT_FINDINGS = 79
EXIT_UNKNOWN = 80


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="meshsolve")
def cli() -> None:
    """Prove, refute and synthesize sidecar traffic-capture set-ups."""


# --- subcommands are added below, one section each ---------------------------------------------


# --- parse (iptables text in any form -> canonical text, meshsolve.iptables) -------------------


@cli.command("parse")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--family", type=click.Choice(["ipv4", "ipv6"]), default=None,
              help="print only this family (plain iptables-save text, no '# ipv4' line)")
@click.option("-o", "--output", type=click.Choice(["save", "restore", "json"]), default="save",
              show_default=True, help="canonical iptables-save text, iptables-restore input, or JSON")
@click.option("--counters", is_flag=True, help="print packet/byte counters, like iptables-save -c")
def parse_command(file: str, family: str | None, output: str, counters: bool) -> None:
    """Read iptables rules in any form and print them in canonical form.

    FILE ('-' for stdin) may be iptables-save output (with or without -c), iptables-restore input
    (Istio's '* nat' / -N / -I dialect too), an istio-iptables dry-run transcript, 'iptables ...'
    command lines, or 'kubectl logs POD -c istio-init' output. Without --family the output is
    '# ipv4' and the IPv4 rules, then '# ipv6' and the IPv6 rules if there are any; meshsolve
    reads that back. Bad input exits with 65 and a one-line message.
    """
    from meshsolve.iptables import parse_file, render_restore, render_save, to_json
    from meshsolve.model.rules import Ruleset

    try:
        rulesets = parse_file(file, source="<stdin>" if file == "-" else file)
    except ParseError as exc:
        detail = f" (line: {exc.line.strip()[:60]!r})" if exc.line and exc.line.strip() else ""
        raise ParseError(exc.message + detail, source=exc.source, lineno=exc.lineno) from None
    if output == "json":
        value: object = rulesets if family is None else rulesets.for_family(
            "ipv4" if family == "ipv4" else "ipv6")
        click.echo(to_json(value))
        return

    def text(rs: Ruleset) -> str:
        return render_restore(rs) if output == "restore" else render_save(rs, counters=counters)

    if family is not None:
        click.echo(text(rulesets.for_family("ipv4" if family == "ipv4" else "ipv6")), nl=False)
        return
    click.echo("# ipv4")
    click.echo(text(rulesets.ipv4), nl=False)
    if not rulesets.ipv6.empty:
        click.echo("# ipv6")
        click.echo(text(rulesets.ipv6), nl=False)


# --- matrix / explain (the concrete interpreter, meshsolve.semantics) ---------------------------

_SETUP_CHOICE = click.Choice(["A", "B", "C", "D", "E"], case_sensitive=False)


@cli.command("matrix")
@click.option("--setup", "setup_name", type=_SETUP_CHOICE, required=True, help="built-in pod A..E")
@click.option("--family", type=click.Choice(["ipv4", "ipv6"]), default="ipv4", show_default=True)
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
def matrix_command(setup_name: str, family: str, output: str) -> None:
    """Run every client kind against every bind address of a built-in pod."""
    import json

    from meshsolve.model import Family
    from meshsolve.semantics import matrix, setup_world

    fam: Family = "ipv6" if family == "ipv6" else "ipv4"
    table = matrix(setup_world(setup_name, fam))
    if output == "json":
        click.echo(json.dumps({"schemaVersion": 1, **table.to_dict()}, indent=2))
    else:
        click.echo(table.render())


@cli.command("explain")
@click.option("--setup", "setup_name", type=_SETUP_CHOICE, required=True, help="built-in pod A..E")
@click.option("--client", default="app", show_default=True, help="peer, proxy or an app name")
@click.option("--dst", required=True,
              help="destination address, or pod / vip / lo (the set-up's address of --family)")
@click.option("--port", type=click.IntRange(0, 65535), required=True)
@click.option("--family", type=click.Choice(["ipv4", "ipv6"]), default=None,
              help="only needed with pod / vip / lo (default ipv4)")
@click.option("--endpoint", type=click.IntRange(0), default=0, show_default=True,
              help="which service endpoint the proxy picks")
@click.option("--protocol", type=click.Choice(["tcp", "udp"]), default="tcp", show_default=True)
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
def explain_command(setup_name: str, client: str, dst: str, port: int, family: str | None, endpoint: int,
                    protocol: str, output: str) -> None:
    """Print one flow's trace through a built-in pod: rules, rewrites, proxy hops, outcome."""
    import json
    from typing import Literal

    from meshsolve.model import Family, Flow, family_of, to_address
    from meshsolve.semantics import interpret, setup_addresses, setup_world

    named = {"pod": "pod", "vip": "vip", "lo": "lo", "loopback": "lo", "peer": "peer"}
    fam: Family
    if dst.lower() in named:
        fam = "ipv6" if family == "ipv6" else "ipv4"
        address = setup_addresses(fam)[named[dst.lower()]]
    else:
        address = to_address(dst)
        fam = family_of(address)
        if family is not None and family != fam:
            raise click.BadParameter(f"{dst} is not an {family} address", param_hint="--dst")
    proto: Literal["tcp", "udp"] = "udp" if protocol == "udp" else "tcp"
    result = interpret(setup_world(setup_name, fam), Flow(client, address, port, protocol=proto,
                                                          endpoint=endpoint))
    if output == "json":
        click.echo(json.dumps({"schemaVersion": 1, **result.to_dict()}, indent=2))
    else:
        click.echo(str(result))
        click.echo(f"summary: {result.summary}")


# --- generate (Istio capture set-ups as data, meshsolve.istio) ----------------------------------


@cli.command("generate", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--istio", "version", default=None, metavar="VERSION",
              help="Istio version: 1.0 … 1.30 or current [default: current; with --pod an injected "
                   "istio-init's image tag]")
@click.option("--pod", "pod_file", type=click.Path(dir_okay=False, allow_dash=True), default=None,
              help="a Pod manifest (kubectl get pod -o yaml, a List, or a workload) instead of flags")
@click.option("-o", "--output", type=click.Choice(["save", "restore", "script", "json", "annotations"]),
              default="save", show_default=True)
@click.option("--env", "env_pairs", multiple=True, metavar="NAME=VALUE",
              help="environment of istio-init (e.g. ISTIO_META_DNS_CAPTURE=true); repeatable")
@click.option("--ipv6", is_flag=True, help="the pod has an IPv6 address (istio-iptables' EnableIPv6)")
@click.option("--dns-server", "dns_servers", multiple=True, metavar="ADDR",
              help="a nameserver of the pod's resolv.conf (used with DNS capture); repeatable")
@click.argument("flags", nargs=-1, type=click.UNPROCESSED)
def generate_command(version: str | None, pod_file: str | None, output: str, env_pairs: tuple[str, ...],
                     ipv6: bool, dns_servers: tuple[str, ...], flags: tuple[str, ...]) -> None:
    """Print the rules Istio installs for istio-iptables FLAGS or for the pods of --pod
    (or, with -o annotations, the pod annotations that make the injector produce them).

    meshsolve's own options come first; everything from the first istio-iptables flag on (or after
    `--`) is passed to istio-iptables, so its `-o` is not confused with `--output`:

        meshsolve generate --istio 1.10 -o restore -- -p 15001 -u 1337 -m REDIRECT -i '*' -b '*'
    """
    import itertools

    from meshsolve.istio.config import CaptureConfig
    from meshsolve.istio.flags import parse_flags
    from meshsolve.istio.output import Format, render_captures
    from meshsolve.istio.pod import PodCapture, pods_from_file, pods_from_text
    from meshsolve.model import to_address

    env: dict[str, str] = {}
    for pair in env_pairs:
        name, eq, value = pair.partition("=")
        if not eq or not name:
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--env")
        env[name] = value
    argv = list(flags[1:]) if flags[:1] == ("--",) else list(flags)
    for flag, value in itertools.pairwise(argv):
        if flag == "-o" and value in ("save", "restore", "script", "json", "annotations"):
            raise click.UsageError(f"'-o {value}' after istio-iptables flags is istio-iptables' -o "
                                   "(outbound ports); put meshsolve's -o before the flags")
    items: list[tuple[CaptureConfig, PodCapture | None]]
    if pod_file is not None:
        if argv:
            raise click.UsageError("give istio-iptables flags or --pod, not both")
        if pod_file == "-":
            pods = pods_from_text(sys.stdin.read(), version=version, source="<stdin>")
        else:
            pods = pods_from_file(pod_file, version=version)
        items = [(p.config, p) for p in pods]
    else:
        items = [(parse_flags(argv, env, version=version or "current"), None)]
    changes: dict[str, object] = {}
    if ipv6:
        changes["enable_ipv6"] = True
    if dns_servers:
        addrs = [to_address(a) for a in dns_servers]
        changes["dns_servers_v4"] = tuple(a for a in addrs if a.version == 4)
        changes["dns_servers_v6"] = tuple(a for a in addrs if a.version == 6)
    if changes:
        items = [(c.evolve(**changes), p) for c, p in items]
    formats: dict[str, Format] = {"save": "save", "restore": "restore", "script": "script", "json": "json",
                                  "annotations": "annotations"}
    click.echo(render_captures(items, formats[output]), nl=False)


# --- oracle (the kernel oracle, meshsolve.oracle: needs root and network namespaces) ------------


@cli.command("oracle")
@click.option("--setup", "setup_name", type=click.Choice(["A", "B", "C", "D", "E"], case_sensitive=False),
              default=None, help="built-in pod A..E")
@click.option("--world", "world_file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="a world JSON file (as the random campaign writes)")
@click.option("--family", type=click.Choice(["ipv4", "ipv6"]), default="ipv4", show_default=True,
              help="family of the built-in pod")
@click.option("--client", default=None, help="run one flow: peer, proxy or an app name")
@click.option("--dst", default=None, help="run one flow: destination address")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="run one flow: port")
@click.option("--endpoint", type=click.IntRange(0), default=0, show_default=True,
              help="which service endpoint the proxy stand-in picks")
@click.option("--compare/--no-compare", default=True, show_default=True,
              help="also run the interpreter and report disagreements")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_context
def oracle_command(ctx: click.Context, setup_name: str | None, world_file: str | None, family: str,
                   client: str | None, dst: str | None, port: int | None, endpoint: int, compare: bool,
                   output: str) -> None:
    """Run flows on the real kernel: the pod in network namespaces, a proxy stand-in, real sockets.

    Without --client/--dst/--port, runs the pod's whole bind matrix. Exit 79 when the kernel and the
    interpreter disagree on some flow.
    """
    import json

    from meshsolve.model import Family, Flow
    from meshsolve.oracle.compare import differences, matrix_flows
    from meshsolve.oracle.run import KernelWorld
    from meshsolve.oracle.worldio import load_world
    from meshsolve.semantics import interpret, setup_world

    if (setup_name is None) == (world_file is None):
        raise click.UsageError("give exactly one of --setup and --world")
    one = (client, dst, port)
    if any(v is not None for v in one) and not all(v is not None for v in one):
        raise click.UsageError("--client, --dst and --port go together")
    fam: Family = "ipv6" if family == "ipv6" else "ipv4"
    world = load_world(world_file) if world_file else setup_world(str(setup_name), fam)
    if client is not None and dst is not None and port is not None:
        flows: tuple[Flow, ...] = (Flow(client, dst, port, endpoint=endpoint),)
    else:
        flows = matrix_flows(world)
    rows = []
    with KernelWorld(world) as kw:
        for flow in flows:
            actual = kw.run(flow)
            expected = interpret(world, flow) if compare else None
            diffs = differences(expected, actual) if expected is not None else ()
            rows.append((flow, actual, expected, diffs))
    disagree = sum(1 for *_, d in rows if d)
    if output == "json":
        click.echo(json.dumps({"schemaVersion": 1, "world": world.name, "flows": [
            {"flow": str(f), "kernel": a.summary,
             "interpreter": None if e is None else e.summary, "differences": list(d)}
            for f, a, e, d in rows], "disagreements": disagree}, indent=2))
    else:
        width = max(len(str(f)) for f, *_ in rows) if rows else 0
        for f, a, e, d in rows:
            line = f"{f!s:<{width}}  kernel: {a.summary}"
            if e is not None:
                line += f"  |  interpreter: {e.summary}" + ("  DIFFERS" if d else "")
            click.echo(line)
            for text in d:
                click.echo(f"    - {text}")
        if compare:
            click.echo(f"{len(rows) - disagree} of {len(rows)} flows agree")
    ctx.exit(EXIT_FINDINGS if disagree else EXIT_OK)


def main(argv: list[str] | None = None) -> int:
    """Entry point: maps meshsolve errors to one-line messages and sysexits codes."""
    try:
        cli.main(args=argv, prog_name="meshsolve", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc), err=True)
        return EXIT_USAGE
    except click.UsageError as exc:
        exc.show()
        return EXIT_USAGE
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.Abort:
        return 130
    except ParseError as exc:
        click.echo(f"Error: {exc}", err=True)
        return EXIT_DATAERR
    except MeshsolveError as exc:
        click.echo(f"Error: {exc}", err=True)
        return EXIT_DATAERR
    except SystemExit as exc:  # commands end with ctx.exit(code)
        return int(exc.code or 0)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
