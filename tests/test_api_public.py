"""The public API: every documented task done with the names ``meshsolve`` exports, and nothing else.

This module imports only ``meshsolve`` (and its public ``testing``/``strategies`` modules) — if a
task needed a private import, this file would show it.
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import attrs
import pytest
from script_text import intended_rules

import meshsolve
from meshsolve import (
    App,
    Bypass,
    CaptureConfig,
    CaptureInbound,
    CaptureOutbound,
    Chain,
    Conflict,
    Delivered,
    Different,
    Egress,
    Endpoint,
    Equivalent,
    Flow,
    Loop,
    MeshsolveError,
    NoExposure,
    NoLoops,
    Observation,
    ParseError,
    Proved,
    ProxyBehavior,
    Reachable,
    Refuted,
    Result,
    Rule,
    RuleRef,
    Ruleset,
    Rulesets,
    Service,
    Socket,
    SpecError,
    Synthesized,
    Table,
    Unknown,
    World,
    WorldError,
    audit,
    check,
    default_properties,
    diff,
    emit,
    generate,
    interpret,
    load_spec,
    parse_file,
    parse_flags,
    parse_spec,
    parse_text,
    pods_from_file,
    pods_from_text,
    proxy_behavior,
    render_restore,
    render_save,
    render_script,
    setup_world,
    synthesize,
    to_flags,
    world_from_config,
    world_from_dump,
    world_from_flags,
    world_from_rules,
    worlds_from_manifest,
    worlds_from_manifest_text,
)

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable

CURRENT_FLAGS = ["-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-x", "",
                 "-b", "*", "-d", "15090,15021,15020"]
MANIFEST = """\
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop}
spec:
  containers:
  - name: web
    image: example/web:1
    ports: [{containerPort: 8080}, {containerPort: 53, protocol: UDP}]
  - name: agent
    image: example/agent:1
    securityContext: {runAsUser: 1337}
