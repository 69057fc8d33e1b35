"""Safetensors through the `safetensors` library (mmap'd, copy-on-write views), behind checks it lacks.

Before the library sees a file, camelid checks it is a regular file, and that the header is a JSON object
whose every entry has a known dtype, a shape of non-negative integers whose size matches its byte span,
and offsets inside the file that no other tensor overlaps. A bad file is one CheckpointError naming it.
Writes go to a temp file beside the target, synced, then renamed (with the umask's modes).
"""

from __future__ import annotations

import json
import math
import os
import stat
import struct
from pathlib import Path

from camelid.atomic import atomic_path
from camelid.errors import CheckpointError
from camelid.lazy import torch

ITEM_SIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
MAX_HEADER = 100 * 2**20  # the library's own limit


def regular_file(path: Path, what: str = "file") -> int:
    """The size of `path`, which must be a regular file (a FIFO or device would hang or never end)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise CheckpointError(f"{what} {path} does not exist") from None
    except OSError as e:
        raise CheckpointError(f"{what} {path} cannot be read ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise CheckpointError(f"{what} {path} is not a regular file")
    return st.st_size


def read_header(path: Path) -> tuple[dict, int]:
    """The validated JSON header (without `__metadata__`) and the offset where tensor data starts."""
    size = regular_file(path, "weights file")
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path} is truncated: {size} bytes, too short for a safetensors header")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8 or n > MAX_HEADER:
            raise CheckpointError(f"{path} is truncated or corrupt: header claims {n} bytes, file has {size}")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CheckpointError(f"{path} is not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is not a safetensors file (its header is not a JSON object)")
    header.pop("__metadata__", None)
    start, data_len = 8 + n, size - 8 - n
    spans = []
    for name, info in header.items():
        try:
            kind, shape = info["dtype"], info["shape"]
            begin, end = info["data_offsets"]
            if not isinstance(kind, str) or not isinstance(shape, list):
                raise TypeError
            if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in [*shape, begin, end]):
                raise TypeError
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: malformed header entry for tensor {name!r}") from None
        if kind not in ITEM_SIZE:
            raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {kind}")
        nbytes = math.prod(shape) * ITEM_SIZE[kind]
        if end - begin != nbytes:
            raise CheckpointError(f"{path}: tensor {name!r} spans {end - begin} bytes but its shape needs {nbytes}")
        if end > data_len:
            raise CheckpointError(
                f"{path} is truncated: tensor {name!r} ends at byte {start + end}, the file has {size} bytes"
            )
        spans.append((begin, end, name))
    spans.sort()
    for (_, end_a, a), (begin_b, _, b) in zip(spans, spans[1:]):
        if begin_b < end_a:
            raise CheckpointError(f"{path}: tensors {a!r} and {b!r} overlap in the file")
    return header, start


def load_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file as copy-on-write views of one mmap; pages are read as they are touched."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file as _load

    path = Path(path)
    header, _ = read_header(path)
    if not header:
        return {}
    try:
        return _load(str(path))
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({str(e).splitlines()[0][:200]})") from None


def tensor_shapes(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """name -> (dtype, shape), from the header alone."""
    header, _ = read_header(path)
    return {k: (v["dtype"], tuple(v["shape"])) for k, v in header.items()}


def save_file(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write `tensors` to `path` through a temp file in the same directory and an atomic rename."""
    from safetensors.torch import save_file as _save

    with atomic_path(Path(path)) as tmp:
        _save({k: t.detach().contiguous().cpu() for k, t in tensors.items()}, str(tmp), metadata=metadata)
