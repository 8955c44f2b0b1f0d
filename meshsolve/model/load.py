"""What a loader would refuse, found before the rules are loaded (a value, not an exception).

``meshsolve.nftables.loadcheck`` finds them in nft input: a transaction nft refuses as a whole (an
insert at an index the chain does not have, a set that does not exist...), user and group names
nft resolves on the loading host. They travel with the rules (``Rulesets.load_problems``) so that a
check reports them as findings next to what the rules do.
"""

from __future__ import annotations

from typing import Literal

import attrs

__all__ = ["LoadProblem"]


@attrs.frozen
class LoadProblem:
    """One problem: ``kind`` ``refused`` (the transaction fails: nothing of it is loaded) or
    ``name`` (a user or group name nft must resolve on the loading host: it fails where the host
    does not have it), what it is, and where (``source``, 1-based ``lineno``, the ``line``)."""

    kind: Literal["refused", "name"]
    message: str
    source: str = "<nft>"
    lineno: int | None = None
    line: str | None = None

    @property
    def where(self) -> str:
        return self.source if self.lineno is None else f"{self.source}:{self.lineno}"
