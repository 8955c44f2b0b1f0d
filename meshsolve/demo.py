"""The main job (``make demo``): the seed's story end to end, each step printing what it proves.

1. The bind matrix of the Istio 1.2 pod (set-up A), and the proof that its pod-IP listener is
   unreachable from a peer (a counterexample replayed by the interpreter).
2. The first patch (B, inbound endpoint = pod IP): the proof that connections loop, with the trace.
3. The second patch (C, loopback rule dropped): no loops, the listener reachable, but the self-call
   through the service loses its server side.
4. Synthesis: the 1.2 design cannot meet the three goals together; with the later proxy knobs a
   minimal set-up can, and its istio-init script is written to a file.
5. The modern rules (E) prove every goal.
6. The semantic diff of Istio 1.2 and current for the same pod.

``python -m meshsolve.demo [--script PATH]``; exits 1 if any step does not come out as the story
says (so the demo doubles as an end-to-end check).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from meshsolve.analysis.check import Proved, Refuted, Verdict, check
from meshsolve.analysis.diff import Different, diff
from meshsolve.analysis.properties import (
    Bypass,
    CaptureInbound,
    CaptureOutbound,
    NoExposure,
    NoLoops,
    Observation,
    Property,
    Reachable,
)
from meshsolve.analysis.worlds import world_from_config
from meshsolve.inputs import default_config
from meshsolve.model.world import Flow
from meshsolve.report import render_text
from meshsolve.report.run import check_world
from meshsolve.semantics import interpret, matrix, setup_world

__all__ = ["DEFAULT_SCRIPT", "Story", "main", "run"]

Out = Callable[[str], None]
DEFAULT_SCRIPT = Path("build/demo/istio-init-recommended.sh")
VIP = "198.51.100.1"


class Story:
    """Collects each step's claims: the demo fails if a verdict is not the one the story tells."""

    def __init__(self, out: Out) -> None:
        self.out = out
        self.claims: list[tuple[str, bool]] = []
        self.step_no = 0

    def step(self, title: str) -> None:
        self.step_no += 1
        self.out("")
        self.out(f"== Step {self.step_no}. {title}")

    def claim(self, text: str, ok: bool) -> None:
        self.claims.append((text, ok))
        self.out(f"  {'✔' if ok else '✘ NOT AS EXPECTED:'} {text}")

    def verdict(self, v: Verdict, expect: str, *, explain: bool = False) -> Verdict:
        word = {"proved": "PROVED", "refuted": "REFUTED", "unknown": "UNKNOWN"}[v.kind]
        line = f"{word:<8} {v.prop.title()}"
        if isinstance(v, Refuted):
            line += f"\n           witness: {v.flow}  ->  {v.result.summary}"
        self.claim(line, v.kind == expect)
        if explain and isinstance(v, Refuted):
            self.out("\n".join("      " + t for t in str(v.result).splitlines()))
        return v

    @property
    def ok(self) -> bool:
        return all(ok for _, ok in self.claims)


def _story_1_2(s: Story) -> None:
    a = setup_world("A")
    s.step("Istio 1.2 (set-up A): which bind address is reachable from where")
    s.out("  Pod 192.0.2.10, app listening on 9001 (0.0.0.0), 9002 (127.0.0.1), 9003 (the pod IP);")
    s.out("  the inbound side forwards to 127.0.0.1:<port>; rule 1 of ISTIO_OUTPUT is")
    s.out("  '-o lo ! -d 127.0.0.1/32 -j ISTIO_REDIRECT'. Every cell is an interpreted flow:")
    s.out("\n".join("    " + t for t in matrix(a).render().splitlines()))
    s.verdict(check(a, Reachable("peer", 9003)), "refuted")
    s.verdict(check(a, NoExposure()), "refuted")
    s.out("  The same, as findings (meshsolve check --setup A):")
    s.out("\n".join("    " + t for t in render_text(check_world(a, (Reachable("peer", 9003), NoExposure())))
                    .splitlines()))


def _story_patches(s: Story) -> None:
    b = setup_world("B")
    s.step("First patch (set-up B): the inbound side forwards to the pod IP instead")
    s.verdict(check(b, Reachable("peer", 9003)), "refuted")
    s.verdict(check(b, NoLoops()), "refuted", explain=True)
    s.out("  The proxy's own connection to the pod IP leaves through lo, rule 1 sends it back to 15001.")
    c = setup_world("C")
    s.step("Second patch (set-up C): pod-IP endpoint and rule 1 removed")
    s.verdict(check(c, Reachable("peer", 9003)), "proved")
    s.verdict(check(c, NoLoops()), "proved")
    s.verdict(check(c, Observation("app", VIP, 9001, sides=("out", "in"))), "refuted")
    s.verdict(check(c, Observation("app", VIP, 9001, sides=("out",))), "proved")
    s.out("  The trade-off of the report: the self-call keeps only its client side.")


def _progress() -> Callable[[str], None] | None:
    """Synthesis progress on stderr, redrawn in place, only when stderr is a terminal."""
    if not sys.stderr.isatty():
        return None

    def show(message: str) -> None:
        sys.stderr.write("\r\x1b[K  " + message.splitlines()[0][:100] if message else "")
        sys.stderr.flush()

    return show


