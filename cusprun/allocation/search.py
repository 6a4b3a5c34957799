"""Allocation by measured damage: how much of the budget goes to heads vs FFN neurons, and to
which layers, decided by the held-back loss of masked (+ compensated) candidates.

Scores say which units within a layer go first; they cannot say whether a head (here about 43
FFN neurons' worth of parameters) is worth more than its parameters in neurons, nor which layers
tolerate more removal. The search measures that instead of assuming it:

- uniform: one head structure (k kept KV groups x g query heads) for every layer, the FFN taking
  the rest of the budget. Structures are tried from most heads kept to fewest; a candidate
  beats the best so far only by more than `z` standard errors of the paired per-document
  difference on the held-back documents (a tie keeps more heads: measured differences below the
  probe's noise did not hold on held-out text), and the search stops after `patience`
  candidates in a row that do not (default 1: damage
  against heads removed is U-shaped, too few heads removed over-prunes the FFN, too many hurts
  attention; on the demo a second non-improving candidate never changed the choice). Typically 3
  candidates.
- per_layer: the best uniform structure, then per-layer FFN widths. Each layer's share of the FFN
  removal is proportional to (mean e / e_l)^alpha, where e_l is the layer's relative
  reconstruction error under the uniform removal (compensated output error over the squared norm
  of the residual stream entering it, in closed form from the Grams): alpha = 0 is the uniform
  plan itself, so per_layer is never worse than uniform on the held-back documents.

Cost per candidate: one mask + compensation (one small solve per layer) and one forward pass over
the held-back documents; it grows linearly with model size and held-back tokens."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from cusprun.adapters import Adapter
from cusprun.allocation.probe import DamageProbe
from cusprun.compensation.layer import head_channels
from cusprun.compensation.solve import compensate
from cusprun.plans.heads import HeadStructure
from cusprun.plans.select import Allocation, Selection, UnitScores, select_units, uniform_structures

log = logging.getLogger(__name__)


@dataclass
class Trial:
    label: str
    allocation: Allocation
    damage: float
    losses: dict[str, float]
    seconds: float
    per_doc: dict[str, list[tuple[float, int]]] = field(default_factory=dict, repr=False)


@dataclass
class SearchResult:
    best: Allocation
    selection: Selection
    trials: list[Trial] = field(default_factory=list)
    dense: dict[str, float] = field(default_factory=dict)
    z: float = 1.0

    def report(self, probe: DamageProbe) -> dict:
        """JSON-able summary for the plan's report."""
        return {
            "method": "held-back loss of masked candidates" + (
                f" with {probe.compensation.mode} compensation" if probe.compensation.enabled else ""),
            "chosen": self.best.label,
            "rule": "candidates in order (most heads kept first); a later one wins only with "
                    f"damage lower by more than {self.z:g} paired standard error(s) over the "
                    "held-back documents",
            "dense_heldback_loss": {k: round(v, 4) for k, v in self.dense.items()},
            "heldback_tokens": probe.n_tokens,
            "precision": probe.precision,
            "candidates": [{"label": t.label, "damage": round(t.damage, 4),
                            "heldback_loss": {k: round(v, 4) for k, v in t.losses.items()}}
                           for t in self.trials],
        }   # no timings: the plan is content (equal inputs give equal plans); the log has them


def _label(st: HeadStructure) -> str:
    return f"heads {st.groups}x{st.per_group}"


class _Search:
    def __init__(self, scores: UnitScores, adapter: Adapter, config: Any, probe: DamageProbe, *,
                 layout: str, target_ratio: float, ffn_multiple: int, z: float = 1.0):
        self.scores, self.adapter, self.config, self.probe = scores, adapter, config, probe
        self.layout, self.ratio, self.m = layout, target_ratio, ffn_multiple
        self.trials: list[Trial] = []
        self.sels: dict[str, Selection] = {}
        self.z = z

    def select(self, a: Allocation, layout: str) -> Selection:
        return select_units(self.scores, self.adapter, self.config, layout=layout,
                            target_ratio=self.ratio, ffn_multiple=self.m, allocation=a)

    def trial(self, a: Allocation, layout: str) -> Trial:
        t0 = time.perf_counter()
        sel = self.select(a, layout)
        losses = self.probe.losses(sel)
        t = Trial(a.label, a, self.probe.damage(losses), losses, time.perf_counter() - t0,
                  self.probe.per_doc)
        self.trials.append(t)
        self.sels[a.label] = sel
        log.info("allocation %s: damage %.4f (%s) in %.1fs", a.label, t.damage,
                 ", ".join(f"{k} {v:.3f}" for k, v in losses.items()), t.seconds)
        return t

    def best(self) -> Trial:
        """The first candidate, replaced by a later one only where that one's damage is lower
        beyond the noise of the held-back documents (`z` paired standard errors): candidates come
        in order of preference (most heads kept first), so a tie keeps the earlier one."""
        best = self.trials[0]
        for t in self.trials[1:]:
            if self.better(t, best):
                best = t
        return best

    def better(self, t: Trial, than: Trial) -> bool:
        if not t.per_doc or not than.per_doc:
            return t.damage < than.damage
        diff, se = self.probe.difference(t.per_doc, than.per_doc)
        return diff < -self.z * se


