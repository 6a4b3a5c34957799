"""Retention vs pruning ratio: every method at several ratios, with and without compensation,
on the held-out loss sets, so a customer can pick a ratio by looking.

Each point is the dense model with the plan's units pruned (and compensated) in memory: one
dense load for the whole sweep (on CPU plus one copy, so that two points are measured at once:
cusprun.evaluation.replicas), FFN neurons cut out and heads zeroed per point, restored between
points (cusprun.engine.MaskSession). A model streamed from disk (cusprun.engine) measures every
point in one pass instead: each layer is read once and run under every point's mask. It computes what the sliced checkpoint computes
(tests/unit/test_compensation.py), so no checkpoint is written for a sweep point. The plans are the
same with and without compensation; only the closed-form correction differs, which isolates what
compensation contributes.

The sweep's forwards may run in bfloat16 (cusprun.models.precision; 'auto' where the hardware
has native bfloat16 matmuls): 0.56x the time per point on such a CPU; on the demo retention
moved by 0.0007 on average, at most 0.0023 for Cus-Prun (benchmarks/bench_sweep_precision.py).
Dense is then measured at the same precision, so every ratio in the table compares like with
like, and points the main comparison measured in float32 are measured again. Rows record what the
matmuls ran in (cusprun.models.precision.matmul_dtype): bfloat16 for a model loaded in bfloat16,
whatever the setting."""
from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cusprun.compensation import CompensationConfig, GramSet
from cusprun.engine import LayeredModel, MaskSession, Variant, plan_edit
from cusprun.evaluation.likelihood import encode_loss_set, encoded_loss, pad_id_of, score_sequences
from cusprun.evaluation.replicas import Workers, replicate, resolve_workers, run_jobs
from cusprun.models.loading import input_device
from cusprun.models.precision import compute_precision, matmul_dtype, resolve_precision

log = logging.getLogger(__name__)


def run_sweep(model, tokenizer, plans: Mapping[str, tuple[str, float, Any]],
              loss_sets: Mapping[str, Sequence[Any]], *, grams: GramSet | None, modes: Sequence[str],
              ridge: float, max_tokens: int = 256, batch_size: int = 8, progress: bool = True,
              known: Mapping[tuple[str, str], Mapping[str, tuple[float, int]]] | None = None,
              precision: str = "float32", workers: Workers = 1,
              own: Mapping[str, tuple[dict, Any]] | None = None) -> list[dict]:
    """Rows {method, ratio, compensation, eval_set, loss, n_tokens, retention, precision, seconds}
    for the dense model and for every plan (name -> (method, ratio, plan)) under every
    compensation mode; `seconds`: what measuring the point took (masking included; 0 when it
    was known). `own`: plans that bring their own compensation (FLAP's bias from general text),
    name -> ({mode, ridge}, its Grams or channel means): measured under it in place of `modes`'
    compensated settings, and also without when 'none' is in `modes`.
    `known`: (name, mode) -> {eval_set: (loss, n_tokens)} already measured in float32 on the
    sliced checkpoint (the published ratio), taken as they are instead of measured again;
    ('dense', 'none') likewise. Ignored unless the sweep's matmuls run in float32 (`precision`
    and the model's weights).
    `workers`: points measured at once, each on its own copy of the model
    (cusprun.evaluation.replicas; 'auto': two on CPU where memory allows). The rows are the
    same whatever the number."""
    streamed = isinstance(model, LayeredModel) and model.checkpoint is not None
    device = model.device if isinstance(model, LayeredModel) else input_device(model)
    weights = (model.dtype if isinstance(model, LayeredModel)
               else model.get_input_embeddings().weight.dtype)
    ran_in = matmul_dtype(precision, device, weights)
    precision = resolve_precision(precision, device)
    known = (known or {}) if ran_in == "float32" else {}
    settings = _settings(plans, modes, ridge, grams, own or {})
    for (name, mode), (_, source) in settings.items():
        if mode != "none" and source is None and (name, mode) not in known:
            raise ValueError(f"sweep point {name} with compensation {mode!r} needs Grams")
    jobs = [("dense", "none")] + list(settings)
    todo = [j for j in jobs if j not in known]
    encoded = {s: encode_loss_set(tokenizer, ex, max_tokens=max_tokens, name=s)
               for s, ex in loss_sets.items()}          # once, in this thread (see replicas)
    pad_id = pad_id_of(tokenizer)
    if streamed:
        measured = _one_pass(model, todo, plans, encoded, settings=settings,
                             batch_size=batch_size, pad_id=pad_id, precision=precision,
                             progress=progress)
        return _rows(jobs, plans, measured, known, ran_in)
    if isinstance(model, LayeredModel):
        model = model.model
    n = min(resolve_workers(workers, model), max(len(todo), 1))
    sessions = [MaskSession(m) for m in replicate(model, n)]
    if n > 1:
        log.info("ratio sweep: %d points, %d at a time (one model copy each)", len(todo), n)

    def measure(session: MaskSession, job: tuple[str, str]) -> tuple[dict, float]:
        name, mode = job
        t0 = time.perf_counter()
        if name == "dense":
            session.restore()
        else:
            config, source = settings[job]
            session.apply(plans[name][2], grams=source, config=config)
        out = {}
        with compute_precision(device, precision):
            for set_name, enc in encoded.items():
                r = encoded_loss(session.model, enc, pad_id=pad_id, batch_size=batch_size,
                                 name=set_name, progress=False)
                out[set_name] = (r.loss, r.n_tokens)
        spent = time.perf_counter() - t0
        if name != "dense":
            log.info("sweep %s (compensation %s) done in %.1fs", name, mode, spent)
        return out, spent

    try:
        measured = dict(zip(todo, run_jobs(sessions, todo, measure, desc="ratio sweep",
                                           progress=progress)))
    finally:
        for session in sessions:
            session.restore()
        del sessions
    return _rows(jobs, plans, measured, known, ran_in)


