"""Kept FFN widths: rounding to a multiple (ffn_multiple) and splitting a removal over layers.

Unaligned widths such as 1195 make CPU and GPU matmuls run slower than the FLOPs say, so with
ffn_multiple=m > 1 every layer keeps a multiple of m (or the dense width) and the target is met
to within about one block of m neurons per layer instead of one neuron."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from cusprun.masks.select import _Ctx


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


def _aligned_widths(ctx: "_Ctx", want: list[int], m: int) -> list[int]:
    """Kept FFN width per layer, each a multiple of m (or the dense width) within what the layer
    may lose, with the total as close to sum(want) as blocks allow: every layer is rounded down,
    then the layers that wanted the most of a block back get it (largest remainder)."""
    d = ctx.dims
    lo = [d.ffn - len(r) for r in ctx.removable]                  # fewest neurons a layer may keep
    grid = [sorted({w for w in range(m, d.ffn + 1, m) if w >= lo[li]} | {d.ffn})
            for li in range(d.n_layers)]
    down = [max([w for w in g if w <= want[li]], default=g[0]) for li, g in enumerate(grid)]
    up = [min([w for w in g if w > down[li]], default=down[li]) for li, g in enumerate(grid)]
    deficit = sum(want) - sum(down)
    for li in sorted(range(d.n_layers), key=lambda li: (-(want[li] - down[li]), li)):
        step = up[li] - down[li]
        if step and deficit > step / 2:
            down[li], deficit = up[li], deficit - step
    return down


def _align(ctx: "_Ctx", ffn_removed: list[np.ndarray], m: int) -> list[np.ndarray]:
    """Re-cut each layer's removed FFN set to an aligned width, by the layer's own rank order."""
    if m <= 1:
        return ffn_removed
    d = ctx.dims
    widths = _aligned_widths(ctx, [d.ffn - len(r) for r in ffn_removed], m)
    out = []
    for li, (r, w) in enumerate(zip(ffn_removed, widths)):
        n = d.ffn - w
        rest = ctx.removable[li][~np.isin(ctx.removable[li], r)]
        r = np.asarray(r, dtype=np.int64)
        ordered = np.concatenate([r[np.argsort(ctx.ffn_rank[li][r], kind="stable")], rest])
        out.append(ordered[:n])
    return out


def _align_note(ctx: "_Ctx", m: int, per: str) -> list[str]:
    return [] if m <= 1 else [
        f"ffn_multiple={m}: kept FFN widths are multiples of {m} (or the dense {ctx.dims.ffn}) for "
        f"faster matmuls; the target is met to within about {m} neurons {per}"]
