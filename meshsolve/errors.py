"""The one error root of meshsolve.

Verdicts (Proved / Refuted / Unknown) are values; exceptions are for misuse and bad input only.
Every leaf also subclasses the builtin it refines, so callers may catch ``ValueError`` as usual.
"""

from __future__ import annotations

__all__ = [
    "InternalError",
    "MeshsolveError",
    "OracleError",
    "ParseError",
    "SpecError",
    "UnsupportedError",
    "WorldError",
]


class MeshsolveError(Exception):
    """Root of every error meshsolve raises on purpose."""


class ParseError(MeshsolveError, ValueError):
    """Input text that is not what it claims to be.

    Carries where it happened: ``source`` (a file name or ``<string>``), the 1-based ``lineno``
    and the offending ``line`` (shortened when very long), plus what was expected.
    """

    def __init__(self, message: str, *, source: str = "<string>", lineno: int | None = None,
                 line: str | None = None) -> None:
        self.message = message
        self.source = source
        self.lineno = lineno
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.source if self.lineno is None else f"{self.source}:{self.lineno}"
        text = f"{where}: {self.message}"
        if self.line is not None:
            shown = self.line if len(self.line) <= 120 else self.line[:117] + "..."
            text += f"\n    {shown}"
        return text


class SpecError(ParseError):
    """A spec, manifest or flag set that parses but says something invalid (names the key/line)."""


class WorldError(MeshsolveError, ValueError):
    """A pod world that cannot exist (port out of range, duplicate sockets, missing chain, ...)."""


class UnsupportedError(MeshsolveError, NotImplementedError):
    """A feature that meshsolve does not model in the requested operation."""


class OracleError(MeshsolveError, RuntimeError):
    """The kernel oracle could not run (no namespaces, no iptables, a set-up step failed)."""


class InternalError(MeshsolveError, AssertionError):
    """A bug in meshsolve: e.g. the solver's witness does not replay in the interpreter."""
