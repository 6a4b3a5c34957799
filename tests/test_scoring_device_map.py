"""Statistics on models spread out by accelerate, and in bf16.

A model larger than one GPU is loaded with a device_map; accelerate then keeps offloaded layers'
weights on the meta device and onloads them only inside forward. On this CPU-only machine a
"disk" entry produces exactly that state (a "cpu" entry behind a GPU does the same), so the hooks'
precomputed weight norms and Gram matrices must come out equal to the plain model's. bf16 is the
default on CUDA: its impacts must rank units like fp32 does."""
from __future__ import annotations

import pytest
import torch
from accelerate.utils import has_offloaded_params
from transformers import AutoModelForCausalLM

from cusprun.adapters import Adapter
from cusprun.errors import CusprunError
from cusprun.models import load_model
from cusprun.scoring import collect_stats, rank_percentile
from cusprun.scoring.collect import pad_right
from cusprun.scoring.hooks import ImpactRecorder
from tests.support import make_tiny_model, tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ARCH = "LlamaForCausalLM"
DOCS = ["The quick brown fox jumps over the lazy dog.", "Short one.",
        "Pack my box with five dozen liquor jugs, then sing.", "xyz",
        "Sphinx of black quartz, judge my vow; how vexingly quick daft zebras jump!"]
# Layer 0 stays resident; layers 1 and 2 live on disk and are on meta outside forward.
OFFLOAD = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu",
           "model.layers.1": "disk", "model.layers.2": "disk", "model.norm": "cpu", "lm_head": "cpu"}
STAT_FIELDS = ("ffn_impact_mean", "head_impact_mean", "down_sum", "down_sumsq", "o_sum", "o_sumsq")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The tiny model saved as safetensors (plus tokenizer)."""
    return make_tiny_model(ARCH, tmp_path_factory.mktemp("tiny") / ARCH)[1]


@pytest.fixture(scope="module")
def plain(saved):
    model, tok = load_model(saved, device="cpu")
    return model, tok, collect_stats(model, tok, DOCS, batch_size=2, progress=False)


def _per_doc(model, tok):
    """Per-document impacts (FFN [B, L, I], heads [B, L, H]) of DOCS in one padded batch."""
    ad = Adapter.for_model(model)
    rec = ImpactRecorder(model, ad, ad.dims(model.config))
    try:
        ids, mask = pad_right([tok(t)["input_ids"] for t in DOCS], tok.pad_token_id, "cpu")
        rec.start_batch(mask)
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=1)
        return rec.take_batch()
    finally:
        rec.remove()


def _offloaded(model) -> list[int]:
    """Layers whose down_proj and o_proj weights are on meta, onloaded only by accelerate."""
    ad = Adapter.for_model(model)
    out = []
    for li, layer in enumerate(ad.layers(model)):
        mods = (ad.down_proj(layer), ad.o_proj(layer))
        if all(m.weight.is_meta and has_offloaded_params(m) for m in mods):
            out.append(li)
    return out


def _assert_same_stats(got, want):
    for name in STAT_FIELDS:
        torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=1e-4, atol=1e-9)
    for name in ("ffn_pct", "head_pct"):
        torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=0, atol=2e-3)


def _spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Rank correlation along the last dim."""
    ra, rb = rank_percentile(a), rank_percentile(b)
    ra, rb = ra - ra.mean(-1, keepdim=True), rb - rb.mean(-1, keepdim=True)
    return (ra * rb).sum(-1) / (ra.norm(dim=-1) * rb.norm(dim=-1))


def test_offloaded_layers_give_the_plain_models_impacts(saved, plain, tmp_path):
    model_p, tok, stats_p = plain
    model = AutoModelForCausalLM.from_pretrained(
        saved, dtype=torch.float32, device_map=OFFLOAD, offload_folder=tmp_path / "offload").eval()
    assert _offloaded(model) == [1, 2]          # the onload path really is exercised
    ffn, heads = _per_doc(model, tok)
    ffn_p, heads_p = _per_doc(model_p, tok)
    assert ffn.shape == (len(DOCS), 3, 96) and heads.shape == (len(DOCS), 3, 4)
    assert ffn[:, 1:].min() > 0 and heads[:, 1:].min() > 0
    torch.testing.assert_close(ffn, ffn_p, rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(heads, heads_p, rtol=1e-4, atol=1e-9)
    _assert_same_stats(collect_stats(model, tok, DOCS, batch_size=2, progress=False), stats_p)
    assert _offloaded(model) == [1, 2]          # nothing was left onloaded


@pytest.mark.parametrize("device_map", ["auto", OFFLOAD], ids=["auto", "disk-offload"])
def test_load_model_with_device_map_end_to_end(saved, plain, device_map):
    model, tok = load_model(saved, device="cpu", device_map=device_map)
    if device_map is OFFLOAD:
        assert _offloaded(model) == [1, 2]
    _assert_same_stats(collect_stats(model, tok, DOCS, batch_size=2, progress=False), plain[2])


def test_meta_weights_without_an_accelerate_hook_are_refused():
    with torch.device("meta"):
        model = getattr(__import__("transformers"), ARCH)(tiny_config(ARCH))
    ad = Adapter.for_model(model)
    with pytest.raises(CusprunError, match="meta device"):
        ImpactRecorder(model, ad, ad.dims(model.config))


def test_bf16_ranks_units_like_fp32(saved, plain):
    _, tok, f32 = plain
    model, _ = load_model(saved, device="cpu", dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    b16 = collect_stats(model, tok, DOCS, batch_size=2, progress=False)
    for name in STAT_FIELDS:                    # hooks accumulate in float32 / float64
        assert getattr(b16, name).dtype == getattr(f32, name).dtype
        assert torch.isfinite(getattr(b16, name)).all()
    rel = (b16.ffn_impact_mean - f32.ffn_impact_mean).abs() / f32.ffn_impact_mean
    assert rel.max() < 0.05
    assert _spearman(b16.ffn_impact_mean, f32.ffn_impact_mean).min() > 0.99     # per layer
    assert _spearman(b16.ffn_pct.float(), f32.ffn_pct.float()).min() > 0.95     # per doc and layer
    assert (b16.ffn_pct.float() - f32.ffn_pct.float()).abs().mean() < 0.01
    # Only 4 heads per layer: allow at most one swap of neighbours (Spearman 0.8).
    assert _spearman(b16.head_impact_mean, f32.head_impact_mean).min() > 0.79
    assert _spearman(b16.head_pct.float(), f32.head_pct.float()).min() > 0.79


def test_cuda_defaults_bf16_and_plain_cuda_spreads_over_every_gpu():
    from cusprun.models.loading import default_device_map, default_dtype

    assert default_dtype("cuda") == default_dtype("cuda:1") == torch.bfloat16
    assert default_dtype("cpu") == torch.float32

    assert default_device_map("cuda") == "auto"            # one GPU or many, offload if needed
    assert default_device_map("cuda:1") is None            # the user named one GPU
    assert default_device_map("cpu") is None
    assert default_device_map("cuda", OFFLOAD) is OFFLOAD
    assert default_device_map("cpu", "auto") == "auto"


def test_cpu_load_is_not_dispatched(saved, plain):
    model = plain[0]
    assert getattr(model, "hf_device_map", None) is None
    assert {p.device.type for p in model.parameters()} == {"cpu"}
