"""Held-out loss, MC scoring, retention, size and speed on tiny random models."""
from __future__ import annotations

import math

import pyarrow as pa
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from cusprun.adapters import count_params
from cusprun.evaluation import (EvalConfig, EvaluationError, LossExample, MCItem, ModelEntry,
                                as_loss_examples, as_mc_items, build_definition_items,
                                build_topic_items, build_translation_items, checkpoint_bytes,
                                build_answer_items, encode, heldout_loss, loss_examples_from_table,
                                loss_sets_from_tables, mc_accuracy, mc_tasks_from_tables,
                                retention, scored_tokens, size_metrics, speed_metrics)
from tests.support import make_tiny_model


pytestmark = pytest.mark.usefixtures("one_torch_thread")


DOCS = ["The cat sat on the mat and looked at the birds outside.", "Short one.",
        "A considerably longer document " * 6, "xy"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """name -> (model, tokenizer, path) for a few families with different attention features."""
    out = {}
    for arch in ("LlamaForCausalLM", "Gemma3ForCausalLM", "Phi3ForCausalLM"):
        _, path = make_tiny_model(arch, tmp_path_factory.mktemp(arch))
        model = AutoModelForCausalLM.from_pretrained(path).eval()
        out[arch] = (model, AutoTokenizer.from_pretrained(path), path)
    return out


@torch.no_grad()
def _direct(model, ids: list[int], n_scored: int) -> float:
    """Sum of log-probs of the last n_scored tokens from one unpadded forward pass."""
    logits = model(input_ids=torch.tensor([ids])).logits[0]
    lp = torch.log_softmax(logits.float(), -1)
    return float(sum(lp[t - 1, ids[t]] for t in range(len(ids) - n_scored, len(ids))))


@pytest.mark.parametrize("arch", ["LlamaForCausalLM", "Gemma3ForCausalLM", "Phi3ForCausalLM"])
def test_padded_batch_equals_per_doc(tiny, arch):
    model, tok, _ = tiny[arch]
    ex = as_loss_examples("en", DOCS)
    batched = heldout_loss(model, tok, ex, batch_size=4, progress=False)
    single = heldout_loss(model, tok, ex, batch_size=1, progress=False)
    for (nb, kb), (ns, ks) in zip(batched.per_doc, single.per_doc):
        assert kb == ks
        assert nb == pytest.approx(ns, abs=1e-4)
    # and equal to the transformers loss of each document alone
    for text, (nll, n) in zip(DOCS, batched.per_doc):
        ids = tok(text, return_tensors="pt").input_ids
        assert n == ids.shape[1] - 1
        hf = model(input_ids=ids, labels=ids).loss.item()
        assert nll / n == pytest.approx(hf, abs=1e-4)


def test_loss_is_token_weighted(tiny):
    model, tok, _ = tiny["LlamaForCausalLM"]
    r = heldout_loss(model, tok, as_loss_examples("en", DOCS), batch_size=3, progress=False)
    assert r.n_tokens == sum(n for _, n in r.per_doc) and r.n_docs == len(DOCS)
    assert r.loss == pytest.approx(sum(l for l, _ in r.per_doc) / r.n_tokens)
    mean_of_means = sum(l / n for l, n in r.per_doc) / len(DOCS)
    assert abs(r.loss - mean_of_means) > 1e-4  # documents of different lengths: not the same thing
    assert r.perplexity == pytest.approx(math.exp(r.loss))


def test_max_tokens_caps_each_document(tiny):
    model, tok, _ = tiny["LlamaForCausalLM"]
    r = heldout_loss(model, tok, [LossExample(text="abcdefghij" * 10)], max_tokens=16,
                     progress=False)
    assert r.n_tokens == 15
    ids = tok("abcdefghij" * 10)["input_ids"][:16]
    assert r.per_doc[0][0] == pytest.approx(-_direct(model, ids, 15), abs=1e-4)


def test_prompt_answer_scores_answer_tokens_only(tiny):
    model, tok, _ = tiny["LlamaForCausalLM"]
    ex = as_loss_examples("qa", [("Question: what is water?\nAnswer:", " A liquid."),
                                 {"prompt": "Q: 2+2?", "answer": " four"}])
    r = heldout_loss(model, tok, ex, batch_size=2, progress=False)
    for e, (nll, n) in zip(ex, r.per_doc):
        enc = encode(tok, e.text, e.prompt)
        assert n == enc.n_scored == len(tok(e.text)["input_ids"])  # byte tokenizer: 1 token/byte
        assert nll == pytest.approx(-_direct(model, enc.ids, n), abs=1e-4)


def test_mc_picks_highest_normalised_loglikelihood(tiny):
    model, tok, _ = tiny["Gemma3ForCausalLM"]
    questions = ["Topic of the article about hearts:", "Capital of France?", "2 + 2 ="]
    options = [" health", " a very long sporting option", " x", " music and art"]
    raw = [[(_direct(model, e.ids, e.n_scored), e.n_scored, len(o))
            for o in options for e in [encode(tok, o, q)]] for q in questions]
    for norm in ("char", "token", "none"):
        div = {"char": lambda n, c: c, "token": lambda n, c: n, "none": lambda n, c: 1}[norm]
        direct = [[lp / div(n, c) for lp, n, c in row] for row in raw]
        best = [max(range(4), key=r.__getitem__) for r in direct]
        worst = [min(range(4), key=r.__getitem__) for r in direct]
        right = [MCItem(question=q, options=options, answer_index=b) for q, b in zip(questions, best)]
        res = mc_accuracy(model, tok, right, normalization=norm, batch_size=5, progress=False)
        assert res.predictions == best and res.accuracy == 1.0
        for got, want in zip(res.scores, direct):
            assert got == pytest.approx(want, rel=1e-6, abs=1e-4)
        wrong = [MCItem(question=q, options=options, answer_index=w) for q, w in zip(questions, worst)]
        assert mc_accuracy(model, tok, wrong, normalization=norm, progress=False).accuracy == 0.0


def test_chance_level_is_mean_inverse_option_count(tiny):
    model, tok, _ = tiny["LlamaForCausalLM"]
    items = as_mc_items("t", [{"question": "q", "options": [" a", " b"], "answer_index": 0},
                              {"context": "c", "options": [" a", " b", " c", " d"], "answer_index": 3}])
    assert mc_accuracy(model, tok, items, progress=False).chance == pytest.approx(0.375)
    assert items[1].chance == 0.25


def test_retention_arithmetic():
    assert retention("loss", 4.0, 2.0) == 0.5            # dense / pruned
    assert retention("perplexity", 10.0, 20.0) == 2.0
    assert retention("mc_accuracy", 0.3, 0.6) == 0.5      # pruned / dense
    assert retention("params_non_embedding", 50, 100) == 0.5
    assert retention("decode_tokens_per_s", 300, 100) == 3.0
    assert math.isnan(retention("mc_accuracy", 0.5, 0.0))
    with pytest.raises(EvaluationError, match="Unknown metric 'bleu'"):
        retention("bleu", 1.0, 1.0)


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(EvaluationError, match="'language=de' is empty"):
        as_loss_examples("language=de", [])
    with pytest.raises(EvaluationError, match="scored text is empty"):
        as_loss_examples("x", ["ok", "  "])
    with pytest.raises(EvaluationError, match="answer_index=4 is out of range for 4 options"):
        MCItem(question="q", options=["a", "b", "c", "d"], answer_index=4)
    with pytest.raises(EvaluationError, match="out of range"):
        as_mc_items("t", [{"question": "q", "options": ["a", "b"], "answer_index": -1}])
    with pytest.raises(EvaluationError, match="at least 2"):
        MCItem(question="q", options=["a"], answer_index=0)
    with pytest.raises(EvaluationError, match="metrics=.*'bleu'"):
        EvalConfig(metrics=["loss", "bleu"])
    with pytest.raises(EvaluationError, match="batch_size=0"):
        EvalConfig(batch_size=0)
    with pytest.raises(EvaluationError, match="device='gpu'"):
        EvalConfig(device="gpu")
    with pytest.raises(EvaluationError, match="ratio=1.5"):
        ModelEntry(path=tmp_path, method="cusprun", ratio=1.5)
    with pytest.raises(EvaluationError, match="does not exist"):
        checkpoint_bytes(tmp_path / "missing")


# ---- builders --------------------------------------------------------------------------------

TOPICS = pa.table({"doc_id": [f"d{i}" for i in range(12)],
                   "text": [f"Article number {i} about things." for i in range(12)],
                   "label": ["Health", "Sport", "Music", "History", "Art", "Maths"] * 2})


def test_topic_items_are_seeded_and_well_formed():
    a = build_topic_items(TOPICS, n_items=8, seed=1)
    assert a == build_topic_items(TOPICS, n_items=8, seed=1)
    assert a != build_topic_items(TOPICS, n_items=8, seed=2)
    texts, labels = TOPICS.column("text").to_pylist(), TOPICS.column("label").to_pylist()
    for it in a:
        assert len(it.options) == 4 and len(set(it.options)) == 4
        row = next(i for i, t in enumerate(texts) if t in it.question)
        assert it.options[it.answer_index] == " " + labels[row]
    with pytest.raises(EvaluationError, match="distinct labels"):
        build_topic_items(TOPICS.slice(0, 2))
    with pytest.raises(EvaluationError, match="Column 'topic' not in table"):
        build_topic_items(TOPICS, label_col="topic")


def test_translation_and_definition_items():
    src = pa.table({"group_id": ["1:1", "1:2", "1:3", "1:4", "1:5"],
                    "text": ["In the beginning", "And the earth", "And God said", "And God saw", "And"]})
    tgt = pa.table({"group_id": ["1:5", "1:4", "1:3", "1:2", "1:1"],
                    "text": ["Und", "Und Gott sah", "Und Gott sprach", "Und die Erde", "Am Anfang"]})
    items = build_translation_items(src, tgt, source_name="English", target_name="German", seed=3)
    assert len(items) == 5
    pairs = dict(zip(src.column("text").to_pylist(), ["Am Anfang", "Und die Erde", "Und Gott sprach",
                                                      "Und Gott sah", "Und"]))
    for it in items:
        s = it.question.split("English: ", 1)[1].split("\n")[0]
        assert it.options[it.answer_index] == " " + pairs[s] and it.question.endswith("German:")
    wiki = pa.table({"title": ["Paris", "Heart", "Violin", "Bread", "Moon", "Ukrainian language"],
                     "text": ["Paris is the capital of France. It is big.", "The heart is an organ.",
                              "A violin is a string instrument.", "Bread is a food! Yes.",
                              "The Moon orbits Earth", "Ukrainian is an East Slavic language."]})
    defs = build_definition_items(wiki, seed=0)
    assert len(defs) == 6
    assert " It is a string instrument." in defs[0].options + defs[1].options + defs[2].options
    assert all("Ukrainian" not in o and "violin" not in o.lower() for d in defs for o in d.options)
    paris = next(d for d in defs if "Paris" in d.question)
    assert paris.question == "Question: What is Paris?\nAnswer:"
    assert paris.options[paris.answer_index] == " It is the capital of France."
    assert all("Paris" not in o for d in defs for o in d.options)


def test_loss_examples_from_table():
    t = pa.table({"text": ["doc one", "Q? A", None], "prompt": [None, "Q?", "P"],
                  "answer": [None, " A", None]})
    assert loss_examples_from_table(t) == [LossExample(text="doc one"),
                                           LossExample(prompt="Q?", text=" A")]


# ---- size and speed --------------------------------------------------------------------------

def test_size_matches_count_params_and_disk(tiny, tmp_path):
    model, _, path = tiny["LlamaForCausalLM"]
    s = size_metrics(model, path)
    c = count_params(model)
    assert s["params_total"] == c["total"] and s["params_non_embedding"] == c["non_embedding"]
    assert s["disk_bytes"] == sum(f.stat().st_size for f in path.glob("*.safetensors")) > 4 * c["total"] * 0.99
    tied, tpath = make_tiny_model("LlamaForCausalLM", tmp_path / "tied", tie_word_embeddings=True)
    st = size_metrics(tied, tpath)
    emb = tied.get_input_embeddings().weight.numel()
    assert st["params_total"] == c["total"] - emb  # the LM head is the embedding: counted once
    assert st["params_non_embedding"] == c["non_embedding"]


def test_speed_is_positive(tiny):
    model, tok, _ = tiny["Phi3ForCausalLM"]
    sp = speed_metrics(model, tok, prompt_tokens=8, decode_tokens=4, warmup=1, iters=2)
    assert set(sp) == {"prefill_tokens_per_s", "decode_tokens_per_s"}
    assert all(v > 0 and math.isfinite(v) for v in sp.values())


def test_answer_items_and_tasks_from_tables():
    qa = pa.table({"text": [f"Question: What is T{i}?\nAnswer: T{i} is thing {i}." for i in range(6)],
                   "value": ["qa"] * 6,
                   "prompt": [f"Question: What is T{i}?\nAnswer: " for i in range(6)],
                   "answer": [f"T{i} is thing number {i}." for i in range(6)],
                   "title": [f"T{i}" for i in range(6)]})
    items = build_answer_items(qa, title_col="title", n_items=4, seed=0)
    assert len(items) == 4
    for it in items:
        i = int(it.question.split("What is T")[1][0])
        assert it.options[it.answer_index] == f"It is thing number {i}."
        assert not any(f"T{k}" in o for o in it.options for k in range(6))
    tr = pa.table({"text": ["x"] * 5, "value": ["translation"] * 5,
                   "prompt": [f"English: verse {i}\nGerman: " for i in range(5)],
                   "answer": [f"Vers {i}" for i in range(5)]})
    tasks = mc_tasks_from_tables({"task=qa": qa, "task=translation": tr, "general=en": TOPICS},
                                 n_items=3)
    assert set(tasks) == {"topic classification", "definition QA", "translation selection"}
    for it in tasks["translation selection"]:
        assert it.options[it.answer_index] == "Vers " + it.question.split("verse ")[1][0]
    sets = loss_sets_from_tables({"task=qa": qa, "general=en": TOPICS}, max_docs=2)
    assert sets["task=qa"][0] == LossExample(prompt=qa["prompt"][0].as_py(), text=qa["answer"][0].as_py())
    assert len(sets["general=en"]) == 2 and sets["general=en"][0].prompt == ""


def test_loss_sets_grow_to_min_tokens_where_documents_are_short(tiny):
    _, tok, _ = tiny["LlamaForCausalLM"]
    n = 40
    qa = pa.table({"text": ["x"] * n, "value": ["qa"] * n,
                   "prompt": [f"Question: What is T{i}?\nAnswer: " for i in range(n)],
                   "answer": [f"T{i} is thing number {i}." for i in range(n)]})
    long = pa.table({"text": [f"document {i} " + "with a good many words in it " * 12 for i in range(n)]})
    count = scored_tokens(tok, 64)
    sets = loss_sets_from_tables({"task=qa": qa, "general=en": long}, max_docs=3, min_tokens=150,
                                 count_tokens=count)
    qa_set, long_set = sets["task=qa"], sets["general=en"]
    # long documents reach the budget within max_docs: the set is the same as without a budget
    assert long_set == loss_sets_from_tables({"general=en": long}, max_docs=3)["general=en"]
    # short answers: the first documents in order, just enough of them to score 150 tokens
    assert qa_set == loss_examples_from_table(qa)[:len(qa_set)] and len(qa_set) > 3
    scored = [count(e) for e in qa_set]
    assert sum(scored) >= 150 > sum(scored[:-1])
    # the counts are what heldout_loss scores
    model = tiny["LlamaForCausalLM"][0]
    assert heldout_loss(model, tok, qa_set, max_tokens=64, progress=False).n_tokens == sum(scored)
    # a table too small for the budget gives all it has
    few = loss_sets_from_tables({"task=qa": qa}, max_docs=3, min_tokens=10**6, count_tokens=count)
    assert len(few["task=qa"]) == n
    with pytest.raises(EvaluationError, match="count_tokens"):
        loss_sets_from_tables({"task=qa": qa}, max_docs=3, min_tokens=150)


def test_answer_options_can_be_clipped():
    table = pa.table({"prompt": [f"Q{i}?\nA: " for i in range(6)],
                      "answer": [f"answer number {i} " + "with many more words " * 5 for i in range(6)]})
    items = build_answer_items(table, n_items=6, max_answer_chars=40)
    assert all(len(o) <= 44 and o.endswith(" ...") for it in items for o in it.options)
    full = build_answer_items(table, n_items=6)
    assert [it.answer_index for it in items] == [it.answer_index for it in full]


def test_every_loss_set_from_one_pass_equals_one_pass_per_set(tiny):
    """evaluate_loaded scores all loss sets in one pass (a streamed model is then read once)."""
    from cusprun.evaluation.likelihood import heldout_loss, heldout_losses

    model, tok, _ = tiny["Gemma3ForCausalLM"]
    sets = {"a": [LossExample(text="The heart pumps blood through the body.")],
            "b": [LossExample(text="Fever is a symptom."), LossExample(text="Question: why?",
                                                                       prompt="Q: ")]}
    together = heldout_losses(model, tok, sets, max_tokens=32, batch_size=2, progress=False)
    for name, ex in sets.items():
        alone = heldout_loss(model, tok, ex, max_tokens=32, batch_size=2, progress=False)
        assert together[name].loss == pytest.approx(alone.loss, rel=1e-6)
        assert [n for _, n in together[name].per_doc] == [n for _, n in alone.per_doc]
        assert [x for x, _ in together[name].per_doc] == pytest.approx(
            [x for x, _ in alone.per_doc], rel=1e-5)


def test_models_evaluated_two_at_once_give_the_same_report(tiny, tmp_path):
    """eval_workers: two models at once on CPU, speed afterwards one at a time; same values."""
    from cusprun.evaluation import compare

    entries = {"dense": ModelEntry(path=tiny["LlamaForCausalLM"][2], method="dense"),
               "other": ModelEntry(path=tiny["Phi3ForCausalLM"][2], method="random", ratio=0.1)}
    sets = {"docs": [LossExample(text=t) for t in DOCS]}
    base = dict(max_tokens=32, progress=False, speed_iters=1, speed_warmup=0,
                speed_prompt_tokens=8, speed_decode_tokens=2)
    one = compare(entries, sets, None, tmp_path / "a", config=EvalConfig(workers=1, **base))
    two = compare(entries, sets, None, tmp_path / "b", config=EvalConfig(workers=2, **base))
    key = lambda r: (r.model, r.metric, r.eval_set)  # noqa: E731
    a = {key(r): r.value for r in one.rows if r.metric in ("loss", "params_total")}
    b = {key(r): r.value for r in two.rows if r.metric in ("loss", "params_total")}
    assert a == pytest.approx(b, rel=1e-6) and len(a) == 4
    assert {r.metric for r in two.rows} >= {"prefill_tokens_per_s", "decode_tokens_per_s"}
    with pytest.raises(EvaluationError, match="workers=0"):
        EvalConfig(workers=0)
