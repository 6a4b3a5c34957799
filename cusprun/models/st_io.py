"""Streaming safetensors reader and writer, one tensor in memory at a time.

`safetensors.safe_open` memory-maps a whole shard: every page a slice touches stays resident
until the shard is closed, so slicing a one-shard model would hold the whole checkpoint in RSS.
The format is simple (8-byte little-endian header length, JSON header with dtype, shape and
byte offsets, then raw data), so we read exactly the bytes of one tensor with positioned reads
and write output shards whose header is known before any data is written. Output files are
ordinary safetensors files (tests open them with `safetensors.safe_open`).
"""
from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from cusprun.errors import CusprunError

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
_COPY_CHUNK = 16 << 20


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor's bytes live in an input shard."""

    name: str
    file: Path
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


def read_header(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Tensor locations and `__metadata__` of one safetensors file (reads only the header)."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise CusprunError(f"{path} is not a safetensors file (shorter than 8 bytes)")
        (n,) = struct.unpack("<Q", raw)
        size = os.fstat(f.fileno()).st_size
        if n > size - 8:
            raise CusprunError(f"{path} is not a safetensors file (header length {n} > file size)")
        header = json.loads(f.read(n))
    meta = header.pop("__metadata__", None) or {}
    base = 8 + n
    out = {}
    for name, h in header.items():
        b, e = h["data_offsets"]
        if base + e > size:
            raise CusprunError(f"{path}: tensor {name!r} ends past the end of the file (truncated?)")
        out[name] = TensorInfo(name, path, h["dtype"], tuple(h["shape"]), base + b, base + e)
    return out, meta


def read_tensor(info: TensorInfo) -> torch.Tensor:
    """One tensor, read with a positioned read into its own buffer (no mmap)."""
    if info.dtype not in DTYPES:
        raise CusprunError(f"{info.file}: tensor {info.name!r} has dtype {info.dtype}, which cusprun "
                           f"cannot slice; supported: {', '.join(DTYPES)}")
    buf = bytearray(info.nbytes)
    with open(info.file, "rb") as f:
        f.seek(info.start)
        if f.readinto(buf) != info.nbytes:
            raise CusprunError(f"{info.file}: short read of tensor {info.name!r} (truncated file?)")
    dtype = DTYPES[info.dtype]
    if info.nbytes == 0:
        return torch.empty(info.shape, dtype=dtype)
    return torch.frombuffer(buf, dtype=dtype).reshape(info.shape)


@dataclass(frozen=True)
class OutTensor:
    """One tensor of an output shard: copied verbatim, rows/columns `index` along `dim`, or
    computed by `make()` (compensated weights, new biases) in `dtype` (a safetensors dtype name;
    default: the source's)."""

    name: str
    src: TensorInfo | None
    shape: tuple[int, ...]
    dim: int | None = None
    index: torch.Tensor | None = None
    make: Callable[[], torch.Tensor] | None = None
    dtype: str | None = None

    @property
    def out_dtype(self) -> str:
        return self.dtype or self.src.dtype  # type: ignore[union-attr]

    @property
    def nbytes(self) -> int:
        if self.dim is None and self.make is None:
            return self.src.nbytes  # type: ignore[union-attr]
        numel = 1
        for s in self.shape:
            numel *= s
        return numel * DTYPES[self.out_dtype].itemsize


def _header_bytes(tensors: list[OutTensor], metadata: dict[str, str]) -> bytes:
    header: dict = {"__metadata__": metadata}
    off = 0
    for t in tensors:
        header[t.name] = {"dtype": t.out_dtype, "shape": list(t.shape), "data_offsets": [off, off + t.nbytes]}
        off += t.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # keep the data 8-byte aligned, as the reference writer does
    return struct.pack("<Q", len(raw)) + raw


def _copy_bytes(src: TensorInfo, out) -> None:
    with open(src.file, "rb") as f:
        f.seek(src.start)
        left = src.nbytes
        while left:
            chunk = f.read(min(_COPY_CHUNK, left))
            if not chunk:
                raise CusprunError(f"{src.file}: short read of tensor {src.name!r} (truncated file?)")
            out.write(chunk)
            left -= len(chunk)


def write_shard(path: Path, tensors: list[OutTensor], metadata: dict[str, str] | None = None,
                progress=None) -> None:
    """Write one safetensors file, holding at most one (sliced) tensor in memory."""
    with open(path, "wb") as out:
        out.write(_header_bytes(tensors, metadata or {"format": "pt"}))
        for t in tensors:
            if t.dim is None and t.make is None:
                _copy_bytes(t.src, out)
            else:
                if t.make is not None:
                    x = t.make().to(DTYPES[t.out_dtype]).contiguous()
                else:
                    x = read_tensor(t.src).index_select(t.dim, t.index).contiguous()
                if tuple(x.shape) != t.shape:
                    raise AssertionError(f"{t.name}: made {tuple(x.shape)}, planned {t.shape}")
                out.write(x.reshape(-1).view(torch.uint8).numpy().data if x.numel() else b"")
                del x
            if progress is not None:
                progress.update(1)
        out.flush()
        os.fsync(out.fileno())


def split_shards(tensors: list[OutTensor], max_shard_bytes: int) -> list[list[OutTensor]]:
    """Greedy split in order; a tensor larger than the limit gets a shard of its own."""
    shards: list[list[OutTensor]] = [[]]
    size = 0
    for t in tensors:
        if shards[-1] and size + t.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += t.nbytes
    return shards
