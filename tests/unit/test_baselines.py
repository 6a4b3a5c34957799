"""Baselines: valid plans at the same ratio for every family, method and layout; each baseline's
scores and structure equal an independent few-line formula (wanda-sp and FLAP as in their
reference code, CASIA-IVA-Lab/FLAP lib/prune.py); seeded randomness; input checks before any work."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cusprun.adapters import Adapter
from cusprun.baselines import BASELINES, baseline_plan, standardise, unit_scores
from cusprun.baselines.plan import layer_fraction_structure
from cusprun.compensation import ChannelMeans, CompensationConfig
from cusprun.engine import MaskSession
from cusprun.errors import SpecError
from cusprun.scoring import collect_stats
from tests.support import (TINY_FAMILIES, make_tiny_model, smollm2_135m_shaped_config,
                           tiny_tokenizer)

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
        own = "per_layer" if method == "flap" else layout        # FLAP's structure is per layer
        _check_plan(plan, model, 0.4, own)
        assert (plan.method, plan.rule, plan.layout, plan.target_ratio) == (method, None, own, 0.4)
        assert plan.base_fingerprint == "fp" and plan.architecture == arch
        assert plan.report["setup"]["layout"] == own


@pytest.mark.parametrize("layout", ["uniform", "per_layer"])
def test_baselines_align_ffn_widths_like_cusprun(models, layout):
    model, general = models["Qwen2ForCausalLM"]
    d = Adapter.for_model(model).dims(model.config)
    for method in BASELINES:
        plan = baseline_plan(method, model, 0.4, layout, base_fingerprint="fp", general=general,
                             ffn_multiple=16)
        if method == "flap":      # FLAP's widths are its threshold's, exact
            assert plan.report["ffn_multiple"] == 1
            continue
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


def _inputs(model, tok=None):
    """Every general-text token's down_proj and o_proj inputs per layer, from a plain forward."""
    tok = tok or tiny_tokenizer()
    return (_captured_inputs(model, tok, lambda a, l: a.down_proj(l)),
            _captured_inputs(model, tok, lambda a, l: a.o_proj(l)))


def _z(x):
    return (x - x.mean()) / x.std()          # torch.std: n - 1, as the reference's standarlization


def _wanda(model):
    """Reference prune_wanda_sp scores: |W| x ||X|| averaged over output rows, per neuron; summed
    over a head's channels per head. [L, I], [L, H]."""
    ad = Adapter.for_model(model)
    d = ad.dims(model.config)
    xd, xo = _inputs(model)
    ffn, heads = [], []
    for li, layer in enumerate(ad.layers(model)):
        wd, wo = ad.down_proj(layer).weight.double(), ad.o_proj(layer).weight.double()
        ffn.append((wd.abs() * xd[li].norm(dim=0)).mean(0))
        heads.append((wo.abs() * xo[li].norm(dim=0)).mean(0).view(d.n_heads, d.head_dim).sum(-1))
    return torch.stack(ffn).detach(), torch.stack(heads).detach()


def _flap(model):
    """Reference prune_flap (WIFV, AL-AM) scores: fluctuation x squared column norm, the o_proj
    metric squared, standardised per layer and module, heads by their channels' mean."""
    ad = Adapter.for_model(model)
    d = ad.dims(model.config)
    xd, xo = _inputs(model)
    ffn, heads = [], []
    for li, layer in enumerate(ad.layers(model)):
        wd, wo = ad.down_proj(layer).weight.double(), ad.o_proj(layer).weight.double()
        ffn.append(_z(xd[li].var(0, unbiased=False) * wd.pow(2).sum(0)))
        attn = (xo[li].var(0, unbiased=False) * wo.pow(2).sum(0)) ** 2
        heads.append(_z(attn).view(d.n_heads, d.head_dim).mean(-1))
    return torch.stack(ffn).detach(), torch.stack(heads).detach()


