"""compare(): every model evaluated, retention against dense, report files written and parseable."""
from __future__ import annotations

import json
import math

import matplotlib.image as mpimg
import pyarrow.parquet as pq
import pytest
import torch

from cusprun.evaluation import (EvalConfig, EvaluationError, MCItem, ModelEntry, compare,
                                overlap_matrix, plot_overlap, retention)
from cusprun.evaluation.report import SCHEMA
from tests.support import make_tiny_model


pytestmark = pytest.mark.usefixtures("one_torch_thread")


FAST = EvalConfig(speed_prompt_tokens=8, speed_decode_tokens=4, speed_warmup=1, speed_iters=1,
                  batch_size=4, progress=False)
EVAL_SETS = {"language=en": ["The cat sat on the mat.", "General English text for testing."],
             "domain=health": ["The heart pumps blood through the body."],
             "task=qa": [("Question: what is blood?\nAnswer:", " A body fluid.")],
             "language=de": ["Der Hund schläft im Garten."]}
MC = {"topic": [MCItem(question="Article: the heart\nTopic:", options=[" health", " sport"],
                       answer_index=0),
                MCItem(question="Article: a match\nTopic:", options=[" health", " sport", " art", " war"],
                       answer_index=1)]}


def _is_png(path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and mpimg.imread(path).size > 0


@pytest.fixture(scope="module")
def experts(tmp_path_factory):
    """A dense tiny model and real sliced experts of it: a per-layer one (loaded through
    cusprun.load_expert) and uniform ones (stock transformers classes)."""
    from cusprun.slicing import slice_checkpoint
    from tests.support import random_plan, uniform_plan_for_ratio

    root = tmp_path_factory.mktemp("models")
    model, dense = make_tiny_model("Qwen2ForCausalLM", root / "dense")
    plans = {"cusprun-50": random_plan(model.config, fingerprint="t", ffn=[40, 60, 20],
                                       groups=[1, 2, 1], heads_per_group=[2, 1, 2]),
             "random-50": uniform_plan_for_ratio(model.config, 0.5, fingerprint="t", seed=1),
             "random-75": uniform_plan_for_ratio(model.config, 0.75, fingerprint="t", seed=2)}
    paths = {name: slice_checkpoint(dense, plan, root / name, model_fingerprint="t", progress=False)
             for name, plan in plans.items()}
    return dense, paths, plans


@pytest.fixture(scope="module")
def report(experts, tmp_path_factory):
    dense, paths, _ = experts
    models = {"random-50": ModelEntry(path=paths["random-50"], method="random", ratio=0.5),
              "dense": ModelEntry(path=dense, method="dense"),
              "cusprun-50": ModelEntry(path=paths["cusprun-50"], method="cusprun", ratio=0.5),
              "random-75": {"path": paths["random-75"], "method": "random", "ratio": 0.75}}
    kept = {"language": {1, 2, 3, 4}, "domain": {3, 4, 5}, "task": {1, 5}}
    return compare(models, EVAL_SETS, MC, tmp_path_factory.mktemp("report"), config=FAST,
                   overlap=kept)


def test_every_model_metric_and_set_reported(report):
    assert list(report.models) == ["dense", "cusprun-50", "random-50", "random-75"]  # dense first
    assert report.dense == "dense"
    for name in report.models:
        for s in EVAL_SETS:
            assert report.get(name, "loss", s).n > 0
            assert report.get(name, "perplexity", s).value == pytest.approx(
                math.exp(report.get(name, "loss", s).value))
        acc = report.get(name, "mc_accuracy", "topic")
        assert acc.chance == pytest.approx((1 / 2 + 1 / 4) / 2) and acc.n == 2
        for m in ("params_total", "params_non_embedding", "disk_bytes",
                  "prefill_tokens_per_s", "decode_tokens_per_s"):
            assert report.get(name, m).value > 0
    with pytest.raises(EvaluationError, match="Unknown metric"):
        report.get("dense", "bleu")


def test_retention_is_relative_to_dense(report):
    for r in report.rows:
        d = report.get("dense", r.metric, r.eval_set).value
        if r.model == "dense":
            assert r.retention in (1.0, None)
        elif r.retention is not None:
            assert r.retention == pytest.approx(retention(r.metric, r.value, d))
    loss = report.get("cusprun-50", "loss", "language=en")
    assert loss.retention == pytest.approx(report.get("dense", "loss", "language=en").value / loss.value)
    size = report.get("random-75", "params_non_embedding")
    assert size.retention < report.get("random-50", "params_non_embedding").retention < 1.0


def test_sizes_match_the_sliced_plans(report, experts):
    dense_total = report.get("dense", "params_total").value
    for name, plan in experts[2].items():
        assert report.get(name, "params_total").value == dense_total - plan.removed_params
        assert report.get(name, "disk_bytes").value < report.get("dense", "disk_bytes").value


def test_report_files_are_parseable(report):
    f = report.files
    data = json.loads(f["json"].read_text())
    assert data["dense"] == "dense" and data["config"]["batch_size"] == 4
    assert len(data["rows"]) == len(report.rows)
    assert {"model", "method", "ratio", "metric", "eval_set", "value", "retention"} <= set(data["rows"][0])
    table = pq.read_table(f["parquet"])
    assert table.schema.equals(SCHEMA) and table.num_rows == len(report.rows)
    assert set(table.column("method").to_pylist()) == {"dense", "cusprun", "random"}
    md = f["markdown"].read_text()
    assert "topic (chance 0.375, n=2)" in md and "| cusprun-50 | cusprun | 0.50 |" in md
    assert md.count("| random-75 |") == 4  # size/speed, loss, perplexity, MC tables
    assert "## Differences beyond the 95 % interval" in md and "| cusprun-50 | loss |" in md
    assert "`topic`: 2 items, fewer than the 200 asked for" in md
    for key in ("retention_vs_ratio", "retention_by_eval_set", "overlap"):
        assert _is_png(f[key]) and f"({f[key].name})" in md


def test_intervals_and_paired_differences_in_rows(report):
    for r in report.rows:
        if r.metric in ("loss", "perplexity", "mc_accuracy"):
            assert r.ci_low <= r.value <= r.ci_high, r
            assert r.n_units == (len(EVAL_SETS[r.eval_set]) if r.metric != "mc_accuracy" else 2)
        else:
            assert r.ci_low is None and r.d_dense is None
    loss = report.get("cusprun-50", "loss", "language=en")
    dense = report.get("dense", "loss", "language=en")
    assert loss.d_dense == pytest.approx(loss.value - dense.value)
    assert loss.d_dense_low <= loss.d_dense <= loss.d_dense_high
    # Cus-Prun is compared with the best baseline at its own ratio (random-50, not random-75)
    assert loss.best_baseline == "random-50"
    assert loss.d_best == pytest.approx(loss.value - report.get("random-50", "loss", "language=en").value)
    assert report.get("random-50", "loss", "language=en").best_baseline is None
    assert report.get("dense", "loss", "language=en").d_dense is None


def test_bad_compare_inputs_fail_before_loading(tmp_path):
    ok = {"dense": ModelEntry(path=tmp_path, method="dense")}
    with pytest.raises(EvaluationError, match="'language=de' is empty"):
        compare(ok, {"language=de": []}, {}, tmp_path / "out", config=FAST)
    with pytest.raises(EvaluationError, match="out of range"):
        compare(ok, {}, {"t": [{"question": "q", "options": ["a", "b"], "answer_index": 2}]},
                tmp_path / "out", config=FAST)
    with pytest.raises(EvaluationError, match="does not exist"):
        compare({"x": ModelEntry(path=tmp_path / "nope", method="flap", ratio=0.5)}, {}, {},
                tmp_path / "out", config=FAST)
    with pytest.raises(EvaluationError, match="More than one dense"):
        compare({"a": ok["dense"], "b": ok["dense"]}, {}, {}, tmp_path / "out", config=FAST)
    assert not (tmp_path / "out").exists()


def test_plot_overlap_standalone(tmp_path):
    m = overlap_matrix({"language": {1, 2}, "domain": {2, 3}})
    assert m[("language", "domain")] == pytest.approx(1 / 3) and m[("domain", "domain")] == 1.0
    assert _is_png(plot_overlap({("language", "domain"): 0.4}, tmp_path / "o.png"))
    with pytest.raises(EvaluationError):
        plot_overlap({}, tmp_path / "empty.png")