def _progress_done() -> None:
    if sys.stderr.isatty():
        sys.stderr.write("\r\x1b[K")
        sys.stderr.flush()


def _synthesis_steps(s: Story, script: Path) -> None:
    """The lead's synthesizer (meshsolve.analysis.synth) on the shipped specs: the 1.2 design space
    has no set-up meeting the three goals (a minimal conflict), the later knobs give a minimal one
    whose istio-init script is written to ``script``."""
    from meshsolve.analysis.spec import load_spec
    from meshsolve.analysis.synth import Conflict, Synthesized, synthesize
    from meshsolve.istio import render_script

    specs = Path(__file__).resolve().parent.parent / "specs"
    s.step("Synthesis: can any ISTIO_OUTPUT of the 1.2 design meet all three goals?")
    if not (specs / "istio-1.2-design-space.yaml").is_file():
        s.claim(f"the synthesis specs are in {specs}", False)
        return
    res = synthesize(load_spec(specs / "istio-1.2-design-space.yaml"), progress=_progress())
    _progress_done()
    s.out("\n".join("    " + t for t in str(res).splitlines()))
    s.claim("no set-up of the 1.2 design meets the goals together (each proper subset is met and proved)",
            isinstance(res, Conflict))
    s.step("Synthesis with the later proxy knobs (inbound endpoint, inbound source address)")
    res2 = synthesize(load_spec(specs / "istio-later-knobs.yaml"), progress=_progress())
    _progress_done()
    s.out("\n".join("    " + t for t in str(res2).splitlines()))
    ok = isinstance(res2, Synthesized) and all(isinstance(p, Proved) for p in res2.proofs)
    s.claim("a minimal set-up meets every goal, each goal proved", ok)
    if isinstance(res2, Synthesized):
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(render_script(res2.world.rules, header=(
            f"istio-init rules synthesized by meshsolve for spec {res2.spec.name}\n"
            + "".join(f"proxy: {k} = {v}\n" for k, v in res2.knobs))), encoding="utf-8")
        s.claim(f"recommended istio-init script written to {script}", script.is_file())


def _story_modern(s: Story) -> None:
    e = setup_world("E")
    s.step("Modern rules (set-up E, Istio >= 1.10 design): every goal proved")
    props: Sequence[Property] = (
        Reachable("peer", 9003), Reachable("peer", 9001), NoExposure(), NoLoops(),
        Observation("app", VIP, 9001, sides=("out", "in")), Observation("app", VIP, 9003, sides=("out", "in")),
        CaptureOutbound(), CaptureInbound(ports=(9001, 9002, 9003)), Bypass())
    for p in props:
        s.verdict(check(e, p), "proved")


def _story_diff(s: Story) -> None:
    s.step("Diff: Istio 1.2 vs current for the same pod (injector defaults, the app of set-up A)")
    a = setup_world("A")
    old = world_from_config(default_config("1.2", (9001, 9002, 9003)), apps=a.apps, services=a.services,
                            pod_ips=a.pod_ips, name="reviews")
    new = world_from_config(default_config("current", (9001, 9002, 9003)), apps=a.apps,
                            services=a.services, pod_ips=a.pod_ips, name="reviews")
    results = diff(old, new)
    for r in results:
        if isinstance(r, Different):
            s.out(f"    DIFFERENT {r.flow}")
            s.out(f"      1.2:     {r.a.summary:<22} {r.a.outcome}")
            s.out(f"      current: {r.b.summary:<22} {r.b.outcome}")
        else:
            s.out(f"    {r}")
    s.claim("the two versions treat some connection differently (a witness per client kind)",
            any(isinstance(r, Different) for r in results))
    s.out("    and on the seed's own flows:")
    changed = 0
    for flow in (Flow("peer", "192.0.2.10", 9003), Flow("peer", "192.0.2.10", 9002), Flow("app", VIP, 9003)):
        ra, rb = interpret(old, flow), interpret(new, flow)
        changed += ra.summary != rb.summary
        s.out(f"      {flow!s:<30} 1.2: {ra.summary:<22} current: {rb.summary}")
    s.claim("current fixes the pod-IP listener and stops exposing the localhost-only one", changed == 3)


def run(out: Out = print, *, script: Path = DEFAULT_SCRIPT) -> bool:
    """Tell the story; True when every step came out as expected."""
    start = time.monotonic()
    s = Story(out)
    out("meshsolve demo — the seed's story: an app listening on its pod IP under Istio 1.2")
    _story_1_2(s)
    _story_patches(s)
    _synthesis_steps(s, script)
    _story_modern(s)
    _story_diff(s)
    out("")
    good = sum(1 for _, ok in s.claims if ok)
    out(f"{good} of {len(s.claims)} claims as the story tells, in {time.monotonic() - start:.1f} s")
    return s.ok


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m meshsolve.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--script", type=Path, default=DEFAULT_SCRIPT,
                    help=f"where to write the recommended istio-init script (default {DEFAULT_SCRIPT})")
    args = ap.parse_args(argv)
    return 0 if run(script=args.script) else 1


if __name__ == "__main__":
    sys.exit(main())
