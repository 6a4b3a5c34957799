"""Shared unit selection: scores in, kept units per layer out. Used by Cus-Prun and every baseline.

All units (FFN neurons and query heads of every layer) get one total order by
(score, tie-break, unit type, layer, index), so equal scores never make results depend on
anything but the inputs. Removing the lowest-ranked units until the target is met fixes how many
heads each layer "wants" to lose; heads are then snapped to a valid grouped-query structure and
FFN neurons absorb the remaining budget (they are the fine-grained unit). An `Allocation` (from
the measured search in cusprun.allocation) fixes the head structures and per-layer FFN shares
instead. FFN width alignment (ffn_multiple) lives in cusprun.plans.align."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cusprun.adapters import Adapter
from cusprun.errors import SpecError
from cusprun.plans.align import align_note, align_removed, distribute
from cusprun.plans.config import check_ratio
from cusprun.plans.heads import HeadStructure, choose_heads, structure_cost, valid_structures
from cusprun.plans.plan import LayerKeep, PruningPlan


@dataclass
class UnitScores:
    """Per-unit importance (higher = keep). Optional tie-breaks (higher = keep) and protection."""

    ffn: np.ndarray                       # [L, I]
    heads: np.ndarray                     # [L, H]
    ffn_tie: np.ndarray | None = None
    heads_tie: np.ndarray | None = None
    ffn_protected: np.ndarray | None = None     # bool [L, I]: never pruned
    heads_protected: np.ndarray | None = None   # bool [L, H]


@dataclass
class Selection:
    layers: list[LayerKeep]
    prunable_params: int
    removed_params: int
    target_params: int | None
    report: dict = field(default_factory=dict)

    @property
    def achieved_ratio(self) -> float:
        return self.removed_params / self.prunable_params


def global_ranks(s: UnitScores) -> tuple[np.ndarray, np.ndarray]:
    """Unique rank of every unit (0 = pruned first) over both unit types and all layers."""
    L, I = s.ffn.shape
    H = s.heads.shape[1]
    zeros = lambda a: np.zeros_like(a, dtype=np.float64)  # noqa: E731
    score = np.concatenate([s.ffn.ravel(), s.heads.ravel()]).astype(np.float64)
    tie = np.concatenate([(s.ffn_tie if s.ffn_tie is not None else zeros(s.ffn)).ravel(),
                          (s.heads_tie if s.heads_tie is not None else zeros(s.heads)).ravel()])
    kind = np.concatenate([np.zeros(L * I), np.ones(L * H)])
    layer = np.concatenate([np.repeat(np.arange(L), I), np.repeat(np.arange(L), H)])
    index = np.concatenate([np.tile(np.arange(I), L), np.tile(np.arange(H), L)])
    order = np.lexsort((index, layer, kind, tie, score))
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank[:L * I].reshape(L, I), rank[L * I:].reshape(L, H)


class _Ctx:
    """Everything the selection needs about one model and one set of scores."""

    def __init__(self, scores: UnitScores, adapter: Adapter, config: Any) -> None:
        self.adapter, self.config = adapter, config
        self.dims = d = adapter.dims(config)
        if scores.ffn.shape != (d.n_layers, d.ffn) or scores.heads.shape != (d.n_layers, d.n_heads):
            raise SpecError(f"Scores of shape ffn {tuple(scores.ffn.shape)}, heads "
                            f"{tuple(scores.heads.shape)} do not fit the model: expected "
                            f"({d.n_layers}, {d.ffn}) and ({d.n_layers}, {d.n_heads}).")
        self.unit = adapter.unit_params(config)
        self.prunable = adapter.prunable_params(config)
        self.ffn_rank, self.head_rank = global_ranks(scores)
        self.ffn_prot = (scores.ffn_protected if scores.ffn_protected is not None
                         else np.zeros(scores.ffn.shape, bool))
        self.head_prot = (scores.heads_protected if scores.heads_protected is not None
                          else np.zeros(scores.heads.shape, bool))
        structs = valid_structures(adapter, config, d)
        # Per layer: feasible structures (protection respected), cheapest first, their choices.
        self.options: list[list[tuple[HeadStructure, int, tuple[list[int], list[int]]]]] = []
        for li in range(d.n_layers):
            opts = []
            for st in structs:
                ch = choose_heads(self.head_rank[li], self.head_prot[li], d, st)
                if ch is not None:
                    opts.append((st, structure_cost(st, d, self.unit), ch))
            opts.sort(key=lambda o: (o[1], -o[0].heads))
            self.options.append(opts)
        # FFN neurons each layer may lose, least important first (keep >= 1, keep protected).
        self.removable: list[np.ndarray] = []
        for li in range(d.n_layers):
            order = np.argsort(self.ffn_rank[li], kind="stable")
            order = order[~self.ffn_prot[li][order]]
            if not self.ffn_prot[li].any():
                order = order[:-1]
            self.removable.append(order)

    def align(self, ffn_removed: list[np.ndarray], m: int) -> list[np.ndarray]:
        """ffn_removed re-cut to widths that are multiples of m (cusprun.plans.align)."""
        return align_removed(ffn_removed, self.removable, self.ffn_rank, self.dims.ffn, m)

    def align_note(self, m: int, per: str) -> list[str]:
        return align_note(self.dims.ffn, m, per)

    def desired_head_cost(self, target: int) -> np.ndarray:
        """Head parameters per layer that the unconstrained lowest-rank prefix would remove."""
        d, u = self.dims, self.unit
        head_unit = u["query_head"] + u["kv_group"] / d.group_size
        rank = np.concatenate([self.ffn_rank.ravel(), self.head_rank.ravel()])
        cost = np.concatenate([np.full(self.ffn_rank.size, float(u["ffn_neuron"])),
                               np.full(self.head_rank.size, head_unit)])
        free = ~np.concatenate([self.ffn_prot.ravel(), self.head_prot.ravel()])
        is_head = np.arange(rank.size) >= self.ffn_rank.size
        order = np.argsort(rank)
        order = order[free[order]]
        n = int(np.searchsorted(np.cumsum(cost[order]), target, side="left")) + 1 if target > 0 else 0
        prefix = order[:n]
        prefix = prefix[is_head[prefix]] - self.ffn_rank.size
        out = np.zeros(d.n_layers)
        np.add.at(out, prefix // d.n_heads, head_unit)
        return out


def _nearest(opts, desired: float) -> int:
    return min(range(len(opts)), key=lambda i: (abs(opts[i][1] - desired), -opts[i][0].heads, i))


def _unreachable(ctx: _Ctx, target: int, best: int) -> SpecError:
    return SpecError(
        f"Target of {target} parameters ({target / ctx.prunable:.3f} of prunable) is unreachable: "
        f"with at least one neuron and one head per layer, a valid head structure and protected "
        f"units kept, at most {best} ({best / ctx.prunable:.3f}) can be removed. Lower target_ratio "
        f"or protect_fraction.")


def _finish(ctx: _Ctx, picks: list[int], ffn_removed: list[np.ndarray], target: int | None,
            notes: list[str]) -> Selection:
    d, u = ctx.dims, ctx.unit
    layers, removed = [], 0
    structs = []
    for li in range(d.n_layers):
        st, cost, (heads, groups) = ctx.options[li][picks[li]]
        keep_ffn = sorted(set(range(d.ffn)) - set(int(k) for k in ffn_removed[li]))
        layers.append(LayerKeep(ffn=keep_ffn, heads=heads, kv_heads=groups))
        removed += cost + (d.ffn - len(keep_ffn)) * u["ffn_neuron"]
        structs.append(f"{st.groups}x{st.per_group}")
    report = {
        "removed_units": {"ffn_neurons": sum(d.ffn - len(l.ffn) for l in layers),
                          "query_heads": sum(d.n_heads - len(l.heads) for l in layers),
                          "kv_groups": sum(d.n_kv_heads - len(l.kv_heads) for l in layers)},
        "kept_per_layer": {"ffn": [len(l.ffn) for l in layers], "heads": [len(l.heads) for l in layers],
                           "kv_heads": [len(l.kv_heads) for l in layers]},
        "head_structure_per_layer": structs,
        "unit_params": dict(u),
        "target_params": target, "removed_params": removed,
        "deviation_params": None if target is None else removed - target,
        "notes": notes,
    }
    return Selection(layers, ctx.prunable, removed, target, report)


def _per_layer(ctx: _Ctx, target: int, m: int = 1) -> Selection:
    d, u = ctx.dims, ctx.unit
    desired = ctx.desired_head_cost(target)
    picks = [_nearest(ctx.options[li], desired[li]) for li in range(d.n_layers)]
    head_cost = lambda: sum(ctx.options[li][p][1] for li, p in enumerate(picks))  # noqa: E731

    def removed_heads_rank(li):  # most important head this layer currently drops
        kept = set(ctx.options[li][picks[li]][2][0])
        return max((ctx.head_rank[li][h] for h in range(d.n_heads) if h not in kept), default=-1)

    def weakest_kept(li):
        return min(ctx.head_rank[li][h] for h in ctx.options[li][picks[li]][2][0])

    while head_cost() > target:   # heads overshoot: give back the most important dropped heads
        li = max((li for li in range(d.n_layers) if picks[li] > 0), key=removed_heads_rank)
        picks[li] -= 1
    capacity = sum(len(r) for r in ctx.removable) * u["ffn_neuron"]
    while target - head_cost() > capacity + u["ffn_neuron"] / 2:   # FFN cannot absorb the rest
        can = [li for li in range(d.n_layers) if picks[li] + 1 < len(ctx.options[li])]
        if not can:
            raise _unreachable(ctx, target, head_cost() + capacity)
        picks[min(can, key=weakest_kept)] += 1
    n = min(int(round((target - head_cost()) / u["ffn_neuron"])), capacity // u["ffn_neuron"])
    n = max(n, 0)
    pool = np.concatenate([np.stack([np.full(len(r), li), r], 1) for li, r in enumerate(ctx.removable)
                           if len(r)] or [np.zeros((0, 2), int)])
    order = np.argsort(ctx.ffn_rank[pool[:, 0], pool[:, 1]], kind="stable") if len(pool) else []
    chosen = pool[order[:n]] if len(pool) else pool
    ffn_removed = ctx.align([chosen[chosen[:, 0] == li, 1] for li in range(d.n_layers)], m)
    notes = ["per_layer: heads snapped per layer to valid grouped-query structures; FFN neurons "
             "fill the rest, so the result is within half a neuron's parameters of the target"]
    notes += ctx.align_note(m, "in all")
    return _finish(ctx, picks, ffn_removed, target, notes)


def uniform_structures(scores: UnitScores, adapter: Adapter, config: Any, *, target_ratio: float,
                       ffn_multiple: int = 1) -> list[HeadStructure]:
    """Head structures a uniform plan can use at this target (every layer can take it and the FFN
    can absorb the rest), most kept heads first: the candidates of an allocation search."""
    ctx = _Ctx(scores, adapter, config)
    return [o[0] for o in _uniform_fits(ctx, int(round(target_ratio * ctx.prunable)))]


def _per_layer_given(ctx: _Ctx, target: int, m: int, structures: list[HeadStructure],
                     ffn_share: list[float]) -> Selection:
    """Per-layer plan with the given head structure per layer and the FFN removal split over
    layers by `ffn_share`; within a layer the lowest-ranked neurons go first."""
    d, u = ctx.dims, ctx.unit
    if len(structures) != d.n_layers or len(ffn_share) != d.n_layers:
        raise SpecError(f"An allocation needs one head structure and one FFN share per layer "
                        f"({d.n_layers}); got {len(structures)} and {len(ffn_share)}.")
    picks = []
    for li, st in enumerate(structures):
        idx = next((i for i, o in enumerate(ctx.options[li]) if o[0] == st), None)
        if idx is None:
            raise SpecError(f"Layer {li} cannot take head structure {st.groups}x{st.per_group} "
                            "(protected heads); choose another allocation.")
        picks.append(idx)
    head_cost = sum(ctx.options[li][p][1] for li, p in enumerate(picks))
    caps = [len(r) for r in ctx.removable]
    n = int(round((target - head_cost) / u["ffn_neuron"]))
    if n < 0 or n > sum(caps):
        raise _unreachable(ctx, target, head_cost + sum(caps) * u["ffn_neuron"]) if n > 0 else SpecError(
            f"The allocation's heads alone remove {head_cost} parameters, more than the target {target}.")
    counts = distribute(n, ffn_share, caps)
    ffn_removed = ctx.align([ctx.removable[li][:c] for li, c in enumerate(counts)], m)
    notes = ["per_layer allocation: head structure and FFN width per layer set by the allocation "
             "search; within a layer the lowest-scored neurons are removed"] + ctx.align_note(m, "in all")
    return _finish(ctx, picks, ffn_removed, target, notes)


def _uniform_fits(ctx: _Ctx, target: int) -> list:
    d, u = ctx.dims, ctx.unit
    L = d.n_layers
    common = [o for o in ctx.options[0]
              if all(any(p[0] == o[0] for p in ctx.options[li]) for li in range(L))]
    cap = min(len(r) for r in ctx.removable)
    fits = [o for o in common if L * o[1] <= target
            and target - L * o[1] <= (cap + 0.5) * L * u["ffn_neuron"]]
    if not fits:
        best = max(L * o[1] for o in common) + cap * L * u["ffn_neuron"]
        raise _unreachable(ctx, target, best)
    return sorted(fits, key=lambda o: (-o[0].heads, -o[0].groups))


def _uniform(ctx: _Ctx, target: int, m: int = 1, structure: HeadStructure | None = None) -> Selection:
    d, u = ctx.dims, ctx.unit
    L = d.n_layers
    cap = min(len(r) for r in ctx.removable)
    fits = _uniform_fits(ctx, target)
    if structure is not None:
        if not any(o[0] == structure for o in fits):
            raise SpecError(f"Head structure {structure.groups}x{structure.per_group} cannot meet a "
                            f"target of {target} parameters with a uniform layout; feasible: "
                            f"{', '.join(f'{o[0].groups}x{o[0].per_group}' for o in fits)}.")
        st = structure
    else:
        desired = float(ctx.desired_head_cost(target).mean())
        st = min(fits, key=lambda o: (abs(o[1] - desired), -o[0].heads))[0]
    picks = [next(i for i, o in enumerate(ctx.options[li]) if o[0] == st) for li in range(L)]
    c = min(cap, max(0, int(round((target - L * structure_cost(st, d, u)) / (L * u["ffn_neuron"])))))
    if m > 1:   # the aligned width (down or up) whose total lands nearest the target
        fixed = L * structure_cost(st, d, u)
        lo, exact = d.ffn - cap, d.ffn - c
        options = {w for w in (exact // m * m, -(-exact // m) * m) if lo <= w <= d.ffn and w >= m}
        options = sorted(options or {min([w for w in range(m, d.ffn + 1, m) if w >= lo], default=d.ffn)})
        w = min(options, key=lambda w: (abs(fixed + L * (d.ffn - w) * u["ffn_neuron"] - target), -w))
        c = d.ffn - w
    ffn_removed = [r[:c] for r in ctx.removable]
    granularity = m * L * u["ffn_neuron"]
    notes = [f"uniform: every layer keeps {d.ffn - c} FFN neurons and {st.heads} query heads in "
             f"{st.groups} key/value groups (a stock config); granularity is {m} FFN neuron(s) per layer "
             f"({granularity} parameters)"] + ctx.align_note(m, "per layer")
    return _finish(ctx, picks, ffn_removed, target, notes)


def _check_multiple(ctx: _Ctx, m: int) -> int:
    if not isinstance(m, int) or isinstance(m, bool) or not 1 <= m <= ctx.dims.ffn:
        raise SpecError(f"ffn_multiple={m!r} must be an integer from 1 (exact widths) to the model's "
                        f"FFN width {ctx.dims.ffn}; 64 or 128 suit CPU and GPU matmuls.")
    return m


@dataclass(frozen=True)
class Allocation:
    """How a plan spends its budget: the head structure of every layer and, for per_layer, each
    layer's share of the FFN removal (None: the lowest global ranks decide)."""

    heads: tuple[HeadStructure, ...]
    ffn_share: tuple[float, ...] | None = None
    label: str = ""


