"""The meshsolve command line (the only module that imports click).

Exit codes follow sysexits as istioctl does: 0 fine, 64 usage, 65 bad input data, 69 the kernel
oracle cannot run here, 70 a meshsolve bug (``InternalError``), 79 some property refuted
(findings), 80 inconclusive (solver unknown / timeout), 130 interrupted (``meshsolve.exits``;
``docs/cli.md`` lists them).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from meshsolve.errors import InternalError, MeshsolveError, OracleError, ParseError, UnsupportedError
from meshsolve.exits import (
    EXIT_DATAERR,
    EXIT_FINDINGS,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SOFTWARE,
    EXIT_UNAVAILABLE,
    EXIT_UNKNOWN,
    EXIT_USAGE,
)

__all__ = ["EXIT_DATAERR", "EXIT_FINDINGS", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_SOFTWARE", "EXIT_UNAVAILABLE",
           "EXIT_UNKNOWN", "EXIT_USAGE", "cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="meshsolve")
def cli() -> None:
    """Prove, refute and synthesize sidecar traffic-capture set-ups."""


# --- subcommands are added below, one section each ---------------------------------------------


# --- synth (declarative goals -> minimal set-up, meshsolve.analysis.synth) ----------------------


@cli.command("synth")
@click.argument("spec_file", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Choice(["text", "script", "restore", "args", "annotations", "json"]),
              default="text", show_default=True, help="what to print for a synthesized set-up")
@click.option("--write", "write_to", type=click.Path(dir_okay=False), default=None,
              help="also write the istio-init script to this file")
@click.option("--quiet", is_flag=True, help="no progress on stderr")
@click.option("--verify-kernel", "verify_kernel", is_flag=True,
              help="also run the synthesized set-up on the real kernel (root: network namespaces) over "
                   "every class of first connection, against the model and every goal")
@click.pass_context
def synth_command(ctx: click.Context, spec_file: str, output: str, write_to: str | None, quiet: bool,
                  verify_kernel: bool) -> None:
    """Synthesize the smallest set-up meeting SPEC_FILE's goals, or name the goals that conflict.

    Exit code 0: synthesized (every goal proved, and with --verify-kernel every flow on the kernel
    agrees with the model and meets every goal); 79: the goals conflict (a minimal conflicting set
    is printed, each of its proper subsets met and proved), or --verify-kernel found a disagreement
    or a goal the kernel breaks; 80: the solver hit its time or resource limit (no answer); 65: a
    bad spec (file and line named); 64: --verify-kernel without root.
    """
    import os

    from meshsolve.analysis.emit import emit
    from meshsolve.analysis.spec import load_spec
    from meshsolve.analysis.synth import Synthesized, SynthUnknown, synthesize

    if verify_kernel and os.geteuid() != 0:
        click.echo("Error: --verify-kernel runs the set-up in network namespaces and needs root", err=True)
        ctx.exit(EXIT_USAGE)
    spec = load_spec(spec_file)
    show = not quiet and sys.stderr.isatty()

    def progress(msg: str) -> None:
        if show:
            click.echo(f"  .. {msg}", err=True)

    res = synthesize(spec, progress=progress)
    if isinstance(res, SynthUnknown):
        click.echo(str(res))
        ctx.exit(EXIT_UNKNOWN)
    if not isinstance(res, Synthesized):
        if output == "json":
            import json

            click.echo(json.dumps({"schemaVersion": 1, "spec": spec.name, "result": "conflict",
                                   "goals": [g.name for g in res.goals],
                                   "flows": [{"goal": n, "flow": str(f)} for n, f in res.flows]}, indent=2))
        else:
            click.echo(str(res))
        ctx.exit(EXIT_FINDINGS)
    if write_to:
        with open(write_to, "w", encoding="utf-8") as fh:
            fh.write(emit(res, "script"))
    kernel = _verify_kernel(res, quiet) if verify_kernel else None
    if output == "text":
        click.echo(str(res))
        click.echo(f"  ({res.iterations} iteration(s), {res.solver_calls} solver call(s), "
                   f"{res.examples} example flow(s), {res.seconds:.1f} s)")
        if kernel is not None:
            click.echo(str(kernel))
    elif output == "json" and kernel is not None:
        import json

        data = json.loads(emit(res, "json"))
        data["kernel"] = {"flows": kernel.flows, "compared": kernel.compared, "undetermined": kernel.undetermined,
                          "seconds": round(kernel.seconds, 1),
                          "disagreements": [{"flow": str(d.flow), "interpreter": d.expected.summary,
                                             "kernel": d.actual.summary, "differences": list(d.differences)}
                                            for d in kernel.disagreements],
                          "goalFailures": [{"goal": g.goal, "flow": str(g.flow), "expected": g.expected,
                                            "kernel": g.actual.summary} for g in kernel.goal_failures]}
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(emit(res, output), nl=False)
        if kernel is not None:
            click.echo(str(kernel), err=True)
    ctx.exit(EXIT_OK if kernel is None or kernel.ok else EXIT_FINDINGS)


def _verify_kernel(res: Any, quiet: bool) -> Any:
    """Run a synthesized set-up's flow space on the kernel, with a progress bar on stderr."""
    from meshsolve.analysis.verify import verify_on_kernel
    from meshsolve.oracle.flowspace import flow_space
    from meshsolve.report.progress import Progress

    flows = flow_space(res.world)
    bar = Progress(len(flows), "kernel: flows", enabled=None if not quiet else False)
    try:
        return verify_on_kernel(res.world, [(g.name, g.prop) for g in res.spec.goals], flows=flows,
                                progress=bar.step)
    finally:
        bar.done()


