"""Evaluation inputs from real held-out corpora (bundled data packages) and a compare() over them."""
from __future__ import annotations

import pytest
import torch

from cusprun.evaluation import (EvalConfig, ModelEntry, compare, loss_sets_from_tables,
                                mc_tasks_from_tables)
from tests.support import make_tiny_model




pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_torch_thread")]

SOURCES = {"general=en": "bundled://general/en", "language=de": "bundled://language/de",
           "task=qa": "bundled://task/qa?lang=en&domain=health",
           "task=translation": "bundled://task/translation?src=en&tgt=de"}


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    from cusprun.corpora import CorpusSpec, prepare_corpus, read_corpus

    out = tmp_path_factory.mktemp("corpora")
    return {name: read_corpus(prepare_corpus(CorpusSpec(source=src, max_docs=8, max_eval_docs=24),
                                             out).path, "eval")
            for name, src in SOURCES.items()}


def test_tasks_from_held_out_tables(tables):
    tasks = mc_tasks_from_tables(tables, n_items=10, seed=0)
    assert set(tasks) == {"topic classification", "definition QA", "translation selection"}
    assert all(len(items) == 10 and all(len(it.options) == 4 for it in items)
               for items in tasks.values())
    qa = tables["task=qa"].to_pylist()
    for it in tasks["definition QA"]:
        row = next(r for r in qa if r["prompt"] == it.question)
        assert it.question.startswith("Question: What is ")
        assert row["title"].lower() not in it.options[it.answer_index].lower()
    tr = {r["prompt"]: r["answer"] for r in tables["task=translation"].to_pylist()}
    for it in tasks["translation selection"]:
        assert it.options[it.answer_index] == tr[it.question]
    topics = {r["text"][:40]: r["label"] for r in tables["general=en"].to_pylist()}
    for it in tasks["topic classification"]:
        text = it.question.removeprefix("Article: ")[:40]
        assert it.options[it.answer_index] == " " + topics[text]
    sets = loss_sets_from_tables(tables, max_docs=5)
    assert all(e.prompt for e in sets["task=qa"]) and not any(e.prompt for e in sets["language=de"])


def test_compare_on_held_out_corpora(tables, tmp_path):
    _, dense = make_tiny_model("Qwen3ForCausalLM", tmp_path / "dense")
    _, small = make_tiny_model("Qwen3ForCausalLM", tmp_path / "small", intermediate_size=48)
    cfg = EvalConfig(max_tokens=64, n_mc_items=6, batch_size=8, metrics=["loss", "mc", "size"],
                     progress=False)
    rep = compare({"dense": ModelEntry(path=dense, method="dense"),
                   "cusprun-50": ModelEntry(path=small, method="cusprun", ratio=0.5)},
                  loss_sets_from_tables(tables, max_docs=6), mc_tasks_from_tables(tables, n_items=6),
                  tmp_path / "report", config=cfg)
    for name in SOURCES:
        assert rep.get("cusprun-50", "loss", name).retention > 0
    acc = rep.get("cusprun-50", "mc_accuracy", "translation selection")
    assert acc.chance == 0.25 and acc.n == 6
    assert "definition QA (chance 0.250, n=6)" in rep.files["markdown"].read_text()
