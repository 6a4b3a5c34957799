"""How much the dimensions agree on what to prune: Jaccard overlap of their candidate sets."""
from __future__ import annotations

from itertools import combinations

import numpy as np

from cusprun.plans.select import Selection


def _lowest(score: np.ndarray, tie: np.ndarray, n: int) -> np.ndarray:
    """Bool mask of the n units with the lowest (score, tie, layer, index)."""
    L, U = score.shape
    order = np.lexsort((np.tile(np.arange(U), L), np.repeat(np.arange(L), U), tie.ravel(), score.ravel()))
    mask = np.zeros(score.size, bool)
    mask[order[:n]] = True
    return mask.reshape(score.shape)


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def overlap_report(per_dim: dict[str, dict[str, np.ndarray]], sel: Selection,
                   threshold: dict[str, float] | None) -> dict:
    """Per unit type: each dimension's candidate-set size and each pair's Jaccard index.

    With a threshold (paper rule) a dimension's candidates are the units irrelevant to all its
    documents (max percentile < sigma). Otherwise they are the n units with its own lowest scores,
    n being how many units of that type the plan prunes, so sets of equal size are compared.
    Top-level 'a|b' keys hold each pair's Jaccard over both unit types pooled (what plots use)."""
    n_pruned = {"ffn": sel.report["removed_units"]["ffn_neurons"],
                "heads": sel.report["removed_units"]["query_heads"]}
    out: dict = {"basis": ("irrelevant to every document (max percentile < sigma)" if threshold else
                           "each dimension's own lowest-scored units, as many as the plan prunes")}
    inter: dict[str, int] = {}
    union: dict[str, int] = {}
    for kind in ("ffn", "heads"):
        cand = {dim: (v[kind] < threshold[kind]) if threshold else
                _lowest(v[kind], v[f"{kind}_mean"], n_pruned[kind]) for dim, v in per_dim.items()}
        all_dims = np.logical_and.reduce(list(cand.values()))
        out[kind] = {
            "candidates": {dim: int(c.sum()) for dim, c in cand.items()},
            "common_to_all": int(all_dims.sum()),
            "jaccard": {f"{a}|{b}": round(jaccard(cand[a], cand[b]), 4)
                        for a, b in combinations(sorted(cand), 2)},
        }
        for a, b in combinations(sorted(cand), 2):
            inter[f"{a}|{b}"] = inter.get(f"{a}|{b}", 0) + int((cand[a] & cand[b]).sum())
            union[f"{a}|{b}"] = union.get(f"{a}|{b}", 0) + int((cand[a] | cand[b]).sum())
    for pair in inter:
        out[pair] = round(inter[pair] / union[pair], 4) if union[pair] else 1.0
    return out
