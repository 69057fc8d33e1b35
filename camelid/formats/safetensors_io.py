"""Safetensors read by mmap (tensors are views of the file, nothing is copied) and written atomically.

The header is checked against the file before any tensor is made: a truncated file or a header that
claims more bytes than the file holds is a one-line CheckpointError, never a crash or a silent zero.
"""

from __future__ import annotations

import json
import math
import os
import struct
import tempfile
from pathlib import Path

import torch

from camelid.errors import CheckpointError

DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_NAMES = {v: k for k, v in DTYPES.items()}


def read_header(path: Path) -> tuple[dict, int]:
    """The JSON header and the offset where tensor data starts."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path} is truncated: {size} bytes, too short for a safetensors header")
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                raise CheckpointError(f"{path} is truncated or corrupt: header claims {n} bytes, file has {size}")
            header = json.loads(f.read(n))
    except FileNotFoundError:
        raise CheckpointError(f"weights file {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{path} is not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is not a safetensors file (its header is not a JSON object)")
    return header, 8 + n


def load_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file as copy-on-write views of one mmap; pages are read as they are touched."""
    path = Path(path)
    header, start = read_header(path)
    size = path.stat().st_size
    data_len = size - start
    header.pop("__metadata__", None)
    for name, info in header.items():
        try:
            dtype = DTYPES[info["dtype"]]
            shape = [int(d) for d in info["shape"]]
            begin, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: malformed header entry for tensor {name!r}") from None
        if dtype not in DTYPES.values():
            raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}")
        nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        if end - begin != nbytes or begin < 0:
            raise CheckpointError(f"{path}: tensor {name!r} spans {end - begin} bytes but its shape needs {nbytes}")
        if end > data_len:
            raise CheckpointError(
                f"{path} is truncated: tensor {name!r} ends at byte {start + end}, the file has {size} bytes"
            )
    if size == 0:
        return {}
    storage = torch.UntypedStorage.from_file(str(path), shared=False, nbytes=size)
    out = {}
    for name, info in header.items():
        dtype = DTYPES[info["dtype"]]
        begin, end = info["data_offsets"]
        flat = torch.empty(0, dtype=torch.uint8).set_(storage, start + begin, (end - begin,))
        out[name] = flat.view(dtype).view(info["shape"]) if end > begin else torch.empty(info["shape"], dtype=dtype)
    return out


def save_file(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write `tensors` to `path` through a temp file in the same directory and an atomic rename."""
    path = Path(path)
    header: dict = {"__metadata__": metadata} if metadata else {}
    offset = 0
    items = []
    for name, t in tensors.items():
        t = t.detach().contiguous().cpu()
        nbytes = t.numel() * t.element_size()
        header[name] = {"dtype": _NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + nbytes]}
        items.append(t)
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)  # keep tensor data 8-byte aligned
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<Q", len(blob)))
            f.write(blob)
            for t in items:
                if t.numel():
                    f.write(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
