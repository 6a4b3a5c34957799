"""report.md: tables of every metric with 95 % intervals and significance marks, then the
differences table that says which gaps to dense and to the best baseline are beyond noise."""
from __future__ import annotations

import textwrap
from pathlib import Path

from cusprun.evaluation.metrics import METRICS
from cusprun.evaluation.report import ComparisonReport, ReportRow
from cusprun.evaluation.set_names import is_out_of_source, split_set_name
from cusprun.evaluation.significance import comparisons_per_model

MARKS = {("dense", "better"): "▲d", ("dense", "worse"): "▼d",
         ("best", "better"): "▲b", ("best", "worse"): "▼b"}
OUT_OF_SOURCE_NOTE = ("A set named `dimension=value (out-of-source: source)` holds text of that "
                      "value from a source its calibration never read (it measures transfer); "
                      "`dimension=value` alone is held out of the calibration source itself.")


def baselines_at(report: ComparisonReport, ratio: float | None = None) -> list[str]:
    """Baseline methods in the report (at `ratio` when given): a table that shows one calls its
    column 'baseline'; 'best baseline' only where several were compared and the best is shown."""
    from cusprun.evaluation.significance import baseline_methods

    base = baseline_methods()
    return sorted({e.method for e in report.models.values()
                   if e.method in base and (ratio is None or e.ratio == ratio)})


def _baseline_word(report: ComparisonReport) -> str:
    return "best baseline" if len(baselines_at(report)) > 1 else "baseline"


def legend(report: ComparisonReport) -> str:
    return ("Cells are `value [95 % interval] (retention)`, then marks for differences beyond the "
            "interval of the paired difference (same documents or items; t over documents for "
            "loss, Agresti-Min for accuracy): "
            f"`▲d` / `▼d` better / worse than dense, `▲b` / `▼b` better / worse than the "
            f"{_baseline_word(report)} at the same ratio (shown for methods that are not "
            "baselines). No mark: the difference is within the interval, so these data cannot "
            "tell the two apart. Each mark is one comparison at 95 %, not corrected for multiple "
            "comparisons (see the differences below).")


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
    word = _baseline_word(report)
    k = comparisons_per_model(rows)
    out = ["## Differences beyond the 95 % interval", "",
           "Gap = model - reference on the same documents or items (loss: lower is better; "
           "accuracy: higher is better), with its paired 95 % interval; `better` / "
           "`worse` when the interval excludes 0, `within` when it does not. Each verdict is one "
           "comparison at 95 %, not corrected for multiple comparisons: "
           f"{k} per model in this table, so where two models do not differ about "
           f"{0.05 * k:.1f} of them would read `better` or `worse` by chance "
           "(docs/evaluation.md).", "",
           f"| model | metric | eval set | value [95 % interval] | gap to dense | {word} | "
           f"gap to {word} |", "|---|---|---|---|---|---|---|"]
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
           + legend(report) + (" " + OUT_OF_SOURCE_NOTE if any(
               is_out_of_source(r.eval_set) for r in report.rows) else "")
           + " See docs/evaluation.md for the exact definitions.", ""]
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


def summary_order(sets) -> list[str]:
    """In-source sets sorted by name, each followed by its out-of-source sets, so the two
    retentions of a dimension stand next to each other."""
    sets = set(sets)
    out: list[str] = []
    for s in sorted(x for x in sets if not is_out_of_source(x)):
        out += [s] + sorted(x for x in sets if is_out_of_source(x) and split_set_name(x)[0] == s)
    return out + sorted(sets - set(out))  # out-of-source sets without their in-source set


def _set_label(name: str, shown: set[str]) -> str:
    base, label = split_set_name(name)
    return _short(f"↳ {label}" if label and base in shown else name)


