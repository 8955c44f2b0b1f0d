"""The recommended capture script (``render_script``: ``synth -o script``, ``generate -o script``) in
network namespaces: all or nothing (a rule the kernel refuses in the second family, a killed
iptables-restore: exit 1 and the state before, counters included), the backend the namespace
already uses, IPv6, TPROXY's policy routing, ``--check`` and drift, idempotence next to foreign
rules. Namespaces are ``mscs<pid>x<n>``, always deleted; wrappers for the failure injection live in
the test's temporary directory and end only the process they started, by pid.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest
from script_text import intended_rules
from test_istio_script_safety import FOREIGN, hostile_rules

from meshsolve.errors import UnsupportedError
from meshsolve.iptables import parse_text
from meshsolve.istio import generate, parse_flags, render_script
from meshsolve.istio.routing import policy_routing
from meshsolve.model.routing import Routing
from meshsolve.model.rules import (
    BaseChain,
    Chain,
    CommentMatch,
    NftTable,
    OwnerMatch,
    Return,
    Rule,
    Ruleset,
    Rulesets,
    Table,
)

_COUNTER = itertools.count()
DEFAULT = ["-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-b", "*"]
TPROXY6 = (["-p", "15001", "-z", "15006", "-u", "1337", "-m", "TPROXY", "-i", "*", "-b", "*"],
           {"ENABLE_INBOUND_IPV6": "1"})
BACKENDS = ("nft", "legacy")
kernel = pytest.mark.kernel


def _tproxy6() -> tuple[Rulesets, Routing]:
    config = parse_flags(*TPROXY6)
    return generate(config), policy_routing(config)


# ------------------------------------------------------------------------------------------------
# The text (no kernel)


def test_script_is_valid_sh_and_carries_the_rules_and_routing() -> None:
    rules, routing = _tproxy6()
    script = render_script(rules, routing=routing)
    assert subprocess.run(["sh", "-n"], input=script, text=True, capture_output=True).returncode == 0
    assert intended_rules(script) == rules
    for words in ("-4 rule add fwmark 0x539/0xffffffff lookup 133 priority 32765",
                  "-6 rule add fwmark 0x539/0xffffffff lookup 133 priority 32765",
                  "-4 route add local 0.0.0.0/0 dev lo table 133", "-6 route add local ::/0 dev lo table 133"):
        assert f"ip {words}" in script, words
    plain = render_script(generate(parse_flags(DEFAULT)))
    assert "ip -4 rule" not in plain and "ROUTING=0" in plain


def test_a_line_break_in_a_rule_is_refused() -> None:
    """Restore input is one rule per line: a comment with a line break would be two lines."""
    for text in ("one\ntwo", "one\rtwo"):
        rs = Rulesets(Ruleset("ipv4", (Table("filter", (
            Chain("INPUT", (Rule((CommentMatch(text),), Return()),), "ACCEPT"),)),)))
        with pytest.raises(UnsupportedError, match="line break"):
            render_script(rs)


def test_native_nftables_tables_are_refused_not_dropped() -> None:
    rs = generate(parse_flags(DEFAULT))
    table = NftTable("inet", "t", Table("inet t", (Chain("pre", (), "ACCEPT"),), nft=True),
                     (BaseChain("pre", "PREROUTING", -300, "filter"),))
    with pytest.raises(UnsupportedError, match="native nftables tables \\(inet t\\)"):
        render_script(Rulesets(attrs.evolve(rs.ipv4, nft=(table,)), rs.ipv6))


# ------------------------------------------------------------------------------------------------
# In the kernel


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"mscs{os.getpid()}x{next(_COUNTER)}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)


def _run(ns: str, *cmd: str, stdin: str | None = None, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    prefix = ["env", *(f"{k}={v}" for k, v in (env or {}).items())]
    return subprocess.run(["ip", "netns", "exec", ns, *prefix, *cmd], input=stdin, capture_output=True,
                          text=True, timeout=120)


def _ok(ns: str, *cmd: str, stdin: str | None = None) -> str:
    done = _run(ns, *cmd, stdin=stdin)
    assert done.returncode == 0, f"{' '.join(cmd)}: {done.stderr}"
    return done.stdout


def _state(ns: str, backend: str = "nft", counters: bool = True) -> str:
    """Both families' -save output of ``backend`` (date lines dropped) and the policy routing."""
    c = ["-c"] if counters else []
    out = []
    for prog in ("iptables", "ip6tables"):
        out.append(_ok(ns, f"{prog}-{backend}-save", *c))
    for flag in ("-4", "-6"):
        out.append(_ok(ns, "ip", flag, "rule", "show"))
        out.append(_run(ns, "ip", flag, "route", "show", "table", "all").stdout)
    return "".join(line + "\n" for text in out for line in text.splitlines() if not line.startswith("#"))


