"""The report's healing section: each healed model beside its one-shot slice (loss and
accuracy per set, retention of both), what healing cost (tokens, wall time, device) and the
loss curves plot."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from cusprun.evaluation.markdown import fmt
from cusprun.evaluation.report import ComparisonReport

PLOT = "healing_loss.png"


def _kept(row) -> str:
    return f"{row.retention:.3f}" if row is not None and row.retention is not None else "–"


def healing_markdown(report: ComparisonReport, pairs: Mapping[str, tuple[str, dict]],
                     out: Path | None = None) -> str:
    """`pairs`: healed model name -> (its one-shot model's name, its healing record: what
    healing.json holds). With `out`, the loss curves are plotted there (PLOT)."""
    idx = {(r.model, r.metric, r.eval_set): r for r in report.rows}
    lines = ["## Healing", "",
             "Each healed model is its one-shot slice after distillation from the dense model "
             "(same tensors and shapes) on the training side of the calibration corpora and "
             "general text, never on these held-out sets. Kept: retention relative to dense.", "",
             "| healed model | tokens | steps | wall s | train tokens/s | device | "
             "KL to dense before → after |", "|---|---:|---:|---:|---:|---|---|"]
    for name, (_, rec) in pairs.items():
        lines.append(f"| `{name}` | {rec.get('tokens', 0):,} | {rec.get('steps', '–')} | "
                     f"{rec.get('wall_s', '–')} | {rec.get('tokens_per_s', '–')} | "
                     f"{rec.get('device_name') or rec.get('device', '–')} | "
                     f"{rec.get('kl_before', float('nan')):.4f} → {rec.get('kl_after', float('nan')):.4f} |")
    for name, (one_shot, _) in pairs.items():
        lines += ["", f"**`{one_shot}` one-shot vs healed**", "",
                  "| set | dense | one-shot | healed | kept one-shot | kept healed |",
                  "|---|---:|---:|---:|---:|---:|"]
        for metric, suffix in (("loss", ""), ("mc_accuracy", " (acc.)")):
            sets = sorted({r.eval_set for r in report.rows if r.metric == metric})
            for s in sets:
                a, b = idx.get((one_shot, metric, s)), idx.get((name, metric, s))
                if a is None or b is None:
                    continue
                d = idx.get((report.dense, metric, s)) if report.dense else None
                lines.append(f"| {s}{suffix} | {fmt(metric, d.value) if d else '–'} | "
                             f"{fmt(metric, a.value)} | {fmt(metric, b.value)} | {_kept(a)} | "
                             f"{_kept(b)} |")
    curves = {n: rec.get("curve") or [] for n, (_, rec) in pairs.items()}
    if out is not None and any(curves.values()):
        from cusprun.evaluation.plots import plot_loss_curves

        plot_loss_curves(curves, out / PLOT)
        lines += ["", f"![healing loss curves]({PLOT})"]
    return "\n".join(lines) + "\n"
