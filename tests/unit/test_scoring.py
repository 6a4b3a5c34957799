"""Impact statistics: hook impacts equal brute-force removal, padding is invisible, percentiles,
channel moments, files, and input checks - on a tiny model of every supported family."""
from __future__ import annotations

import json

import pytest
import torch

from cusprun.adapters import Adapter, zero_units
from cusprun.errors import CorpusError, SpecError
from cusprun.scoring import collect_stats, load_stats, rank_percentile, save_stats
from tests.support import TINY_FAMILIES, make_tiny_model, tiny_tokenizer

DOCS = ["The quick brown fox jumps over the lazy dog.", "Short one.",
        "Pack my box with five dozen liquor jugs, then sing.", "xyz"]
FFN_SAMPLE = [0, 7, 48, 95]   # neurons checked by brute force in every layer


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def _module_outputs(model, ad, ids, pick):
    """Output of `pick(layer)` for every layer in one forward of one unpadded document."""
    outs, hooks = [], []
    for layer in ad.layers(model):
        hooks.append(pick(layer).register_forward_hook(lambda m, a, o: outs.append(o.detach().clone())))
    try:
        with torch.no_grad():
            model(input_ids=ids, use_cache=False, logits_to_keep=1)
    finally:
        for h in hooks:
            h.remove()
    return outs


def _brute(model, ids, ad, kind, unit, layer, base):
    """RMS over tokens of ||change of the module's output|| when the unit alone is zeroed
    (zero_units, then a full rerun of the model)."""
    pick = ad.down_proj if kind == "ffn" else ad.o_proj
    change = _change(model, ad, ids, pick, kind, unit, layer, base)
    return change.norm(dim=-1).pow(2).mean().sqrt().item()


@pytest.mark.parametrize("arch", TINY_FAMILIES)
def test_hook_impacts_equal_brute_force_removal(arch, tok):
    model, _ = make_tiny_model(arch)
    ad = Adapter.for_model(model)
    d = ad.dims(model.config)
    text = DOCS[0]
    stats = collect_stats(model, tok, [text], progress=False)
    ids = torch.tensor([tok(text)["input_ids"]])
    base_o = _module_outputs(model, ad, ids, ad.o_proj)
    base_down = _module_outputs(model, ad, ids, ad.down_proj)
    for layer in range(d.n_layers):
        for h in range(d.n_heads):
            want = _brute(model, ids, ad, "head", h, layer, base_o)
            assert stats.head_impact_mean[layer, h].item() == pytest.approx(want, rel=1e-4, abs=1e-6)
        for k in FFN_SAMPLE:
            want = _brute(model, ids, ad, "ffn", k, layer, base_down)
            assert stats.ffn_impact_mean[layer, k].item() == pytest.approx(want, rel=1e-4, abs=1e-6)
    # The percentiles of the single document are the ranks of these impacts.
    torch.testing.assert_close(stats.head_pct[0].float(),
                               rank_percentile(stats.head_impact_mean).half().float())
    torch.testing.assert_close(stats.ffn_pct[0].float(),
                               rank_percentile(stats.ffn_impact_mean).half().float())


def _brute_centered(model, ad, docs, tok, kind, unit, layer):
    """Over every token of every document: the change of the module's output when the unit alone
    is zeroed, minus its mean over all tokens (what compensation restores); RMS of the norm."""
    pick = ad.down_proj if kind == "ffn" else ad.o_proj
    changes = []
    for text in docs:
        ids = torch.tensor([tok(text)["input_ids"]])
        base = _module_outputs(model, ad, ids, pick)
        changes.append(_change(model, ad, ids, pick, kind, unit, layer, base))
    c = torch.cat(changes)
    return (c - c.mean(0)).norm(dim=-1).pow(2).mean().sqrt().item()


