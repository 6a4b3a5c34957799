"""Healing data: documents of the expert's calibration corpora and general text packed into
fixed-length token blocks, and the order in which a token budget visits them.

Only calibration-side documents are read (corpus splits 'calib' and 'holdback'): the held-out
evaluation split is chosen by a hash of the document id (cusprun.corpora.prepare), so no
document a report scores is ever trained on."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

TRAIN_SPLITS = ("calib", "holdback")
"""Corpus splits healing reads; 'eval' (the held-out documents) never."""


@dataclass
class Blocks:
    """Packed token blocks of every group: `ids` [n, seq_len]; `group[i]` names block i's
    group (a dimension or 'general')."""

    ids: torch.Tensor
    group: list[str]

    def of(self, name: str) -> list[int]:
        return [i for i, g in enumerate(self.group) if g == name]


def pack(tokenizer, texts: Mapping[str, Sequence[str]], seq_len: int) -> Blocks:
    """Each group's documents tokenized, joined with EOS and cut into seq_len blocks (sequence
    packing: no padding, every position trains). A group shorter than one block is repeated."""
    eos = tokenizer.eos_token_id
    ids, group = [], []
    for name, docs in texts.items():
        stream: list[int] = []
        for d in docs:
            stream += tokenizer(d, add_special_tokens=True)["input_ids"]
            if eos is not None:
                stream.append(eos)
        if not stream:
            continue
        if len(stream) < seq_len:
            stream = stream * -(-seq_len // len(stream))
        n = len(stream) // seq_len
        ids.append(torch.tensor(stream[: n * seq_len], dtype=torch.long).view(n, seq_len))
        group += [name] * n
    if not ids:
        raise ValueError("healing has no text: every corpus given is empty")
    return Blocks(torch.cat(ids), group)


def schedule(blocks: Blocks, *, steps: int, batch_size: int, general_share: float,
             seed: int) -> list[list[int]]:
    """Block indices of each optimizer step. Each sequence slot draws its group (general text
    with probability general_share, the dimensions in equal shares), then the group's next
    block in a shuffled order that is reshuffled whenever the group is used up."""
    rng = np.random.default_rng(seed)
    names = list(dict.fromkeys(blocks.group))
    dims = [n for n in names if n != "general"]
    share = general_share if "general" in names and dims else (1.0 if not dims else 0.0)
    p = np.array([share if n == "general" else (1 - share) / len(dims) for n in names])
    pools = {n: blocks.of(n) for n in names}
    order: dict[str, list[int]] = {n: [] for n in names}

    def take(n: str) -> int:
        if not order[n]:
            order[n] = list(rng.permutation(pools[n]))
        return int(order[n].pop())

    picks = rng.choice(len(names), size=steps * batch_size, p=p / p.sum())
    flat = [take(names[i]) for i in picks]
    return [flat[s * batch_size:(s + 1) * batch_size] for s in range(steps)]
