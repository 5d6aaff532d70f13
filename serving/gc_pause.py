"""Pausing Python's cyclic garbage collector around bulk work (a watch tick, also in the replay).

A watch tick over 100,000 open tickets allocates millions of short-lived objects (state dicts,
score dicts, reason lists). Every 700 net allocations CPython runs a young-generation
collection, and every so often a full one that walks every tracked object in the process (the
model, the text caches: ~200,000 objects in a watcher). Those walks find almost nothing to free,
since the bulk work's garbage has no reference cycles and is freed by reference counting as
it goes, yet they took 16-40 % of a tick (bench/watch_bench.py, measured with and without the
pause). Inside `paused_collection()` the collector does not run; cycles made meanwhile are
collected by the first collection after it ends. Process-wide and re-entrant across threads:
the collector is re-enabled when the last user leaves, and only if it was enabled when the
first one came in.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_users = 0
_was_enabled = False


@contextmanager
def paused_collection() -> Iterator[None]:
    """No cyclic garbage collection while the block runs (reference counting still frees memory)."""
    global _users, _was_enabled
    with _lock:
        if _users == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0 and _was_enabled:
                gc.enable()