def _uniform_search(s: _Search, patience: int) -> Trial:
    n = s.adapter.dims(s.config).n_layers
    since = 0
    for st in uniform_structures(s.scores, s.adapter, s.config, target_ratio=s.ratio,
                                 ffn_multiple=s.m):
        before = s.best() if s.trials else None
        t = s.trial(Allocation((st,) * n, None, _label(st)), "uniform")
        since = 0 if before is None or s.better(t, before) else since + 1
        if since >= patience:
            break
    return s.best()


@torch.no_grad()
def layer_errors(sel: Selection, probe: DamageProbe) -> np.ndarray:
    """Per layer: compensated output error of down_proj + o_proj on the calibration tokens
    (from the Grams) over the squared norm of the residual stream entering the layer."""
    lm = probe.lm
    ad, d = lm.adapter, lm.dims
    out = []
    for li, keep in enumerate(sel.layers):
        g = probe.grams.layer(li)
        err = 0.0
        with lm.layer(li) as layer:     # streamed models: one layer's weights at a time
            for role, lin, cols in (("down", ad.down_proj(layer), keep.ffn),
                                    ("o", ad.o_proj(layer), head_channels(keep.heads, d.head_dim))):
                w = lin.weight.detach().double()
                kept, _ = compensate(w, None, cols, g.gram[role], g.total[role], g.n_tokens,
                                     mode="ls", ridge=probe.compensation.ridge)
                delta = w.clone()
                delta[:, cols] -= kept
                err += float(torch.einsum("oi,ij,oj->", delta, g.gram[role].to(delta), delta))
        out.append(err / max(g.resid_sq, 1e-30))
    return np.asarray(out)


def search_allocation(scores: UnitScores, adapter: Adapter, config: Any, probe: DamageProbe, *,
                      layout: str, target_ratio: float, ffn_multiple: int = 1, patience: int = 1,
                      alphas: tuple[float, ...] = (0.5, 1.0), z: float = 1.0) -> SearchResult:
    """The allocation (head structures, FFN widths) with the lowest measured damage, a later
    candidate winning only beyond z paired standard errors."""
    s = _Search(scores, adapter, config, probe, layout=layout, target_ratio=target_ratio,
                ffn_multiple=ffn_multiple, z=z)
    t0 = time.perf_counter()
    best = _uniform_search(s, patience)
    if layout == "per_layer":
        # The uniform winner's heads with equal FFN widths, placed per layer: it meets the
        # target to one neuron (a uniform selection only to one neuron per layer).
        heads = best.allocation.heads
        flat = s.trial(Allocation(heads, tuple([1.0] * len(heads)), f"{best.label}, FFN uniform"),
                       "per_layer")
        if probe.grams is not None:
            e = layer_errors(s.sels[flat.label], probe)
            removed = np.array([len(scores.ffn[0]) - len(k.ffn) for k in s.sels[flat.label].layers],
                               dtype=float)
            for alpha in alphas:
                share = removed * (e.mean() / np.maximum(e, 1e-30)) ** alpha
                s.trial(Allocation(heads, tuple(float(x) for x in share),
                                   f"{best.label}, FFN by layer error^-{alpha:g}"), "per_layer")
        best = s.best()
        if best.allocation.ffn_share is None:   # a uniform trial won: its per-layer placement
            best = flat
    log.info("allocation search (%s, %.2f): chose %s of %d candidates in %.1fs", layout, target_ratio,
             best.label, len(s.trials), time.perf_counter() - t0)
    return SearchResult(best.allocation, s.sels[best.label], s.trials, probe.dense, z)
