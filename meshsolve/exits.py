"""The command line's exit codes, written once (sysexits, as ``istioctl`` uses them).

``meshsolve.cli`` returns them; a findings ``Report`` computes its own from them. ``docs/cli.md``
lists each with its meaning. Imports nothing.
"""

from __future__ import annotations

__all__ = [
    "EXIT_DATAERR",
    "EXIT_FINDINGS",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_SOFTWARE",
    "EXIT_UNAVAILABLE",
    "EXIT_UNKNOWN",
    "EXIT_USAGE",
]

EXIT_OK = 0
EXIT_USAGE = 64  # EX_USAGE: the command line is wrong
EXIT_DATAERR = 65  # EX_DATAERR: input that cannot be read, or asks for what meshsolve does not model
EXIT_UNAVAILABLE = 69  # EX_UNAVAILABLE: the kernel oracle cannot run here (root, namespaces, iptables)
EXIT_SOFTWARE = 70  # EX_SOFTWARE: a meshsolve bug (InternalError)
EXIT_FINDINGS = 79  # some property refuted, some flow differs, a conflict, a kernel disagreement
EXIT_UNKNOWN = 80  # nothing refuted, but some answer is inconclusive
EXIT_INTERRUPTED = 130  # Ctrl-C
