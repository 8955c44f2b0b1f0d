"""The collector's pause (``model.collector``): the command keeps what it parsed and encoded from
the collector's later passes; a library caller's collector is left as it was."""

from __future__ import annotations

import subprocess
import sys


def test_the_command_freezes_what_its_pauses_keep() -> None:
    """``meshsolve`` (``cli.entry``) keeps what its parsing and encodings made from the collector's
    later passes; a library caller's collector is left as it was."""
    code = ("import gc, sys; from meshsolve.model.collector import gc_paused, freeze_after_pauses\n"
            "with gc_paused(): x = [[i] for i in range(1000)]\n"
            "before = gc.get_freeze_count()\n"
            "freeze_after_pauses()\n"
            "with gc_paused(): y = [[i] for i in range(1000)]\n"
            "print(before, gc.get_freeze_count() >= 1000, gc.isenabled())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["0", "True", "True"]