def _script(tmp_path: Path, rules: Rulesets, routing: Routing | None = None, name: str = "capture.sh") -> Path:
    path = tmp_path / name
    path.write_text(render_script(rules, header="made by a test", routing=routing), encoding="utf-8")
    return path


def _foreign(ns: str, backend: str) -> None:
    """Foreign chains and rules in nat, mangle and filter of both families."""
    _ok(ns, f"iptables-{backend}-restore", stdin=FOREIGN)
    _ok(ns, f"ip6tables-{backend}-restore", stdin=FOREIGN.replace("203.0.113.0/24", "2001:db8::/32")
        .replace("203.0.113.7/32", "2001:db8::7/128").replace("198.51.100.9/32", "2001:db8::9/128")
        .replace("-o eth9 -j MASQUERADE", "-o eth9 -j RETURN"))


def _loaded(ns: str, backend: str, rules: Rulesets) -> bool:
    """Every rule of ``rules`` is in ``backend``'s tables (foreign ones around them aside)."""
    got = parse_text("# ipv4\n" + _ok(ns, f"iptables-{backend}-save") + "# ipv6\n"
                     + _ok(ns, f"ip6tables-{backend}-save"), source="save")
    for rs in (rules.ipv4, rules.ipv6):
        for t in rs.tables:
            for c in t.chains:
                live = got.for_family(rs.family).chain(t.name, c.name)
                if c.rules and (live is None or not all(r in live.rules for r in c.rules)):
                    return False
    return True


@kernel
@pytest.mark.parametrize("backend", BACKENDS)
def test_apply_is_idempotent_next_to_foreign_rules_and_check_finds_no_drift(backend: str, netns: str,
                                                                           tmp_path: Path) -> None:
    rules, routing = _tproxy6()
    _foreign(netns, backend)
    before = _state(netns, backend, counters=False)
    script = _script(tmp_path, rules, routing)
    done = _run(netns, "sh", str(script), "--backend", backend)
    assert done.returncode == 0, done.stderr
    assert f"applied ({backend})" in done.stderr
    once = _state(netns, backend, counters=False)
    assert _loaded(netns, backend, rules)
    for line in before.splitlines():  # every foreign line is still there (ours are added around them)
        assert line in once.splitlines(), line
    done = _run(netns, "sh", str(script), "--backend", backend)
    assert done.returncode == 0, done.stderr
    assert _state(netns, backend, counters=False) == once  # twice = once: no duplicate jump, rule or route
    check = _run(netns, "sh", str(script), "--check", "--backend", backend)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "no drift" in check.stderr and check.stdout == ""


@kernel
def test_ipv6_rules_and_both_families_routing_are_installed(netns: str, tmp_path: Path) -> None:
    rules, routing = _tproxy6()
    assert not rules.ipv6.empty and {r.family for r in routing.rules} == {"ipv4", "ipv6"}
    done = _run(netns, "sh", str(_script(tmp_path, rules, routing)))
    assert done.returncode == 0, done.stderr
    six = parse_text("# ipv6\n" + _ok(netns, "ip6tables-save"), source="ip6tables-save").ipv6
    assert six.chain("mangle", "ISTIO_TPROXY") == rules.ipv6.chain("mangle", "ISTIO_TPROXY")
    for flag in ("-4", "-6"):
        shown = _ok(netns, "ip", flag, "rule", "show")
        assert len(re.findall(r"^32765:\s+from all fwmark 0x539 lookup 133\s*$", shown, re.M)) == 1, shown
        assert "local default dev lo" in _ok(netns, "ip", flag, "route", "show", "table", "133")