status: {podIP: 192.0.2.10}
"""


# --- the surface ---------------------------------------------------------------------------------


def _type_checking_names() -> set[str]:
    tree = ast.parse((ROOT / "meshsolve" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            return {a.asname or a.name for imp in node.body if isinstance(imp, ast.ImportFrom)
                    for a in imp.names}
    raise AssertionError("no TYPE_CHECKING block in meshsolve/__init__.py")


def test_all_names_resolve_to_their_defining_objects() -> None:
    import importlib

    names = set(meshsolve.__all__)
    assert len(names) == len(meshsolve.__all__), "duplicate names in __all__"
    errors = {"InternalError", "MeshsolveError", "OracleError", "ParseError", "SpecError",
              "UnsupportedError", "WorldError"}
    lazy: dict[str, str] = meshsolve._LAZY
    # the static view (for mypy/IDEs), the lazy table and __all__ name the same things
    assert _type_checking_names() == set(lazy) == names - errors - {"__version__"}
    for name in names - {"__version__"}:
        value = getattr(meshsolve, name)
        if name in lazy:
            assert value is getattr(importlib.import_module(lazy[name]), name), name
    assert set(meshsolve.__all__) <= set(dir(meshsolve))
    with pytest.raises(AttributeError, match="no attribute 'Wrold'"):
        meshsolve.Wrold  # type: ignore[attr-defined]  # noqa: B018


# names an annotation may use without meshsolve exporting them: builtins, typing, the standard library
_NOT_OURS = {"Any", "Callable", "Iterable", "Iterator", "Literal", "Mapping", "Optional", "Path", "PathLike", "Sequence",
             "Union", "os"}


def _annotation_names(annotation: object) -> set[str]:
    """The names an annotation (a string under ``from __future__ import annotations``) mentions,
    leaving out what is inside ``Literal[...]``."""
    import builtins

    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", repr(annotation))
    tree = ast.parse(text, mode="eval")
    literal = {id(n) for sub in ast.walk(tree) if isinstance(sub, ast.Subscript)
               and isinstance(sub.value, ast.Name) and sub.value.id == "Literal" for n in ast.walk(sub.slice)}
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and id(n) not in literal}
    return names - set(dir(builtins)) - _NOT_OURS


def _signatures(name: str, value: object) -> list[tuple[str, inspect.Signature]]:
    """The signatures a user meets: a function's; a class's constructor, public methods and properties."""
    out = []
    members: list[tuple[str, object]] = [(name, value)]
    if inspect.isclass(value):
        for attr, member in vars(value).items():
            if attr.startswith("_"):
                continue
            if isinstance(member, property) and member.fget is not None:
                members.append((f"{name}.{attr}", member.fget))
            elif inspect.isfunction(member):
                members.append((f"{name}.{attr}", member))
    for owner, fn in members:
        if callable(fn):
            try:
                out.append((owner, inspect.signature(fn)))
            except (TypeError, ValueError):
                continue
    return out


def test_every_type_a_public_signature_names_is_exported() -> None:
    """What a public function takes or returns, and what a public class's constructor, methods and
    properties take or return, can be named with ``from meshsolve import ...``."""
    missing: dict[str, set[str]] = {}
    for name in meshsolve.__all__:
        if name == "__version__":
            continue
        for owner, sig in _signatures(name, getattr(meshsolve, name)):
            annotations = [p.annotation for p in sig.parameters.values() if p.annotation is not p.empty]
            if sig.return_annotation is not sig.empty:
                annotations.append(sig.return_annotation)
            for ann in annotations:
                for used in _annotation_names(ann) - set(meshsolve.__all__):
                    missing.setdefault(used, set()).add(owner)
    assert not missing, {k: sorted(v) for k, v in sorted(missing.items())}
    # the walk sees what it should: synthesize's result types, through its annotation
    assert {"Spec", "Synthesized", "Conflict", "SynthUnknown"} <= _annotation_names(
        inspect.signature(synthesize).return_annotation) | _annotation_names(
        inspect.signature(synthesize).parameters["spec"].annotation)


def test_import_is_cheap_and_the_solver_is_loaded_only_when_asked() -> None:
    """``import meshsolve`` loads none of the layers; interpreting loads no z3; checking does."""
    code = textwrap.dedent("""
        import json, sys
        heavy = ("z3", "hypothesis", "yaml", "click", "meshsolve.model", "meshsolve.istio",
                 "meshsolve.semantics", "meshsolve.analysis", "meshsolve.smt")
        loaded = lambda: sorted(m for m in heavy if m in sys.modules)
        import meshsolve
        out = {"import": loaded()}
        from meshsolve import Flow, interpret, setup_world, world_from_flags
        interpret(setup_world("E"), Flow("app", "192.0.2.10", 9001))
        world_from_flags(["-p", "15001", "-u", "1337", "-b", "*"])
        out["interpret"] = "z3" in sys.modules
        from meshsolve import NoLoops, check
        check(setup_world("E"), NoLoops())
        out["check"] = "z3" in sys.modules
        print(json.dumps(out))
    """)
    got = json.loads(subprocess.run([PY, "-c", code], capture_output=True, text=True, check=True,
                                    cwd=ROOT).stdout)
    assert got == {"import": [], "interpret": False, "check": True}


def test_public_questions_state_what_they_prove_and_assume() -> None:
    for fn in (check, audit, diff, interpret):
        doc = inspect.getdoc(fn) or ""
        assert "TCP" in doc, fn.__name__
        assert "hop" in doc, fn.__name__
    for fn in (check, diff):
        doc = inspect.getdoc(fn) or ""
        assert "opaque" in doc and "Unknown" in doc and "proof" in doc, fn.__name__
    model_doc = inspect.getdoc(meshsolve.api) or ""
    for fact in ("First TCP connections only", "Modelled rules", "Hop bound", "opaque", "Unknown"):
        assert fact in model_doc
    for name in meshsolve.__all__:
        value = getattr(meshsolve, name)
        if inspect.isfunction(value) or inspect.isclass(value):
            assert inspect.getdoc(value), f"{name} has no docstring"


# --- every documented task, public names only ----------------------------------------------------


def test_load_a_configuration_and_emit_it_back() -> None:
    config = parse_flags(CURRENT_FLAGS, version="1.22")
    assert isinstance(config, CaptureConfig) and config.version == "1.22"
    argv, env = to_flags(config)
    assert parse_flags(argv, env, version="1.22") == config
    rules = generate(config)
    assert isinstance(rules, Rulesets) and rules.ipv4.rule_count() > 10
    assert parse_text(render_save(rules)) == rules
    assert parse_text(render_restore(rules)) == rules
    script = render_script(rules)
    assert script.startswith("#!/bin/sh\n")
    # the rules travel as iptables-save text inside the script (what --check compares with)
    assert intended_rules(script) == rules
    proxy = proxy_behavior("1.22", config)
    assert isinstance(proxy, ProxyBehavior) and proxy.inbound_source_v4 is not None
    with pytest.raises(SpecError):
        parse_flags(["-p", "not-a-port"])
    with pytest.raises(ParseError) as bad:
        parse_text("*nat\n-A OUTPUT --bogus-option\nCOMMIT\n", source="dump.txt")
    assert isinstance(bad.value, MeshsolveError | ValueError) and "dump.txt" in str(bad.value)


def test_build_worlds_from_flags_manifests_dumps_and_setups(tmp_path: Path) -> None:
    world = world_from_flags(CURRENT_FLAGS)
    assert isinstance(world, World) and world.proxy.inbound_port == 15006
    # the same rules and sidecar as the configuration's; the app is a listener standing for every
    # port no rule names (no app on a made-up port)
    config_world = world_from_config(parse_flags(CURRENT_FLAGS))
    assert (world.rules, world.proxy) == (config_world.rules, config_world.proxy)
    assert [str(s) for a in world.apps for s in a.sockets] == ["0.0.0.0:1024"]

    (pod,) = worlds_from_manifest_text(MANIFEST, source="pod.yaml")
    assert (pod.namespace, pod.name) == ("shop", "web")
    assert [(a.name, a.uid, [str(s) for s in a.sockets]) for a in pod.apps] == [
        ("web", 1000, ["0.0.0.0:8080"]), ("agent", 1337, [])]
    path = tmp_path / "pod.yaml"
    path.write_text(MANIFEST)
    assert worlds_from_manifest(path) == (pod,)
    assert pods_from_file(path)[0].config == pods_from_text(MANIFEST)[0].config
    # a port the sidecar listens on is no app listener: left out, with a note (the same as the CLI)
    (proxied,) = worlds_from_manifest_text(MANIFEST.replace("containerPort: 8080", "containerPort: 15006"))
    assert [str(s) for a in proxied.apps for s in a.sockets] == []
    from meshsolve.inputs import worlds_of_manifest

    (loaded,) = worlds_of_manifest(MANIFEST.replace("containerPort: 8080", "containerPort: 15006"))
    assert any("declares port 15006, which the sidecar listens on" in n for n in loaded.notes)
    with pytest.raises(SpecError, match="cannot read manifest"):
        worlds_from_manifest(tmp_path / "missing.yaml")

    dump = tmp_path / "iptables-save.txt"
    dump.write_text(render_save(world.rules))
    from_dump = world_from_dump(dump)
    assert from_dump.rules == world.rules and from_dump.proxy == world.proxy  # version read from the rules
    assert world_from_dump(parse_file(dump)).rules == from_dump.rules
    assert world_from_dump(parse_file(dump), version="current") == world_from_dump(dump, version="current")
    assert world_from_rules(world.rules, world.proxy).proxy == from_dump.proxy

    assert setup_world("A").name == "setup-A-ipv4"
    with pytest.raises(WorldError):
        World(pod_ips=("192.0.2.10",), peer_ips=(), apps=(App("a", sockets=(Socket("0.0.0.0", 15001),)),))


def test_worlds_from_every_manifest_of_the_corpus() -> None:
    """Each pod of the project's manifest corpus becomes a world whose apps are its containers (the
    sidecar's left out), listening on the wildcard of the pod's family on their TCP containerPorts."""
    import yaml

    seen = 0
    for path in sorted((ROOT / "tests" / "data" / "pods").glob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        pods = [i for d in docs for i in (d.get("items") or [d])]
        worlds = worlds_from_manifest(path)
        assert len(worlds) == len(pods), path.name
        for pod, world in zip(pods, worlds, strict=True):
            spec = pod.get("spec") or {}
            containers = [c for c in spec.get("containers") or () if c["name"] != "istio-proxy"]
            assert [a.name for a in world.apps] == [c["name"] for c in containers], path.name
            status_ips = {i["ip"] for i in (pod.get("status") or {}).get("podIPs") or ()} or \
                {(pod.get("status") or {}).get("podIP")} - {None}
            if status_ips:
                assert {str(a) for a in world.pod_ips} == status_ips, path.name
            for app, c in zip(world.apps, containers, strict=True):
                declared = {p["containerPort"] for p in c.get("ports") or () if p.get("protocol", "TCP") == "TCP"}
                assert {s.port for s in app.sockets} == declared, (path.name, app.name)
                assert all(s.bind.is_unspecified for s in app.sockets)
            seen += 1
    assert seen >= 10


def test_ask_questions_and_read_verdicts() -> None:
    a, e = setup_world("A"), setup_world("E")
    # one concrete flow: the seed's pod-IP listener under Istio 1.2, and in current Istio
    flow = Flow("peer", "192.0.2.10", 9003)
    r = interpret(a, flow)
    assert isinstance(r, Result) and r.summary == "in, refused" and str(r).startswith(f"flow {flow}")
    assert isinstance(interpret(e, flow).outcome, Delivered)
    assert isinstance(interpret(e, Flow("app", "203.0.113.5", 443)).outcome, Egress)

    for prop in (Reachable("peer", 9001), CaptureOutbound(), CaptureInbound(ports=(9001, 9003)), Bypass(),
                 NoLoops(), NoExposure(), Observation("app", "198.51.100.1", 9001, sides=("out", "in"))):
        verdict = check(e, prop)
        assert isinstance(verdict, Proved), verdict
        assert verdict.hops == 8 and verdict.kind == "proved"

    refuted = check(a, Reachable("peer", 9003))
    assert isinstance(refuted, Refuted) and refuted.flow.client == "peer"
    assert refuted.result.summary == "in, refused" and refuted.result.trace
    assert isinstance(check(a, NoLoops()), Refuted)

    verdicts = audit(e)
    assert len(verdicts) == len(default_properties(e)) and all(v.kind == "proved" for v in verdicts)


def test_an_opaque_rule_gives_unknown_or_a_proof_that_names_it() -> None:
    e = setup_world("E")
    text = render_save(e.rules).replace(
        "-A OUTPUT -j ISTIO_OUTPUT", "-A OUTPUT -p tcp -m length --length 100:200 -j RETURN\n"
                                     "-A OUTPUT -j ISTIO_OUTPUT")
    w = world_from_dump(parse_text(text), apps=e.apps, services=e.services, pod_ips=e.pod_ips)
    unknown = check(w, CaptureOutbound())
    assert isinstance(unknown, Unknown) and "nat::OUTPUT#1" in unknown.reason
    proved = check(w, Bypass())
    assert isinstance(proved, Proved) and any("nat::OUTPUT#1" in x for x in proved.assumes)


def test_compare_two_worlds() -> None:
    a = setup_world("A")
    (same,) = diff(a, a)
    assert isinstance(same, Equivalent)
    results = diff(a, setup_world("E"))
    assert results and all(isinstance(r, Different) for r in results)
    for r in results:
        assert isinstance(r, Different) and r.a.summary != r.b.summary and r.a.flow == r.b.flow == r.flow


def test_hand_built_world() -> None:
    """A world from the model values alone, with rules from text."""
    rules = parse_text("""\
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A OUTPUT -p tcp -m owner ! --uid-owner 1337 -j REDIRECT --to-ports 15001
COMMIT
""")
    out = rules.ipv4.chain("nat", "OUTPUT")
    assert isinstance(out, Chain) and isinstance(out.rules[0], Rule)
    assert isinstance(rules.ipv4, Ruleset) and isinstance(rules.ipv4.table("nat"), Table)
    assert rules.ipv4.rule(RuleRef("nat", "OUTPUT", 1)) == out.rules[0]
    world = World(pod_ips=("192.0.2.10",), peer_ips=("192.0.2.20",),
                  apps=(App("app", sockets=(Socket("0.0.0.0", 8080),)),),
                  proxy=ProxyBehavior(inbound_port=None),
                  services=(Service("db", "198.51.100.1", 5432, (Endpoint("203.0.113.9", 5432),)),),
                  rules=rules)
    r = interpret(world, Flow("app", "198.51.100.1", 5432))
    assert r.summary == "out, egress 203.0.113.9:5432"
    assert isinstance(check(world, CaptureOutbound()), Proved)
    # the rule exempts only the proxy's uid: an app running as 1337 is not captured
    stray = attrs.evolve(world, apps=(*world.apps, App("agent", uid=1337, gid=1000)))
    assert interpret(stray, Flow("agent", "203.0.113.9", 443)).summary == "egress 203.0.113.9:443"
    assert isinstance(interpret(world, Flow("app", "198.51.100.9", 80)).outcome, Egress)
    assert isinstance(interpret(world, Flow("proxy", "127.0.0.1", 15001)).outcome, Loop)


SPEC = """\
name: tiny
family: ipv4
pod: {ip: 192.0.2.10, peer: 192.0.2.20}
apps:
  - {name: web, uid: 1000, gid: 1000, listen: ["0.0.0.0:8080"]}