def select_units(scores: UnitScores, adapter: Adapter, config: Any, *, layout: str,
                 target_ratio: float | None = None, target_params: int | None = None,
                 ffn_multiple: int = 1, allocation: Allocation | None = None) -> Selection:
    """Remove the lowest-ranked units until target_params (or target_ratio of prunable) is met.
    ffn_multiple > 1 rounds every layer's kept FFN width to a multiple of it. An `allocation`
    fixes the head structures (and per_layer FFN shares) instead of the global rank order."""
    if layout not in ("uniform", "per_layer"):
        raise SpecError(f"Unknown layout {layout!r}; allowed: 'uniform', 'per_layer'.")
    ctx = _Ctx(scores, adapter, config)
    m = _check_multiple(ctx, ffn_multiple)
    if target_params is None:
        check_ratio(target_ratio)
        target_params = int(round(target_ratio * ctx.prunable))
    t = int(target_params)
    if allocation is None:
        sel = (_uniform if layout == "uniform" else _per_layer)(ctx, t, m)
    elif layout == "uniform":
        if len(set(allocation.heads)) != 1:
            raise SpecError("A uniform layout needs the same head structure in every layer.")
        sel = _uniform(ctx, t, m, structure=allocation.heads[0])
    elif allocation.ffn_share is None:
        sel = _per_layer_given(ctx, t, m, list(allocation.heads),
                               [float(len(r)) for r in ctx.removable])
    else:
        sel = _per_layer_given(ctx, t, m, list(allocation.heads), list(allocation.ffn_share))
    if allocation is not None:
        sel.report["allocation"] = allocation.label
    per_step = ctx.dims.n_layers if layout == "uniform" else 1
    sel.report["granularity_params"] = ctx.unit["ffn_neuron"] * per_step * m
    sel.report["ffn_multiple"] = m
    return sel


