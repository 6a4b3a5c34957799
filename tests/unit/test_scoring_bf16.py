"""Statistics in bf16 (the default on CUDA, and what a bf16 checkpoint streams in): impacts rank
units like fp32, accumulators stay float32/float64, and a bf16 checkpoint is read in bf16."""
from __future__ import annotations

import pytest
import torch

from cusprun.engine import LayeredModel
from cusprun.models import load_model
from cusprun.models.loading import default_dtype
from cusprun.scoring import collect_stats, rank_percentile
from tests.support import make_tiny_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ARCH = "LlamaForCausalLM"
DOCS = ["The quick brown fox jumps over the lazy dog.", "Short one.",
        "Pack my box with five dozen liquor jugs, then sing.", "xyz",
        "Sphinx of black quartz, judge my vow; how vexingly quick daft zebras jump!"]
STAT_FIELDS = ("ffn_impact_mean", "head_impact_mean", "down_sum", "down_sumsq", "o_sum", "o_sumsq")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    return make_tiny_model(ARCH, tmp_path_factory.mktemp("tiny") / ARCH)[1]


@pytest.fixture(scope="module")
def plain(saved):
    model, tok = load_model(saved, device="cpu")
    return model, tok, collect_stats(model, tok, DOCS, batch_size=2, progress=False)


def _spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Rank correlation along the last dim."""
    ra, rb = rank_percentile(a), rank_percentile(b)
    ra, rb = ra - ra.mean(-1, keepdim=True), rb - rb.mean(-1, keepdim=True)
    return (ra * rb).sum(-1) / (ra.norm(dim=-1) * rb.norm(dim=-1))


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
def test_bf16_ranks_units_like_fp32(saved, plain, streamed):
    _, tok, f32 = plain
    if streamed:
        model = LayeredModel.streamed(saved, device="cpu", dtype=torch.bfloat16)
        with model.layer(0) as layer:
            assert {p.dtype for p in layer.parameters()} == {torch.bfloat16}
    else:
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


def test_cuda_defaults_bf16_and_cpu_fp32():
    assert default_dtype("cuda") == default_dtype("cuda:1") == torch.bfloat16
    assert default_dtype("cpu") == torch.float32


def test_cpu_load_is_whole_and_not_dispatched(plain):
    model = plain[0]
    assert getattr(model, "hf_device_map", None) is None
    assert {p.device.type for p in model.parameters()} == {"cpu"}