# --- parse (iptables text in any form -> canonical text, meshsolve.iptables) -------------------


@cli.command("parse")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--family", type=click.Choice(["ipv4", "ipv6"]), default=None,
              help="print only this family (plain iptables-save text, no '# ipv4' line)")
@click.option("-o", "--output", type=click.Choice(["save", "restore", "json"]), default="save",
              show_default=True, help="canonical iptables-save text, iptables-restore input, or JSON")
@click.option("--counters", is_flag=True, help="print packet/byte counters, like iptables-save -c")
@click.option("--test", "test", is_flag=True,
              help="read and check only, print no rules (like iptables-restore --test): exit 0, or 65 on bad input")
def parse_command(file: str, family: str | None, output: str, counters: bool, test: bool) -> None:
    """Read iptables or nftables rules in any form and print them in canonical form.

    FILE ('-' for stdin) may be iptables-save output (with or without -c), an 'iptables -S' listing,
    iptables-restore input (Istio's '* nat' / -N / -I dialect too), an istio-iptables dry-run
    transcript, 'iptables ...' command lines, or 'kubectl logs POD -c istio-init' output, also inside
    log wrappers (docs/inputs.md lists them; what was taken off is noted on stderr). Without --family
    the output is '# ipv4' and the IPv4 rules, then '# ipv6' and the IPv6 rules if there are any;
    meshsolve reads that back. nftables input (nft -f commands, nft list ruleset, nft -j JSON) is
    detected by itself and printed as canonical nft -f text (-o json: the rule model it lowers to).
    Bad input exits with 65 and a one-line message.
    """
    from meshsolve.model.collector import gc_paused

    with gc_paused():  # (see _parse_output)
        _parse_output(file, family, output, counters, test)