proxy: {uid: 1337, gid: 1337, outbound_port: 15001, inbound_port: 15006}
rules: |
  *nat
  :ISTIO_OUTPUT - [0:0]
  :ISTIO_REDIRECT - [0:0]
  -A OUTPUT -p tcp -j ISTIO_OUTPUT
  -A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
  COMMIT
goals:
  - {name: outbound captured, captured_outbound: {}}
  - {name: proxy bypasses, bypass: {}}
  - {name: no loops, no_loops: {}}
search:
  chain: ISTIO_OUTPUT
  max_rules: 3
  conditions: ["-o lo", "-m owner --uid-owner 1337", "-d 127.0.0.1/32"]
  targets: [RETURN, ISTIO_REDIRECT]
"""


def test_synthesize_from_a_spec_and_emit(tmp_path: Path) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(SPEC)
    spec = parse_spec(SPEC, source=str(path))
    assert load_spec(path) == spec
    result = synthesize(spec)
    assert isinstance(result, Synthesized), str(result)
    assert len(result.proofs) == 3 and all(isinstance(v, Proved) for v in result.proofs)
    # the outcome is independently re-proved, and a smaller rule list cannot meet the goals
    assert isinstance(check(result.world, CaptureOutbound()), Proved)
    assert isinstance(check(result.world, Bypass()), Proved)
    assert 1 < len(result.rules) <= 3
    restore = emit(result, "restore")
    assert parse_text(restore).ipv4.chain("nat", "ISTIO_OUTPUT") == result.world.rules.ipv4.chain(
        "nat", "ISTIO_OUTPUT")
    assert "outbound captured" in restore  # the header names the goals it was proven against
    with pytest.raises(SpecError):
        parse_spec(SPEC.replace("max_rules: 3", "max_rulez: 3"))
    assert not isinstance(result, Conflict)


# --- typing, as a user sees it -------------------------------------------------------------------

USER_CODE = '''
from meshsolve import (CaptureOutbound, Flow, NoLoops, Observation, Proved, Refuted, Result, Unknown,
                       Verdict, World, check, diff, interpret, setup_world, world_from_flags)
from meshsolve.testing import Counterexample, assert_captured, assert_equivalent, assert_observed


def verdict_line(world: World) -> str:
    verdict: Verdict = check(world, CaptureOutbound(exclude_ports=(443,), exclude_cidrs=("10.0.0.0/8",)))
    if isinstance(verdict, Refuted):
        return f"{verdict.flow}: {verdict.result.summary}"
    if isinstance(verdict, Unknown):
        return verdict.reason
    proved: Proved = verdict
    return ", ".join(proved.assumes)


def run() -> None:
    world = world_from_flags(["-p", "15001", "-u", "1337", "-b", "*"], version="1.22")
    result: Result = interpret(world, Flow("app", "192.0.2.10", 8080))
    print(result.summary, verdict_line(setup_world("E")), check(world, NoLoops()).kind)
    print(check(world, Observation("app", "198.51.100.1", 80, sides=("out",))))
    print([str(r) for r in diff(world, setup_world("E"))])
    try:
        assert_captured(world, "outbound", exclude_ports=[443])
        assert_observed(world, "app", "198.51.100.1", 80, sides=["out"])
        assert_equivalent(world, world, labels=("old", "new"))
    except Counterexample as failure:
        print(failure.flow, [r.summary for r in failure.results])
'''
BAD_CODE = '''
from meshsolve import World, check, setup_world

world: World = setup_world("E")
check(world, "no loops")
from meshsolve import Wrold
'''


def test_mypy_strict_for_a_user_module_and_the_examples(tmp_path: Path) -> None:
    """A user's module and the examples type-check under ``mypy --strict`` with only public names;
    a misuse is reported (so the names are really typed, not ``Any``)."""
    (tmp_path / "user_code.py").write_text(USER_CODE)
    (tmp_path / "bad_code.py").write_text(BAD_CODE)
    # meshsolve as an installed package looks to mypy: typed (py.typed), its own modules not re-checked
    (tmp_path / "mypy.ini").write_text("[mypy]\nstrict = True\n\n[mypy-meshsolve.*]\nfollow_imports = silent\n")
    examples = sorted(str(p) for p in (ROOT / "examples").glob("*.py"))
    env = {**os.environ, "MYPYPATH": str(ROOT)}  # an editable install hides the package from mypy
    proc = subprocess.run([PY, "-m", "mypy", "--config-file", str(tmp_path / "mypy.ini"),
                           "--cache-dir", str(tmp_path / ".mypy_cache"), "--no-error-summary",
                           "user_code.py", "bad_code.py", *examples],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    errors = [line for line in proc.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 2, proc.stdout + proc.stderr
    assert errors[0].startswith("bad_code.py:5: error: Argument 2 to \"check\" has incompatible type \"str\"")
    # the lazy loading is invisible to the type checker: a misspelt name is an error, not Any
    assert errors[1].startswith("bad_code.py:6: error: Module \"meshsolve\" has no attribute \"Wrold\"")
