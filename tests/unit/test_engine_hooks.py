"""A model dispatched by accelerate (device_map, offload) keeps its hooks through cusprun: the
capture that turns every decoder layer into a pass-through puts back the hooked `forward` each
layer had, so the passes run through the hooks (an offloaded layer loads its weights) and the
model works as before afterwards."""
from __future__ import annotations

import pytest
import torch
from accelerate import dispatch_model

import cusprun
from cusprun.engine import LayeredModel
from cusprun.evaluation import LossExample, heldout_loss
from cusprun.models.loading import load_model
from tests.support import make_tiny_model, tiny_tokenizer

DOCS = ["The heart pumps blood through the body every second of the day.",
        "Fever is a common symptom of an infection.", "Question: What is insulin?\nAnswer: a hormone.",
        "In the beginning God created the heaven and the earth."]
TOP = ["model.embed_tokens", "model.layers.0", "model.layers.1", "model.layers.2", "model.norm",
       "model.rotary_emb", "lm_head"]


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    return make_tiny_model("LlamaForCausalLM", tmp_path_factory.mktemp("hooks") / "tiny")[1]


def _dispatched(path, tmp_path, offload: str = "cpu"):
    """The model with an accelerate hook on every top-level block; `offload='disk'`: layer 1's
    weights live on disk and are loaded by its hook for each forward."""
    model, _ = load_model(path, device="cpu", dtype=torch.float32)
    device_map = {name: "cpu" for name in TOP}
    device_map["model.layers.1"] = offload
    return dispatch_model(model, device_map=device_map, main_device="cpu", force_hooks=True,
                          offload_dir=str(tmp_path / "offload"))


def _hooks(model) -> list[tuple]:
    return [(layer._hf_hook, layer.__dict__["forward"]) for layer in model.model.layers]


def _logits(model) -> torch.Tensor:
    ids = torch.randint(0, 256, (2, 11), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("offload", ["cpu", "disk"])
def test_engine_passes_keep_accelerate_hooks_and_run_through_them(path, tmp_path, offload):
    plain, _ = load_model(path, device="cpu", dtype=torch.float32)
    model = _dispatched(path, tmp_path, offload)
    if offload == "disk":
        assert model.model.layers[1].mlp.down_proj.weight.is_meta   # weights only in its hook
    hooks, before = _hooks(model), _logits(model)
    calls = []
    hook = model.model.layers[1]._hf_hook
    real = hook.pre_forward
    hook.pre_forward = lambda module, *a, **kw: calls.append(1) or real(module, *a, **kw)
    tok = tiny_tokenizer()
    examples = [LossExample(text=t) for t in DOCS]
    got = heldout_loss(LayeredModel.resident(model), tok, examples, max_tokens=32, batch_size=2,
                       progress=False)
    assert calls, "the pass ran layer 1 without its hook"
    want = heldout_loss(plain, tok, examples, max_tokens=32, batch_size=2, progress=False)
    assert got.loss == pytest.approx(want.loss, abs=1e-5)
    after = _hooks(model)
    assert all(a[0] is b[0] and a[1] is b[1] for a, b in zip(after, hooks))
    assert torch.allclose(_logits(model), before, atol=1e-6)


def test_prune_leaves_a_dispatched_model_hooked(path, tmp_path):
    model = _dispatched(path, tmp_path)
    hooks, before = _hooks(model), _logits(model)
    docs = [d + f" {i}" for i in range(3) for d in DOCS]
    expert = cusprun.prune(model, {"domain": docs}, ratio=0.25, tokenizer=tiny_tokenizer(),
                           allocation="rank", max_tokens=32, work_dir=tmp_path / "work",
                           progress=False)
    assert 0.15 < expert.ratio < 0.35
    assert all(a[0] is b[0] and a[1] is b[1] for a, b in zip(_hooks(model), hooks))
    assert torch.allclose(_logits(model), before, atol=1e-6)