def select_sets(scores: UnitScores, adapter: Adapter, config: Any, *, ffn_remove: np.ndarray,
                heads_remove: np.ndarray, ffn_multiple: int = 1) -> Selection:
    """Per-layer selection of given removal sets (paper rule): FFN as given (keeping protected
    units and one neuron per layer), heads snapped to the nearest valid structure by cost."""
    ctx = _Ctx(scores, adapter, config)
    m = _check_multiple(ctx, ffn_multiple)
    d, u = ctx.dims, ctx.unit
    picks, ffn_removed = [], []
    for li in range(d.n_layers):
        rm = heads_remove[li] & ~ctx.head_prot[li]
        whole = sum(bool(rm[j * d.group_size:(j + 1) * d.group_size].all()) for j in range(d.n_kv_heads))
        picks.append(_nearest(ctx.options[li], rm.sum() * u["query_head"] + whole * u["kv_group"]))
        allowed = set(int(k) for k in ctx.removable[li])
        ffn_removed.append(np.array([k for k in np.flatnonzero(ffn_remove[li]) if k in allowed], int))
    notes = ["paper rule, per_layer: FFN neurons irrelevant to every dimension are pruned; heads are "
             "snapped per layer to the nearest valid grouped-query structure"] + ctx.align_note(m, "per layer")
    sel = _finish(ctx, picks, ctx.align(ffn_removed, m), None, notes)
    sel.report["ffn_multiple"] = m
    return sel


def to_plan(sel: Selection, *, adapter: Adapter, method: str, layout: str, base_fingerprint: str,
            target_ratio: float | None, rule: str | None = None, report: dict | None = None) -> PruningPlan:
    return PruningPlan(
        base_fingerprint=base_fingerprint, architecture=adapter.architecture, method=method, rule=rule,
        layout=layout, target_ratio=target_ratio, achieved_ratio=sel.achieved_ratio,
        prunable_params=sel.prunable_params, removed_params=sel.removed_params, layers=sel.layers,
        report={**sel.report, **(report or {})})
