"""Python's cyclic garbage collector paused while a large input becomes values or a large encoding
is built: both make a great many small objects (rule values, Z3 term wrappers, memo entries) and no
cycles worth collecting, and the collector's passes over them took a third of reading a 96k-line
dump and about 40 % of a large encoding. Reference counting still frees every object as it is
dropped; the collector is back as it was afterwards, also on error."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["gc_paused"]


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The collector off inside the block (as it was before, after)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