@kernel
def test_check_reports_drift_with_a_diff(netns: str, tmp_path: Path) -> None:
    rules, routing = _tproxy6()
    script = _script(tmp_path, rules, routing)
    before = _run(netns, "sh", str(script), "--check")
    assert before.returncode == 1 and "- ipv4 nat -A OUTPUT -j ISTIO_OUTPUT" in before.stdout
    assert _ok(netns, "nft", "list", "ruleset") == ""  # checking created nothing
    assert _run(netns, "sh", str(script)).returncode == 0
    _ok(netns, "iptables", "-t", "nat", "-D", "ISTIO_OUTPUT", "-m", "owner", "--uid-owner", "1337", "-j", "RETURN")
    _ok(netns, "ip6tables", "-t", "mangle", "-A", "PREROUTING", "-p", "tcp", "-j", "ISTIO_INBOUND")
    _ok(netns, "ip", "-6", "rule", "del", "fwmark", "0x539", "lookup", "133")
    state = _state(netns)
    drift = _run(netns, "sh", str(script), "--check")
    assert drift.returncode == 1
    assert drift.stdout.splitlines() == [
        "- ipv4 nat -A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN",
        "+ ipv6 mangle -A PREROUTING -p tcp -j ISTIO_INBOUND",
        "- ipv6 ip rule fwmark 0x539/0xffffffff lookup 133 priority 32765"], drift.stdout
    assert _state(netns) == state  # --check changes nothing
    assert _run(netns, "sh", str(script)).returncode == 0  # a run repairs what is missing ...
    repaired = _run(netns, "sh", str(script), "--check")
    assert repaired.returncode == 1  # ... but never deletes: the duplicate jump is still reported
    assert repaired.stdout.splitlines() == ["+ ipv6 mangle -A PREROUTING -p tcp -j ISTIO_INBOUND"]


def _refused_in_ipv6() -> Rulesets:
    """IPv4 rules in two tables that load, and an IPv6 rule the kernel refuses only when it is
    committed (``-m owner`` in nat PREROUTING: iptables-restore --test accepts it, fact 12)."""
    v4 = parse_text("*mangle\n:MS_MARKS - [0:0]\n-A OUTPUT -j MS_MARKS\n-A MS_MARKS -p tcp -j RETURN\nCOMMIT\n"
                    "*nat\n:MS_OUT - [0:0]\n-A OUTPUT -p tcp -j MS_OUT\n"
                    "-A MS_OUT -p tcp -j REDIRECT --to-ports 15001\nCOMMIT\n").ipv4
    prerouting = Chain("PREROUTING", (Rule((OwnerMatch(uid="1337"),), Return()),), "ACCEPT")
    bad = Ruleset("ipv6", (Table("nat", (Chain("MS_IN", (Rule((), Return()),)), prerouting)),))
    return Rulesets(v4, bad)


@kernel
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("foreign", [True, False], ids=["foreign-state", "empty"])
def test_a_rule_refused_in_the_second_family_leaves_nothing_applied(backend: str, foreign: bool, netns: str,
                                                                   tmp_path: Path) -> None:
    rules = _refused_in_ipv6()
    routing = Routing.tproxy(0x539, table=133)
    if foreign:
        _foreign(netns, backend)
    elif backend == "legacy":  # legacy tables exist once touched (the script's -C and --test load them)
        for prog in ("iptables", "ip6tables"):
            for table in ("nat", "mangle"):
                _run(netns, f"{prog}-{backend}", "-t", table, "-S")
    before = _state(netns, backend)
    done = _run(netns, "sh", str(_script(tmp_path, rules, routing)), "--backend", backend)
    assert done.returncode == 1, done.stderr
    assert "rolled back: nothing applied" in done.stderr
    assert "failed" in done.stderr
    assert _state(netns, backend) == before  # counters included
    if backend == "nft" and not foreign:
        assert _ok(netns, "nft", "list", "ruleset") == ""  # not even an empty table is left