def test_wanda_sp_and_flap_scores_match_their_formulas(models):
    model, general = models["Qwen2ForCausalLM"]
    scores = unit_scores(model, ["wanda-sp", "flap", "flap-score"], general)
    (wf, wh), (ff, fh) = scores["wanda-sp"], scores["flap"]
    want_wf, want_wh = _wanda(model)
    want_ff, want_fh = _flap(model)
    out_rows = model.config.hidden_size        # ours sums over output rows: the same order
    np.testing.assert_allclose(wf, want_wf.numpy() * out_rows, rtol=1e-3)
    np.testing.assert_allclose(wh, want_wh.numpy() * out_rows, rtol=1e-3)
    np.testing.assert_allclose(ff, want_ff.numpy(), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(fh, want_fh.numpy(), rtol=1e-3, atol=1e-3)
    assert all((a == b).all() for a, b in zip(scores["flap"], scores["flap-score"]))


def _removed_ffn(plan, n_ffn):
    return [sorted(set(range(n_ffn)) - set(l.ffn)) for l in plan.layers]


@pytest.mark.parametrize("layout", ["uniform", "per_layer"])
def test_wanda_sp_removes_the_same_fraction_of_every_layer_as_the_reference(models, layout):
    """Every layer drops the head structure whose share of its attention is nearest 0.4 from below
    (here 1 of the 2 query heads of each key/value group: the lower-scored one) and its lowest-
    scored FFN neurons, as many in every layer as meet the target (per_layer: within one)."""
    model, general = models["LlamaForCausalLM"]
    ad = Adapter.for_model(model)
    d, u = ad.dims(model.config), ad.unit_params(model.config)
    ffn, heads = _wanda(model)
    plan = baseline_plan("wanda-sp", model, 0.4, layout, base_fingerprint="fp", general=general)
    attention = d.n_heads * u["query_head"] + d.n_kv_heads * u["kv_group"]
    assert 2 * u["query_head"] <= 0.4 * attention < 2 * u["query_head"] + u["kv_group"]
    target = round(0.4 * ad.prunable_params(model.config))
    rest = (target - d.n_layers * 2 * u["query_head"]) / u["ffn_neuron"]
    counts = ([round(rest / d.n_layers)] * d.n_layers if layout == "uniform"
              else sorted(len(r) for r in _removed_ffn(plan, d.ffn)))
    if layout == "per_layer":
        assert sum(counts) == round(rest) and counts[-1] - counts[0] <= 1
    for li, (lk, removed) in enumerate(zip(plan.layers, _removed_ffn(plan, d.ffn))):
        pairs = heads[li].view(d.n_kv_heads, d.group_size)
        want = [g * d.group_size + int(pairs[g].argmax()) for g in range(d.n_kv_heads)]
        assert lk.heads == want and lk.kv_heads == list(range(d.n_kv_heads))
        assert removed == sorted(ffn[li].argsort()[:len(removed)].tolist())
        if layout == "uniform":
            assert len(removed) == counts[0]


def test_wanda_sp_head_fraction_is_the_references_for_mha_and_a_quarter_of_smollm2():
    mha = make_tiny_model("MistralForCausalLM", num_key_value_heads=4)[0].config
    ad = Adapter.for_config(mha)
    for ratio, removed in ((0.2, 0), (0.25, 1), (0.5, 2), (0.74, 2), (0.75, 3)):
        assert 4 - layer_fraction_structure(ad, mha, ratio).heads == int(ratio * 4) == removed
    smol = smollm2_135m_shaped_config()
    st = layer_fraction_structure(Adapter.for_config(smol), smol, 0.25)
    assert (st.groups, st.per_group) == (3, 2)       # 3 of 9 query heads: 25 % of the attention


def _flap_reference_masks(model, ratio):
    """prune_flap's AL-AM masks: one threshold over both unit types, heads weighted by their
    parameters over a neuron's, set where the kept weight is nearest (1 - ratio) of the total."""
    ad = Adapter.for_model(model)
    d, u = ad.dims(model.config), ad.unit_params(model.config)
    ffn, heads = _flap(model)
    metric = torch.cat([heads.flatten(), ffn.flatten()])
    order = metric.argsort(descending=True)
    weight = torch.ones_like(metric)
    weight[:heads.numel()] = (u["query_head"] + u["kv_group"] / d.group_size) / u["ffn_neuron"]
    cum = weight[order].cumsum(0)
    thresh = metric[order][(cum - weight.sum() * (1 - ratio)).abs().argmin()]
    return (heads > thresh), (ffn > thresh), ffn


def test_flap_is_the_references_global_threshold_per_layer(models):
    """Multi-head attention (every head count valid): the kept heads are exactly the reference's;
    FFN neurons go lowest standardised score first over all layers, as many as meet the target
    (the reference's threshold meets it to within a head's parameters, ours to half a neuron),
    so its removed neurons and ours differ only at the threshold."""
    model = make_tiny_model("MistralForCausalLM", num_key_value_heads=4)[0]
    general = collect_stats(model, tiny_tokenizer(), GENERAL, progress=False)
    general.summary["model_fingerprint"] = "fp"
    ad = Adapter.for_model(model)
    d, u = ad.dims(model.config), ad.unit_params(model.config)
    keep_heads, keep_ffn, ffn = _flap_reference_masks(model, 0.3)
    assert keep_heads.any(1).all() and (~keep_heads).any()      # a real choice, none left empty
    plan = baseline_plan("flap", model, 0.3, "uniform", base_fingerprint="fp", general=general)
    assert plan.layout == "per_layer"
    assert [l.heads for l in plan.layers] == [torch.where(k)[0].tolist() for k in keep_heads]
    removed_heads = int((~keep_heads).sum())
    target = round(0.3 * ad.prunable_params(model.config))
    n = round((target - removed_heads * (u["query_head"] + u["kv_group"])) / u["ffn_neuron"])
    lowest = set(ffn.flatten().argsort()[:n].tolist())
    ours = {li * d.ffn + k for li, r in enumerate(_removed_ffn(plan, d.ffn)) for k in r}
    assert ours == lowest
    ref = set(torch.where(~keep_ffn.flatten())[0].tolist())
    head_weight = (u["query_head"] + u["kv_group"]) / u["ffn_neuron"]
    assert (ours <= ref or ref <= ours) and len(ours ^ ref) <= head_weight


def test_flap_puts_the_mean_of_what_it_removes_back_as_biases(models):
    """FLAP's bias compensation: b = W[:, removed] @ mean over general-text tokens of the removed
    input channels, on down_proj and o_proj, from the general text FLAP calibrated on."""
    model, general = models["LlamaForCausalLM"]
    plan = baseline_plan("flap", model, 0.3, "uniform", base_fingerprint="fp", general=general)
    assert plan.report["compensation"] == {"mode": "bias", "ridge": 0.0}
    assert plan.report["setup"]["means"] == "general" and plan.report["setup"]["note"] is None
    ad = Adapter.for_model(model)
    d = ad.dims(model.config)
    xd, xo = _inputs(model)
    dense = {li: (ad.down_proj(l).weight.detach().clone(), ad.o_proj(l).weight.detach().clone())
             for li, l in enumerate(ad.layers(model))}
    session = MaskSession(model)
    try:
        session.apply(plan, grams=ChannelMeans.from_stats([general]),
                      config=CompensationConfig.model_validate(plan.report["compensation"]))
        for li, (layer, lk) in enumerate(zip(ad.layers(model), plan.layers)):
            gone = [k for k in range(d.ffn) if k not in lk.ffn]
            want = dense[li][0].double()[:, gone] @ xd[li].mean(0)[gone]
            torch.testing.assert_close(ad.down_proj(layer).bias.double(), want, rtol=1e-4, atol=1e-6)
            cols = [h * d.head_dim + j for h in range(d.n_heads) if h not in lk.heads
                    for j in range(d.head_dim)]
            want = dense[li][1].double()[:, cols] @ xo[li].mean(0)[cols]
            torch.testing.assert_close(ad.o_proj(layer).bias.double(), want, rtol=1e-4, atol=1e-6)
    finally:
        session.restore()


@pytest.mark.parametrize("arch", [a for a in TINY_FAMILIES if a != "LlamaForCausalLM"])
def test_flap_says_where_a_family_cannot_carry_its_biases(models, arch):
    model, general = models[arch]
    plan = baseline_plan("flap", model, 0.3, "uniform", base_fingerprint="fp", general=general)
    assert plan.report["compensation"]["mode"] == "none"
    assert Adapter.for_model(model).spec.family in plan.report["setup"]["note"]
    assert "without FLAP's bias compensation" in plan.report["setup"]["note"]


def test_flap_score_is_flaps_scores_under_the_builds_layout_and_compensation(models):
    model, general = models["LlamaForCausalLM"]
    plan = baseline_plan("flap-score", model, 0.3, "uniform", base_fingerprint="fp",
                         general=general, compensation="ls", ridge=0.1)
    assert plan.layout == "uniform" and plan.report["compensation"] == {"mode": "ls", "ridge": 0.1}
    assert plan.report["setup"]["means"] == "own"


def test_standardise_puts_unit_types_on_one_scale():
    x = np.random.default_rng(0).normal(50, 7, (3, 10))
    z = standardise(x)
    assert abs(z.mean()) < 1e-9 and abs(z.std() - 1) < 1e-9
    assert (standardise(np.ones((2, 2))) == 0).all()


@pytest.mark.parametrize("kwargs, match", [
    (dict(method="obs"), "Unknown baseline 'obs'; available: random, magnitude, wanda-sp, flap, "
                         "flap-score"),
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
