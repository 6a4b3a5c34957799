"""Token batches of a pass and the store that holds their hidden states between layers.

A layer-by-layer pass keeps the hidden states of every batch while it moves from one layer to
the next. They stay on the compute device while they fit in `budget_bytes`; beyond that they
spill to host memory (from a GPU) and then to files on disk, so a calibration set larger than
the device never stops a pass (it only slows the spilled batches)."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class Batch:
    """Right- or left-padded token ids of some documents.

    `mask`: 1 where a token is real (recorders ignore padding); `rows`: the caller's index of each
    row's document; `call`: what the family's forward receives besides input_ids (attention_mask,
    position_ids, a custom 4-D mask); `group`: whose batch it is when one pass serves several
    corpora; `kwargs`: each layer's keyword arguments, filled by LayeredModel.capture."""

    ids: torch.Tensor
    mask: torch.Tensor
    rows: list[int]
    call: dict = field(default_factory=dict)
    group: object = None
    kwargs: list[dict] = field(default_factory=list, repr=False)

    @property
    def n_tokens(self) -> int:
        return int(self.mask.sum())


def pad_right(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) of sequences right-padded to the longest (CPU tensors)."""
    t = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), t), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(list(s), dtype=torch.long)
        mask[i, :len(s)] = 1
    return ids, mask


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Document indices grouped into batches of similar length (longest first) to limit padding."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def document_batches(seqs: Sequence[Sequence[int]], batch_size: int, pad_id: int,
                     rows: Sequence[int] | None = None, group: object = None) -> list[Batch]:
    """Right-padded batches of documents of similar length; `rows` names each document
    (default: its position in `seqs`)."""
    rows = list(range(len(seqs))) if rows is None else list(rows)
    out = []
    for idx in length_batches([len(s) for s in seqs], batch_size):
        ids, mask = pad_right([seqs[i] for i in idx], pad_id)
        out.append(Batch(ids, mask, [rows[i] for i in idx], {"attention_mask": mask}, group))
    return out


class HiddenStore:
    """Hidden states by batch number: on `device` up to `budget_bytes`, then in host memory up
    to `host_bytes` (GPU devices only), then in files under a temporary directory."""

    def __init__(self, device: torch.device, budget_bytes: int | None = None,
                 host_bytes: int | None = None):
        self.device = torch.device(device)
        self.budget = budget_bytes
        self.host_budget = host_bytes if self.device.type != "cpu" else 0
        self._items: dict[int, torch.Tensor | tuple] = {}
        self._sizes: dict[int, int] = {}
        self._where: dict[int, str] = {}
        self._dir: tempfile.TemporaryDirectory | None = None
        self.spilled = {"host": 0, "disk": 0}

    def _used(self, where: str) -> int:
        return sum(s for i, s in self._sizes.items() if self._where[i] == where)

    def put(self, i: int, t: torch.Tensor) -> None:
        self.drop(i)
        size = t.numel() * t.element_size()
        if self.budget is None or self._used("device") + size <= self.budget:
            where, item = "device", t
        elif self.host_budget and self._used("host") + size <= self.host_budget:
            where, item = "host", t.to("cpu")
        else:
            where, item = "disk", self._to_disk(i, t)
        if where != "device":
            self.spilled[where] += 1
        self._items[i], self._sizes[i], self._where[i] = item, size, where

    def get(self, i: int) -> torch.Tensor:
        item, where = self._items[i], self._where[i]
        if where == "disk":
            path, shape, dtype = item
            arr = np.fromfile(path, dtype=np.uint8)
            return torch.from_numpy(arr).view(dtype).reshape(shape).to(self.device)
        return item.to(self.device) if where == "host" else item

    def drop(self, i: int) -> None:
        if self._where.get(i) == "disk":
            os.unlink(self._items[i][0])
        for d in (self._items, self._sizes, self._where):
            d.pop(i, None)

    def _to_disk(self, i: int, t: torch.Tensor) -> tuple:
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="cusprun-hidden-")
        path = os.path.join(self._dir.name, f"{i}.bin")
        t.detach().contiguous().cpu().view(torch.uint8).numpy().tofile(path)
        return path, tuple(t.shape), t.dtype

    def close(self) -> None:
        for i in list(self._items):
            self.drop(i)
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
