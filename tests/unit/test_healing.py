"""Healing (cusprun.healing) on a tiny random Llama: the distillation lowers the KL to the
dense model on its training data, and the healed checkpoint is the sliced one's layout (stock
AutoModelForCausalLM, same tensors and shapes), with full training and with merged LoRA."""
from __future__ import annotations

import json

import pytest
import torch

from cusprun.healing import HealSpec

FP = "tiny-heal"
TEXTS = {"language": [f"the patient number {i} has a cough and a fever today." for i in range(40)],
         "general": [f"a river runs past the old mill, number {i}, to the sea." for i in range(40)]}


@pytest.fixture(scope="module")
def sliced(tmp_path_factory):
    """(dense dir, sliced dir): a tiny Llama and a random uniform plan at 0.3 sliced from it."""
    from cusprun.models.loading import load_config
    from cusprun.slicing import slice_checkpoint
    from tests.support import make_tiny_model
    from tests.support.synthetic import uniform_plan_for_ratio

    root = tmp_path_factory.mktemp("heal")
    _, dense = make_tiny_model("LlamaForCausalLM", root / "dense")
    plan = uniform_plan_for_ratio(load_config(dense), 0.3, fingerprint=FP)
    out = slice_checkpoint(dense, plan, root / "sliced", model_fingerprint=FP, progress=False)
    return dense, out


def _spec(**over) -> HealSpec:
    return HealSpec(**{"tokens": 8 * 4 * 32, "seq_len": 32, "batch_size": 4, "lr": 3e-3,
                       "warmup": 0.1, "top_k": 16, **over})


def _tensors(path) -> dict:
    from safetensors.torch import load_file

    return {k: v for f in sorted(path.glob("*.safetensors")) for k, v in load_file(f).items()}


@pytest.mark.parametrize("train", ["layers", "lora"])
def test_healing_lowers_kl_and_writes_the_sliced_layout(sliced, tmp_path, train):
    from transformers import AutoModelForCausalLM

    from cusprun.healing.distill import heal

    dense, src = sliced
    rec = heal(src, dense, TEXTS, _spec(train=train), tmp_path / "healed", progress=False)
    assert rec["kl_after"] < 0.8 * rec["kl_before"], rec
    assert rec["tokens"] == 8 * 4 * 32 and len(rec["curve"]) == 8
    assert set(rec["groups"]) == {"language", "general"}
    before, after = _tensors(src), _tensors(tmp_path / "healed")
    assert {k: v.shape for k, v in before.items()} == {k: v.shape for k, v in after.items()}
    assert {k: v.dtype for k, v in before.items()} == {k: v.dtype for k, v in after.items()}
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any("layers.0.mlp.down_proj" in k for k in changed)
    assert "model.embed_tokens.weight" not in changed       # frozen in both modes
    # stock transformers, no cusprun code: the healed model computes with the healed weights
    m = AutoModelForCausalLM.from_pretrained(tmp_path / "healed")
    assert torch.equal(m.state_dict()["model.layers.0.mlp.down_proj.weight"],
                       after["model.layers.0.mlp.down_proj.weight"])
    saved = json.loads((tmp_path / "healed" / "healing.json").read_text())
    assert saved["curve"] == rec["curve"] and saved["settings"]["train"] == train
    assert json.loads((tmp_path / "healed" / "cusprun.json").read_text())["healing"]["tokens"] == rec["tokens"]


def test_topk_kl_is_the_full_kl_at_full_k_and_a_lower_bound_below():
    import torch.nn.functional as F

    from cusprun.healing.loss import teacher_topk, topk_kl

    g = torch.Generator().manual_seed(0)
    t, s = torch.randn(2, 5, 50, generator=g) * 3, torch.randn(2, 5, 50, generator=g) * 3
    for temp in (1.0, 2.0):
        full = (F.softmax(t / temp, -1) * (F.log_softmax(t / temp, -1) - F.log_softmax(s / temp, -1))
                ).sum(-1).mean() * temp ** 2
        assert torch.allclose(topk_kl(s, *teacher_topk(t, 50, temp), temp), full, atol=1e-5)
        part = topk_kl(s, *teacher_topk(t, 8, temp), temp)
        assert 0 < part <= full + 1e-6


def test_schedule_draws_the_general_share_and_cycles_each_group():
    from cusprun.healing.data import Blocks, schedule

    blocks = Blocks(torch.zeros(30, 4, dtype=torch.long), ["language"] * 10 + ["domain"] * 10
                    + ["general"] * 10)
    plan = schedule(blocks, steps=100, batch_size=6, general_share=0.5, seed=1)
    flat = [b for step in plan for b in step]
    general = sum(blocks.group[b] == "general" for b in flat) / len(flat)
    assert 0.44 < general < 0.56 and len(plan) == 100
    assert schedule(blocks, steps=100, batch_size=6, general_share=0.5, seed=1) == plan
    first = [b for b in flat if blocks.group[b] == "language"][:10]
    assert sorted(first) == blocks.of("language")       # every block once before any repeats


@pytest.mark.parametrize("bad, words", [
    ({"kl_weight": 0, "lm_weight": 0}, "both 0"),
    ({"batch_size": 4, "micro_batch": 3}, "does not divide"),
    ({"tokens": 300, "batch_size": 4, "seq_len": 256}, "less than one step"),
    ({"train": "embeddings"}, "train"),
    ({"lr": -1}, "lr"),
])
def test_bad_heal_settings_fail_with_their_name(bad, words):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=words):
        HealSpec(**bad)
