"""Emitted scripts are safe to run as root.

- settings with shell metacharacters are rejected (flags, env, pod annotations), or never reach
  the output;
- values that bypass validation (a ``Rulesets`` built by hand or parsed from text: comments, log
  prefixes, chain names, the header) are quoted: the script runs in a throw-away network namespace
  and a canary file an injected command would create does not exist, while the hostile text arrives
  in the kernel verbatim;
- a script run twice leaves the same ``iptables-save``; ``iptables-restore --test`` accepts the
  restore form; a script never flushes or deletes chains (or rules) it did not create.

Namespaces are ``msrb<pid>x<n>`` and always deleted.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshsolve.errors import SpecError, UnsupportedError
from meshsolve.iptables import parse_text, render_restore
from meshsolve.istio import generate, parse_flags, pods_from_text, render_script, to_flags
from meshsolve.model.rules import (
    Accept,
    Chain,
    CommentMatch,
    Jump,
    Log,
    Protocol,
    Return,
    Rule,
    Ruleset,
    Rulesets,
    Table,
)

_COUNTER = itertools.count()
DEFAULT = ["-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-x", "", "-b", "*",
           "-d", "15090,15021,15020"]
FLAGS = ["-p", "-z", "-u", "-g", "-m", "-b", "-d", "-i", "-x", "-o", "-q", "-k", "-c", "-t", "-r", "-e",
         "--probe-port"]


def payloads(canary: str) -> list[str]:
    """Shell injections that would create ``canary``."""
    return [f";touch {canary}", f"$(touch {canary})", f"`touch {canary}`", f"'; touch {canary}; '",
            f'"; touch {canary}; "', f"\ntouch {canary}", f"&& touch {canary}", f"| touch {canary}",
            f"80;touch {canary}", f"eth0$(touch {canary})", f"\rtouch {canary}", f"${{IFS}}touch{canary}",
            f"\\\ntouch {canary}"]


# ------------------------------------------------------------------------------------------------
# Rejected at the door (no kernel needed)


@pytest.mark.parametrize("flag", FLAGS)
@pytest.mark.parametrize("version", ["current", "1.10", "1.4", "1.2"])
def test_flag_values_with_metacharacters_never_reach_the_script(flag: str, version: str) -> None:
    for p in payloads("/tmp/msrb-canary"):
        for argv in ([flag, p], [*DEFAULT, flag, p] if version != "1.2" else [flag, p]):
            try:
                config = parse_flags(argv, version=version)
            except SpecError:
                continue
            try:
                script = render_script(generate(config))
            except UnsupportedError:
                continue
            args, env = to_flags(config)
            assert "touch" not in script and not any("touch" in a for a in args), (argv, script)
            assert not any("touch" in v for v in env.values())


@pytest.mark.parametrize("version", ["current", "1.4", "1.2", "1.0"])
def test_env_values_with_metacharacters_never_reach_the_script(version: str) -> None:
    names = ["INBOUND_PORTS_INCLUDE", "INBOUND_PORTS_EXCLUDE", "OUTBOUND_IP_RANGES_EXCLUDE",
             "OUTBOUND_IP_RANGES_INCLUDE", "KUBEVIRT_INTERFACES", "PROXY_UID", "PROXY_GID", "ENVOY_PORT",
             "INBOUND_CAPTURE_PORT", "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE", "ISTIO_OUTBOUND_OWNER_GROUPS",
             "INBOUND_INTERCEPTION_MODE", "ISTIO_INBOUND_INTERCEPTION_MODE", "ISTIO_SERVICE_CIDR",
             "ISTIO_SERVICE_EXCLUDE_CIDR", "ISTIO_INBOUND_PORTS", "ISTIO_LOCAL_EXCLUDE_PORTS",
             "ISTIO_META_DNS_CAPTURE", "INVALID_DROP", "DISABLE_REDIRECTION_ON_LOCAL_LOOPBACK",
             "ENABLE_INBOUND_IPV6", "INBOUND_TPROXY_MARK", "INBOUND_TPROXY_ROUTE_TABLE",
             "OUTBOUND_PORTS_INCLUDE", "OUTBOUND_PORTS_EXCLUDE", "ISTIO_DUAL_STACK", "REROUTE_VIRTUAL_INTERFACES"]
    for name in names:
        for p in payloads("/tmp/msrb-canary"):
            try:
                config = parse_flags([], {name: p}, version=version)
            except SpecError:
                continue
            # accepted only as a presence flag: the value itself is not kept anywhere
            assert "touch" not in repr(config), (name, p)
            try:
                rules = generate(config)
            except UnsupportedError:  # e.g. the IPv6 rules of the 1.2 script: refused, nothing emitted
                continue
            assert "touch" not in render_script(rules)


ANNOTATIONS = ["traffic.sidecar.istio.io/includeInboundPorts", "traffic.sidecar.istio.io/excludeInboundPorts",
               "traffic.sidecar.istio.io/includeOutboundIPRanges",
               "traffic.sidecar.istio.io/excludeOutboundIPRanges",
               "traffic.sidecar.istio.io/includeOutboundPorts", "traffic.sidecar.istio.io/excludeOutboundPorts",
               "traffic.sidecar.istio.io/kubevirtInterfaces", "traffic.sidecar.istio.io/excludeInterfaces",
               "istio.io/reroute-virtual-interfaces", "status.sidecar.istio.io/port",
               "sidecar.istio.io/interceptionMode"]


@pytest.mark.parametrize("annotation", ANNOTATIONS)
def test_annotation_values_with_metacharacters_are_rejected(annotation: str) -> None:
    import json

    for p in payloads("/tmp/msrb-canary"):
        text = ("apiVersion: v1\nkind: Pod\nmetadata:\n  name: evil\n  annotations:\n"
                f"    {annotation}: {json.dumps(p)}\nspec:\n  containers:\n  - name: app\n    image: x:1\n")
        with pytest.raises(SpecError) as info:
            pods_from_text(text)
        assert info.value.lineno == 6, str(info.value)


def test_proxy_metadata_values_with_metacharacters_are_rejected() -> None:
    for p in payloads("/tmp/msrb-canary"):
        cfg = "proxyMetadata:\n  INVALID_DROP: " + __import__("json").dumps(p) + "\n"
        text = ("apiVersion: v1\nkind: Pod\nmetadata:\n  name: evil\n  annotations:\n"
                f"    proxy.istio.io/config: {__import__('json').dumps(cfg)}\nspec:\n  containers: []\n")
        with pytest.raises(SpecError):
            pods_from_text(text)


# ------------------------------------------------------------------------------------------------
# In the kernel: hostile values that bypass validation are quoted


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"msrb{os.getpid()}x{next(_COUNTER)}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)


def _run(ns: str, *cmd: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", "netns", "exec", ns, *cmd], input=stdin, capture_output=True, text=True,
                          timeout=60)
    if check:
        assert done.returncode == 0, f"{' '.join(cmd)} failed: {done.stderr}"
    return done


def _save(ns: str) -> str:
    """iptables-save and ip6tables-save without the date comment lines (counters zeroed)."""
    out = _run(ns, "iptables-save").stdout + _run(ns, "ip6tables-save").stdout
    return "".join(re.sub(r"\[\d+:\d+\]", "[0:0]", line) + "\n" for line in out.splitlines()
                   if not line.startswith("#"))


def hostile_rules(canary: Path) -> tuple[Rulesets, list[str]]:
    """Rules whose free text (comments, log prefixes, chain names) carries shell injections."""
    texts = payloads(str(canary))
    comments = [t.replace("\n", " ").replace("\r", " ") for t in texts]  # the kernel keeps one line
    rules = [Rule((Protocol("tcp"), CommentMatch(c)), Return()) for c in comments]
    rules.append(Rule((), Log(prefix=f"`touch {canary.name}`"[:28])))
    evil_chain = "E$(touch_x);`y`|z"
    nat = Table("nat", (
        Chain("OUTPUT", (Rule((Protocol("tcp"),), Jump(evil_chain)),), "ACCEPT"),
        Chain(evil_chain, tuple(rules)),
    ))
    filt = Table("filter", (Chain("INPUT", (Rule((CommentMatch(f"$(touch {canary})"),), Accept()),), "ACCEPT"),))
    rs = Rulesets(Ruleset("ipv4", (filt, nat)), Ruleset("ipv6", (Table("nat", (
        Chain("OUTPUT", (Rule((Protocol("tcp"), CommentMatch(comments[1])), Return()),), "ACCEPT"),)),)))
    return rs, comments


@pytest.mark.kernel
def test_script_with_hostile_text_runs_nothing_else_and_keeps_the_text(netns: str, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    rs, comments = hostile_rules(canary)
    header = f"made for a test\n$(touch {canary})\rtouch {canary}\u2028touch {canary}\n`touch {canary}`"
    script = tmp_path / "capture.sh"
    script.write_text(render_script(rs, header=header), encoding="utf-8")
    proc = _run(netns, "sh", str(script), check=False)
    assert not canary.exists(), "an injected command ran"
    assert not list(tmp_path.glob("*canary*")) and not Path("x").exists()
    assert proc.returncode == 0, proc.stderr
    dump = _save(netns)
    back = parse_text("# ipv4\n" + _run(netns, "iptables-save").stdout, source="dump")
    nat = back.ipv4.table("nat")
    assert nat is not None
    kept = [m.text for c in nat.chains for r in c.rules for m in r.matches if isinstance(m, CommentMatch)]
    assert kept == comments, (kept, dump)
    # idempotent: a second run gives the same iptables-save, and still runs nothing
    _run(netns, "sh", str(script))
    assert _save(netns) == dump
    assert not canary.exists()


@pytest.mark.kernel
def test_restore_form_of_hostile_rules_passes_restore_test_and_loads_verbatim(netns: str, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    rs, comments = hostile_rules(canary)
    for prog, ruleset in (("iptables-restore", rs.ipv4), ("ip6tables-restore", rs.ipv6)):
        text = render_restore(ruleset)
        _run(netns, prog, "--test", stdin=text)
        _run(netns, prog, stdin=text)
    assert not canary.exists()
    back = parse_text("# ipv4\n" + _run(netns, "iptables-save").stdout, source="dump")
    nat = back.ipv4.table("nat")
    assert nat is not None
    assert [m.text for c in nat.chains for r in c.rules for m in r.matches if isinstance(m, CommentMatch)] == comments


CONFIGS = {
    "current-default": (DEFAULT, {}, "current"),
    "current-kitchen-sink": (["-b", "8080,9090", "-i", "198.51.100.0/24", "-x", "198.51.100.128/25", "-q", "3306",
                              "-o", "25", "-k", "eth1", "-c", "eth9", "-u", "1337,3", "-g", "1337",
                              "--drop-invalid"], {}, "current"),
    "current-tproxy": ([*DEFAULT[:6], "-m", "TPROXY", *DEFAULT[8:]], {"ENABLE_INBOUND_IPV6": "1"}, "current"),
    "1.2-default": (["-p", "15001", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-b", "80,90", "-d", "15020"], {},
                    "1.2"),
}

FOREIGN = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:MSRB_FOREIGN - [0:0]
-A PREROUTING -s 203.0.113.0/24 -j MSRB_FOREIGN
-A OUTPUT -d 203.0.113.7/32 -p tcp -j MSRB_FOREIGN
-A POSTROUTING -o eth9 -j MASQUERADE
-A MSRB_FOREIGN -p tcp -m tcp --dport 8443 -j REDIRECT --to-ports 9443
-A MSRB_FOREIGN -j RETURN
COMMIT
*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:MSRB_MARKS - [0:0]
-A OUTPUT -j MSRB_MARKS
-A MSRB_MARKS -p udp -j MARK --set-xmark 0x7/0xffffffff
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:MSRB_KEEP - [0:0]
-A INPUT -s 198.51.100.9/32 -j MSRB_KEEP
-A MSRB_KEEP -p tcp -m tcp --dport 22 -j ACCEPT
COMMIT
"""