def _change(model, ad, ids, pick, kind, unit, layer, base):
    weight = pick(ad.layers(model)[layer]).weight
    saved = weight.detach().clone()
    zero_units(model, {layer: [unit]} if kind == "ffn" else {}, {layer: [unit]} if kind == "head" else {})
    try:
        changed = _module_outputs(model, ad, ids, pick)[layer]
    finally:
        with torch.no_grad():
            weight.copy_(saved)
    return (changed - base[layer])[0]


@pytest.mark.parametrize("arch", ["LlamaForCausalLM", "Gemma3ForCausalLM", "Phi3ForCausalLM"])
def test_centered_impacts_equal_brute_force_over_the_corpus(arch, tok):
    """The corpus-level impact with the unit's mean restored, from the same single pass."""
    model, _ = make_tiny_model(arch)
    ad = Adapter.for_model(model)
    d = ad.dims(model.config)
    stats = collect_stats(model, tok, DOCS, batch_size=3, progress=False)   # padded batches
    for layer in (0, d.n_layers - 1):
        for h in range(d.n_heads):
            want = _brute_centered(model, ad, DOCS, tok, "head", h, layer)
            assert stats.head_centered[layer, h].item() == pytest.approx(want, rel=1e-3, abs=1e-6)
        for k in FFN_SAMPLE:
            want = _brute_centered(model, ad, DOCS, tok, "ffn", k, layer)
            assert stats.ffn_centered[layer, k].item() == pytest.approx(want, rel=1e-3, abs=1e-6)


@pytest.mark.parametrize("arch", TINY_FAMILIES)
def test_padded_batch_equals_docs_one_at_a_time(arch, tok):
    model, _ = make_tiny_model(arch)
    together = collect_stats(model, tok, DOCS, batch_size=4, progress=False)
    alone = collect_stats(model, tok, DOCS, batch_size=1, progress=False)
    assert together.n_docs == alone.n_docs == len(DOCS)
    assert together.doc_tokens.tolist() == [len(tok(t)["input_ids"]) for t in DOCS]
    assert together.n_tokens == alone.n_tokens
    for name in ("ffn_pct", "head_pct"):
        torch.testing.assert_close(getattr(together, name).float(), getattr(alone, name).float(),
                                   atol=2e-3, rtol=0)
    for name in ("ffn_impact_mean", "head_impact_mean", "down_sum", "down_sumsq", "o_sum", "o_sumsq"):
        torch.testing.assert_close(getattr(together, name), getattr(alone, name), rtol=1e-4, atol=1e-5)


def test_document_order_is_kept_and_rms_makes_lengths_comparable(tok):
    model, _ = make_tiny_model("LlamaForCausalLM")
    docs = [DOCS[1], DOCS[0]]
    both = collect_stats(model, tok, docs, batch_size=2, progress=False)
    first = collect_stats(model, tok, [docs[0]], progress=False)
    torch.testing.assert_close(both.ffn_pct[0], first.ffn_pct[0], atol=2e-3, rtol=0)
    # A document repeated (twice as many tokens of the same kind) keeps the RMS impact scale.
    long_doc = collect_stats(model, tok, [" ".join([DOCS[0]] * 3)], progress=False)
    ratio = long_doc.ffn_impact_mean.mean() / collect_stats(model, tok, [DOCS[0]], progress=False).ffn_impact_mean.mean()
    assert 0.5 < ratio.item() < 2.0