def _summary_legend(report: ComparisonReport, several: bool, out_of_source: bool,
                    full_tables: str | None) -> list[str]:
    base = "the best baseline at the same ratio (by method)" if several else \
        "the baseline at the same ratio"
    text = (f"Loss in nats/token (lower is better); acc.: accuracy on multiple-choice tasks. "
            f"Expert as `value [95 % interval]`; kept: retention of the expert / of {base}, "
            f"relative to dense `{_short(report.dense or '–')}`. Marks "
            f"{' '.join(MARKS.values())}: beyond the interval against dense (d) or the "
            f"{'best baseline' if several else 'baseline'} (b), each a separate 95 % "
            f"comparison, not corrected for multiple comparisons")
    if out_of_source:
        text += ("; ↳: the set above on text from another source, never read by the "
                 "calibration (out-of-source)")
    text += f"; full tables in {full_tables}." if full_tables else "."
    # short lines: this text is shown where wide content is cut (markdown joins them anyway)
    return textwrap.wrap(text, 76, break_on_hyphens=False, break_long_words=False)


def summary_markdown(report: ComparisonReport, full_tables: str | None = "report.md") -> str:
    """A compact comparison: for each pruned model that is not a baseline (the expert), one table
    of five columns (set, dense, expert, baseline at the same ratio, retention of both), loss
    sets then multiple-choice tasks, with 95 % intervals and the significance marks of
    report.md. The baseline column is 'baseline `method`' where one baseline was compared, and
    'best baseline' (named per row) where several were. Each out-of-source set follows its
    in-source set. The full tables stay in report.md (to_markdown); `full_tables` names where,
    in the legend (None: not named)."""
    from cusprun.evaluation.significance import baseline_methods

    base = baseline_methods()
    idx = {(r.model, r.metric, r.eval_set): r for r in report.rows}
    experts = [n for n, e in report.models.items() if e.method != "dense" and e.method not in base]
    compared = {n: baselines_at(report, report.models[n].ratio) for n in experts}
    metrics = [("loss", ""), ("mc_accuracy", " (acc.)")]
    loss_sets = {r.eval_set for r in report.rows if r.metric == "loss"}
    out = _summary_legend(report, any(len(b) > 1 for b in compared.values()),
                          any(map(is_out_of_source, loss_sets)), full_tables)
    for name in experts:
        e = report.models[name]
        extra = _size_speed_line(idx, name)
        one = compared[name][0] if len(compared[name]) == 1 else None
        head = (f"baseline `{_short(one, 16)}`" if one else
                "best baseline" if compared[name] else "baseline")
        # names in code spans: renderers (the Prefect UI) turn a bare "name@0.25" into a mailto link
        out += ["", f"**`{_short(name)}`** ({e.method}, ratio {e.ratio:g})" + (f": {extra}" if extra else ""),
                "", f"| set | dense | `{_short(name)}` | {head} | kept |",
                "|---|---:|---:|---:|---:|"]
        for metric, suffix in metrics:
            sets = summary_order({r.eval_set for r in report.rows if r.metric == metric})
            for s in sets:
                row = idx.get((name, metric, s))
                if row is None:
                    continue
                dense = idx.get((report.dense, metric, s)) if report.dense else None
                best = idx.get((row.best_baseline, metric, s)) if row.best_baseline else None
                # the baseline by method (it is at the expert's ratio by definition) and value
                # only (the expert's ▲b/▼b marks carry the paired interval): the table fits the UI
                best_name = report.models[row.best_baseline].method if best else ""
                best_cell = ("–" if not best else fmt(metric, best.value) if one else
                             f"`{_short(best_name, 16)}` {fmt(metric, best.value)}")
                kept = _kept(row, best)
                out.append(f"| {_set_label(s, set(sets))}{suffix} | "
                           f"{fmt(metric, dense.value) if dense else '–'} | "
                           f"{_value_ci(row)}{marks(row)} | {best_cell} | {kept} |")
    if not experts:
        out += ["", "No pruned model other than baselines in this report."]
    return "\n".join(out)
