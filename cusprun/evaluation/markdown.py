"""report.md: tables of every metric with 95 % intervals and significance marks, then the
differences table that says which gaps to dense and to the best baseline are beyond noise."""
from __future__ import annotations

from pathlib import Path

from cusprun.evaluation.metrics import METRICS
from cusprun.evaluation.report import ComparisonReport, ReportRow

MARKS = {("dense", "better"): "▲d", ("dense", "worse"): "▼d",
         ("best", "better"): "▲b", ("best", "worse"): "▼b"}
LEGEND = ("Cells are `value [95 % interval] (retention)`, then marks for differences beyond the "
          "interval of the paired difference (same documents or items, paired bootstrap): "
          "`▲d` / `▼d` better / worse than dense, `▲b` / `▼b` better / worse than the best "
          "baseline at the same ratio (shown for methods that are not baselines). No mark: the "
          "difference is within the interval, so these data cannot tell the two apart.")


def _human(x: float, unit: str = "") -> str:
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= div:
            return f"{x / div:.2f}{suf}{unit}"
    return f"{x:.0f}{unit}"


def fmt(metric: str, v: float) -> str:
    if metric in ("params_total", "params_non_embedding"):
        return _human(v)
    if metric == "disk_bytes":
        return _human(v, "B")
    if metric in ("prefill_tokens_per_s", "decode_tokens_per_s"):
        return f"{v:.1f}"
    if metric == "perplexity":
        return f"{v:.2f}"
    return f"{v:.4f}" if metric == "loss" else f"{v:.3f}"


def _ci(metric: str, lo: float | None, hi: float | None) -> str:
    if lo is None or hi is None:
        return ""
    digits = 3 if metric == "loss" else 2
    return f" [{lo:.{digits}f}, {hi:.{digits}f}]"


def marks(row: ReportRow) -> str:
    got = [MARKS[(ref, row.vs(ref))] for ref in ("dense", "best") if row.vs(ref)]
    return (" " + " ".join(got)) if got else ""


def _cell(row: ReportRow | None) -> str:
    if row is None:
        return "–"
    s = fmt(row.metric, row.value) + _ci(row.metric, row.ci_low, row.ci_high)
    s = s if row.retention is None else f"{s} ({100 * row.retention:.1f}%)"
    return s + marks(row)


