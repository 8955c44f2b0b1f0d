"""The concrete interpreter: one ``World`` + one ``Flow`` → a ``Result`` (outcome, observed sides, trace).

The ground truth the solver is checked against; see ``meshsolve.semantics.interpret`` for every
kernel fact it relies on.
"""

from meshsolve.semantics.interpret import accepting_socket, check_flow, interpret, rule_text, source_for
from meshsolve.semantics.matrix import Matrix, matrix
from meshsolve.semantics.setups import SETUPS, setup_addresses, setup_world
from meshsolve.semantics.trace import (
    Delivered,
    Dropped,
    Egress,
    Failed,
    Hop,
    Loop,
    Outcome,
    Refused,
    Rejected,
    Result,
    Undetermined,
    cell_key,
)

__all__ = [
    "SETUPS",
    "Delivered",
    "Dropped",
    "Egress",
    "Failed",
    "Hop",
    "Loop",
    "Matrix",
    "Outcome",
    "Refused",
    "Rejected",
    "Result",
    "Undetermined",
    "accepting_socket",
    "cell_key",
    "check_flow",
    "interpret",
    "matrix",
    "rule_text",
    "setup_addresses",
    "setup_world",
    "source_for",
]
