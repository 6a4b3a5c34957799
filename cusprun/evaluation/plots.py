"""PNG plots (matplotlib Agg): retention vs pruning ratio, and overlap of kept units."""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

from cusprun.evaluation.config import EvaluationError

# Panels of the summary plot: metric family -> metric averaged over its eval sets.
SUMMARY_PANELS = {"loss": "loss", "mc accuracy": "mc_accuracy",
                  "size (non-embedding params)": "params_non_embedding",
                  "speed (decode tokens/s)": "decode_tokens_per_s"}


def _pyplot():
    """matplotlib's pyplot on the Agg backend, imported when a plot is drawn: importing it costs
    a second and, in a fresh home directory, builds a font cache and logs it, which a command
    that fails on bad input must not print."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def overlap_matrix(kept: Mapping[str, Iterable]) -> dict[tuple[str, str], float]:
    """Jaccard overlap |A & B| / |A | B| of the kept unit ids for every pair of dimensions."""
    sets = {k: set(v) for k, v in kept.items()}
    out = {}
    for a in sets:
        for b in sets:
            union = sets[a] | sets[b]
            out[(a, b)] = len(sets[a] & sets[b]) / len(union) if union else 1.0
    return out


def plot_overlap(overlap: Mapping[tuple[str, str], float], path: str | Path, *,
                 title: str = "Overlap of kept units") -> Path:
    """Heatmap of a pairwise overlap; (a, b) alone fills (b, a) too; missing pairs are blank."""
    if not overlap:
        raise EvaluationError("plot_overlap needs at least one (a, b) -> value pair.")
    plt = _pyplot()
    names: list[str] = []
    for pair in overlap:
        for n in pair:
            if n not in names:
                names.append(n)
    idx = {n: i for i, n in enumerate(names)}
    m = [[math.nan] * len(names) for _ in names]
    for (a, b), v in overlap.items():
        m[idx[a]][idx[b]] = float(v)
        if (b, a) not in overlap:
            m[idx[b]][idx[a]] = float(v)
    size = 1.2 + 0.9 * len(names)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    im = ax.imshow(m, vmin=0.0, vmax=1.0, cmap="viridis")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(names)):
            if not math.isnan(m[i][j]):
                ax.text(j, i, f"{m[i][j]:.2f}", ha="center", va="center",
                        color="white" if m[i][j] < 0.6 else "black", fontsize=8)
    fig.colorbar(im, ax=ax)
    ax.set_title(title)
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _lines(rows: list[dict], metric: str, eval_set: str | None) -> dict[str, list[tuple[float, float]]]:
    """method -> sorted (ratio, mean retention) points; dense contributes (0, 1) to every line."""
    acc: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    has_dense = False
    for r in rows:
        if r["metric"] != metric or (eval_set is not None and r["eval_set"] != eval_set):
            continue
        if r["retention"] is None or math.isnan(r["retention"]):
            continue
        if r["method"] == "dense":
            has_dense = True
            continue
        acc[r["method"]][r["ratio"]].append(r["retention"])
    out = {}
    for method, by_ratio in acc.items():
        pts = [(ratio, sum(v) / len(v)) for ratio, v in by_ratio.items()]
        if has_dense:
            pts.append((0.0, 1.0))
        out[method] = sorted(pts)
    return out


def _panels(panels: list[tuple[str, dict]], path: str | Path, title: str) -> Path | None:
    plt = _pyplot()
    panels = [(t, lines) for t, lines in panels if lines]
    if not panels:
        return None
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.3 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (ptitle, lines) in zip(axes.flat, panels):
        for method, pts in sorted(lines.items()):
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=method)
        ax.axhline(1.0, color="gray", lw=0.8, ls="--")
        ax.set_title(ptitle, fontsize=10)
        ax.set_xlabel("pruning ratio")
        ax.set_ylabel("retention (1 = dense)")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)


def plot_retention(rows: list[dict], path: str | Path) -> Path | None:
    """Retention vs pruning ratio, one line per method, one panel per metric family (mean over
    that family's eval sets). Returns None when no row has a retention (no dense model)."""
    panels = [(title, _lines(rows, metric, None)) for title, metric in SUMMARY_PANELS.items()]
    return _panels(panels, path, "Retention vs pruning ratio (mean over eval sets)")


def plot_retention_by_set(rows: list[dict], path: str | Path) -> Path | None:
    """Retention vs pruning ratio, one panel per (loss or MC accuracy, eval set)."""
    keys = sorted({(r["metric"], r["eval_set"]) for r in rows
                   if r["metric"] in ("loss", "mc_accuracy")})
    panels = [(f"{m}: {s}", _lines(rows, m, s)) for m, s in keys]
    return _panels(panels, path, "Retention vs pruning ratio per eval set")


def plot_layer_overlap(rows: list[dict], names: list[str], path: str | Path, *,
                       unit: str = "FFN neurons") -> Path:
    """Stacked bars per layer of the units any expert keeps: shared by all, by some, and specific
    to each expert; the mean pairwise Jaccard index as a line on a second axis."""
    plt = _pyplot()
    if not rows:
        raise EvaluationError("plot_layer_overlap needs at least one layer.")
    layers = [r["layer"] for r in rows]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(layers) + 2.5), 4.2))
    bottom = [0.0] * len(rows)
    parts = [("shared by all", [r["shared_by_all"] for r in rows], "#3b6ea5"),
             ("shared by some", [r["shared_by_some"] for r in rows], "#9bbbd9")]
    palette = plt.get_cmap("Set2")
    parts += [(f"only {n}", [r["specific"][n] for r in rows], palette(i % 8))
              for i, n in enumerate(names)]
    for label, vals, colour in parts:
        ax.bar(layers, vals, bottom=bottom, label=label, color=colour, width=0.8)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_ylim(0, 1)
    ax.set_xticks(layers, [str(x) for x in layers], fontsize=7 if len(layers) > 24 else 9)
    ax.set_xlabel("layer")
    ax.set_ylabel(f"share of the {unit} any expert keeps")
    twin = ax.twinx()
    twin.plot(layers, [r["mean_jaccard"] for r in rows], color="black", marker="o", ms=3,
              lw=1.2, label="mean pairwise Jaccard")
    twin.set_ylim(0, 1)
    twin.set_ylabel("mean pairwise Jaccard")
    handles, labels = ax.get_legend_handles_labels()
    h2, l2 = twin.get_legend_handles_labels()
    ax.legend(handles + h2, labels + l2, fontsize=7, loc="lower left", ncol=2)
    ax.set_title(f"Kept {unit} of experts {', '.join(names)}: shared vs expert-specific")
    return _save(fig, path)


def plot_loss_curves(curves: Mapping[str, list[dict]], path: str | Path, *,
                     title: str = "Healing: training loss") -> Path:
    """Training loss against tokens seen, one line per healed model (points: the recorded
    steps of healing.json; the line: a running mean over about a tenth of them)."""
    if not curves or not any(curves.values()):
        raise EvaluationError("plot_loss_curves needs at least one non-empty curve.")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    for name, curve in curves.items():
        x = [p["tokens"] for p in curve]
        y = [p["loss"] for p in curve]
        w = max(1, len(y) // 10)
        smooth = [sum(y[max(0, i - w + 1):i + 1]) / len(y[max(0, i - w + 1):i + 1])
                  for i in range(len(y))]
        line, = ax.plot(x, smooth, label=name, linewidth=1.5)
        ax.scatter(x, y, s=4, alpha=0.3, color=line.get_color())
    ax.set_xlabel("training tokens")
    ax.set_ylabel("loss (KL to dense x T^2 + LM, weighted)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