def _parse_output(file: str, family: str | None, output: str, counters: bool, test: bool = False) -> None:
    """``parse``'s work, with the cyclic collector off: the rules it reads hold no cycles, and when
    this returns they are freed by reference counting, before the collector is back; a collector
    pass over a large ruleset's values (a quarter of a 96k-line parse) would find nothing."""
    from meshsolve.iptables import file_text, read_text, render_restore, render_save, to_json
    from meshsolve.model.rules import Ruleset

    try:
        name = "<stdin>" if file == "-" else file
        raw = file_text(file, name)  # what nftables' read_input does, without importing nftables
        if not _opens_iptables_text(raw) and _is_nft(raw):
            from meshsolve.nftables import parse_text as nft_text
            from meshsolve.nftables import render as nft_render
            from meshsolve.nftables.lower import lower

            nft = nft_text(raw, name)
            if test:
                return
            if output == "json":
                click.echo(to_json(lower(nft)))
            else:
                click.echo(nft_render(nft), nl=False)
            return
        reading = read_text(raw, name)
        rulesets = reading.require_rulesets()
    except ParseError as exc:
        detail = f" (line: {exc.line.strip()[:60]!r})" if exc.line and exc.line.strip() else ""
        raise ParseError(exc.message + detail, source=exc.source, lineno=exc.lineno) from None
    _notes(reading.notes)
    if test:
        return
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


# The start of text whose first significant line (after blank and ``#`` lines) opens iptables-save or
# restore text: ``*table``, ``:CHAIN``, ``-A ...``, ``[packets:bytes]``. No nftables form starts so
# (nft's detection looks at that same line: ``table ...``, ``{``, a command word or an ``nft`` prompt),
# so such text is iptables without importing meshsolve.nftables. Only printable comment text is
# skipped here; anything else is left to nftables' own detection.
_IPTABLES_START = re.compile(r"\ufeff?(?:[ \t]*(?:#[^\x00-\x1f\x7f-\x9f\u2028\u2029]*)?\r?\n)*[ \t]*[*:\[-]")


def _opens_iptables_text(text: str) -> bool:
    """True when ``text`` surely is not nftables input (see ``_IPTABLES_START``)."""
    return _IPTABLES_START.match(text) is not None


def _is_nft(text: str) -> bool:
    from meshsolve.nftables import is_nft

    return is_nft(text)


# --- matrix / explain (the concrete interpreter, meshsolve.semantics) ---------------------------

_SETUP_CHOICE = click.Choice(["A", "B", "C", "D", "E"], case_sensitive=False)


@cli.command("matrix")
@click.option("--setup", "setup_name", type=_SETUP_CHOICE, default=None, help="built-in pod A..E")
@click.option("--mesh", type=click.Choice(["istio", "linkerd", "kuma", "consul"], case_sensitive=False),
              default=None, help="the seed's pod (set-up E's app and services) under this mesh's defaults")
@click.option("--family", type=click.Choice(["ipv4", "ipv6"]), default="ipv4", show_default=True)
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
def matrix_command(setup_name: str | None, mesh: str | None, family: str, output: str) -> None:
    """Run every client kind against every bind address of a built-in pod."""
    import json

    from meshsolve.model import Family
    from meshsolve.semantics import matrix, setup_world

    if (setup_name is None) == (mesh is None):
        raise click.UsageError("give --setup A..E or --mesh NAME")
    fam: Family = "ipv6" if family == "ipv6" else "ipv4"
    if mesh is not None:
        from meshsolve.analysis.worlds import seed_pod_under

        table = matrix(seed_pod_under(mesh.lower(), fam))
    else:
        assert setup_name is not None
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
@click.option("-o", "--output", type=click.Choice(["save", "restore", "script", "json", "annotations", "nft"]),
              default="save", show_default=True,
              help="nft: the rules of istio-iptables --native-nftables (Istio 1.27+), as nft -f input")
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
        if flag == "-o" and value in ("save", "restore", "script", "json", "annotations", "nft"):
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
    if output == "nft":
        from meshsolve.istio.nft import nft_generate
        from meshsolve.nftables import render as render_nft

        texts = [f"# Istio {c.version} --native-nftables rules generated by meshsolve"
                 + (f"\n# pod {p.namespace}/{p.name}" if p is not None else "") + "\n" + render_nft(nft_generate(c))
                 for c, p in items]
        click.echo("\n".join(texts), nl=False)
        return
    if output != "annotations" and any(c.native_nftables for c, _p in items):
        raise UnsupportedError("these settings select --native-nftables: istio-iptables writes nftables tables, "
                               "not iptables rules; print them with -o nft")
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
    interpreter disagree on some flow, 69 when the oracle cannot run here (root, network namespaces
    and iptables are needed).
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


