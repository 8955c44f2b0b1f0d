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