_KILLER = """#!/bin/sh
# iptables-nft-restore stand-in: a real one fed up to the first COMMIT, then killed (SIGKILL) while it
# waits for the rest; --test and the rollback (-c) go to the real one
real={real}
for a in "$@"; do
	case $a in --test|-c) exec "$real" "$@" ;; esac
done
fifo={tmp}/fifo.$$
mkfifo "$fifo"
"$real" "$@" < "$fifo" &
pid=$!
exec 3> "$fifo"
sed '/^COMMIT$/q' >&3
sleep 1
{save} > {tmp}/committed-before-kill
kill -9 "$pid"
wait "$pid"
status=$?
exec 3>&-
rm -f "$fifo"
exit "$status"
"""


@kernel
def test_a_killed_iptables_restore_is_rolled_back(netns: str, tmp_path: Path) -> None:
    """iptables-restore killed after it committed the first of two IPv4 tables: the script rolls that
    table back (and the policy routing it added), exit 1, the namespace as before."""
    rules, routing = _tproxy6()
    assert [t.name for t in rules.ipv4.tables if t.chains] and rules.ipv4.table("mangle") is not None
    bindir = tmp_path / "bin"
    bindir.mkdir()
    real = shutil.which("iptables-nft-restore")
    assert real is not None
    wrapper = bindir / "iptables-nft-restore"
    wrapper.write_text(_KILLER.format(real=real, tmp=tmp_path, save=shutil.which("iptables-nft-save")))
    wrapper.chmod(0o755)
    _foreign(netns, "nft")
    before = _state(netns)
    done = _run(netns, "sh", str(_script(tmp_path, rules, routing)), "--backend", "nft",
                env={"PATH": f"{bindir}:{os.environ['PATH']}"})
    assert done.returncode == 1, done.stderr
    committed = (tmp_path / "committed-before-kill").read_text()
    assert ":ISTIO_TPROXY" in committed and ":ISTIO_OUTPUT" not in committed  # half applied when killed
    assert "iptables-nft-restore failed" in done.stderr and "rolled back: nothing applied" in done.stderr
    assert _state(netns) == before


@kernel
def test_fact12c_noflush_commits_table_by_table_and_test_misses_kernel_refusals(netns: str) -> None:
    """docs/kernel-facts.md fact 12: with --noflush too, a table before the failing one is committed
    (nf_tables: exit 4; legacy: exit 1, ``line N failed``); ``--test`` refuses what iptables itself
    checks (exit 2) but accepts a rule only the kernel refuses, on both backends."""
    refused = "*mangle\n-A PREROUTING -p tcp -j REJECT\nCOMMIT\n"
    # nf_tables: -save -t of a missing table prints an empty one and creates nothing
    assert "*nat\n:PREROUTING ACCEPT [0:0]" in _ok(netns, "iptables-nft-save", "-t", "nat")
    assert _ok(netns, "nft", "list", "ruleset") == ""
    for backend in ("nft", "legacy"):  # with --noflush, declaring an existing user chain flushes it
        restore = f"iptables-{backend}-restore"
        _ok(netns, restore, "--noflush", stdin="*nat\n:MS_C - [0:0]\n-A MS_C -p tcp -j RETURN\nCOMMIT\n")
        _ok(netns, restore, "--noflush", stdin="*nat\n:MS_C - [0:0]\n-A MS_C -p udp -j RETURN\nCOMMIT\n")
        assert [x for x in _ok(netns, f"iptables-{backend}-save").splitlines() if x.startswith("-A MS_C")] == \
            ["-A MS_C -p udp -j RETURN"]
    _ok(netns, "iptables-nft-restore", stdin="*nat\nCOMMIT\n")  # without --noflush: the table is deleted
    assert _ok(netns, "nft", "list", "ruleset") == ""
    for backend, status in (("nft", 4), ("legacy", 1)):
        done = _run(netns, f"iptables-{backend}-restore", "--noflush", stdin="*nat\n-A OUTPUT -j RETURN\nCOMMIT\n" + refused)
        assert done.returncode == status, done.stderr
        assert backend == "nft" or "line 6 failed" in done.stderr
        assert "-A OUTPUT -j RETURN" in _ok(netns, f"iptables-{backend}-save")
        for prog in ("iptables", "ip6tables"):
            tool = f"{prog}-{backend}-restore"
            assert _run(netns, tool, "--noflush", "--test", stdin=refused).returncode == 0
            assert _run(netns, tool, "--noflush", "--test",
                        stdin="*nat\n-A PREROUTING -m owner --uid-owner 1337 -j RETURN\nCOMMIT\n").returncode == 0
            assert _run(netns, tool, "--noflush", "--test", stdin="*nat\n-A PREROUTING -p tcp -j DROP\nCOMMIT\n"
                        ).returncode == 2


