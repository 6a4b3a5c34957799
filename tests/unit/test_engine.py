"""The engine: a model streamed from its checkpoint one layer at a time gives what the whole
model gives (statistics, Grams, probe damage, held-out loss, multiple choice), on a tiny model
of every family; the layer-by-layer loss equals a plain transformers forward; hidden states
spill to disk when the device budget is exceeded; only one layer is ever in memory."""
from __future__ import annotations

import math

import pytest
import torch

from cusprun.allocation import DamageProbe
from cusprun.compensation import CompensationConfig, GramSet
from cusprun.engine import (Batch, HiddenStore, LayeredModel, Recorder, Variant, decide,
                            model_bytes, open_model, run_pass)
from cusprun.errors import CusprunError, SpecError
from cusprun.evaluation import LossExample, MCItem, heldout_loss, mc_accuracy
from cusprun.models.loading import load_model
from cusprun.scoring import collect_stats
from tests.support import TINY_FAMILIES, make_tiny_model, random_plan, tiny_tokenizer

DOCS = ["The heart pumps blood through the body every second of the day.",
        "Fever is a common symptom of an infection.", "Short one.",
        "Question: What is insulin?\nAnswer: a hormone that lowers blood sugar.",
        "In the beginning God created the heaven and the earth, and the earth was void."]
ITEMS = [MCItem(question="The heart pumps", options=[" blood.", " rocks and sand.", " music."],
                answer_index=0),
         MCItem(question="Fever is a", options=[" symptom.", " river in the north."], answer_index=0)]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """arch -> (checkpoint dir, whole model loaded from it)."""
    root = tmp_path_factory.mktemp("engine")
    out = {}
    for arch in TINY_FAMILIES:
        _, path = make_tiny_model(arch, root / arch)
        model, _ = load_model(path, device="cpu", dtype=torch.float32)
        out[arch] = (path, model)
    return out


