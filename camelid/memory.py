"""Give freed memory back to the operating system while a model is being built.

Building a quantized model frees a portable copy of each weight as its packed module is made; glibc keeps
such freed chunks in its heap, so resident memory would grow by the whole portable copy. `trim()` returns
them (malloc_trim), keeping a load's peak near the final size. A no-op where glibc is not the allocator.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _libc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        libc.malloc_trim  # noqa: B018 - glibc only
        return libc
    except (OSError, AttributeError):
        return None


TRIM_EVERY = 2 * 2**20
"""Bytes freed between two trims in a loop: a trim walks the whole heap (~0.7 ms), so trimming after every one of
a model's hundreds of small tensors cost a third of a second of a 135M model's load."""
_freed = 0


def trim(freed: int | None = None) -> None:
    """Return free heap memory to the system: now, or with `freed` (bytes just released) once TRIM_EVERY bytes
    have been released since the last trim."""
    global _freed
    if freed is not None:
        _freed += freed
        if _freed < TRIM_EVERY:
            return
    _freed = 0
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