def _chain_lines(dump: str, chains: tuple[str, ...]) -> list[str]:
    return [line for line in dump.splitlines()
            if any(line.startswith((f"-A {c} ", f":{c} ")) for c in chains)]


@pytest.mark.kernel
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_script_keeps_foreign_chains_and_is_idempotent(name: str, netns: str, tmp_path: Path) -> None:
    argv, env, version = CONFIGS[name]
    rules = generate(parse_flags(argv, env, version=version))
    _run(netns, "iptables-restore", stdin=FOREIGN)
    _run(netns, "ip6tables-restore", stdin=FOREIGN.replace("203.0.113.0/24", "2001:db8::/32")
         .replace("203.0.113.7/32", "2001:db8::7/128").replace("198.51.100.9/32", "2001:db8::9/128")
         .replace("-o eth9 -j MASQUERADE", "-o eth9 -j RETURN"))
    before = _save(netns)
    foreign = ("MSRB_FOREIGN", "MSRB_MARKS", "MSRB_KEEP")
    foreign_before = _chain_lines(before, foreign)
    assert len(foreign_before) == 2 * 7  # 3 declarations + 4 rules, per family
    builtin_before = [line for line in before.splitlines() if line.startswith("-A ")
                      and line.split()[1] in ("PREROUTING", "OUTPUT", "POSTROUTING", "INPUT")]

    script = tmp_path / "capture.sh"
    script.write_text(render_script(rules), encoding="utf-8")
    assert not re.search(r"(^|\s)-(X|F)\s+(MSRB|PREROUTING|OUTPUT|INPUT|POSTROUTING)", script.read_text())
    _run(netns, "sh", str(script))
    once = _save(netns)
    assert _chain_lines(once, foreign) == foreign_before, "a foreign chain was flushed or changed"
    for line in builtin_before:  # the foreign rules in built-in chains are still there, in order
        assert line in once.splitlines(), line
    _run(netns, "sh", str(script))
    assert _save(netns) == once  # idempotent, with foreign state around it
    for prog, rs in (("iptables-restore", rules.ipv4), ("ip6tables-restore", rules.ipv6)):
        if not rs.empty:
            _run(netns, prog, "--test", stdin=render_restore(rs))


