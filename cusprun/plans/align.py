"""Kept FFN widths: rounding to a multiple (ffn_multiple) and splitting a removal over layers.

Unaligned widths such as 1195 make CPU and GPU matmuls run slower than the FLOPs say, so with
ffn_multiple=m > 1 every layer keeps a multiple of m (or the dense width) and the target is met
to within about one block of m neurons per layer instead of one neuron."""
from __future__ import annotations

import numpy as np


def distribute(n: int, share: np.ndarray | list[float], caps: np.ndarray | list[int]) -> np.ndarray:
    """Split n whole units over slots in proportion to `share`, never above a slot's cap: water-
    filling, then largest remainders, so the counts sum to exactly min(n, sum(caps))."""
    caps = np.asarray(caps, dtype=np.int64)
    share = np.clip(np.asarray(share, dtype=np.float64), 0, None)
    n = int(min(n, caps.sum()))
    ideal = np.zeros(len(caps))
    open_ = caps > 0
    left = float(n)
    while left > 1e-9 and open_.any():
        w = np.where(open_, share, 0.0)
        w = w if w.sum() > 0 else open_.astype(np.float64)
        ideal = ideal + left * w / w.sum()
        over = ideal > caps
        left = float((ideal - caps)[over].sum())
        ideal[over] = caps[over]
        open_ &= ~over & (ideal < caps)
    out = np.floor(ideal + 1e-9).astype(np.int64)
    for i in np.argsort(-(ideal - out), kind="stable")[: n - int(out.sum())]:
        out[i] += 1
    return out


def aligned_widths(want: list[int], removable: list[np.ndarray], ffn: int, m: int) -> list[int]:
    """Kept FFN width per layer, each a multiple of m (or the dense width `ffn`) within what the
    layer may lose (`removable[li]`: the neurons layer li may drop), with the total as close to
    sum(want) as blocks allow: every layer is rounded down, then the layers that wanted the most
    of a block back get it (largest remainder)."""
    n_layers = len(removable)
    lo = [ffn - len(r) for r in removable]                  # fewest neurons a layer may keep
    grid = [sorted({w for w in range(m, ffn + 1, m) if w >= lo[li]} | {ffn})
            for li in range(n_layers)]
    down = [max([w for w in g if w <= want[li]], default=g[0]) for li, g in enumerate(grid)]
    up = [min([w for w in g if w > down[li]], default=down[li]) for li, g in enumerate(grid)]
    deficit = sum(want) - sum(down)
    for li in sorted(range(n_layers), key=lambda li: (-(want[li] - down[li]), li)):
        step = up[li] - down[li]
        if step and deficit > step / 2:
            down[li], deficit = up[li], deficit - step
    return down


def align_removed(ffn_removed: list[np.ndarray], removable: list[np.ndarray],
                  ffn_rank: np.ndarray, ffn: int, m: int) -> list[np.ndarray]:
    """Re-cut each layer's removed FFN set to an aligned width, by the layer's own rank order
    (`ffn_rank[li]`: the global rank of each neuron, lowest removed first)."""
    if m <= 1:
        return ffn_removed
    widths = aligned_widths([ffn - len(r) for r in ffn_removed], removable, ffn, m)
    out = []
    for li, (r, w) in enumerate(zip(ffn_removed, widths)):
        n = ffn - w
        rest = removable[li][~np.isin(removable[li], r)]
        r = np.asarray(r, dtype=np.int64)
        ordered = np.concatenate([r[np.argsort(ffn_rank[li][r], kind="stable")], rest])
        out.append(ordered[:n])
    return out


def align_note(ffn: int, m: int, per: str) -> list[str]:
    """The plan's note on alignment (none when m <= 1)."""
    return [] if m <= 1 else [
        f"ffn_multiple={m}: kept FFN widths are multiples of {m} (or the dense {ffn}) for "
        f"faster matmuls; the target is met to within about {m} neurons {per}"]
