"""The teacher cache: the dense model's top-k next-token log-probabilities on every block the
schedule visits, computed once, in chunks, before the student is loaded. Training then pays no
teacher forward per step, and teacher and student never share memory (an 8B teacher in bf16 is
16 GB the student's optimizer gets back)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from cusprun.healing.loss import teacher_topk


class TeacherCache:
    """Top-k ids and log-probs of the teacher for the blocks `index` maps (block -> row)."""

    def __init__(self, ids: torch.Tensor, logp: torch.Tensor, index: dict[int, int]):
        self.ids, self.logp, self.index = ids, logp, index

    def get(self, blocks: Sequence[int], device) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.tensor([self.index[b] for b in blocks])
        return self.ids[rows].to(device), self.logp[rows].to(device)

    @property
    def nbytes(self) -> int:
        return self.ids.nbytes + self.logp.nbytes


@torch.no_grad()
def build_cache(teacher_dir: str | Path, blocks: torch.Tensor, used: Sequence[int], *, k: int,
                temperature: float, device: str, dtype: torch.dtype, batch: int,
                progress: bool = True) -> TeacherCache:
    """Load the dense model, run it over the `used` blocks `batch` at a time (full logits of one
    chunk only), keep the top-k, free the model."""
    from tqdm.auto import tqdm

    from cusprun.models.loading import load_model

    model, _ = load_model(teacher_dir, dtype=dtype, device=device)
    used = sorted(set(used))
    n, length = len(used), blocks.shape[1]
    k = min(k, model.config.vocab_size if hasattr(model.config, "vocab_size") else k)
    ids = torch.empty(n, length, k, dtype=torch.int32)
    logp = torch.empty(n, length, k, dtype=torch.float32)
    bar = tqdm(total=n * length, desc="teacher cache", unit="tok", disable=not progress)
    try:
        for start in range(0, n, batch):
            rows = used[start:start + batch]
            x = blocks[rows].to(device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
                logits = model(input_ids=x).logits
            i, v = teacher_topk(logits, k, temperature)
            ids[start:start + len(rows)], logp[start:start + len(rows)] = i.cpu(), v.cpu()
            del logits
            bar.update(len(rows) * length)
    finally:
        bar.close()
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
    return TeacherCache(ids, logp, {b: r for r, b in enumerate(used)})
