"""The generated rules against the real kernel: load them into a throwaway network namespace
(restore input, and the shell script run twice), dump them with iptables-save and compare as models.
Namespaces are named msis<pid>-<n> and always deleted."""

from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshsolve.iptables import parse_text, render_restore
from meshsolve.istio import CaptureConfig, generate, parse_flags
from meshsolve.istio.script import render_script
from meshsolve.model import Ruleset, Rulesets, Table

pytestmark = pytest.mark.kernel

_COUNTER = itertools.count()
DEFAULT = ["-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-x", "", "-b", "*",
           "-d", "15090,15021,15020"]
CONFIGS: dict[str, CaptureConfig] = {
    "current-default": parse_flags(DEFAULT),
    "current-kitchen-sink": parse_flags(
        ["-b", "8080,9090", "-i", "198.51.100.0/24,2001:db8::/32", "-x", "198.51.100.128/25", "-q", "3306",
         "-o", "25", "-k", "eth1", "-c", "eth9", "-u", "1337,3", "-g", "1337", "--redirect-dns",
         "--drop-invalid"],
        {"ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE": "888"}).evolve(
        enable_ipv6=True, dns_servers_v4=("192.0.2.53",), dns_servers_v6=("2001:db8::53",)),
    "current-tproxy": parse_flags([*DEFAULT[:6], "-m", "TPROXY", *DEFAULT[8:]], {"ENABLE_INBOUND_IPV6": "1"}),
    "1.10-default": parse_flags(DEFAULT, version="1.10"),
    "1.10-tproxy": parse_flags([*DEFAULT[:6], "-m", "TPROXY", *DEFAULT[8:]], version="1.10"),
    "1.2-default": parse_flags(["-p", "15001", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-b", "80,90",
                                "-d", "15020"], version="1.2"),
    "1.3-mode-redirect": parse_flags(["-p", "12345", "-u", "4321", "-g", "4444", "-b", "5555,6666", "-i",
                                      "198.51.100.0/24", "-x", "203.0.113.0/24", "-k", "eth1,eth2"],
                                     version="1.3"),
}


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"msis{os.getpid()}-{next(_COUNTER)}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)


def _run(ns: str, *cmd: str, stdin: str | None = None) -> str:
    done = subprocess.run(["ip", "netns", "exec", ns, *cmd], input=stdin, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, f"{' '.join(cmd)} failed: {done.stderr}"
    return done.stdout


def _dump(ns: str) -> Rulesets:
    text = "# ipv4\n" + _run(ns, "iptables-save") + "# ipv6\n" + _run(ns, "ip6tables-save")
    return _strip(parse_text(text, source=f"{ns} dump"))


def _strip(rs: Rulesets) -> Rulesets:
    """Drop tables the kernel lists with nothing in them (untouched built-ins only)."""
    def keep(t: Table) -> bool:
        return any(c.rules or not c.builtin for c in t.chains)

    return Rulesets(Ruleset("ipv4", tuple(t for t in rs.ipv4.tables if keep(t))),
                    Ruleset("ipv6", tuple(t for t in rs.ipv6.tables if keep(t))))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_restore_round_trip(name: str, netns: str) -> None:
    rules = generate(CONFIGS[name])
    for prog, rs in (("iptables-restore", rules.ipv4), ("ip6tables-restore", rules.ipv6)):
        if not rs.empty:
            _run(netns, prog, "--noflush", stdin=render_restore(rs))
    assert _dump(netns) == _strip(rules)


@pytest.mark.parametrize("name", ["current-default", "current-kitchen-sink", "current-tproxy", "1.2-default",
                                  "1.3-mode-redirect"])
def test_script_is_idempotent(name: str, netns: str, tmp_path: Path) -> None:
    rules = generate(CONFIGS[name])
    script = tmp_path / "capture.sh"
    script.write_text(render_script(rules), encoding="utf-8")
    _run(netns, "sh", str(script))
    once = _dump(netns)
    _run(netns, "sh", str(script))
    assert _dump(netns) == once == _strip(rules)


@pytest.mark.slow
def test_random_configs_load_into_the_kernel() -> None:
    """Campaign: random configurations of every era load with iptables-restore and dump back equal."""
    from hypothesis import HealthCheck, given, settings
    from test_istio_properties import configs

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(configs(group_names=False))
    def check(c: CaptureConfig) -> None:
        name = f"msis{os.getpid()}-{next(_COUNTER)}"
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
        try:
            rules = generate(c)
            for prog, rs in (("iptables-restore", rules.ipv4), ("ip6tables-restore", rules.ipv6)):
                if not rs.empty:
                    _run(name, prog, "--noflush", stdin=render_restore(rs))
            assert _dump(name) == _strip(rules), c
        finally:
            subprocess.run(["ip", "netns", "delete", name], capture_output=True)

    check()
