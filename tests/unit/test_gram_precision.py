"""Compensation Grams with bfloat16 products: close to float32, recorded, in the cache key;
float32 partial sums flushed into float64 add up to the same Grams."""
from __future__ import annotations

import json

import pytest
import torch

from cusprun.compensation import CompensationConfig, GramSet
from cusprun.compensation import gram_set as G
from cusprun.engine import mask_model
from cusprun.scoring import collect_grams
from cusprun.scoring import grams as GR
from tests.support import make_tiny_model, random_plan, tiny_tokenizer

TEXTS = ["The heart pumps blood through the body.", "Fever is a common symptom of infection.",
         "Question: What is insulin?\nAnswer: a hormone that lowers blood sugar.",
         "In the beginning God created the heaven and the earth.", "Aspirin thins the blood.",
         "The kidneys filter the blood and make urine."]
ARCH = "LlamaForCausalLM"


def _grams(tmp_path, name, **kw):
    model, _ = make_tiny_model(ARCH)
    summary = collect_grams(model, tiny_tokenizer(), TEXTS, tmp_path / name, max_tokens=48,
                            batch_size=kw.pop("batch_size", 3), progress=False, **kw)
    return summary, GramSet([tmp_path / name])


def test_bfloat16_grams_are_close_to_float32_and_recorded(tmp_path):
    s32, g32 = _grams(tmp_path, "f32")
    s16, g16 = _grams(tmp_path, "b16", precision="bfloat16")
    assert (s32["precision"], s16["precision"]) == ("float32", "bfloat16")
    assert s16["n_tokens"] == s32["n_tokens"]
    for li in range(g32.n_layers):
        a, b = g32.layer(li), g16.layer(li)
        for role in G.ROLES:
            err = (b.gram[role] - a.gram[role]).norm() / a.gram[role].norm()
            assert 0 < err < 1e-2, (li, role, float(err))      # bfloat16 inputs, not float32
            assert torch.equal(b.total[role], a.total[role])   # sums from float32 inputs


def test_bfloat16_grams_compensate_about_as_well(tmp_path):
    """The masked + compensated logits with bfloat16 Grams stay much closer to the float32-Gram
    model than the uncompensated model is."""
    _, g32 = _grams(tmp_path, "f32")
    _, g16 = _grams(tmp_path, "b16", precision="bfloat16")
    model, _ = make_tiny_model(ARCH)
    plan = random_plan(model.config, fingerprint="f" * 24, ffn=40, groups=1, heads_per_group=2,
                       layout="uniform", seed=3)
    x = torch.randint(0, 256, (2, 17), generator=torch.Generator().manual_seed(0))
    out = {}
    for name, gs, mode in (("f32", g32, "ls"), ("b16", g16, "ls"), ("none", None, "none")):
        m, _ = make_tiny_model(ARCH)
        mask_model(m, plan, grams=gs, config=CompensationConfig(mode=mode, ridge=0.1))
        with torch.no_grad():
            out[name] = m(x).logits
    moved = (out["b16"] - out["f32"]).abs().max()
    assert moved < 0.05 * (out["none"] - out["f32"]).abs().max()


def test_partial_sums_flush_to_the_same_grams(tmp_path, monkeypatch):
    """One batch per document, flushed every 2 batches: the same Grams as the usual batching."""
    _, ref = _grams(tmp_path, "ref", batch_size=6)
    monkeypatch.setattr(GR, "FLUSH", 2)
    _, got = _grams(tmp_path, "flushed", batch_size=1)
    for li in range(ref.n_layers):
        for role in G.ROLES:
            a, b = ref.layer(li), got.layer(li)
            assert torch.allclose(b.gram[role], a.gram[role], rtol=1e-5,
                                  atol=1e-6 * float(a.gram[role].abs().max()))
            assert torch.allclose(b.total[role], a.total[role], rtol=1e-5, atol=1e-5)


def test_fused_pass_takes_the_precision(tmp_path):
    from cusprun.scoring import collect_stats

    model, _ = make_tiny_model(ARCH)
    collect_stats(model, tiny_tokenizer(), TEXTS, max_tokens=48, batch_size=4, progress=False,
                  grams_dir=tmp_path / "fused", grams_precision="bfloat16")
    assert json.loads((tmp_path / "fused" / G.SUMMARY_FILE).read_text())["precision"] == "bfloat16"


def test_spec_default_and_choices():
    """'auto' by default (resolved before any key is made: tests/pipeline/test_keys.py)."""
    from cusprun.pipeline.spec import ExpertSpec

    spec = ExpertSpec.model_validate({"name": "x", "base_model": "m", "max_tokens": 256})
    assert spec.gram_precision == "auto" and spec.probe_precision == "auto"
    with pytest.raises(ValueError, match="gram_precision"):
        ExpertSpec(gram_precision="fp8")
