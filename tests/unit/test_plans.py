"""Cus-Prun masks: paper rule, exact-ratio targets, uniform structures, ties, protection, overlap
and input checks. Statistics are hand-made percentile arrays shaped like the tiny models."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cusprun.adapters import Adapter
from cusprun.errors import SpecError
from cusprun.plans import PruneConfig, PruningPlan, build_plan
from cusprun.scoring import DimensionStats, rank_percentile
from tests.support import TINY_FAMILIES, tiny_config

CFG = tiny_config("LlamaForCausalLM")       # 3 layers, 96 neurons, 4 heads in 2 kv groups
L, I, H, D = 3, 96, 4, 16


def PC(**kw) -> PruneConfig:  # noqa: N802 - these tests pin the percentile score and rank order
    """The rank-order selection on percentile scores (no model needed); the measured allocation
    and the impact score are tested in test_allocation.py."""
    return PruneConfig(**{"score": "percentile", "allocation": "rank", **kw})


def make_stats(ffn_pct, head_pct, fp: str = "fp", label: str = "c") -> DimensionStats:
    """DimensionStats from per-document percentile arrays [docs, L, units]."""
    ffn_pct, head_pct = torch.as_tensor(ffn_pct).half(), torch.as_tensor(head_pct).half()
    n, layers = ffn_pct.shape[:2]
    z = lambda *s: torch.zeros(*s, dtype=torch.float64)  # noqa: E731
    return DimensionStats(
        ffn_pct=ffn_pct, head_pct=head_pct, ffn_impact_mean=torch.zeros(ffn_pct.shape[1:]),
        head_impact_mean=torch.zeros(head_pct.shape[1:]), down_sum=z(layers, ffn_pct.shape[2]),
        down_sumsq=z(layers, ffn_pct.shape[2]), o_sum=z(layers, head_pct.shape[2] * D),
        o_sumsq=z(layers, head_pct.shape[2] * D), doc_tokens=torch.full((n,), 10, dtype=torch.int32),
        summary={"model_fingerprint": fp, "corpus_hash": label})


def realistic(cfg, n_docs: int, seed: int, noise: float = 0.5, fp: str = "fp") -> DimensionStats:
    """Percentiles of impacts = a per-unit base (shared by every corpus) + per-doc noise."""
    a = Adapter.for_config(cfg).dims(cfg)
    base = torch.Generator().manual_seed(0)
    g = torch.Generator().manual_seed(seed)
    bf, bh = torch.randn(a.n_layers, a.ffn, generator=base), 2 * torch.randn(a.n_layers, a.n_heads, generator=base)
    f = bf + noise * torch.randn(n_docs, a.n_layers, a.ffn, generator=g)
    h = bh + noise * torch.randn(n_docs, a.n_layers, a.n_heads, generator=g)
    return make_stats(rank_percentile(f), rank_percentile(h), fp=fp, label=f"s{seed}")


def const(n, value=0.9):
    return torch.full((n, L, I), value), torch.full((n, L, H), value)


def check_structure(plan: PruningPlan, cfg) -> None:
    """Kept heads form a valid grouped-query layer that the family's config class accepts."""
    ad = Adapter.for_config(cfg)
    d = ad.dims(cfg)
    for lk in plan.layers:
        assert 1 <= len(lk.ffn) and 1 <= len(lk.heads)
        groups = sorted({h // d.group_size for h in lk.heads})
        assert groups == lk.kv_heads
        per = {g: sum(1 for h in lk.heads if h // d.group_size == g) for g in groups}
        assert len(set(per.values())) == 1, per
        assert ad.valid_head_count(cfg, len(lk.heads), len(lk.kv_heads))


def removed_params(plan: PruningPlan, cfg) -> int:
    ad = Adapter.for_config(cfg)
    d, u = ad.dims(cfg), ad.unit_params(cfg)
    return sum((d.ffn - len(l.ffn)) * u["ffn_neuron"] + (d.n_heads - len(l.heads)) * u["query_head"]
               + (d.n_kv_heads - len(l.kv_heads)) * u["kv_group"] for l in plan.layers)


# ---- paper rule ----------------------------------------------------------------------------

def test_paper_rule_prunes_units_irrelevant_to_every_doc_of_every_dimension():
    f_a, h_a = const(8)
    f_b, h_b = const(8)
    f_a[:, :, 0:30] = 0.2           # irrelevant to every doc of A
    f_a[3, 0, 5] = 0.7              # ... except neuron 5 of layer 0 in one doc
    f_b[:, :, 20:40] = 0.1          # B: 20..39
    h_a[:, 0, 0:2] = 0.0            # heads 0,1 (kv group 0) of layer 0 irrelevant to both
    h_b[:, 0, 0:2] = 0.3
    h_a[:, 1, 0] = 0.0              # layer 1: only A finds head 0 irrelevant
    stats = {"language": [make_stats(f_a, h_a)], "domain": [make_stats(f_b, h_b)]}
    plan = build_plan(stats, PC(rule="paper", sigma=0.5, layout="per_layer"), CFG,
                      base_fingerprint="fp")
    pruned_ffn, pruned_heads = plan.pruned(I, H)
    assert pruned_ffn == {i: list(range(20, 30)) for i in range(L)}
    assert pruned_heads == {0: [0, 1], 1: [], 2: []}
    assert plan.layers[0].kv_heads == [1]
    check_structure(plan, CFG)
    assert plan.rule == "paper" and plan.target_ratio is None
    assert plan.removed_params == removed_params(plan, CFG)
    ov = plan.report["overlap"]
    assert ov["ffn"]["candidates"] == {"language": 89, "domain": 60}   # 90 minus neuron 5 of layer 0
    assert ov["ffn"]["common_to_all"] == 30
    assert ov["ffn"]["jaccard"]["domain|language"] == pytest.approx(30 / (89 + 60 - 30), abs=1e-4)


def test_paper_rule_uniform_keeps_paper_total_and_equal_counts():
    f_a, h_a = const(8)
    f_a[:, 0, :40] = 0.1            # 40 irrelevant neurons in layer 0, 10 in layer 1, 0 in layer 2
    f_a[:, 1, :10] = 0.1
    plan = build_plan({"task": [make_stats(f_a, h_a)]}, PC(rule="paper", sigma=0.5), CFG,
                      base_fingerprint="fp")
    assert {len(l.ffn) for l in plan.layers} == {I - 17}          # 50 neurons spread evenly (50/3)
    assert any("spread evenly" in n for n in plan.report["notes"])
    assert plan.report["sigma"] == 0.5


# ---- exact ratio -----------------------------------------------------------------------------

@pytest.mark.parametrize("arch", TINY_FAMILIES)
@pytest.mark.parametrize("ratio", [0.1, 0.25, 0.5])
def test_exact_ratio_hits_target_per_layer_and_uniform(arch, ratio):
    cfg = tiny_config(arch)
    ad = Adapter.for_config(cfg)
    u, prunable = ad.unit_params(cfg), ad.prunable_params(cfg)
    stats = {"language": [realistic(cfg, 10, 1)], "domain": [realistic(cfg, 9, 2), realistic(cfg, 8, 3)]}
    per = build_plan(stats, PC(target_ratio=ratio, layout="per_layer"), cfg, base_fingerprint="fp")
    uni = build_plan(stats, PC(target_ratio=ratio), cfg, base_fingerprint="fp")
    target = round(ratio * prunable)
    for plan in (per, uni):
        check_structure(plan, cfg)
        assert plan.removed_params == removed_params(plan, cfg)
        assert plan.prunable_params == prunable
        assert plan.achieved_ratio == pytest.approx(plan.removed_params / prunable)
        assert PruningPlan.model_validate_json(plan.model_dump_json()) == plan
    assert abs(per.removed_params - target) <= u["ffn_neuron"]            # within one unit
    assert abs(uni.removed_params - target) <= L * u["ffn_neuron"]        # one neuron per layer
    assert len({len(l.ffn) for l in uni.layers}) == 1
    assert len({(len(l.heads), len(l.kv_heads)) for l in uni.layers}) == 1
    assert "granularity" in " ".join(uni.report["notes"])
    if ratio == 0.5:   # heads with a consistently low base impact are pruned too
        assert per.report["removed_units"]["query_heads"] > 0


@pytest.mark.parametrize("arch", TINY_FAMILIES)
@pytest.mark.parametrize("layout", ["uniform", "per_layer"])
@pytest.mark.parametrize("ratio", [0.1, 0.25, 0.5])
def test_ffn_multiple_aligns_widths_and_stays_near_target(arch, layout, ratio):
    cfg = tiny_config(arch)
    ad = Adapter.for_config(cfg)
    d, u, prunable = ad.dims(cfg), ad.unit_params(cfg), ad.prunable_params(cfg)
    stats = {"language": [realistic(cfg, 10, 1)], "domain": [realistic(cfg, 9, 2)]}
    m = 16
    exact = build_plan(stats, PC(target_ratio=ratio, layout=layout), cfg, base_fingerprint="fp")
    plan = build_plan(stats, PC(target_ratio=ratio, layout=layout, ffn_multiple=m), cfg,
                      base_fingerprint="fp")
    check_structure(plan, cfg)
    assert plan.removed_params == removed_params(plan, cfg)
    widths = [len(l.ffn) for l in plan.layers]
    assert all(w % m == 0 or w == d.ffn for w in widths), widths
    # Uniform: the nearest aligned width per layer; per_layer: within half a block plus one neuron.
    slack = (d.n_layers * m / 2 if layout == "uniform" else m / 2 + 1) * u["ffn_neuron"]
    assert abs(plan.removed_params - round(ratio * prunable)) <= slack
    assert plan.report["ffn_multiple"] == m and plan.report["granularity_params"] % m == 0
    assert any("ffn_multiple=16" in n for n in plan.report["notes"])
    # Aligning keeps the heads the exact plan chose and prunes FFN neurons in the same rank order.
    for a, b in zip(plan.layers, exact.layers):
        assert (a.heads, a.kv_heads) == (b.heads, b.kv_heads)
        small, big = sorted((set(a.ffn), set(b.ffn)), key=len)
        assert small <= big


def test_ffn_multiple_one_is_the_exact_plan_and_bad_values_are_refused():
    stats = {"language": [realistic(CFG, 10, 1)]}
    a = build_plan(stats, PC(target_ratio=0.3), CFG, base_fingerprint="fp")
    b = build_plan(stats, PC(target_ratio=0.3, ffn_multiple=1), CFG, base_fingerprint="fp")
    assert a.layers == b.layers
    with pytest.raises(SpecError, match=r"ffn_multiple=0.*integer >= 1"):
        PC(ffn_multiple=0)
    with pytest.raises(SpecError, match=r"ffn_multiple=128 .*FFN width 96"):
        build_plan(stats, PC(ffn_multiple=128), CFG, base_fingerprint="fp")


def test_ffn_multiple_paper_rule_per_layer_rounds_each_layer_by_rank():
    f_a, h_a = const(8)
    f_a[:, 0, :40] = 0.1            # layer 0: 40 irrelevant -> keep 56 -> 64 with m=16 (nearest)
    f_a[:, 1, :10] = 0.1            # layer 1: 10 irrelevant -> keep 86 -> 80
    f_a[:, 1, 10:16] = 0.6          # the next-least important neurons of layer 1 go first
    plan = build_plan({"task": [make_stats(f_a, h_a)]},
                      PC(rule="paper", layout="per_layer", ffn_multiple=16), CFG,
                      base_fingerprint="fp")
    pruned, _ = plan.pruned(I, H)
    assert [len(l.ffn) for l in plan.layers] == [64, 80, 96]
    assert set(pruned[0]) <= set(range(40)) and len(pruned[0]) == 32
    assert set(pruned[1]) == set(range(16))
    assert pruned[2] == []


def test_exact_ratio_is_a_threshold_on_max_percentile():
    stats = {"language": [realistic(CFG, 10, 1)], "task": [realistic(CFG, 10, 4)]}
    plan = build_plan(stats, PC(target_ratio=0.2, layout="per_layer"), CFG, base_fingerprint="fp")
    score = torch.cat([s.ffn_pct for v in stats.values() for s in v]).float().max(0).values
    pruned, _ = plan.pruned(I, H)
    mask = torch.zeros(L, I, dtype=torch.bool)
    for li, ks in pruned.items():
        mask[li, ks] = True
    # every pruned neuron scores at most every kept neuron
    assert score[mask].max() <= score[~mask].min()


def test_ties_are_broken_by_mean_then_layer_then_index_and_are_deterministic():
    f, h = const(8, 0.5)
    f[0, 2, 50] = 0.6          # layer 2 neuron 50 scores higher: never among the first pruned
    f[1:, 1, 7] = 0.0          # layer 1 neuron 7: max 0.5 like the rest, but a lower mean
    s = make_stats(f, h)
    cfg = PC(target_ratio=0.02, layout="per_layer")
    plan = build_plan({"language": [s]}, cfg, CFG, base_fingerprint="fp")
    pruned, _ = plan.pruned(I, H)
    n = sum(len(v) for v in pruned.values())
    assert pruned[1][:1] == [7]                      # lowest mean goes first
    rest = [(li, k) for li in range(L) for k in pruned[li] if (li, k) != (1, 7)]
    assert rest == [(0, k) for k in range(n - 1)]    # then layer 0, index order
    again = build_plan({"language": [make_stats(f.flip(0), h)]}, cfg, CFG, base_fingerprint="fp")
    assert again.layers == plan.layers               # document order does not matter


def test_unreachable_target_is_a_clear_error():
    stats = {"language": [realistic(CFG, 8, 1)]}
    with pytest.raises(SpecError, match="unreachable.*at most"):
        build_plan(stats, PC(target_ratio=0.9, layout="per_layer"), CFG, base_fingerprint="fp")
    with pytest.raises(SpecError, match="unreachable"):
        build_plan(stats, PC(target_ratio=0.9), CFG, base_fingerprint="fp")


# ---- general protection ------------------------------------------------------------------------

def test_general_text_protects_the_units_it_needs():
    f, h = const(8, 0.9)
    f[:, :, :12] = 0.0          # the expert corpus finds neurons 0..11 useless ...
    h[:, 0, 0] = 0.0            # ... and head 0 of layer 0
    gf, gh = const(8, 0.3)
    gf[:, :, :4] = 1.0          # ... but general text always ranks neurons 0..3 on top
    gh[:, 0, 0] = 1.0
    stats = {"domain": [make_stats(f, h)]}
    general = [make_stats(gf, gh, label="general")]
    cfg = PC(target_ratio=0.1, layout="per_layer", protect_fraction=0.05)
    plan = build_plan(stats, cfg, CFG, base_fingerprint="fp", general=general)
    for lk in plan.layers:
        assert set(range(4)) <= set(lk.ffn)
    assert 0 in plan.layers[0].heads
    assert plan.report["protected"] == {"ffn": 12, "heads": 1, "protect_fraction": 0.05, "general_docs": 8}
    unprotected = build_plan(stats, cfg.model_copy(update={"protect_fraction": 0.0}), CFG,
                             base_fingerprint="fp", general=general)
    assert not set(range(4)) & set(unprotected.layers[0].ffn)
    everything = cfg.model_copy(update={"protect_fraction": 0.75, "target_ratio": 0.5})
    with pytest.raises(SpecError, match="unreachable.*protect_fraction"):
        build_plan(stats, everything, CFG, base_fingerprint="fp", general=general)


# ---- overlap -----------------------------------------------------------------------------------

def test_overlap_report_for_exact_ratio_compares_equal_size_sets():
    def dim(lo):
        f, h = const(8, 0.9)
        f[:, :, lo:lo + 20] = 0.1
        return [make_stats(f, h)]

    stats = {"language": dim(0), "domain": dim(10), "task": dim(0)}
    plan = build_plan(stats, PC(target_ratio=0.05, layout="per_layer"), CFG, base_fingerprint="fp")
    ov = plan.report["overlap"]["ffn"]
    n = plan.report["removed_units"]["ffn_neurons"]
    assert set(ov["candidates"].values()) == {n}
    assert ov["jaccard"]["language|task"] == 1.0
    assert 0 < ov["jaccard"]["domain|language"] < 1
    assert set(ov["jaccard"]) == {"domain|language", "domain|task", "language|task"}
    pooled = plan.report["overlap"]          # both unit types pooled, flat keys for plots
    assert pooled["language|task"] == 1.0 and 0 < pooled["domain|language"] < 1


# ---- input checks ---------------------------------------------------------------------------------

GOOD = {"language": [make_stats(*const(8))]}


@pytest.mark.parametrize("stats, kwargs, match", [
    ({}, {}, "1 to 3 dimensions"),
    ({"a": GOOD["language"], "b": GOOD["language"], "c": GOOD["language"], "d": GOOD["language"]}, {}, "got 4"),
    ({"language": GOOD["language"], "domain": []}, {}, "Dimension 'domain' has no corpus"),
    ({"task": [make_stats(*const(3))]}, {}, "3 documents.*min_docs=8"),
    ({"language": [make_stats(*const(8), fp="other")]}, {}, "'other'.*'fp'"),
    (GOOD, {"general": [make_stats(*const(8), fp="old")]}, "general corpus.*'old'.*'fp'"),
    ({"language": [make_stats(torch.zeros(8, 2, I), torch.zeros(8, 2, H))]}, {}, r"\(2, 96, 4\).*\(3, 96, 4\)"),
])
def test_bad_inputs_raise_spec_errors(stats, kwargs, match):
    with pytest.raises(SpecError, match=match):
        build_plan(stats, PC(), CFG, base_fingerprint="fp", **kwargs)


@pytest.mark.parametrize("data, match", [
    ({"rule": "magic"}, "rule='magic'.*'exact-ratio' or 'paper'"),
    ({"layout": "diagonal"}, "layout='diagonal'.*'uniform' or 'per_layer'"),
    ({"target_ratio": 0.95}, r"target_ratio=0.95.*\(0, 0.9\]"),
    ({"target_ratio": 0}, r"target_ratio=0.*\(0, 0.9\]"),
    ({"sigma": 1.0}, r"sigma=1.0.*\(0, 1\)"),
    ({"min_docs": 0}, "min_docs=0"),
    ({"protect_fraction": 1}, "protect_fraction=1"),
    ({"nonsense": 1}, "nonsense"),
])
def test_prune_config_errors_name_value_and_allowed(data, match):
    with pytest.raises(SpecError, match=match):
        PruneConfig.model_validate(data)
    with pytest.raises(SpecError):
        build_plan(GOOD, data, CFG, base_fingerprint="fp")


def test_prune_config_defaults():
    c = PC()
    assert (c.rule, c.target_ratio, c.layout, c.min_docs) == ("exact-ratio", 0.25, "uniform", 8)


def test_plan_from_real_statistics_of_a_tiny_model(tmp_path):
    from cusprun.scoring import collect_stats, load_stats, save_stats
    from tests.support import make_tiny_model, tiny_tokenizer

    model, _ = make_tiny_model("Qwen3ForCausalLM")
    tok = tiny_tokenizer()
    texts = {"language": [f"An English sentence number {i} about the weather." for i in range(8)],
             "domain": [f"The patient {i} took 5 mg of the drug twice daily." for i in range(8)],
             "general": [f"General text {i}: cats, trains, music and {i * 7} apples." for i in range(8)]}
    loaded = {}
    for name, docs in texts.items():
        save_stats(collect_stats(model, tok, docs, progress=False), tmp_path / name,
                   model_fingerprint="fp", corpus_hash=name, extra={"dimension": name, "value": "x"})
        loaded[name] = load_stats(tmp_path / name)
    general = [loaded.pop("general")]
    stats = {k: [v] for k, v in loaded.items()}
    from cusprun.allocation import DamageProbe

    probe = DamageProbe(model, tok, {"language": ["Another English sentence about rain."],
                                     "domain": ["The patient took 10 mg of the drug at night."]})
    for layout in ("uniform", "per_layer"):      # the defaults: impact score, measured allocation
        plan = build_plan(stats, {"target_ratio": 0.3, "layout": layout}, model.config,
                          base_fingerprint="fp", general=general, probe=probe)
        assert plan.report["allocation_search"]["candidates"]
        check_structure(plan, model.config)
        assert abs(plan.achieved_ratio - 0.3) < 0.01
        assert plan.report["docs_per_dimension"] == {"language": 8, "domain": 8}
        assert plan.architecture == "Qwen3ForCausalLM" and plan.method == "cusprun"
        assert plan.dimensions == {"language": {"value": "x", "corpus_hashes": ["language"]},
                                   "domain": {"value": "x", "corpus_hashes": ["domain"]}}