def _settings(plans, modes: Sequence[str], ridge: float, grams, own: Mapping[str, tuple[dict, Any]]
              ) -> dict[tuple[str, str], tuple[CompensationConfig, Any]]:
    """(plan name, mode) -> (compensation config, Grams or channel means) of every sweep point,
    in measuring order: each plan under `modes`, or under its own compensation and 'none'."""
    out = {}
    for name in plans:
        if name in own:
            comp, source = own[name]
            points = [(comp["mode"], comp.get("ridge", 0.0), source)]
            points += [("none", 0.0, None)] if "none" in modes else []
        else:
            points = [(m, ridge, grams) for m in modes]
        for mode, r, source in points:
            out.setdefault((name, mode), (CompensationConfig(mode=mode, ridge=r),
                                          source if mode != "none" else None))
    return out


def _one_pass(lm: LayeredModel, todo: list[tuple[str, str]], plans, encoded, *, settings: dict,
              batch_size: int, pad_id: int, precision: str, progress: bool) -> dict:
    """Every point as a variant of one pass over a streamed model (see module docstring)."""
    t0 = time.perf_counter()
    variants = [Variant(f"{name}|{mode}", None if name == "dense" else plan_edit(
        lm.adapter, lm.dims, plans[name][2], grams=settings[(name, mode)][1],
        config=settings[(name, mode)][0])) for name, mode in todo]
    seqs = [e for enc in encoded.values() for e in enc]
    with compute_precision(lm.device, precision):
        scored = score_sequences(lm, seqs, batch_size=batch_size, pad_id=pad_id,
                                 desc="ratio sweep (one pass)", progress=progress, variants=variants)
    spent = (time.perf_counter() - t0) / max(len(todo), 1)
    out = {}
    for (name, mode), v in zip(todo, variants):
        per, start = {}, 0
        for set_name, enc in encoded.items():
            part = scored[v.name][start:start + len(enc)]
            start += len(enc)
            n_tok = sum(n for _, n in part)
            per[set_name] = (-sum(lp for lp, _ in part) / max(n_tok, 1), n_tok)
        out[(name, mode)] = (per, spent)
    return out