# ------------------------------------------------------------------------------------------------
# The synthesizer's emitter


@pytest.fixture(scope="module")
def evil_synthesized() -> object:
    from meshsolve.analysis.spec import parse_spec
    from meshsolve.analysis.synth import Synthesized, synthesize

    root = Path(__file__).resolve().parent.parent
    text = (root / "specs/istio-later-knobs.yaml").read_text(encoding="utf-8")
    evil = '"later\\n$(touch /tmp/msrb-synth-canary)\\n*filter\\n-A INPUT -j DROP\\nCOMMIT\\n"'
    text = re.sub(r"^name: .*$", lambda _m: f"name: {evil}", text, count=1, flags=re.M)
    assert "\n" in parse_spec(text, "evil-spec.yaml").name
    result = synthesize(parse_spec(text, "evil-spec.yaml"))
    assert isinstance(result, Synthesized)
    return result


@pytest.mark.kernel
def test_synth_script_with_hostile_spec_name_runs_nothing_else(evil_synthesized: object, netns: str,
                                                              tmp_path: Path) -> None:
    from meshsolve.analysis.emit import emit

    canary = Path("/tmp/msrb-synth-canary")
    canary.unlink(missing_ok=True)
    script = tmp_path / "synth.sh"
    script.write_text(emit(evil_synthesized, "script"), encoding="utf-8")  # type: ignore[arg-type]
    _run(netns, "sh", str(script))
    assert not canary.exists()
    once = _save(netns)
    assert "-A INPUT -j DROP" not in once
    _run(netns, "sh", str(script))
    assert _save(netns) == once


def test_synth_restore_form_with_hostile_spec_name_has_no_uncommented_header(evil_synthesized: object) -> None:
    from meshsolve.analysis.emit import emit

    text = emit(evil_synthesized, "restore")  # type: ignore[arg-type]
    assert "\n-A INPUT -j DROP\n" not in text and "\n$(touch" not in text