def _backend_used(ns: str) -> str:
    legacy = "ISTIO_OUTPUT" in _ok(ns, "iptables-legacy-save")
    nft = "ISTIO_OUTPUT" in _ok(ns, "iptables-nft-save")
    assert legacy != nft
    return "legacy" if legacy else "nft"


HINT = "*mangle\n:KUBE-IPTABLES-HINT - [0:0]\nCOMMIT\n"
RULES3 = "*filter\n-A INPUT -p tcp --dport 9001 -j ACCEPT\n-A INPUT -p tcp --dport 9002 -j ACCEPT\n" \
         "-A INPUT -p tcp --dport 9003 -j ACCEPT\nCOMMIT\n"
RULE1 = "*filter\n-A INPUT -p tcp --dport 9004 -j ACCEPT\nCOMMIT\n"


@kernel
@pytest.mark.parametrize(("setup", "expected", "why"), [
    ({}, "nft", "0 legacy rules, 0 nf_tables rules"),
    ({"iptables-legacy-restore": HINT}, "legacy", "marker chain is in legacy"),
    ({"ip6tables-legacy-restore": HINT}, "legacy", "marker chain is in legacy"),
    ({"ip6tables-nft-restore": HINT, "iptables-legacy-restore": HINT + RULES3}, "nft", "marker chain is in nf_tables"),
    ({"iptables-legacy-restore": RULES3, "iptables-nft-restore": RULE1}, "legacy", "3 legacy rules, 1 nf_tables"),
    ({"iptables-legacy-restore": RULE1, "ip6tables-nft-restore": RULES3}, "nft", "1 legacy rules, 3 nf_tables"),
    ({"iptables-legacy-restore": RULE1, "iptables-nft-restore": RULE1}, "nft", "1 legacy rules, 1 nf_tables"),
], ids=["empty", "hint-legacy", "hint-legacy-v6", "hint-nft-wins", "more-legacy", "more-nft", "tie"])
def test_backend_is_the_one_the_namespace_uses(setup: dict[str, str], expected: str, why: str, netns: str,
                                               tmp_path: Path) -> None:
    for prog, text in setup.items():
        _ok(netns, prog, stdin=text)
    script = _script(tmp_path, generate(parse_flags(DEFAULT)))
    done = _run(netns, "sh", str(script))
    assert done.returncode == 0, done.stderr
    assert f"backend: {expected} (" in done.stderr and why in done.stderr, done.stderr
    assert _backend_used(netns) == expected
    assert _run(netns, "sh", str(script), "--check").returncode == 0


@kernel
def test_backend_override_and_bad_arguments(netns: str, tmp_path: Path) -> None:
    script = _script(tmp_path, generate(parse_flags(DEFAULT)))
    done = _run(netns, "sh", str(script), env={"MESHSOLVE_IPTABLES_BACKEND": "legacy"})
    assert done.returncode == 0 and _backend_used(netns) == "legacy", done.stderr
    for argv in (["--backend", "ebtables"], ["--frobnicate"], ["--backend"]):
        bad = _run(netns, "sh", str(script), *argv)
        assert bad.returncode == 2, (argv, bad.stderr)
    assert "usage: sh SCRIPT" in _ok(netns, "sh", str(script), "--help")


