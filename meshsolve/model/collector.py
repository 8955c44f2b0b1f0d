"""Python's cyclic garbage collector paused while a large input becomes values or a large encoding
is built: both make a great many small objects (rule values, Z3 term wrappers, memo entries) and no
cycles worth collecting, and the collector's passes over them took a third of reading a 96k-line
dump and about 40 % of a large encoding. Reference counting still frees every object as it is
dropped; the collector is back as it was afterwards, also on error."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["freeze_after_pauses", "gc_paused"]

_FREEZE = False


def freeze_after_pauses() -> None:
    """From now on, what a paused block made and still holds when it ends is moved out of the
    collector's sight (``gc.freeze``): the collector's later passes no longer walk the parsed rules
    and the encodings, which were a sixth of the default property set on 10,000 rules. Cyclic
    garbage among those objects would then never be collected: for a process that exits when its
    work is done (the ``meshsolve`` command), not for a library's caller."""
    global _FREEZE
    _FREEZE = True


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The collector off inside the block (as it was before, after)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            if _FREEZE:
                gc.freeze()
            gc.enable()
