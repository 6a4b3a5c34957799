"""Baselines: valid plans at the same ratio for every family, method and layout; the scores mean
what they claim; seeded randomness; input checks before any work."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cusprun.adapters import Adapter
from cusprun.baselines import BASELINES, baseline_plan, standardise, unit_scores
from cusprun.errors import SpecError
from cusprun.scoring import collect_stats
from tests.support import TINY_FAMILIES, make_tiny_model, tiny_tokenizer

GENERAL = [f"General text {i}: trains, music, {i * 13} apples and the weather." for i in range(8)]


@pytest.fixture(scope="module")
def models():
    tok = tiny_tokenizer()
    out = {}
    for arch in TINY_FAMILIES:
        model, _ = make_tiny_model(arch)
        general = collect_stats(model, tok, GENERAL, progress=False)
        general.summary["model_fingerprint"] = "fp"
        out[arch] = (model, general)
    return out


def _check_plan(plan, model, ratio, layout):
    ad = Adapter.for_model(model)
    d, u = ad.dims(model.config), ad.unit_params(model.config)
    target = round(ratio * ad.prunable_params(model.config))
    removed = sum((d.ffn - len(l.ffn)) * u["ffn_neuron"] + (d.n_heads - len(l.heads)) * u["query_head"]
                  + (d.n_kv_heads - len(l.kv_heads)) * u["kv_group"] for l in plan.layers)
    assert plan.removed_params == removed
    step = u["ffn_neuron"] * (d.n_layers if layout == "uniform" else 1)
    assert abs(removed - target) <= step
    for lk in plan.layers:
        assert lk.ffn and lk.heads
        assert sorted({h // d.group_size for h in lk.heads}) == lk.kv_heads
        counts = {g: sum(h // d.group_size == g for h in lk.heads) for g in lk.kv_heads}
        assert len(set(counts.values())) == 1
        assert ad.valid_head_count(model.config, len(lk.heads), len(lk.kv_heads))
    if layout == "uniform":
        assert len({(len(l.ffn), len(l.heads), len(l.kv_heads)) for l in plan.layers}) == 1


@pytest.mark.parametrize("arch", TINY_FAMILIES)
@pytest.mark.parametrize("layout", ["uniform", "per_layer"])
def test_every_baseline_gives_a_valid_plan_at_the_target(models, arch, layout):
    model, general = models[arch]
    for method in BASELINES:
        plan = baseline_plan(method, model, 0.4, layout, base_fingerprint="fp", general=general)
        _check_plan(plan, model, 0.4, layout)
        assert (plan.method, plan.rule, plan.layout, plan.target_ratio) == (method, None, layout, 0.4)
        assert plan.base_fingerprint == "fp" and plan.architecture == arch


@pytest.mark.parametrize("layout", ["uniform", "per_layer"])
def test_baselines_align_ffn_widths_like_cusprun(models, layout):
    model, general = models["Qwen2ForCausalLM"]
    d = Adapter.for_model(model).dims(model.config)
    for method in BASELINES:
        plan = baseline_plan(method, model, 0.4, layout, base_fingerprint="fp", general=general,
                             ffn_multiple=16)
        assert all(len(l.ffn) % 16 == 0 or len(l.ffn) == d.ffn for l in plan.layers)
        assert plan.report["ffn_multiple"] == 16


def test_random_is_seeded(models):
    model, _ = models["LlamaForCausalLM"]
    a = baseline_plan("random", model, 0.3, "per_layer", base_fingerprint="fp", seed=1)
    b = baseline_plan("random", model, 0.3, "per_layer", base_fingerprint="fp", seed=1)
    c = baseline_plan("random", model, 0.3, "per_layer", base_fingerprint="fp", seed=2)
    assert a.layers == b.layers and a.layers != c.layers


def test_magnitude_prunes_units_with_zero_weights_first():
    model, _ = make_tiny_model("Phi3ForCausalLM")          # fused gate_up and qkv projections
    ad = Adapter.for_model(model)
    d = ad.dims(model.config)
    layer = ad.layers(model)[1]
    with torch.no_grad():
        ad.down_proj(layer).weight[:, 5] = 0
        for part in ad.ffn_in_parts(layer, d):
            part.linear.weight[part.start + 5] = 0
        q = ad.qkv_parts(layer, d.n_heads, d.n_kv_heads, d.head_dim)["q"]
        q.linear.weight[q.start + 3 * d.head_dim:q.start + 4 * d.head_dim] = 0
        ad.o_proj(layer).weight[:, 3 * d.head_dim:4 * d.head_dim] = 0
    ffn, heads = unit_scores(model, ["magnitude"])["magnitude"]
    assert ffn[1, 5] == 0 and (np.delete(ffn.ravel(), 1 * d.ffn + 5) > 0).all()
    assert heads[1, 3] == 0 and heads.min() == 0 and (heads > 0).sum() == heads.size - 1
    plan = baseline_plan("magnitude", model, 0.01, "per_layer", base_fingerprint="fp")
    assert 5 not in plan.layers[1].ffn


def _captured_inputs(model, tok, pick):
    ad = Adapter.for_model(model)
    caught: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(ad.layers(model)))}
    hooks = [pick(ad, layer).register_forward_pre_hook(
        lambda m, a, i=i: caught[i].append(a[0][0].double())) for i, layer in enumerate(ad.layers(model))]
    with torch.no_grad():
        for t in GENERAL:
            model(input_ids=torch.tensor([tok(t)["input_ids"]]), use_cache=False)
    for h in hooks:
        h.remove()
    return {i: torch.cat(v) for i, v in caught.items()}


def test_wanda_sp_and_flap_scores_match_their_formulas(models):
    model, general = models["Qwen2ForCausalLM"]
    tok = tiny_tokenizer()
    ad = Adapter.for_model(model)
    d = ad.dims(model.config)
    xd = _captured_inputs(model, tok, lambda a, l: a.down_proj(l))
    xo = _captured_inputs(model, tok, lambda a, l: a.o_proj(l))
    scores = unit_scores(model, ["wanda-sp", "flap"], general)
    (wf, wh), (ff, fh) = scores["wanda-sp"], scores["flap"]
    for li, layer in enumerate(ad.layers(model)):
        wd = ad.down_proj(layer).weight.detach().double()
        wo = ad.o_proj(layer).weight.detach().double()
        want_wf = (wd.abs() * xd[li].norm(dim=0)).sum(0)
        want_wh = (wo.abs() * xo[li].norm(dim=0)).sum(0).view(d.n_heads, d.head_dim).sum(-1)
        want_ff = xd[li].var(0, unbiased=False) * wd.pow(2).sum(0)
        want_fh = (xo[li].var(0, unbiased=False) * wo.pow(2).sum(0)).view(d.n_heads, d.head_dim).sum(-1)
        for got, want in ((wf[li], want_wf), (wh[li], want_wh), (ff[li], want_ff), (fh[li], want_fh)):
            np.testing.assert_allclose(got, want.numpy(), rtol=1e-3)


def test_standardise_puts_unit_types_on_one_scale():
    x = np.random.default_rng(0).normal(50, 7, (3, 10))
    z = standardise(x)
    assert abs(z.mean()) < 1e-9 and abs(z.std() - 1) < 1e-9
    assert (standardise(np.ones((2, 2))) == 0).all()


@pytest.mark.parametrize("kwargs, match", [
    (dict(method="obs"), "Unknown baseline 'obs'; available: random, magnitude, wanda-sp, flap"),
    (dict(method="random", target_ratio=0.0), r"target_ratio=0.0.*\(0, 0.9\]"),
    (dict(method="random", target_ratio=0.95), r"target_ratio=0.95"),
    (dict(method="random", layout="spiral"), "layout 'spiral'"),
    (dict(method="wanda-sp", general=None), "'wanda-sp' needs channel statistics"),
    (dict(method="flap", general=None), "'flap' needs channel statistics"),
    (dict(method="flap", fingerprint="other"), "'fp'.*'other'"),
])
def test_bad_inputs_raise_before_work(models, kwargs, match):
    model, general = models["MistralForCausalLM"]
    args = dict(method="random", target_ratio=0.25, layout="uniform", general=general, fingerprint="fp")
    args.update(kwargs)
    with pytest.raises(SpecError, match=match):
        baseline_plan(args["method"], model, args["target_ratio"], args["layout"],
                      base_fingerprint=args["fingerprint"], general=args["general"])


def test_general_stats_of_another_shape_are_refused(models):
    model, _ = models["LlamaForCausalLM"]
    _, other = models["Gemma3ForCausalLM"]
    small, _ = make_tiny_model("LlamaForCausalLM", num_hidden_layers=2)
    with pytest.raises(SpecError, match=r"\(3, 96, 4\).*\(2, 96, 4\)"):
        baseline_plan("flap", small, 0.25, "uniform", base_fingerprint="fp", general=other)
