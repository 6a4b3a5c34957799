"""Channel means as a compensation source: FLAP's bias compensation from the statistics of the
text it calibrated on, with no Gram collected.

'bias' compensation needs only the mean of each down_proj / o_proj input channel over
calibration tokens (b' = b + W_P mean(x_P)), and every statistics pass already keeps the
per-channel sums (DimensionStats.down_sum / o_sum). ChannelMeans serves them in the shape of a
GramSet (n_layers, n_tokens, layer(li)), so slicing and in-memory pruning take either."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from cusprun.compensation.gram_set import ROLES, LayerGrams
from cusprun.errors import SpecError


class _NoGram(dict):
    def __missing__(self, role: str):
        raise SpecError("Channel means carry no Gram matrix: only compensation mode 'bias' can use "
                        f"them (asked for the {role!r} Gram).")


class ChannelMeans:
    """Per layer and role, the sum of the inputs over `n_tokens` calibration tokens."""

    def __init__(self, sums: dict[str, torch.Tensor], n_tokens: int):
        """`sums`: role ('down', 'o') -> [layers, width] sums over tokens."""
        if set(sums) != set(ROLES):
            raise SpecError(f"Channel means need the sums of roles {ROLES}, got {sorted(sums)}.")
        if n_tokens < 1:
            raise SpecError("Channel means need at least one calibration token.")
        self.sums = {r: s.double() for r, s in sums.items()}
        self.n_layers = int(self.sums["down"].shape[0])
        self.n_tokens = int(n_tokens)
        self.source = "channel means"

    @classmethod
    def from_stats(cls, stats: Sequence) -> "ChannelMeans":
        """From DimensionStats (one or more corpora of the same model, summed token for token)."""
        if not stats:
            raise SpecError("Channel means need the statistics of at least one corpus.")
        return cls({"down": sum(s.down_sum.double() for s in stats),
                    "o": sum(s.o_sum.double() for s in stats)},
                   sum(s.n_tokens for s in stats))

    def layer(self, li: int) -> LayerGrams:
        if not 0 <= li < self.n_layers:
            raise IndexError(f"layer {li} outside 0..{self.n_layers - 1}")
        return LayerGrams(_NoGram(), {r: self.sums[r][li] for r in ROLES}, float(self.n_tokens))
