"""95 % intervals (Wilson, bootstrap over documents) and paired differences between models."""
import pytest

from cusprun.evaluation import EvalConfig, ModelEntry
from cusprun.evaluation.evaluate import MetricValue, ModelResult
from cusprun.evaluation.intervals import (bootstrap, interval, paired_difference, samples_of,
                                          wilson)
from cusprun.evaluation.markdown import to_markdown
from cusprun.evaluation.report import build_report
from cusprun.errors import CusprunError


def test_wilson_matches_the_closed_form():
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson(50, 100)
    assert (lo, hi) == (pytest.approx(0.4038, abs=1e-4), pytest.approx(0.5962, abs=1e-4))
    # 100 items at 40 %: the interval is about +-10 points, so one item (1 point) is noise
    lo, hi = wilson(40, 100)
    assert 0.18 < hi - lo < 0.20


def test_bootstrap_resamples_whole_documents():
    # token-weighted loss: one long easy document and short hard ones
    s = samples_of([10.0, 40.0, 45.0, 50.0], [100, 10, 10, 10])
    assert s.value == pytest.approx(145 / 130)
    lo, hi = bootstrap(s, seed=0)
    assert lo < s.value < hi
    assert bootstrap(s, seed=0) == bootstrap(s, seed=0)  # seeded: reports are reproducible
    same = samples_of([2.0] * 20, [10] * 20)
    assert interval("loss", same) == (pytest.approx(0.2), pytest.approx(0.2))
    plo, phi = interval("perplexity", s)
    assert plo == pytest.approx(2.718281828 ** lo)


def test_paired_difference_cancels_item_difficulty():
    # model a is right exactly where b is right plus 12 more items out of 100: a paired test sees
    # it clearly although the two Wilson intervals overlap
    b = [1] * 40 + [0] * 60
    a = [1] * 52 + [0] * 48
    d = paired_difference(samples_of(a), samples_of(b))
    assert d.value == pytest.approx(0.12) and d.beyond and d.low > 0
    assert wilson(40, 100)[1] > wilson(52, 100)[0]  # intervals overlap
    same = paired_difference(samples_of(a), samples_of(a))
    assert same.value == 0 and not same.beyond
    noisy = paired_difference(samples_of([1, 0] * 10), samples_of([0, 1] * 10))
    assert not noisy.beyond
    with pytest.raises(CusprunError, match="same units"):
        paired_difference(samples_of([1, 0]), samples_of([1]))


def _result(name, method, ratio, losses, correct):
    vals = [MetricValue(metric="loss", eval_set="domain=health", value=sum(losses) / (10 * len(losses)),
                        n=10 * len(losses), n_units=len(losses), unit_num=losses,
                        unit_den=[10.0] * len(losses)),
            MetricValue(metric="mc_accuracy", eval_set="definition QA",
                        value=sum(correct) / len(correct), chance=0.25, n=len(correct),
                        n_units=len(correct), unit_num=[float(c) for c in correct])]
    return ModelResult(name=name, entry=ModelEntry(path=".", method=method, ratio=ratio), values=vals)


def test_report_marks_differences_beyond_the_interval():
    n = 120
    dense = _result("dense", "dense", 0.0, [20.0 + (i % 7) for i in range(n)], [1] * 60 + [0] * 60)
    cus = _result("cusprun@0.25", "cusprun", 0.25, [30.0 + (i % 7) for i in range(n)],
                  [1] * 55 + [0] * 65)
    rnd = _result("random@0.25", "random", 0.25, [60.0 + (i % 7) for i in range(n)],
                  [1] * 30 + [0] * 90)
    flap = _result("flap@0.25", "flap", 0.25, [45.0 + (i % 5) for i in range(n)],
                   [1] * 56 + [0] * 64)
    report = build_report([rnd, cus, dense, flap], EvalConfig(n_mc_items=100))
    loss = report.get("cusprun@0.25", "loss", "domain=health")
    assert loss.best_baseline == "flap@0.25"             # lowest loss among the baselines
    assert loss.vs("dense") == "worse" and loss.vs("best") == "better"
    acc = report.get("cusprun@0.25", "mc_accuracy", "definition QA")
    assert acc.best_baseline == "flap@0.25" and acc.vs("best") == ""   # 55 vs 56 of 120: noise
    assert report.get("random@0.25", "mc_accuracy", "definition QA").vs("dense") == "worse"
    md = to_markdown(report)
    assert "▼d ▲b" in md and "| cusprun@0.25 | mc_accuracy | definition QA |" in md
    assert "flap@0.25 | -0.01 [" in md and "] within |" in md
    assert "definition QA (chance 0.250, n=120)" in md
