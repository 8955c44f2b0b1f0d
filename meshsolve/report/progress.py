"""Progress for long work, on standard error and only when it is a terminal (``--quiet`` silences it)."""

from __future__ import annotations

import sys
import time
from typing import IO

__all__ = ["Progress"]


class Progress:
    """``Progress(total, "proving")``: ``step()`` redraws ``proving 12/50 (3.1 s)`` in place; ``done()``
    ends the line. Does nothing when disabled (not a terminal, or ``enabled=False``)."""

    def __init__(self, total: int, label: str, *, stream: IO[str] | None = None,
                 enabled: bool | None = None) -> None:
        self.total = total
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = bool(isatty and isatty()) if enabled is None else enabled
        self.count = 0
        self.start = time.monotonic()
        self._last = 0.0

    def step(self, n: int = 1) -> None:
        self.count += n
        now = time.monotonic()
        if self.enabled and (now - self._last > 0.1 or self.count >= self.total):
            self._last = now
            self.stream.write(f"\r{self.label} {self.count}/{self.total} ({now - self.start:.1f} s)")
            self.stream.flush()

    def done(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
