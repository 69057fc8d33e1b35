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


def trim() -> None:
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
