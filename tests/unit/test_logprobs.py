"""The chunked, tiled LM head: log-probs equal a full log-softmax over the vocabulary, whatever
the tile shape, for several variants at once, with shared rows and a final-logit soft cap; a
bf16 head multiplies in float32, under autocast too."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import cusprun.engine.logprobs as lp_mod
from cusprun.engine import LayeredModel, token_logprobs
from tests.support import make_tiny_model


def _reference(model, h: torch.Tensor, targets: torch.Tensor, cap: float | None) -> torch.Tensor:
    logits = model.get_output_embeddings()(h).double()
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return F.log_softmax(logits, -1)[torch.arange(len(targets)), targets]


@pytest.mark.parametrize("budget,block", [(None, 512), (4 * 7 * 5, 5), (1 << 30, 3)])
@pytest.mark.parametrize("cap", [None, 7.0])
def test_tiled_head_equals_a_full_log_softmax(budget, block, cap, monkeypatch):
    monkeypatch.setattr(lp_mod, "POSITION_BLOCK", block)
    model, _ = make_tiny_model("LlamaForCausalLM", final_logit_softcapping=cap)
    lm = LayeredModel.resident(model)
    g = torch.Generator().manual_seed(0)
    vocab, width = model.config.vocab_size, model.config.hidden_size
    hidden = {"a": torch.randn(23, width, generator=g), "b": torch.randn(9, width, generator=g),
              "empty": torch.zeros(0, width)}
    # "a": 40 targets on its 23 rows (rows shared); "b": one target per row
    rows = {"a": torch.randint(0, 23, (40,), generator=g), "b": torch.arange(9),
            "empty": torch.zeros(0, dtype=torch.long)}
    targets = {n: torch.randint(0, vocab, (len(r),), generator=g) for n, r in rows.items()}
    got = token_logprobs(lm, hidden, targets, budget=budget, rows=rows)
    assert got["empty"].numel() == 0
    for n in ("a", "b"):
        want = _reference(model, hidden[n][rows[n]], targets[n], cap)
        assert torch.allclose(got[n].double(), want, atol=1e-5), n


def test_tiles_fit_the_budget_on_cpu_and_stay_whole_on_an_accelerator():
    rows, block = lp_mod.head_tiles(4096, 262144, lp_mod.default_budget("cpu"), "cpu")
    assert block == lp_mod.POSITION_BLOCK and rows * block * 4 <= lp_mod.CPU_LOGITS_BUDGET
    rows, block = lp_mod.head_tiles(4096, 262144, lp_mod.default_budget("cuda"), "cuda")
    assert block == 4096 and rows * block * 4 <= lp_mod.LOGITS_BUDGET
    assert lp_mod.head_tiles(3, 100, 1 << 30, "cpu") == (100, 3)     # never past the vocabulary
    assert lp_mod.head_tiles(4096, 262144, 2 << 20, "cpu", block=4096) == (128, 4096)
    # a bf16 head's float32 copy of a chunk is held to the budget too
    assert lp_mod.head_tiles(4, 262144, 256 << 20, "cuda", width=4096) == (16384, 4)


@pytest.mark.parametrize("autocast", [False, True])
def test_a_bf16_head_multiplies_in_float32(autocast, monkeypatch):
    monkeypatch.setattr(lp_mod, "CPU_LOGITS_BUDGET", 4 * 64 * 50)   # several chunks
    model, _ = make_tiny_model("LlamaForCausalLM")
    model = model.to(torch.bfloat16)
    lm = LayeredModel.resident(model)
    g = torch.Generator().manual_seed(0)
    h = (40 * torch.randn(40, 64, generator=g)).to(torch.bfloat16)   # logits up to about 30
    t = torch.randint(0, model.config.vocab_size, (40,), generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        got = token_logprobs(lm, {"a": h}, {"a": t})["a"].double()
    w = model.get_output_embeddings().weight
    want = F.log_softmax(F.linear(h.double(), w.double()), -1)[torch.arange(40), t]
    bf16_head = F.log_softmax(F.linear(h, w).double(), -1)[torch.arange(40), t]
    assert (got - want).abs().max() < 1e-5
    assert (got - bf16_head).abs().max() > 1e-2       # what logits rounded to bf16 would give
