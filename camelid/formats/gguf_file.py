"""A lean GGUF reader: the key-value header parsed with `struct`, arrays decoded only when asked for, tensors as
views of one read-only mmap. Every count, length, offset and size is checked against the file's size before
it is used, so a forged header is one CheckpointError, never a huge allocation or a read past the end.

(The `gguf` package's reader builds numpy objects for every field and array element: ~3 s and 170 MB for
SmolLM2's 49K-token vocabulary; this one reads the same header in a fraction of that.)
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from camelid.errors import CheckpointError

# GGUF value types
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NUMPY = {0: np.uint8, 1: np.int8, 2: np.uint16, 3: np.int16, 4: np.uint32, 5: np.int32, 6: np.float32,
          7: np.bool_, 10: np.uint64, 11: np.int64, 12: np.float64}  # fmt: skip
STRING, ARRAY = 8, 9
MAX_DIMS = 4


class GGUFArray:
    """An array value, decoded on first use."""

    def __init__(self, buf, offset: int, kind: int, count: int, end: int) -> None:
        self._buf, self._offset, self.kind, self.count, self._end = buf, offset, kind, count, end

    def tolist(self) -> list:
        """The values (decoded each time: a 49K-entry vocabulary is read once, and not kept twice)."""
        if self.kind == STRING:
            out, pos = [], self._offset
            for _ in range(self.count):
                (n,) = struct.unpack_from("<Q", self._buf, pos)
                out.append(bytes(self._buf[pos + 8 : pos + 8 + n]).decode("utf-8", errors="replace"))
                pos += 8 + n
            return out
        return np.frombuffer(self._buf, dtype=_NUMPY[self.kind], count=self.count, offset=self._offset).tolist()

    def __len__(self) -> int:
        return self.count


@dataclass
class TensorInfo:
    name: str
    tensor_type: Any  # gguf.GGMLQuantizationType
    shape: np.ndarray  # dims, innermost first (as GGUF stores them)
    data: np.ndarray  # a read-only view of the mapped file: typed [rows, cols] for F32/F16, bytes per row otherwise
    nbytes: int
    offset: int  # of its data in the file


class GGUFFile:
    """`fields` (key -> str, int, float, bool or GGUFArray) and `tensors` of a GGUF file."""

    def __init__(self, path: Path) -> None:
        import gguf

        self.path = path
        with open(path, "rb") as f:
            try:
                self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except ValueError:
                raise CheckpointError(f"{path} is empty, not a GGUF file") from None
        buf, size = memoryview(self._mm), len(self._mm)
        self._pos = 0

        def need(n: int, what: str) -> None:
            if n < 0 or self._pos + n > size:
                raise CheckpointError(f"{path} is truncated or corrupt: {what} runs past the end of the file")

        def take(fmt: str, what: str):
            n = struct.calcsize(fmt)
            need(n, what)
            v = struct.unpack_from(fmt, buf, self._pos)
            self._pos += n
            return v[0] if len(v) == 1 else v

        def string(what: str) -> str:
            n = take("<Q", what)
            need(n, what)
            s = bytes(buf[self._pos : self._pos + n]).decode("utf-8", errors="replace")
            self._pos += n
            return s

        def value(kind: int, key: str):
            if kind in _SCALARS:
                return take(_SCALARS[kind], f"the value of {key}")
            if kind == STRING:
                return string(f"the value of {key}")
            if kind != ARRAY:
                raise CheckpointError(f"{path}: metadata key {key} has an unknown type {kind}")
            elem, count = take("<I", key), take("<Q", key)
            start = self._pos
            if elem == STRING:
                for _ in range(count):  # walk the lengths (cheap) to find the end; decode later
                    n = take("<Q", f"the array {key}")
                    need(n, f"the array {key}")
                    self._pos += n
            elif elem in _NUMPY:
                width = np.dtype(_NUMPY[elem]).itemsize
                need(count * width, f"the array {key} ({count:,} items)")
                self._pos += count * width
            else:
                raise CheckpointError(f"{path}: metadata array {key} has an unsupported element type {elem}")
            return GGUFArray(buf, start, elem, count, self._pos)

        if take("<4s", "the magic") != b"GGUF":
            raise CheckpointError(f"{path} is not a GGUF file (bad magic)")
        version = take("<I", "the version")
        if version not in (2, 3):
            raise CheckpointError(f"{path}: GGUF version {version} is not supported (camelid reads 2 and 3)")
        n_tensors, n_kv = take("<Q", "the tensor count"), take("<Q", "the key count")
        if n_tensors > size // 24 or n_kv > size // 12:
            raise CheckpointError(f"{path} is corrupt: it claims {n_tensors:,} tensors and {n_kv:,} keys")
        self.fields: dict[str, Any] = {}
        for _ in range(n_kv):
            key = string("a metadata key")
            if len(key) > 1024 or not key.isprintable():
                raise CheckpointError(f"{path} is corrupt: a metadata key reads {key[:40]!r}...")
            kind = take("<I", f"the type of {key}")
            self.fields[key] = value(kind, key)
        infos = []
        for _ in range(n_tensors):
            name = string("a tensor name")
            if len(name) > 1024 or not name.isprintable():
                raise CheckpointError(f"{path} is corrupt: a tensor name reads {name[:40]!r}...")
            n_dims = take("<I", f"tensor {name}")
            if not 1 <= n_dims <= MAX_DIMS:
                raise CheckpointError(f"{path}: tensor {name} has {n_dims} dimensions")
            dims = [take("<Q", f"tensor {name}") for _ in range(n_dims)]
            kind, offset = take("<I", f"tensor {name}"), take("<Q", f"tensor {name}")
            infos.append((name, dims, kind, offset))
        alignment = self.fields.get("general.alignment", 32)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise CheckpointError(f"{path}: general.alignment {alignment!r} is not a power of two")
        data_start = -(-self._pos // alignment) * alignment
        self.tensors = []
        for name, dims, kind, offset in infos:
            try:
                qtype = gguf.GGMLQuantizationType(kind)
            except ValueError:
                raise CheckpointError(f"{path}: tensor {name} has an unknown type {kind}") from None
            block, type_size = gguf.constants.GGML_QUANT_SIZES[qtype]
            cols, rows = dims[0], int(np.prod(dims[1:], dtype=object)) if len(dims) > 1 else 1
            if cols <= 0 or rows <= 0 or cols % block:
                raise CheckpointError(f"{path}: tensor {name} has a bad shape {dims} for type {qtype.name}")
            row_bytes = cols // block * type_size
            nbytes = rows * row_bytes
            start = data_start + offset
            if start + nbytes > size:
                raise CheckpointError(
                    f"{path} is truncated: tensor {name} ends at byte {start + nbytes:,}; the file has {size:,}"
                )
            raw = np.frombuffer(self._mm, dtype=np.uint8, count=nbytes, offset=start).reshape(rows, row_bytes)
            if qtype.name in ("F32", "F16"):
                raw = raw.view(np.float32 if qtype.name == "F32" else np.float16)
            self.tensors.append(TensorInfo(name, qtype, np.array(dims), raw, nbytes, start))

    def release(self, tensor: TensorInfo) -> None:
        """Drop a tensor's file pages from this process's resident memory once its data has been copied out
        (the mapping stays valid; touching it again reads the pages back)."""
        page = mmap.PAGESIZE
        start = tensor.offset // page * page
        end = min(len(self._mm), -(-(tensor.offset + tensor.nbytes) // page) * page)
        if end > start and hasattr(mmap, "MADV_DONTNEED"):
            self._mm.madvise(mmap.MADV_DONTNEED, start, end - start)


def contents(value: Any) -> Any:
    """A field's plain Python value (arrays as lists)."""
    return value.tolist() if isinstance(value, GGUFArray) else value