# --- check / diff / audit (findings, meshsolve.report + meshsolve.inputs) -----------------------

_LEVEL_CHOICE = click.Choice(["Error", "Warning", "Info"], case_sensitive=False)


_F = TypeVar("_F", bound=Callable[..., Any])


def _input_options(f: _F) -> _F:
    """The options every configuration-taking command shares (see meshsolve.inputs)."""
    options = [
        click.option("--setup", "setup_name", type=_SETUP_CHOICE, default=None, help="built-in pod A..E"),
        click.option("--family", type=click.Choice(["ipv4", "ipv6", "dual"]), default=None,
                     help="address family of the pod (default: ipv4, or what the input says)"),
        click.option("--istio", "version", default=None, metavar="VERSION",
                     help="Istio version 1.0 … 1.30 or current: the rules (with istio-iptables FLAGS or "
                          "the injector's defaults) and the proxy's behaviour"),
        click.option("--pod", "pod_file", type=click.Path(dir_okay=False), default=None,
                     help="one pod: kubectl get pod NAME -o yaml"),
        click.option("--rules", "rules_file", type=click.Path(dir_okay=False), default=None,
                     help="the pod's netns: iptables-save, iptables -t nat -S or nft list ruleset, or kubectl "
                          "logs POD -c istio-init (docs/inputs.md lists every form)"),
        click.option("--binds", "binds_file", type=click.Path(dir_okay=False), default=None,
                     help="the apps' listeners: `ss -ltnp` / `netstat -ntlp` output, or YAML (apps with uid, "
                          "gid, listen addresses; services; pod IPs)"),
        click.option("--routing", "routing_file", type=click.Path(dir_okay=False), default=None,
                     help="the pod's policy routing: `ip rule` / `ip route` output or commands"),
        click.option("--env", "env_pairs", multiple=True, metavar="NAME=VALUE",
                     help="environment of istio-init, with --istio FLAGS, or of istio-cni for an ambient pod "
                          "(NATIVE_NFTABLES=true: the chart's values.global.nativeNftables); repeatable"),
        click.option("--mesh", type=click.Choice(["istio", "linkerd", "kuma", "consul"], case_sensitive=False),
                     default=None, help="the mesh whose rules and proxy to use [default: the pod's, or the dump's]"),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


def _env(pairs: tuple[str, ...]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        name, eq, value = pair.partition("=")
        if not eq or not name:
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--env")
        env[name] = value
    return env


def _level(value: str) -> str:
    return value.capitalize()


def _notes(notes: tuple[str, ...]) -> None:
    for n in notes:
        click.echo(f"note: {n}", err=True)


@cli.command("check", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@_input_options
@click.option("-p", "--property", "props", multiple=True, metavar="SPEC",
              help="default, capture-out, capture-in[:PORTS], bypass, no-loops, no-exposure, "
                   "reach:CLIENT:PORT[:DST], observe:CLIENT:DST:PORT[:SIDES]; repeatable")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--explain", is_flag=True, help="print each witness's numbered trace under its finding")
@click.option("--failure-threshold", type=_LEVEL_CHOICE, default="Info", show_default=True,
              help="the lowest level of a refuted finding that makes the exit code 79")
@click.option("--output-threshold", type=_LEVEL_CHOICE, default="Info", show_default=True,
              help="the lowest level printed")
@click.option("-S", "--suppress", multiple=True, metavar="CODE[=Kind ns/name]",
              help="drop matching findings ('*' wildcards), e.g. -S 'MSH0143=Pod default/*'; repeatable")
@click.argument("flags", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def check_command(ctx: click.Context, setup_name: str | None, family: str | None, version: str | None,
                  pod_file: str | None, rules_file: str | None, binds_file: str | None, routing_file: str | None,
                  env_pairs: tuple[str, ...], mesh: str | None, props: tuple[str, ...], output: str, explain: bool,
                  failure_threshold: str, output_threshold: str, suppress: tuple[str, ...],
                  flags: tuple[str, ...]) -> None:
    """Prove or refute properties of one pod's traffic capture and print findings.

    Without --property, checks the default set: outbound capture, inbound capture of the apps'
    ports, bypass of the proxy's own traffic, no loops, no exposure of localhost-only sockets, and
    a peer reaching each app port that is not bound to loopback only.
    istio-iptables FLAGS (after `--`) go with --istio. What the inputs do not say is assumed and
    each finding names the assumptions it rests on; a failed istio-init is a finding, never
    analysed as if its rules were installed. Exit 0: every property holds; 79: some is refuted (or
    the inputs show a failure); 80: none refuted but some inconclusive; 64: usage; 65: bad input.
    """
    from typing import cast

    from meshsolve.inputs import load, parse_properties, property_ports
    from meshsolve.report import Level, colour_enabled, render_json, render_text
    from meshsolve.report.findings import Subject, input_finding
    from meshsolve.report.render import Report
    from meshsolve.report.run import check_world

    argv = list(flags[1:]) if flags[:1] == ("--",) else list(flags)
    if argv and version is None:
        raise click.UsageError("istio-iptables flags need --istio VERSION")
    loaded = load(setup=setup_name, family=family, istio=version, flags=argv, env=_env(env_pairs), pod=pod_file,
                  rules=rules_file, binds=binds_file, routing=routing_file, listen_ports=property_ports(props),
                  mesh=mesh)
    _notes(loaded.notes)
    _notes(tuple(str(p) for p in loaded.assumptions if p.kind != "peer-ip"))  # the peer stands for any peer
    level = cast(Level, _level(failure_threshold))
    world = loaded.world
    subject = Subject("Pod", world.namespace, world.name) if world is not None else Subject(
        "Pod", "default", _stem(rules_file or pod_file or "pod"))
    inputs = tuple(input_finding(p.code, p.message, subject, p.reference) for p in loaded.problems)
    if world is None:
        report = Report(inputs, (), level)
    else:
        checked = check_world(world, parse_properties(props, world, representative=loaded.representative,
                                                      excluded=loaded.excluded, defaults=loaded.defaults),
                              app_references=dict(loaded.app_references), failure_threshold=level,
                              parts=loaded.parts)
        report = Report((*inputs, *checked.findings), checked.checked, level)
    report = report.suppress(suppress)
    out_level = cast(Level, _level(output_threshold))
    if output == "json":
        click.echo(render_json(report, output_threshold=out_level,
                               extra={"configuration": loaded.label,
                                      "assumptions": [str(p) for p in loaded.assumptions]}), nl=False)
    else:
        click.echo(render_text(report, colour=colour_enabled(sys.stdout), explain=explain,
                               output_threshold=out_level), nl=False)
    ctx.exit(report.exit_code)


def _stem(path: str) -> str:
    from pathlib import Path

    return Path(path).stem


@cli.command("diff")
@click.argument("a")
@click.argument("b")
@click.option("--family", type=click.Choice(["ipv4", "ipv6", "dual"]), default=None,
              help="address family of the pod (default: ipv4, or what the input says)")
@click.option("--pod", "pod_file", type=click.Path(dir_okay=False), default=None,
              help="the pod both sides are about (kubectl get pod NAME -o yaml)")
@click.option("--istio", "version", default=None, metavar="VERSION",
              help="proxy behaviour for sides that are rules dumps [default: current]")
@click.option("--binds", "binds_file", type=click.Path(dir_okay=False), default=None,
              help="YAML: apps, services, pod IPs for both sides")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--explain", is_flag=True, help="print both traces of each differing flow")
@click.pass_context
def diff_command(ctx: click.Context, a: str, b: str, family: str | None, pod_file: str | None,
                 version: str | None, binds_file: str | None, output: str, explain: bool) -> None:
    """Compare two capture set-ups of the same pod over every first connection.

    A and B are each a built-in set-up (A..E), an Istio version (1.2, 1.10, current: the injector's
    defaults, or --pod's annotations under that version), a rules dump (rules:PATH or a file) or a
    pod manifest (pod:PATH or a .yaml file). Prints one differing flow per client kind and family
    with both outcomes, or the proof of equivalence. Exit 0 equivalent, 79 different, 80 unknown.
    """
    import json

    from meshsolve.analysis.diff import Different, DiffUnknown, Equivalent, diff
    from meshsolve.diffsides import describe_pod, load_sides, pod_to_dict
    from meshsolve.report.flows import compare_app_flows

    loaded = load_sides(a, b, family=family, pod=pod_file, istio=version, binds=binds_file)
    sides = [loaded.a, loaded.b]
    for side in sides:
        _notes(side.notes)
    wa, wb = (side.require_world() for side in sides)
    results = diff(wa, wb)
    from meshsolve.report.findings import diff_findings, lint_world

    findings = (*lint_world(wa), *lint_world(wb), *diff_findings(wa, wb, results))
    named = compare_app_flows(wa, wb)
    differences = [r for r in results if isinstance(r, Different)]
    unknowns = [r for r in results if isinstance(r, DiffUnknown)]
    code = EXIT_FINDINGS if differences else EXIT_UNKNOWN if unknowns else EXIT_OK
    if output == "json":
        items: list[dict[str, object]] = []
        for r in results:
            if isinstance(r, Different):
                items.append({"verdict": "different", "scope": str(r.scope), "flow": str(r.flow),
                              "a": r.a.to_dict(), "b": r.b.to_dict()})
            elif isinstance(r, DiffUnknown):
                items.append({"verdict": "unknown", "scope": str(r.scope), "reason": r.reason})
            else:
                items.append({"verdict": "equivalent", "scopes": [str(s) for s in r.scopes], "hops": r.hops})
        pod = {"from": loaded.pod_from, "rule": loaded.rule, "same": loaded.same_pod,
               "a": pod_to_dict(wa), "b": pod_to_dict(wb)}
        click.echo(json.dumps({"schemaVersion": 1, "a": sides[0].label, "b": sides[1].label, "pod": pod,
                               "results": items, "findings": [f.to_dict() for f in findings],
                               "appFlows": [{"flow": str(f), "a": ra.summary, "b": rb.summary,
                                             "same": ra.summary == rb.summary} for f, ra, rb in named],
                               "exitCode": code}, indent=2))
        ctx.exit(code)
    click.echo(f"A: {sides[0].label}")
    click.echo(f"B: {sides[1].label}")
    if loaded.same_pod:
        click.echo(f"pod: {loaded.rule}")
        click.echo("\n".join("  " + line for line in describe_pod(wa)))
    else:
        click.echo(f"pods differ ({loaded.rule}): a difference below may come from the pods, not the set-ups")
        for label, side in (("A", sides[0]), ("B", sides[1])):
            click.echo(f"  {label}'s pod:")
            click.echo("\n".join("    " + line for line in describe_pod(side.require_world())))
    for r in results:
        if isinstance(r, Different):
            click.echo(f"DIFFERENT  {r.flow}  ({r.scope})")
            click.echo(f"  A: {r.a.summary:<24} {r.a.outcome}")
            click.echo(f"  B: {r.b.summary:<24} {r.b.outcome}")
            if explain:
                for label, res in (("A", r.a), ("B", r.b)):
                    click.echo(f"  trace in {label}:")
                    click.echo("\n".join("    " + t for t in str(res).splitlines()))
        elif isinstance(r, DiffUnknown):
            click.echo(f"UNKNOWN    {r.scope}: {r.reason}")
        elif isinstance(r, Equivalent):
            click.echo(f"EQUIVALENT every first connection ends the same way (up to {r.hops} proxy hops) for:")
            for scope in r.scopes:
                click.echo(f"  - {scope}")
    if named:
        click.echo("flows to the apps' ports and services:")
        width = max(len(str(f)) for f, _, _ in named)
        for f, ra, rb in named:
            mark = "same" if ra.summary == rb.summary else "DIFFERENT"
            click.echo(f"  {f!s:<{width}}  A: {ra.summary:<22} B: {rb.summary:<22} {mark}")
    for finding in findings:
        click.echo(finding.line())
    if differences:
        click.echo(f"{len(differences)} differing flow{'s' if len(differences) != 1 else ''} "
                   f"(one witness per client kind and family)")
    ctx.exit(code)


@cli.command("audit")
@click.argument("pods_file", metavar="[PODS.yaml]", type=click.Path(dir_okay=False), required=False)
@click.option("--rules", "dumps", multiple=True, metavar="[legacy:|nft:]DUMP",
              help="one pod's iptables-save dumps (each backend, each family) and its nft list ruleset: "
                   "audit the rules other writers put next to the mesh's instead of a pod list; repeatable")
@click.option("--pod", "pod_file", type=click.Path(dir_okay=False), default=None,
              help="with --rules: the pod (kubectl get pod NAME -o yaml)")
@click.option("--mesh", type=click.Choice(["istio", "linkerd", "kuma", "consul"], case_sensitive=False),
              default=None, help="with --rules: the mesh [default: the pod's, or the dumps']")
@click.option("--binds", "binds_file", type=click.Path(dir_okay=False), default=None,
              help="with --rules: YAML with the pod's apps, services, pod IPs")
@click.option("--istio", "version", default=None, metavar="VERSION",
              help="Istio version of every pod [default: each istio-init's image tag, else current]")
@click.option("-p", "--property", "props", multiple=True, metavar="SPEC",
              help="as for check (default: the default set); repeatable")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("-j", "--jobs", type=click.IntRange(1), default=None,
              help="worker processes [default: the machine's cores]")
@click.option("-q", "--quiet", is_flag=True, help="no progress on stderr")
@click.option("--progress/--no-progress", default=None,
              help="pods read and set-ups proven on stderr [default: when stderr is a terminal, unless -q]")
@click.option("--failure-threshold", type=_LEVEL_CHOICE, default="Info", show_default=True)
@click.option("--output-threshold", type=_LEVEL_CHOICE, default="Info", show_default=True)
@click.option("-S", "--suppress", multiple=True, metavar="CODE[=Kind ns/name]",
              help="drop matching findings ('*' wildcards); repeatable")
@click.pass_context
def audit_command(ctx: click.Context, pods_file: str | None, dumps: tuple[str, ...], pod_file: str | None,
                  mesh: str | None, binds_file: str | None, version: str | None, props: tuple[str, ...],
                  output: str, jobs: int | None, quiet: bool, progress: bool | None, failure_threshold: str,
                  output_threshold: str, suppress: tuple[str, ...]) -> None:
    """Check every pod of a List (kubectl get pods -A -o json, or -o yaml), each capture set-up
    proven once; or, with --rules, one pod's dumps against its mesh's rules.

    The List is streamed. Pods are grouped by effective capture set-up (Istio version, annotations
    or istio-init arguments, container ports and ids, address families); each group is proven in a
    worker process while the List is still read, and its findings are reported for each of its pods.
    With --rules: every rule outside the mesh's own that changes how a connection ends (with the
    witness), both iptables backends populated, a mesh chain whose hook jump is missing, and
    whether capture holds for every uid except the proxy's. Exit codes as for check.
    """
    import time
    from typing import cast

    from meshsolve.fleet import FleetProgress, audit
    from meshsolve.report import Level, colour_enabled, render_json, render_text
    from meshsolve.report.render import json_chunks

    if dumps:
        if pods_file is not None:
            raise click.UsageError("give PODS.yaml or --rules, not both")
        from meshsolve.analysis.cohabit import audit_cohabitation
        from meshsolve.inputs import load_cohabitation
        from meshsolve.report.cohabit import cohabitation_report

        co = load_cohabitation(dumps, pod=pod_file, mesh=mesh, binds=binds_file)
        _notes(co.notes)
        rep = cohabitation_report(audit_cohabitation(co.dumps, co.mesh, co.world),
                                  failure_threshold=cast(Level, _level(failure_threshold))).suppress(suppress)
        level = cast(Level, _level(output_threshold))
        if output == "json":
            click.echo(render_json(rep, output_threshold=level, extra={"configuration": co.label}), nl=False)
        else:
            click.echo(render_text(rep, colour=colour_enabled(sys.stdout), output_threshold=level), nl=False)
        ctx.exit(rep.exit_code)
    if pods_file is None:
        raise click.UsageError("give PODS.yaml (a pod list) or --rules DUMP (one pod's dumps)")
    if pod_file or mesh or binds_file:
        raise click.UsageError("--pod, --mesh and --binds go with --rules")

    show = progress if progress is not None else (not quiet and sys.stderr.isatty())
    started = time.monotonic()
    drawn: list[float] = [0.0, 0]  # when the line was last drawn, and its width

    def on_progress(p: FleetProgress) -> None:
        now = time.monotonic()
        if not show or (now - drawn[0] < 0.1 and p.reading):
            return
        drawn[0] = now
        share = f" ({100 * p.read // p.size}%)" if p.reading and p.size else ""
        line = (f"read {p.pods} pods{share}, {p.groups} capture set-ups; proved {p.proven}/{p.groups} "
                f"({now - started:.1f} s)")
        sys.stderr.write("\r" + line.ljust(int(drawn[1])))
        sys.stderr.flush()
        drawn[1] = len(line)

    res = audit(pods_file, version=version, properties=props, jobs=jobs,
                failure_threshold=cast(Level, _level(failure_threshold)), progress=on_progress)
    if show and drawn[1]:
        sys.stderr.write("\n")
    report = res.report.suppress(suppress)
    out_level = cast(Level, _level(output_threshold))
    if output == "json":  # written a piece at a time: a fleet's checks are hundreds of thousands
        stdout = sys.stdout
        pieces: list[str] = []
        for piece in json_chunks(report, output_threshold=out_level, extra={"pods": res.pods, "groups": res.groups}):
            pieces.append(piece)
            if len(pieces) >= 4096:
                stdout.write("".join(pieces))
                pieces.clear()
        stdout.write("".join(pieces))
        stdout.flush()
    else:
        text = render_text(report, colour=colour_enabled(sys.stdout), output_threshold=out_level)
        lines = text.splitlines()
        lines.insert(len(lines) - 1, f"audited {res.pods} pod{'s' if res.pods != 1 else ''} in "
                                     f"{res.groups} capture set-up{'s' if res.groups != 1 else ''}")
        click.echo("\n".join(lines))
    ctx.exit(report.exit_code)


def entry() -> None:
    """The ``meshsolve`` command: ``main`` on the process's arguments, in a process that exits when
    it is done (so what it parses and encodes is kept from the collector's passes:
    ``model.collector.freeze_after_pauses``)."""
    from meshsolve.model.collector import freeze_after_pauses

    freeze_after_pauses()
    sys.exit(main())


def main(argv: list[str] | None = None) -> int:
    """Entry point: maps meshsolve errors to one-line messages and sysexits codes."""
    try:
        rv = cli.main(args=argv, prog_name="meshsolve", standalone_mode=False)
        if isinstance(rv, int):  # ctx.exit(code) comes back as the return value without standalone mode
            return rv
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc), err=True)
        return EXIT_USAGE
    except click.UsageError as exc:
        exc.show()
        return EXIT_USAGE
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.Abort:
        return EXIT_INTERRUPTED
    except InternalError as exc:  # before MeshsolveError: a bug is not bad input
        import traceback

        click.echo("".join(traceback.format_exception(exc)).rstrip(), err=True)
        click.echo(f"Error: internal error, a bug in meshsolve (please report it with the input): {exc}",
                   err=True)
        return EXIT_SOFTWARE
    except OracleError as exc:
        click.echo(f"Error: {exc}", err=True)
        return EXIT_UNAVAILABLE
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
