"""Bad plans and bad targets are refused with a clear message before any weight is written."""
from __future__ import annotations

import json

import pytest
from transformers import AutoConfig

from cusprun.errors import CusprunError, SpecError
from cusprun.plans.plan import LayerKeep
from cusprun.slicing import slice_checkpoint
from tests.support import make_tiny_model, plan_from_keeps, random_plan

FP = "fp-errors"


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return make_tiny_model("LlamaForCausalLM", tmp_path_factory.mktemp("dense") / "llama")[1]


@pytest.fixture(scope="module")
def cfg(llama):
    return AutoConfig.from_pretrained(llama)


def _good(cfg, layout="uniform"):
    return random_plan(cfg, fingerprint=FP, ffn=48, groups=1, heads_per_group=2, layout=layout)


def test_fingerprint_mismatch_names_both_and_comes_first(cfg, tmp_path):
    out = tmp_path / "e"
    with pytest.raises(SpecError) as e:  # the model directory does not even exist: no work done
        slice_checkpoint(tmp_path / "missing", _good(cfg), out, model_fingerprint="other-fp")
    assert FP in str(e.value) and "other-fp" in str(e.value)
    assert not out.exists()


def test_unknown_layout_refused_before_work(cfg, tmp_path):
    plan = _good(cfg).model_copy(update={"layout": "ragged"})
    with pytest.raises(SpecError, match="ragged.*uniform, per_layer"):
        slice_checkpoint(tmp_path / "missing", plan, tmp_path / "e", model_fingerprint=FP)
    assert not (tmp_path / "e").exists()


def test_uniform_layout_needs_uniform_widths(llama, cfg, tmp_path):
    plan = random_plan(cfg, fingerprint=FP, ffn=[40, 40, 41], groups=1, heads_per_group=2,
                       layout="uniform")
    with pytest.raises(SpecError, match="uniform.*different widths"):
        slice_checkpoint(llama, plan, tmp_path / "e", model_fingerprint=FP)
    assert not (tmp_path / "e").exists() and not list(tmp_path.iterdir())
    # The same kept units are fine as a per-layer expert.
    slice_checkpoint(llama, plan.model_copy(update={"layout": "per_layer"}), tmp_path / "e",
                     model_fingerprint=FP, progress=False)


def test_head_count_the_family_refuses_is_explained(tmp_path):
    # hidden 64, 8 heads in 4 groups: keeping 3 groups x 2 heads = 6 heads, 64 % 6 != 0.
    src = make_tiny_model("LlamaForCausalLM", tmp_path / "d", num_attention_heads=8,
                          num_key_value_heads=4, head_dim=8)[1]
    cfg = AutoConfig.from_pretrained(src)
    plan = random_plan(cfg, fingerprint=FP, ffn=48, groups=3, heads_per_group=2, layout="uniform")
    with pytest.raises(SpecError) as e:
        slice_checkpoint(src, plan, tmp_path / "e", model_fingerprint=FP)
    msg = str(e.value)
    assert "6 query heads" in msg and "LlamaConfig" in msg and "per_layer" in msg
    out = slice_checkpoint(src, plan.model_copy(update={"layout": "per_layer"}), tmp_path / "p",
                           model_fingerprint=FP, progress=False)
    assert json.loads((out / "config.json").read_text())["layer_widths"][0]["num_attention_heads"] == 6


@pytest.mark.parametrize("keep, match", [
    (LayerKeep(ffn=[1, 2], heads=[0, 1], kv_heads=[1]), "do not match the groups"),
    (LayerKeep(ffn=[1, 2], heads=[0, 1, 2], kv_heads=[0, 1]), "different numbers of query heads"),
    (LayerKeep(ffn=[2, 1], heads=[0, 1], kv_heads=[0]), "sorted"),
    (LayerKeep(ffn=[1, 96], heads=[0, 1], kv_heads=[0]), "outside 0..95"),
    (LayerKeep(ffn=[1], heads=[], kv_heads=[]), "no query head"),
])
def test_invalid_head_structure(llama, cfg, tmp_path, keep, match):
    good = LayerKeep(ffn=[1, 2], heads=[0, 1], kv_heads=[0])
    plan = plan_from_keeps(cfg, [good, keep, good], fingerprint=FP, layout="per_layer")
    with pytest.raises(SpecError, match=match):
        slice_checkpoint(llama, plan, tmp_path / "e", model_fingerprint=FP)
    assert not list(tmp_path.iterdir())


def test_inconsistent_accounting_and_layer_count(llama, cfg, tmp_path):
    plan = _good(cfg)
    with pytest.raises(SpecError, match="removes"):
        slice_checkpoint(llama, plan.model_copy(update={"removed_params": plan.removed_params + 1}),
                         tmp_path / "e", model_fingerprint=FP)
    with pytest.raises(SpecError, match="2 layers, the model has 3"):
        slice_checkpoint(llama, plan.model_copy(update={"layers": plan.layers[:2]}), tmp_path / "e",
                         model_fingerprint=FP)
    with pytest.raises(SpecError, match="architecture"):
        slice_checkpoint(llama, plan.model_copy(update={"architecture": "Qwen2ForCausalLM"}),
                         tmp_path / "e", model_fingerprint=FP)


def test_non_empty_output_dir_is_refused_unless_overwrite(llama, cfg, tmp_path):
    out = tmp_path / "e"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(SpecError, match="not empty"):
        slice_checkpoint(llama, _good(cfg), out, model_fingerprint=FP)
    assert (out / "keep.txt").read_text() == "mine"
    slice_checkpoint(llama, _good(cfg), out, model_fingerprint=FP, overwrite=True, progress=False)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").exists()


def test_checkpoint_without_safetensors_or_with_foreign_names(llama, cfg, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_bytes((llama / "config.json").read_bytes())
    with pytest.raises(CusprunError, match="No safetensors"):
        slice_checkpoint(bare, _good(cfg), tmp_path / "e", model_fingerprint=FP)
    import torch
    from safetensors.torch import save_file

    save_file({"transformer.h.0.weight": torch.zeros(2)}, str(bare / "model.safetensors"))
    with pytest.raises(CusprunError, match="no tensor 'model.layers.0"):
        slice_checkpoint(bare, _good(cfg), tmp_path / "e", model_fingerprint=FP)
    assert not (tmp_path / "e").exists()
