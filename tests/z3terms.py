"""Walking z3 terms in tests: a term's distinct subterms, and the free constants among them."""

from __future__ import annotations

import z3


def subterms(t: z3.ExprRef) -> list[z3.ExprRef]:
    """Every distinct subterm of ``t`` (``t`` included), each once."""
    seen: set[int] = set()
    out: list[z3.ExprRef] = []
    todo = [t]
    while todo:
        x = todo.pop()
        if x.get_id() in seen:
            continue
        seen.add(x.get_id())
        out.append(x)
        todo.extend(x.children())
    return out


def constants(t: z3.ExprRef) -> list[z3.ExprRef]:
    """The free (uninterpreted) constants of ``t``: its variables."""
    return [x for x in subterms(t) if z3.is_const(x) and x.decl().kind() == z3.Z3_OP_UNINTERPRETED]
