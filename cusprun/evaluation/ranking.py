"""Which baseline is the strongest in a recorded comparison: read from the report's numbers, so
"the baseline we compare with is the strongest" is a measurement, never a claim typed by hand."""
from __future__ import annotations

from cusprun.evaluation.config import EvaluationError
from cusprun.evaluation.set_names import split_set_name


def expert_sets(report: dict, own_language: str | None) -> list[str]:
    """The loss sets that measure what the expert is for: its domain, task, own language and
    general text, in-source and out-of-source; other languages (what it gave up) are left out."""
    sets = sorted({r["eval_set"] for r in report["rows"] if r["metric"] == "loss"})

    def other_language(name: str) -> bool:
        dim, _, value = split_set_name(name)[0].partition("=")
        return dim == "language" and value != own_language

    return [s for s in sets if not other_language(s)]


def strongest_baseline(report: dict, *, own_language: str | None, expert: str = "cusprun") -> dict:
    """The baseline with the highest mean loss retention over `expert_sets`, at the ratio of the
    report's `expert` method: {baseline, ratio, sets, mean_retention: {method: mean},
    expert_mean_retention}."""
    from cusprun.baselines import BASELINES

    rows = [r for r in report["rows"] if r["metric"] == "loss" and r.get("retention") is not None]
    ratios = sorted({r["ratio"] for r in rows if r["method"] == expert})
    if not ratios:
        raise EvaluationError(f"the report has no {expert!r} loss rows to rank baselines against")
    ratio, sets = ratios[0], expert_sets(report, own_language)
    by_method: dict[str, dict[str, float]] = {}
    for r in rows:
        if r["method"] in (*BASELINES, expert) and r["ratio"] == ratio and r["eval_set"] in sets:
            by_method.setdefault(r["method"], {})[r["eval_set"]] = r["retention"]
    own = by_method.pop(expert, {})
    complete = {m: v for m, v in by_method.items() if set(v) == set(sets)}
    if not complete:
        raise EvaluationError(f"no baseline was measured on every set at ratio {ratio:g} "
                              f"({', '.join(sets)}); have: {sorted(by_method)}")
    means = {m: round(sum(v.values()) / len(v), 4) for m, v in sorted(complete.items())}
    best = max(sorted(means), key=lambda m: means[m])
    mine = round(sum(own.values()) / len(own), 4) if set(own) == set(sets) else None
    return {"baseline": best, "ratio": ratio, "sets": sets, "mean_retention": means,
            "expert_mean_retention": mine}