@kernel
def test_hostile_text_passes_check_and_runs_nothing(netns: str, tmp_path: Path) -> None:
    """The robust-script rules (comments, log prefixes, chain names with shell syntax): applied,
    read back equal by --check, and no injected command ran."""
    canary = tmp_path / "canary"
    rs, _ = hostile_rules(canary)
    script = _script(tmp_path, rs)
    assert _run(netns, "sh", str(script)).returncode == 0
    check = _run(netns, "sh", str(script), "--check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert not canary.exists()


# --- the synthesizer's script ---------------------------------------------------------------------

SYNTHESIZED = ["istio-later-knobs.yaml", "istio-later-knobs-ipv6.yaml", "tproxy.yaml"]


@kernel
@pytest.mark.parametrize("name", SYNTHESIZED)
def test_synthesized_script_installs_its_routing_and_checks_clean(name: str, netns: str, tmp_path: Path,
                                                                  synthesized_spec: Callable[[str], object]) -> None:
    from meshsolve.analysis.emit import emit
    from meshsolve.analysis.synth import Synthesized

    res = synthesized_spec(name)
    assert isinstance(res, Synthesized), str(res)
    script = tmp_path / "synth.sh"
    script.write_text(emit(res, "script"), encoding="utf-8")
    assert _run(netns, "sh", str(script)).returncode == 0
    assert _run(netns, "sh", str(script), "--check").returncode == 0
    for rule in res.world.routing.rules:
        flag = "-4" if rule.family == "ipv4" else "-6"
        shown = _ok(netns, "ip", flag, "rule", "show")
        assert f"lookup {rule.table}" in shown, shown
    assert (name == "tproxy.yaml") == (not res.world.routing.empty)


def _bin_with(tmp_path: Path, names: dict[str, str]) -> Path:
    """A directory for PATH with the text tools the script needs and ``names`` (link -> real binary)."""
    bindir = tmp_path / "onlybin"
    bindir.mkdir()
    for tool in ("awk", "grep", "cat"):
        real = shutil.which(tool)
        assert real is not None
        (bindir / tool).symlink_to(real)
    for name, target in names.items():
        real = shutil.which(target)
        assert real is not None, target
        (bindir / name).symlink_to(real)
    return bindir


@kernel
@pytest.mark.parametrize(("installed", "expected", "why"), [
    ("legacy", "legacy", "iptables-nft is not installed"),
    ("nft", "nft", "iptables-legacy is not installed"),
    ("plain", "plain", "neither iptables-nft nor iptables-legacy is installed"),
])
def test_backend_is_the_only_one_installed(installed: str, expected: str, why: str, netns: str,
                                           tmp_path: Path) -> None:
    """Only one backend's binaries on PATH (``plain``: only ``iptables``, ``iptables-save`` … which
    here are the legacy ones)."""
    names: dict[str, str] = {}
    for prog in ("iptables", "ip6tables"):
        for tail in ("", "-save", "-restore"):
            if installed == "plain":
                names[f"{prog}{tail}"] = f"{prog}-legacy{tail}"
            else:
                names[f"{prog}-{installed}{tail}"] = f"{prog}-{installed}{tail}"
    bindir = _bin_with(tmp_path, names)
    script = _script(tmp_path, generate(parse_flags(DEFAULT)))
    done = _run(netns, "/bin/sh", str(script), env={"PATH": str(bindir)})
    assert done.returncode == 0, done.stderr
    assert f"backend: {expected} ({why})" in done.stderr, done.stderr
    assert _backend_used(netns) == ("nft" if installed == "nft" else "legacy")
    assert _run(netns, "/bin/sh", str(script), "--check", env={"PATH": str(bindir)}).returncode == 0
    (tmp_path / "none").mkdir()
    no_iptables = _bin_with(tmp_path / "none", {})
    missing = _run(netns, "/bin/sh", str(script), env={"PATH": str(no_iptables)})
    assert missing.returncode == 2 and "not found: nothing applied" in missing.stderr, missing.stderr
