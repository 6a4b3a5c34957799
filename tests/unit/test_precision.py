"""Measurement precision: float32, or bfloat16 autocast where matmuls are native."""
from __future__ import annotations

import pytest
import torch

from cusprun.evaluation.items import LossExample
from cusprun.evaluation.likelihood import heldout_loss
from cusprun.models import precision as P
from cusprun.pipeline.spec import EvaluationOptions
from tests.support import TINY_FAMILIES, make_tiny_model, tiny_tokenizer

TEXTS = ["The heart pumps blood through the body.", "Fever is a common symptom of infection.",
         "Insulin lowers the level of sugar in the blood."]


def test_resolution(monkeypatch):
    assert P.resolve_precision("float32", "cpu") == "float32"
    assert P.resolve_precision("bfloat16", "cpu") == "bfloat16"  # asked for: honoured, even if emulated
    monkeypatch.setattr(P, "native_bf16", lambda device: True)
    assert P.resolve_precision("auto", "cpu") == "bfloat16"
    monkeypatch.setattr(P, "native_bf16", lambda device: False)
    assert P.resolve_precision("auto", "cpu") == "float32"
    with pytest.raises(ValueError, match="'half' is not one of auto, float32, bfloat16"):
        P.resolve_precision("half", "cpu")


def test_native_bf16_on_this_cpu_matches_torch():
    expected = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert P.native_bf16("cpu") == expected
    assert P.native_bf16("meta") is False


def test_compute_precision_switches_matmuls_only_inside_the_block():
    lin = torch.nn.Linear(8, 8)
    x = torch.randn(2, 8)
    with P.compute_precision("cpu", "bfloat16") as got:
        assert got == "bfloat16" and lin(x).dtype == torch.bfloat16
    assert lin(x).dtype == torch.float32 and lin.weight.dtype == torch.float32
    with P.compute_precision("cpu", "float32") as got:
        assert got == "float32" and lin(x).dtype == torch.float32


@pytest.mark.parametrize("arch", TINY_FAMILIES)
def test_bfloat16_loss_is_close_to_float32_for_every_family(arch):
    model, _ = make_tiny_model(arch)
    tok = tiny_tokenizer()
    ex = [LossExample(text=t) for t in TEXTS]
    f32 = heldout_loss(model, tok, ex, max_tokens=32, progress=False)
    with P.compute_precision("cpu", "bfloat16"):
        b16 = heldout_loss(model, tok, ex, max_tokens=32, progress=False)
    assert b16.n_tokens == f32.n_tokens
    assert b16.loss == pytest.approx(f32.loss, rel=0.02)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_spec_names_the_accepted_precisions():
    assert EvaluationOptions().sweep_precision == "auto"
    with pytest.raises(ValueError, match="sweep_precision") as e:
        EvaluationOptions(sweep_precision="fp16")
    assert "'auto', 'float32' or 'bfloat16'" in str(e.value)


def test_probe_precision_defaults_to_auto_and_names_the_choices():
    from cusprun.pipeline.spec import ExpertSpec

    assert ExpertSpec().probe_precision == "auto"
    with pytest.raises(ValueError, match="probe_precision"):
        ExpertSpec(probe_precision="int8")


def test_matmul_dtype_names_what_bf16_weights_really_do():
    assert P.matmul_dtype("float32", "cpu", torch.float32) == "float32"
    assert P.matmul_dtype("bfloat16", "cpu", torch.float32) == "bfloat16"
    assert P.matmul_dtype("float32", "cuda", torch.bfloat16) == "bfloat16"   # not float32
    assert P.matmul_dtype("float32", "cuda", torch.float16) == "float16"
    assert P.matmul_dtype("bfloat16", "cuda", torch.bfloat16) == "bfloat16"


def test_a_float32_pass_loads_float32_weights_on_every_device():
    from cusprun.pipeline.runtime import Runtime

    gpu = Runtime(device="cuda", dtype="bfloat16", gram_precision="bfloat16",
                  probe_precision="float32", sweep_precision="bfloat16")
    assert gpu.load_options("probe_precision")["dtype"] == torch.float32
    assert gpu.load_options("sweep_precision")["dtype"] == torch.bfloat16
    assert gpu.load_options()["dtype"] == torch.bfloat16               # statistics, scores
    cpu = Runtime(device="cpu", dtype="float32", gram_precision="bfloat16",
                  probe_precision="bfloat16", sweep_precision="bfloat16")
    assert {cpu.load_options(p)["dtype"] for p in (None, "probe_precision", "sweep_precision")} \
        == {torch.float32}                                             # a CPU never changes


def test_a_bf16_model_probe_records_bfloat16_whatever_it_was_asked():
    from cusprun.allocation import DamageProbe

    model, _ = make_tiny_model("LlamaForCausalLM")
    probe = DamageProbe(model.to(torch.bfloat16), tiny_tokenizer(), {"domain": TEXTS},
                        max_tokens=32, precision="float32")
    assert probe.precision == "bfloat16"
