"""Give freed heap memory back to the system (glibc keeps it in its arenas otherwise).

A process that inflated large request bodies in several threads at once keeps their
memory in per-thread malloc arenas after freeing it: 32 concurrent refused gzip bombs left
the API at 2-3 GB. `trim()` asks glibc to return it (`malloc_trim(0)`); elsewhere (musl,
macOS) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from typing import Any

_lock = threading.Lock()
_libc: list[Any] = []


def _malloc_trim() -> Any:
    with _lock:
        if not _libc:
            name = ctypes.util.find_library("c")
            try:
                libc = ctypes.CDLL(name) if name else None
            except OSError:
                libc = None
            _libc.append(getattr(libc, "malloc_trim", None))
        return _libc[0]


def trim() -> bool:
    """Return the heap's free memory to the system; True where glibc did."""
    fn = _malloc_trim()
    return bool(fn(0)) if fn is not None else False