def _rows(jobs, plans, measured: dict, known: Mapping, precision: str) -> list[dict]:
    results = {j: measured[j] if j in measured else (dict(known[j]), 0.0) for j in jobs}
    dense = results[("dense", "none")][0]
    rows = []
    for name, mode in jobs:
        values, spent = results[(name, mode)]
        method, ratio = ("dense", 0.0) if name == "dense" else plans[name][:2]
        for s, (l, n_tok) in values.items():
            rows.append({"method": method, "ratio": float(ratio), "compensation": mode,
                         "eval_set": s, "loss": l, "n_tokens": n_tok,
                         "retention": 1.0 if name == "dense" else
                         (dense[s][0] / l if l > 0 else math.nan),
                         "precision": precision, "seconds": spent})
    return rows


def _table(rows: list[dict]) -> dict[tuple[str, float, str], dict[str, float]]:
    out: dict[tuple[str, float, str], dict[str, float]] = defaultdict(dict)
    for r in rows:
        out[(r["method"], r["ratio"], r["compensation"])][r["eval_set"]] = r["retention"]
    return out


def sweep_markdown(rows: list[dict], own_sets: Sequence[str]) -> str:
    """Loss retention (dense loss / model loss, 1 = dense) per method, ratio and compensation."""
    if not rows:
        return ""
    sets = sorted({r["eval_set"] for r in rows})
    own = [s for s in own_sets if s in sets]
    table = _table(rows)
    precision = rows[0].get("precision", "float32")
    head = ["method", "ratio", "compensation", *sets] + (["mean of expert's sets"] if own else [])
    lines = ["## Retention vs pruning ratio", "",
             "Held-out loss retention (dense loss / model loss; 1.000 = dense) of every method at "
             "every sweep ratio, with and without compensation (same plans; only the closed-form "
             "correction differs; each method under its own: the build's, or the one the method "
             f"defines, e.g. flap's bias), measured in {precision} (dense too). Bold: best method "
             "at that ratio, compensated or not, on the mean of the expert's own sets.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    best: dict[tuple[float, bool], float] = {}     # (ratio, compensated): best mean
    for (m, ratio, comp), v in table.items():
        if m != "dense" and own:
            score = sum(v[s] for s in own) / len(own)
            best[(ratio, comp != "none")] = max(best.get((ratio, comp != "none"), -1.0), score)
    order = sorted(table, key=lambda k: (k[1], k[2] == "none", k[0] != "cusprun", k[0]))
    for key in order:
        m, ratio, comp = key
        v = table[key]
        cells = [m, f"{ratio:.2f}", comp, *[f"{v[s]:.3f}" if s in v else "" for s in sets]]
        if own:
            mean = sum(v[s] for s in own) / len(own)
            txt = f"{mean:.3f}"
            top = m != "dense" and abs(mean - best[(ratio, comp != "none")]) < 1e-12
            cells.append(f"**{txt}**" if top else txt)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_sweep(rows: list[dict], path: str | Path, own_sets: Sequence[str]) -> Path | None:
    """One panel per eval set plus the mean of the expert's own sets; a line per method, solid
    with compensation, dashed without."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        return None
    table = _table(rows)
    sets = sorted({r["eval_set"] for r in rows})
    own = [s for s in own_sets if s in sets]
    panels = ([("mean of the expert's sets", own)] if own else []) + [(s, [s]) for s in sets]
    methods = sorted({k[0] for k in table if k[0] != "dense"}, key=lambda m: (m != "cusprun", m))
    colors = {m: plt.cm.tab10(i) for i, m in enumerate(methods)}
    cols = min(3, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.6 * cols, 3.6 * nrows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (title, members) in zip(axes.flat, panels):
        for m in methods:
            for comp in sorted({k[2] for k in table if k[0] == m}):
                pts = sorted((k[1], sum(v[s] for s in members) / len(members))
                             for k, v in table.items() if k[0] == m and k[2] == comp
                             and all(s in v for s in members))
                if pts:
                    pts = [(0.0, 1.0), *pts]
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3,
                            color=colors[m], ls="-" if comp != "none" else "--",
                            lw=2.2 if m == "cusprun" else 1.2,
                            label=f"{m} ({'no comp.' if comp == 'none' else comp})")
        ax.axhline(1.0, color="gray", lw=0.8, ls=":")
        ax.set_ylim(bottom=0)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("removed fraction of prunable parameters")
        ax.set_ylabel("loss retention (1 = dense)")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(5, len(labels)), fontsize=7)
    fig.suptitle("Held-out loss retention vs pruning ratio (solid: compensated, dashed: not)")
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