def test_channel_moments_match_direct_computation(tok):
    model, _ = make_tiny_model("Qwen2ForCausalLM")
    ad = Adapter.for_model(model)
    stats = collect_stats(model, tok, DOCS, batch_size=3, progress=False)
    xs = []
    for t in DOCS:
        ids = torch.tensor([tok(t)["input_ids"]])
        captured = []
        h = ad.down_proj(ad.layers(model)[1]).register_forward_pre_hook(lambda m, a: captured.append(a[0][0]))
        with torch.no_grad():
            model(input_ids=ids, use_cache=False)
        h.remove()
        xs.append(captured[0])
    x = torch.cat(xs).double()
    mean, var = stats.channel_moments("down")
    torch.testing.assert_close(mean[1], x.mean(0), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(var[1], x.var(0, unbiased=False), rtol=1e-3, atol=1e-6)
    torch.testing.assert_close(stats.channel_sq_norm("down")[1], (x * x).sum(0), rtol=1e-4, atol=1e-6)
    assert stats.o_sum.shape == (3, 4 * 16)


def test_rank_percentile_ranks_ties_and_bounds():
    v = torch.tensor([[3.0, 1.0, 2.0, 5.0], [1.0, 1.0, 0.0, 2.0]])
    p = rank_percentile(v)
    torch.testing.assert_close(p[0], torch.tensor([2 / 3, 0.0, 1 / 3, 1.0]))
    torch.testing.assert_close(p[1], torch.tensor([0.5, 0.5, 0.0, 1.0]))   # ties share mean rank
    assert rank_percentile(torch.tensor([[7.0]])).item() == 1.0
    r = rank_percentile(torch.randn(2, 3, 50))
    assert r.min() == 0 and r.max() == 1
    assert torch.allclose(r.sort(-1).values[0, 0], torch.arange(50) / 49)


def test_save_load_round_trip_and_summary(tmp_path, tok):
    model, _ = make_tiny_model("Gemma3ForCausalLM")
    stats = collect_stats(model, tok, DOCS, max_tokens=8, progress=False)
    assert stats.doc_tokens.max().item() <= 8          # truncation, not the model's context
    summary = save_stats(stats, tmp_path / "s", model_fingerprint="fp-1", corpus_hash="c-1",
                         extra={"dimension": "language", "value": "en"})
    loaded = load_stats(tmp_path / "s")
    on_disk = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert on_disk == summary == loaded.summary
    for key in ("n_docs", "n_tokens", "model_fingerprint", "corpus_hash", "architecture", "dims",
                "max_tokens", "created"):
        assert key in on_disk
    assert on_disk["n_docs"] == 4 and on_disk["max_tokens"] == 8
    assert on_disk["architecture"] == "Gemma3ForCausalLM" and on_disk["dims"]["ffn"] == 96
    assert loaded.model_fingerprint == "fp-1" and "language=en" in loaded.label
    torch.testing.assert_close(loaded.ffn_centered, stats.ffn_centered)
    torch.testing.assert_close(loaded.head_centered, stats.head_centered)
    assert loaded.ffn_pct.dtype == torch.float16 and loaded.down_sum.dtype == torch.float64
    for name in ("ffn_pct", "head_pct", "ffn_impact_mean", "o_sumsq", "doc_tokens"):
        assert torch.equal(getattr(loaded, name), getattr(stats, name))
    with pytest.raises(CorpusError, match="stats.safetensors"):
        load_stats(tmp_path)


def test_progress_callback_and_empty_docs(tok):
    model, _ = make_tiny_model("MistralForCausalLM")
    seen = []
    stats = collect_stats(model, tok, ["", *DOCS], batch_size=2, progress=False,
                          on_progress=lambda done, total: seen.append((done, total)))
    assert stats.n_docs == 4 and stats.summary["n_skipped_empty"] == 1
    assert seen == [(1, 3), (2, 3), (3, 3)]   # the pass goes layer by layer


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(texts=[]), CorpusError, "empty"),
    (dict(texts="a string"), CorpusError, "list of strings"),
    (dict(texts=["ok", 3]), CorpusError, "Document 1"),
    (dict(texts=["", ""]), CorpusError, "zero tokens"),
    (dict(texts=["ok"], max_tokens=0), SpecError, "max_tokens=0"),
    (dict(texts=["ok"], batch_size=0), SpecError, "batch_size=0"),
])
def test_bad_inputs_raise_before_model_work(kwargs, err, match, tok):
    model, _ = make_tiny_model("LlamaForCausalLM")
    calls = []
    h = model.register_forward_pre_hook(lambda *a: calls.append(1))
    texts = kwargs.pop("texts")
    with pytest.raises(err, match=match):
        collect_stats(model, tok, texts, progress=False, **kwargs)
    h.remove()
    assert calls == []