@pytest.mark.parametrize("arch", TINY_FAMILIES)
def test_streamed_statistics_and_grams_equal_the_whole_model(arch, saved, tmp_path):
    path, whole = saved[arch]
    tok = tiny_tokenizer()
    streamed = LayeredModel.streamed(path, device="cpu", dtype=torch.float32)
    a = collect_stats(whole, tok, DOCS, batch_size=2, progress=False, grams_dir=tmp_path / "a")
    b = collect_stats(streamed, tok, DOCS, batch_size=2, progress=False, grams_dir=tmp_path / "b")
    for name in ("ffn_impact_mean", "head_impact_mean", "ffn_centered", "head_centered",
                 "down_sum", "down_sumsq", "o_sum", "o_sumsq"):
        assert _rel(getattr(b, name), getattr(a, name)) < 1e-5, name
    for name in ("ffn_pct", "head_pct"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    ga, gb = GramSet([tmp_path / "a"]), GramSet([tmp_path / "b"])
    for li in range(ga.n_layers):
        for role in ("down", "o"):
            assert _rel(gb.layer(li).gram[role], ga.layer(li).gram[role]) < 1e-5
        assert gb.layer(li).resid_sq == pytest.approx(ga.layer(li).resid_sq, rel=1e-5)
    assert streamed.bytes_read > 0


@pytest.mark.parametrize("arch", TINY_FAMILIES)
def test_streamed_loss_mc_and_probe_equal_the_whole_model(arch, saved, tmp_path):
    path, whole = saved[arch]
    tok = tiny_tokenizer()
    streamed = LayeredModel.streamed(path, device="cpu", dtype=torch.float32)
    examples = [LossExample(text=t) for t in DOCS]
    la = heldout_loss(whole, tok, examples, max_tokens=32, batch_size=2, progress=False)
    lb = heldout_loss(streamed, tok, examples, max_tokens=32, batch_size=2, progress=False)
    assert lb.loss == pytest.approx(la.loss, rel=1e-5) and lb.n_tokens == la.n_tokens
    ma = mc_accuracy(whole, tok, ITEMS, progress=False)
    mb = mc_accuracy(streamed, tok, ITEMS, progress=False)
    assert mb.predictions == ma.predictions
    assert sum(mb.scores, []) == pytest.approx(sum(ma.scores, []), rel=1e-5)
    collect_stats(whole, tok, DOCS, progress=False, grams_dir=tmp_path / "g")
    grams = GramSet([tmp_path / "g"])
    plan = random_plan(whole.config, fingerprint="fp", ffn=50, groups=1, heads_per_group=2, seed=3)
    comp = CompensationConfig(mode="ls", ridge=0.1)
    held = {"domain": DOCS[:3], "task": DOCS[3:]}
    pa = DamageProbe(whole, tok, held, grams=grams, compensation=comp, max_tokens=32)
    pb = DamageProbe(streamed, tok, held, grams=grams, compensation=comp, max_tokens=32)
    assert pb.dense == pytest.approx(pa.dense, rel=1e-5)
    da, db = pa.damage(pa.losses(plan)), pb.damage(pb.losses(plan))
    assert db == pytest.approx(da, rel=1e-5) and abs(da - 1.0) > 1e-4   # the plan changed it
    assert all(p.is_meta for p in streamed.model.parameters()
               if p is not streamed.model.get_decoder().norm.weight)


@pytest.mark.parametrize("arch", ["LlamaForCausalLM", "Gemma3ForCausalLM", "Phi3ForCausalLM"])
def test_layer_by_layer_loss_equals_a_plain_transformers_forward(arch, saved):
    """The engine's loss (captured masks and rotary embeddings, the final norm and the chunked
    head on scored positions) against logits from the family's own forward."""
    _, whole = saved[arch]
    tok = tiny_tokenizer()
    ids = tok(DOCS[0])["input_ids"]
    with torch.no_grad():
        logits = whole(input_ids=torch.tensor([ids])).logits[0].float()
    lp = torch.log_softmax(logits[:-1], -1).gather(1, torch.tensor(ids[1:])[:, None])
    want = -float(lp.double().mean())
    got = heldout_loss(whole, tok, [LossExample(text=DOCS[0])], progress=False)
    assert got.loss == pytest.approx(want, rel=1e-5)


def test_tied_embeddings_stream_from_the_embedding(tmp_path):
    _, path = make_tiny_model("LlamaForCausalLM", tmp_path / "tied", tie_word_embeddings=True)
    whole, tok = load_model(path, device="cpu", dtype=torch.float32)
    streamed = LayeredModel.streamed(path, device="cpu", dtype=torch.float32)
    ex = [LossExample(text=t) for t in DOCS]
    assert heldout_loss(streamed, tok, ex, progress=False).loss == pytest.approx(
        heldout_loss(whole, tok, ex, progress=False).loss, rel=1e-5)


class _Layers(Recorder):
    """Counts the decoder layers whose weights are real while each layer runs."""

    def __init__(self, lm: LayeredModel):
        self.lm, self.real = lm, []

    def attach(self, li, layer):
        self.real.append(sum(not next(iter(x.parameters())).is_meta for x in self.lm.layers))
        return []


def test_a_streamed_pass_holds_one_layer_and_spills_hidden_states(saved):
    path, _ = saved["Qwen2ForCausalLM"]
    tok = tiny_tokenizer()
    lm = LayeredModel.streamed(path, device="cpu", dtype=torch.float32)
    seqs = [tok(t)["input_ids"] for t in DOCS]
    from cusprun.engine import document_batches

    batches = document_batches(seqs, 2, 258)
    finals = {}
    rec = _Layers(lm)
    out = run_pass(lm, batches, [Variant("dense", recorders=[rec])], budget_bytes=0,
                   on_final=lambda v, i, b, h: finals.__setitem__(i, h), progress=False)
    assert rec.real == [1, 1, 1]
    assert out["spilled"]["dense"]["disk"] > 0
    kept = {}
    run_pass(lm, batches, on_final=lambda v, i, b, h: kept.__setitem__(i, h), progress=False)
    for i in finals:
        torch.testing.assert_close(finals[i], kept[i], rtol=0, atol=0)


def test_hidden_store_round_trips_every_tier(tmp_path):
    store = HiddenStore(torch.device("cpu"), budget_bytes=100)
    small, big = torch.randn(2, 3), torch.randn(4, 50).to(torch.bfloat16)
    store.put(0, small)
    store.put(1, big)
    assert torch.equal(store.get(0), small) and torch.equal(store.get(1), big)
    assert store.spilled["disk"] == 1
    store.close()


def test_bad_checkpoint_names_and_streaming_setting_are_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    model, path = make_tiny_model("LlamaForCausalLM", tmp_path / "m")
    sd = load_file(str(path / "model.safetensors"))
    sd["model.layers.0.mlp.down_weight"] = sd.pop("model.layers.0.mlp.down_proj.weight")
    save_file(sd, str(path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CusprunError, match="down_proj.weight"):
        LayeredModel.streamed(path, device="cpu")
    with pytest.raises(SpecError, match="streaming='sometimes'.*auto, always, never"):
        decide(path, "cpu", torch.float32, "sometimes")


def test_auto_streams_exactly_when_the_model_does_not_fit(saved, monkeypatch):
    from cusprun.engine import placement

    path, _ = saved["LlamaForCausalLM"]
    weights = model_bytes(path, torch.float32)
    assert weights == sum(p.numel() * 4 for p in saved["LlamaForCausalLM"][1].parameters())
    need = placement.load_bytes(path, "cpu", torch.float32)
    from cusprun.models.checkpoint import checkpoint_tensors

    assert need == weights + sum(i.nbytes for i in checkpoint_tensors(path).values())   # + the map
    monkeypatch.setattr(placement, "free_bytes", lambda device: 10 * need)
    assert not decide(path, "cpu", torch.float32)
    monkeypatch.setattr(placement, "free_bytes", lambda device: need)
    assert decide(path, "cpu", torch.float32)
    assert not decide(path, "cpu", torch.float32, "never") and decide(path, "cpu", torch.float32,
                                                                      "always")
    lm, tok = open_model(path, streaming="auto", device="cpu")
    assert lm.checkpoint is not None and tok.pad_token is not None
    assert math.isfinite(heldout_loss(lm, tok, [LossExample(text=DOCS[0])], progress=False).loss)


def test_batches_of_several_corpora_in_one_pass_are_kept_apart(saved):
    """One statistics pass for two corpora gives each what a pass of its own gives."""
    from cusprun.scoring import CorpusJob, collect_corpora

    _, whole = saved["MistralForCausalLM"]
    tok = tiny_tokenizer()
    both = collect_corpora(whole, tok, {"a": CorpusJob(DOCS[:2]), "b": CorpusJob(DOCS[2:])},
                           progress=False)
    alone = collect_stats(whole, tok, DOCS[2:], progress=False)
    assert torch.equal(both["b"].ffn_pct, alone.ffn_pct)
    assert _rel(both["b"].down_sumsq, alone.down_sumsq) < 1e-6
    assert both["a"].n_docs == 2 and both["b"].n_docs == 3
    assert isinstance(Batch(torch.zeros(1, 1), torch.ones(1, 1), [0]).group, type(None))


def test_hidden_state_budgets_come_from_free_memory(monkeypatch):
    from cusprun.engine import placement
    from cusprun.engine.run import HIDDEN_SHARE, hidden_budgets

    monkeypatch.setattr(placement, "free_bytes", lambda device: 8_000 if str(device) == "cpu" else 4_000)
    assert hidden_budgets(torch.device("cpu"), 2, None) == (int(HIDDEN_SHARE * 8_000 / 2), 0)
    assert hidden_budgets(torch.device("cpu"), 1, 123) == (123, 123)


def test_a_per_layer_expert_streams_like_it_loads(saved, tmp_path):
    """Experts whose layers have different widths (model type cusprun_per_layer) stream too."""
    from cusprun.slicing import slice_checkpoint
    from tests.support import random_plan

    path, whole = saved["Qwen3ForCausalLM"]
    plan = random_plan(whole.config, fingerprint="fp", ffn=[10, 96, 33], groups=[1, 2, 2],
                       heads_per_group=[2, 1, 2], layout="per_layer", seed=4)
    out = slice_checkpoint(path, plan, tmp_path / "expert", model_fingerprint="fp", progress=False)
    expert, tok = load_model(out, device="cpu", dtype=torch.float32)
    streamed = LayeredModel.streamed(out, device="cpu", dtype=torch.float32)
    ex = [LossExample(text=t) for t in DOCS]
    assert heldout_loss(streamed, tok, ex, progress=False).loss == pytest.approx(
        heldout_loss(expert, tok, ex, progress=False).loss, rel=1e-5)
