"""Kernel helpers for the nftables tests: load ``nft -f`` text into a throw-away network namespace
(``unshare -n``: it disappears with the process, also on failure) and read it back with ``nft list
ruleset`` and ``nft -j list ruleset``."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import attrs

_SPLIT = "@@meshsolve-nft-json@@"


@attrs.frozen
class Loaded:
    """What the kernel did with a text: refused (``error``: nft's first message line) or listed."""

    listing: str = ""
    json: str = ""
    error: str | None = None


def nft_unavailable_reason() -> str | None:
    """Why these kernel tests cannot run, or None."""
    import os

    if os.geteuid() != 0:
        return "not running as root"
    if not shutil.which("nft") or not shutil.which("unshare"):
        return "nft (Debian's nftables) or unshare is not installed"
    probe = subprocess.run(["unshare", "-n", "nft", "list", "ruleset"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot use nft in a network namespace: {probe.stderr.strip()}"
    return None


def kernel_load(text: str) -> Loaded:
    """``nft -f`` the text in a fresh namespace and list it back in both forms."""
    with tempfile.TemporaryDirectory(prefix="msnft") as d:
        path = Path(d) / "rules.nft"
        path.write_text(text, encoding="utf-8")
        proc = subprocess.run(["unshare", "-n", "sh", "-c",
                               f'nft -f "$1" && nft list ruleset && echo {_SPLIT} && nft -j list ruleset', "sh",
                               str(path)], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        err = proc.stderr.splitlines() or ["?"]
        k = next((i for i, ln in enumerate(err) if "Error:" in ln), 0)
        where = err[k + 1].strip() if k + 1 < len(err) else ""
        return Loaded(error=err[k].split("Error:", 1)[-1].strip() + (f" [{where}]" if where else ""))
    listing, _, js = proc.stdout.partition(_SPLIT + "\n")
    return Loaded(listing, js)


#: Rules (family, as written, as ``nft list ruleset`` prints them back) that show where nft 1.0.6
#: joins a source and a destination port compare (at the source port's place, across a statement
#: only while fewer than two header compares were collected) and which protocol checks it lists;
#: ``kernel_form`` must say the same (``tests/test_nft_parse.py``, on the kernel
#: ``tests/test_nft_kernel.py``).
MERGE_CASES: tuple[tuple[str, str, str], ...] = (
    ("ip", "log tcp sport 0 tcp dport 0 counter", "log tcp sport 0 tcp dport 0 counter"),
    ("ip", "log tcp sport 0 counter tcp dport 0", "log tcp sport 0 tcp dport 0 counter"),
    ("ip", "tcp sport 1 counter log tcp dport 2", "tcp sport 1 tcp dport 2 counter log"),
    ("ip", "tcp dport 5 counter tcp sport 6", "meta l4proto tcp counter tcp sport 6 tcp dport 5"),
    ("ip", "tcp sport != 1 log tcp dport != 0", "tcp sport != 1 tcp dport != 0 log"),
    ("ip", "tcp sport 1 ip saddr 192.0.2.1 counter tcp dport 2",
     "tcp sport 1 ip saddr 192.0.2.1 counter tcp dport 2"),
    ("ip", "tcp sport 1 ip saddr 192.0.2.0/24 counter tcp dport 2",
     "tcp sport 1 tcp dport 2 ip saddr 192.0.2.0/24 counter"),
    ("ip", "tcp sport 1 ip protocol tcp counter tcp dport 2", "tcp sport 1 ip protocol tcp counter tcp dport 2"),
    ("ip", "tcp sport 1 meta mark 1 counter tcp dport 2", "tcp sport 1 tcp dport 2 meta mark 1 counter"),
    ("ip", "tcp sport 6 counter tcp sport 7 tcp dport 5", "tcp sport 6 counter tcp sport 7 tcp dport 5"),
    ("ip", "tcp sport 1 tcp dport != 2 counter tcp dport 4", "tcp sport 1 tcp dport != 2 counter tcp dport 4"),
    ("ip", "udp sport 6 counter meta l4proto udp th dport 5", "udp sport 6 udp dport 5 counter meta l4proto udp"),
    ("inet", "tcp sport 0 meta l4proto tcp tcp dport 0", "tcp sport 0 tcp dport 0 meta l4proto tcp"),
    ("inet", "meta l4proto tcp ip protocol tcp tcp dport 2", "meta l4proto tcp ip protocol tcp tcp dport 2"),
    # not a port pair: an ICMP reject in an inet table carries its family's check
    ("inet", "meta nfproto ipv4 tcp dport 0 meta l4proto tcp reject",
     "tcp dport 0 meta l4proto tcp reject with icmp port-unreachable"),
    ("inet", "meta nfproto ipv4 counter reject", "meta nfproto ipv4 counter reject with icmp port-unreachable"),
    # a tcp reset's protocol check goes to the front of the rule; ip/ip6 consume it, inet lists it
    ("inet", "ip saddr 192.0.2.1 reject with tcp reset", "meta l4proto tcp ip saddr 192.0.2.1 reject with tcp reset"),
    ("ip", "ip saddr 192.0.2.1 reject with tcp reset", "ip saddr 192.0.2.1 reject with tcp reset"),
    ("ip", "ip saddr 192.0.2.1 counter reject with tcp reset",
     "meta l4proto tcp ip saddr 192.0.2.1 counter reject with tcp reset"),
    ("inet", "ip daddr 192.0.2.3 meta l4proto tcp reject with tcp reset",
     "ip daddr 192.0.2.3 meta l4proto tcp reject with tcp reset"),
    # ... and in inet it consumes a family check of either family (the listing loses it)
    ("inet", "meta nfproto ipv6 meta l4proto tcp reject with tcp reset", "meta l4proto tcp reject with tcp reset"),
    ("inet", "meta nfproto ipv4 counter meta l4proto tcp reject with tcp reset",
     "meta nfproto ipv4 counter meta l4proto tcp reject with tcp reset"),
    # a mark under a mask of leading ones is listed as a prefix (an interval)
    ("ip", "meta mark & 0xfffffffc == 0", "meta mark 0x00000000/30"),
    ("ip", "ct mark & 0xfffffffe != 0x85a counter", "ct mark != 0x0000085a/31 counter"),
    ("ip", "meta mark & 0xff00 == 0x100", "meta mark & 0x0000ff00 == 0x00000100"),
)


def merge_case_text(family: str, body: str) -> str:
    """One table with one chain holding the rule ``body``."""
    return f"table {family} a0 {{\n chain c0 {{\n  {body}\n }}\n}}\n"