def _table(report: ComparisonReport, columns: list[tuple[str, str, str]]) -> list[str]:
    """columns: (header, metric, eval_set); one row per model."""
    idx = {(r.model, r.metric, r.eval_set): r for r in report.rows}
    head = ["model", "method", "ratio"] + [c[0] for c in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, e in report.models.items():
        cells = [name, e.method, f"{e.ratio:.2f}"]
        cells += [_cell(idx.get((name, m, s))) for _, m, s in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _diff(metric: str, d: float | None, lo: float | None, hi: float | None, verdict: str) -> str:
    if d is None:
        return "–"
    digits = 3 if metric == "loss" else 2
    return f"{d:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}] {verdict or 'within'}"


def differences_table(report: ComparisonReport) -> list[str]:
    """One line per (non-baseline method, loss set or MC task): the gap to dense and to the best
    baseline with the paired 95 % interval and the verdict."""
    rows = [r for r in report.rows if r.best_baseline is not None]
    if not rows:
        return []
    out = ["## Differences beyond the 95 % interval", "",
           "Gap = model - reference on the same documents or items (loss: lower is better; "
           "accuracy: higher is better), with its paired-bootstrap 95 % interval; `better` / "
           "`worse` when the interval excludes 0, `within` when it does not.", "",
           "| model | metric | eval set | value [95 % interval] | gap to dense | best baseline | "
           "gap to best baseline |", "|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r.model, r.metric, r.eval_set)):
        out.append(f"| {r.model} | {r.metric} | {r.eval_set} | {fmt(r.metric, r.value)}"
                   f"{_ci(r.metric, r.ci_low, r.ci_high)} | "
                   f"{_diff(r.metric, r.d_dense, r.d_dense_low, r.d_dense_high, r.vs('dense'))} | "
                   f"{r.best_baseline} | "
                   f"{_diff(r.metric, r.d_best, r.d_best_low, r.d_best_high, r.vs('best'))} |")
    return out + [""]


def _mc_header(report: ComparisonReport, task: str) -> tuple[str, str | None]:
    rows = [r for r in report.rows if r.metric == "mc_accuracy" and r.eval_set == task]
    n, chance = rows[0].n, rows[0].chance
    note = None
    if n is not None and n < report.config.n_mc_items:
        note = (f"`{task}`: {n} items, fewer than the {report.config.n_mc_items} asked for: the "
                "held-out data holds no more usable items for this task.")
    return f"{task} (chance {chance:.3f}, n={n})", note


def to_markdown(report: ComparisonReport, images: dict[str, Path] | None = None) -> str:
    sets = lambda metric: sorted({r.eval_set for r in report.rows if r.metric == metric})  # noqa: E731
    present = {r.metric for r in report.rows}
    ref = f"the dense model `{report.dense}`" if report.dense else "no dense model (none given)"
    out = ["# Model comparison", "",
           f"Retention is relative to {ref}: value/dense for accuracy, size and speed; dense/value "
           "for loss and perplexity (so below 100% is worse for quality, smaller for size). "
           + LEGEND + " See docs/evaluation.md for the exact definitions.", ""]
    size_speed = [(METRICS[m].label, m, "") for m in METRICS
                  if METRICS[m].family in ("size", "speed") and m in present]
    if size_speed:
        out += ["## Size and speed", ""] + _table(report, size_speed) + [""]
    if "loss" in present:
        out += ["## Held-out loss (nats/token, token-weighted; lower is better)", ""]
        out += _table(report, [(s, "loss", s) for s in sets("loss")]) + [""]
        out += ["## Perplexity (exp of the loss)", ""]
        out += _table(report, [(s, "perplexity", s) for s in sets("perplexity")]) + [""]
    if "mc_accuracy" in present:
        heads = [(_mc_header(report, s), s) for s in sets("mc_accuracy")]
        out += [f"## Multiple-choice accuracy (log-likelihood, normalised per "
                f"{report.config.mc_normalization}; chance level and items in the header)", ""]
        out += _table(report, [(h, "mc_accuracy", s) for (h, _), s in heads]) + [""]
        out += [note for (_, note), _ in heads if note]
        out += [""] if any(note for (_, note), _ in heads) else []
    out += differences_table(report)
    for title, p in (images or {}).items():
        out += [f"![{title}]({p.name})", ""]
    return "\n".join(out)


# The compact summary: a few narrow columns, so it fits a page (the Prefect UI artifact, the
# README) where report.md's one-column-per-set tables are cut on the right.
SUMMARY_NAME_CHARS = 24


def _short(name: str, n: int = SUMMARY_NAME_CHARS) -> str:
    return name if len(name) <= n else name[: n - 1] + "…"


def _value_ci(row: ReportRow | None) -> str:
    if row is None:
        return "–"
    return fmt(row.metric, row.value) + _ci(row.metric, row.ci_low, row.ci_high)


def _pct_of(row: ReportRow | None) -> str:
    return "–" if row is None or row.retention is None else f"{100 * row.retention:.1f}%"


def _kept(row: ReportRow, best: ReportRow | None) -> str:
    """'82 / 59%': whole percents keep the UI table inside the page (report.md has decimals)."""
    def pct(r):
        return "–" if r is None or r.retention is None else f"{100 * r.retention:.0f}"
    return pct(row) + (f" / {pct(best)}" if best else "") + ("%" if row.retention is not None else "")


def _size_speed_line(idx: dict, name: str) -> str:
    parts = []
    p = idx.get((name, "params_total", ""))
    if p is not None:
        parts.append(f"{fmt(p.metric, p.value)} parameters"
                     + (f" ({_pct_of(p)} of dense)" if p.retention is not None else ""))
    s = idx.get((name, "prefill_tokens_per_s", ""))
    if s is not None and s.retention is not None:
        parts.append(f"prefill {s.retention:.2f}x dense")
    return "; ".join(parts)


def summary_markdown(report: ComparisonReport, full_tables: str | None = "report.md") -> str:
    """A compact comparison: for each pruned model that is not a baseline (the expert), one table
    of five columns (set, dense, expert, best baseline at the same ratio, retention of both),
    loss sets then multiple-choice tasks, with 95 % intervals and the significance marks of
    report.md. The full tables stay in report.md (to_markdown); `full_tables` names where, in
    the legend (None: not named)."""
    from cusprun.evaluation.significance import baseline_methods

    base = baseline_methods()
    idx = {(r.model, r.metric, r.eval_set): r for r in report.rows}
    experts = [n for n, e in report.models.items() if e.method != "dense" and e.method not in base]
    metrics = [("loss", ""), ("mc_accuracy", " (acc.)")]
    # short lines: this text is shown where wide content is cut (markdown joins them anyway)
    out = ["Loss in nats/token (lower is better); acc.: accuracy on multiple-choice tasks.",
           "Expert as `value [95 % interval]`; kept: retention of the expert / of the best",
           f"baseline at the same ratio (by method), relative to dense `{_short(report.dense or '–')}`.",
           f"Marks {' '.join(MARKS.values())}: beyond the interval against dense (d) or the best",
           "baseline (b)" + (f"; full tables in {full_tables}." if full_tables else ".")]
    for name in experts:
        e = report.models[name]
        extra = _size_speed_line(idx, name)
        # names in code spans: renderers (the Prefect UI) turn a bare "name@0.25" into a mailto link
        out += ["", f"**`{_short(name)}`** ({e.method}, ratio {e.ratio:g})" + (f": {extra}" if extra else ""),
                "", f"| set | dense | `{_short(name)}` | best baseline | kept |",
                "|---|---:|---:|---:|---:|"]
        for metric, suffix in metrics:
            for s in sorted({r.eval_set for r in report.rows if r.metric == metric}):
                row = idx.get((name, metric, s))
                if row is None:
                    continue
                dense = idx.get((report.dense, metric, s)) if report.dense else None
                best = idx.get((row.best_baseline, metric, s)) if row.best_baseline else None
                # the baseline by method (it is at the expert's ratio by definition) and value
                # only (the expert's ▲b/▼b marks carry the paired interval): the table fits the UI
                best_name = report.models[row.best_baseline].method if best else ""
                best_cell = f"`{_short(best_name, 16)}` {fmt(metric, best.value)}" if best else "–"
                kept = _kept(row, best)
                out.append(f"| {_short(s)}{suffix} | {fmt(metric, dense.value) if dense else '–'} | "
                           f"{_value_ci(row)}{marks(row)} | {best_cell} | {kept} |")
    if not experts:
        out += ["", "No pruned model other than baselines in this report."]
    return "\n".join(out)
