"""A safetensors checkpoint directory read tensor by tensor.

Reads are positioned reads into the tensor's own buffer (cusprun.models.st_io), not a memory map:
a mapped shard keeps every page a pass touched resident until it is closed, so streaming an 8B
model layer by layer through mmap would grow the process to the whole checkpoint. The page
cache still makes a second pass over the same file fast."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import torch

from cusprun.errors import CusprunError
from cusprun.models.st_io import TensorInfo, read_header, read_tensor

INDEX_FILE = "model.safetensors.index.json"


def checkpoint_tensors(model_dir: str | Path) -> dict[str, TensorInfo]:
    """Where every tensor of the checkpoint lives (shards named by the index, or every
    *.safetensors file); a tensor in two shards is an error."""
    model_dir = Path(model_dir)
    index = model_dir / INDEX_FILE
    if index.exists():
        files = sorted({model_dir / f for f in json.loads(index.read_text())["weight_map"].values()})
    else:
        files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise CusprunError(f"No safetensors weights in {model_dir}; cusprun reads safetensors "
                           "checkpoints only (convert .bin/.pt checkpoints with transformers first)")
    tensors: dict[str, TensorInfo] = {}
    for f in files:
        infos, _meta = read_header(f)
        for name, info in infos.items():
            if name in tensors:
                raise CusprunError(f"Tensor {name!r} appears in both {tensors[name].file.name} "
                                   f"and {f.name}")
            tensors[name] = info
    return tensors


class Checkpoint:
    """Named tensors of one checkpoint directory, read on demand; counts the bytes read."""

    def __init__(self, model_dir: str | Path):
        self.path = Path(model_dir)
        self.tensors = checkpoint_tensors(self.path)
        self.bytes_read = 0
        self._lock = threading.Lock()

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def nbytes(self, names=None) -> int:
        """Bytes on disk of the given tensors (all by default)."""
        names = self.tensors if names is None else names
        return sum(self.tensors[n].nbytes for n in names)

    def read(self, name: str, dtype: torch.dtype | None = None,
             device: torch.device | str | None = None) -> torch.Tensor:
        if name not in self.tensors:
            raise CusprunError(f"Checkpoint {self.path} has no tensor {name!r}; its names do not "
                               "follow the layout the model's config implies")
        info = self.tensors[name]
        t = read_tensor(info)
        with self._lock:
            self.bytes_read += info.nbytes
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        return t.to(device) if device is not None else t

    def read_rows(self, name: str, start: int, stop: int, dtype: torch.dtype | None = None,
                  device: torch.device | str | None = None) -> torch.Tensor:
        """Rows start:stop of a 2-D tensor, reading only their bytes (an LM head in chunks)."""
        from dataclasses import replace

        info = self.tensors.get(name)
        if info is None or len(info.shape) != 2:
            return self.read(name, dtype, device)[start:stop]
        rows, cols = info.shape
        start, stop = max(0, start), min(rows, stop)
        row_bytes = info.nbytes // rows if rows else 0
        part = replace(info, shape=(stop - start, cols), start=info.start + start * row_bytes,
                       end=info.start + stop * row_bytes)
        t = read_tensor(part)
        with self._lock:
            self.bytes_read += part.nbytes
        if dtype is not None:
            t = t.to(dtype)
        return t.to(device) if device is not None else t
