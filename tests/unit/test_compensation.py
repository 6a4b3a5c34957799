"""Closed-form compensation: Grams collected layer by layer equal a plain hooked forward's, the
refit lowers the masked-vs-dense output error on calibration tokens (and changes nothing when
nothing is removed), and sliced + compensated checkpoints compute what the masked + compensated
dense model computes, for every family."""
from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from cusprun.adapters import Adapter
from cusprun.compensation import CompensationConfig, GramSet, compensate
from cusprun.engine import mask_model
from cusprun.scoring import collect_grams
from cusprun.errors import SpecError
from cusprun.slicing import slice_checkpoint
from cusprun.slicing.compensated import Compensation
from tests.support import TINY_FAMILIES, make_tiny_model, random_plan, tiny_tokenizer

FP = "tinyfingerprint0000000000000000"
TEXTS = ["The heart pumps blood through the body.", "Fever is a common symptom of infection.",
         "Question: What is insulin?\nAnswer: a hormone that lowers blood sugar.",
         "In the beginning God created the heaven and the earth.", "short", "x" * 90]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """arch -> (dense dir, Grams dir) built once per module."""
    root = tmp_path_factory.mktemp("comp")
    out = {}
    for arch in TINY_FAMILIES:
        model, path = make_tiny_model(arch, root / arch)
        grams = root / f"{arch}-grams"
        collect_grams(model, tiny_tokenizer(), TEXTS, grams, max_tokens=48, batch_size=4,
                      progress=False)
        out[arch] = (path, grams)
    return out


def _direct_grams(model, texts):
    """Reference: one ordinary forward per document with hooks summing x x^T."""
    ad, tok = Adapter.for_model(model), tiny_tokenizer()
    acc: dict = {}

    def hook(key):
        def fn(_m, args):
            x = args[0].double().reshape(-1, args[0].shape[-1])
            acc[key] = acc.get(key, 0) + x.t() @ x
        return fn

    hs = [h for li, layer in enumerate(ad.layers(model)) for h in (
        ad.down_proj(layer).register_forward_pre_hook(hook(("down", li))),
        ad.o_proj(layer).register_forward_pre_hook(hook(("o", li))))]
    with torch.no_grad():
        for t in texts:
            ids = tok(t, truncation=True, max_length=48, return_tensors="pt")["input_ids"]
            model(input_ids=ids)
    for h in hs:
        h.remove()
    return acc


@pytest.mark.parametrize("arch", TINY_FAMILIES)
def test_layerwise_grams_equal_a_hooked_forward(arch, tiny):
    """Padding, per-layer masks and rotary embeddings (Gemma 3 sliding layers too) all match."""
    model, _ = make_tiny_model(arch)
    ref = _direct_grams(model, TEXTS)
    gs = GramSet([tiny[arch][1]])
    n_tokens = sum(len(tiny_tokenizer()(t, truncation=True, max_length=48)["input_ids"]) for t in TEXTS)
    assert gs.n_tokens == n_tokens
    for li in range(model.config.num_hidden_layers):
        g = gs.layer(li)
        for role in ("down", "o"):
            want = ref[(role, li)]
            assert torch.allclose(g.gram[role], want, rtol=1e-4, atol=1e-4 * want.abs().max())
    two = GramSet([tiny[arch][1], tiny[arch][1]]).layer(0)   # corpora add up
    assert two.n_tokens == 2 * n_tokens
    assert torch.allclose(two.gram["down"], 2 * gs.layer(0).gram["down"])


@pytest.mark.parametrize("arch", TINY_FAMILIES)
def test_grams_from_the_statistics_pass_equal_the_layerwise_pass(arch, tiny, tmp_path):
    """The fused pass (GramRecorder riding the statistics forward) writes what collect_grams
    writes: every tensor of every layer, the residual norms and the summary's counts."""
    from safetensors.torch import load_file

    from cusprun.compensation.gram_set import SUMMARY_FILE, layer_file
    from cusprun.scoring import collect_stats

    model, _ = make_tiny_model(arch)
    collect_stats(model, tiny_tokenizer(), TEXTS, max_tokens=48, batch_size=4, progress=False,
                  grams_dir=tmp_path / "fused", grams_extra={"corpus_hash": "c0"})
    sep = json.loads((tiny[arch][1] / SUMMARY_FILE).read_text())
    fused = json.loads((tmp_path / "fused" / SUMMARY_FILE).read_text())
    for k in ("n_docs", "n_tokens", "n_layers", "max_tokens", "architecture", "shapes"):
        assert fused[k] == sep[k], k
    assert fused["corpus_hash"] == "c0"
    for li in range(model.config.num_hidden_layers):
        a = load_file(str(tiny[arch][1] / layer_file(li)))
        b = load_file(str(tmp_path / "fused" / layer_file(li)))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.allclose(b[k].double(), a[k].double(), rtol=1e-4,
                                  atol=1e-5 * float(a[k].abs().max()) + 1e-8), (li, k)


def test_float32_solve_agrees_with_float64_and_small_ridges_stay_float64():
    """The least-squares refit solves in float32 when the ridge bounds the conditioning, and its
    answer matches the float64 solve; below FLOAT32_MIN_RIDGE it is the float64 solve itself."""
    from cusprun.compensation import solve

    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 200, generator=g, dtype=torch.float64) * torch.logspace(-2, 2, 200, dtype=torch.float64)
    w = torch.randn(30, 200, generator=g, dtype=torch.float64)
    keep = list(range(0, 200, 3)) + list(range(1, 200, 3))
    h, s = x.t() @ x, x.sum(0)

    def reference(ridge):
        k, p = sorted(keep), sorted(set(range(200)) - set(keep))
        hkk = h[k][:, k]
        hkk = hkk + ridge * float(hkk.diagonal().mean()) * torch.eye(len(k), dtype=torch.float64)
        return w[:, k] + w[:, p] @ torch.linalg.solve(hkk, h[k][:, p]).t()

    fast, _ = compensate(w, None, sorted(keep), h, s, 4000, mode="ls", ridge=0.1)
    want = reference(0.1)
    assert (fast - want).abs().max() / want.abs().max() < 1e-4
    slow, _ = compensate(w, None, sorted(keep), h, s, 4000, mode="ls", ridge=solve.FLOAT32_MIN_RIDGE / 2)
    want = reference(solve.FLOAT32_MIN_RIDGE / 2)
    assert (slow - want).abs().max() / want.abs().max() < 1e-9


def test_wide_grams_by_triangular_blocks_equal_the_plain_product():
    from cusprun.compensation.gram_set import xtx as _xtx

    x = torch.randn(300, 1100, generator=torch.Generator().manual_seed(0))
    want = x.t() @ x
    got = _xtx(x)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-3) and torch.equal(got, got.t())
    assert torch.equal(_xtx(x[:, :500]), x[:, :500].t() @ x[:, :500])   # narrow: one product


def test_few_tokens_store_the_inputs_and_read_back_the_same_grams(tmp_path):
    """A corpus with fewer tokens than a role's width keeps the tokens' inputs (tokens x width)
    instead of the width x width Gram (Llama-3-8B's down_proj: 29 MB instead of 0.8 GB per layer
    for 512 tokens); GramSet reads back the same Gram, alone or summed with a stored Gram."""
    from safetensors.torch import load_file

    from cusprun.compensation.gram_set import gram_file_bytes, layer_file

    model, _ = make_tiny_model("LlamaForCausalLM", intermediate_size=256)
    few = TEXTS[:2]                                    # 78 tokens: < 256 (down), > 64 (o)
    collect_grams(model, tiny_tokenizer(), few, tmp_path / "few", max_tokens=48, progress=False)
    stored = load_file(str(tmp_path / "few" / layer_file(0)))
    assert "factor_down" in stored and "gram_down" not in stored and "gram_o" in stored
    n = stored["factor_down"].shape[0]
    assert n == sum(len(tiny_tokenizer()(t)["input_ids"]) for t in few) < 256
    ref = _direct_grams(model, few)
    g = GramSet([tmp_path / "few"]).layer(1)
    for role in ("down", "o"):
        want = ref[(role, 1)]
        assert torch.allclose(g.gram[role], want, rtol=1e-4, atol=1e-4 * want.abs().max())
    collect_grams(model, tiny_tokenizer(), TEXTS, tmp_path / "all", max_tokens=48, progress=False)
    both = GramSet([tmp_path / "few", tmp_path / "all"], weights=[2.0, 1.0]).layer(1)
    alone = GramSet([tmp_path / "all"]).layer(1)
    torch.testing.assert_close(both.gram["down"], alone.gram["down"] + 2 * g.gram["down"])
    assert gram_file_bytes(32, {"down": 14336, "o": 4096}, 512) < 4e9 < \
        gram_file_bytes(32, {"down": 14336, "o": 4096}, 50_000)


def _down_error(model, plan_layers, grams: GramSet, mode: str) -> float:
    """Sum over layers and calibration tokens of ||down(x) - down'(x)||^2, from the Grams:
    tr((W - W') H (W - W')^T) with W' the compensated weight scattered back (zeros elsewhere)."""
    ad = Adapter.for_model(model)
    total = 0.0
    for li, (layer, keep) in enumerate(zip(ad.layers(model), plan_layers)):
        g = grams.layer(li)
        w = ad.down_proj(layer).weight.detach().double()
        kept, _ = compensate(w, None, keep.ffn, g.gram["down"], g.total["down"], g.n_tokens,
                             mode=mode, ridge=0.0)
        new = torch.zeros_like(w)
        new[:, keep.ffn] = kept
        delta = w - new
        total += float(torch.einsum("oi,ij,oj->", delta, g.gram["down"], delta))
    return total


@pytest.mark.parametrize("arch", ["LlamaForCausalLM", "Qwen2ForCausalLM", "Phi3ForCausalLM"])
def test_least_squares_lowers_reconstruction_error(arch, tiny):
    model, _ = make_tiny_model(arch)
    plan = random_plan(model.config, fingerprint=FP, ffn=60, groups=2, heads_per_group=1,
                       layout="uniform", seed=3)
    gs = GramSet([tiny[arch][1]])
    plain, ls = _down_error(model, plan.layers, gs, "none"), _down_error(model, plan.layers, gs, "ls")
    assert ls < 0.5 * plain


def test_compensation_is_exact_when_nothing_is_removed(tiny):
    arch = "LlamaForCausalLM"
    model, _ = make_tiny_model(arch)
    plan = random_plan(model.config, fingerprint=FP, ffn=96, groups=2, heads_per_group=2,
                       layout="uniform", seed=0)
    ref, _ = make_tiny_model(arch)
    for mode in ("bias", "ls", "ls+bias"):
        m, _ = make_tiny_model(arch)
        mask_model(m, plan, grams=GramSet([tiny[arch][1]]), config=CompensationConfig(mode=mode))
        want = dict(ref.named_parameters())
        for name, p in m.named_parameters():
            if name in want:
                assert torch.equal(p, want[name]), (mode, name)
            else:                                     # an added bias, zero
                assert name.endswith(".bias") and mode != "ls" and p.abs().max() == 0, (mode, name)


def test_bias_compensation_removes_the_mean_error():
    """After 'bias', the removed units' error has zero mean over the calibration tokens."""
    torch.manual_seed(0)
    x = torch.randn(500, 12, dtype=torch.float64) + torch.linspace(-2, 2, 12)
    w = torch.randn(5, 12, dtype=torch.float64)
    keep = [0, 2, 3, 7, 11]
    wk, b = compensate(w, None, keep, x.t() @ x, x.sum(0), 500, mode="bias")
    err = x @ w.t() - (x[:, keep] @ wk.t() + b)
    assert err.mean(0).abs().max() < 1e-10
    wk2, b2 = compensate(w, None, keep, x.t() @ x, x.sum(0), 500, mode="ls+bias", ridge=0.0)
    err2 = x @ w.t() - (x[:, keep] @ wk2.t() + b2)
    assert err2.pow(2).sum() < err.pow(2).sum()      # the joint solve is at least as good


CASES = [(arch, "ls") for arch in TINY_FAMILIES] + [("LlamaForCausalLM", "bias"),
                                                      ("LlamaForCausalLM", "ls+bias")]


@pytest.mark.parametrize("layout", ["uniform", "per_layer"])
@pytest.mark.parametrize("arch,mode", CASES)
def test_sliced_compensated_equals_masked_compensated(arch, mode, layout, tiny, tmp_path):
    dense_dir, grams_dir = tiny[arch]
    cfg = AutoConfig.from_pretrained(dense_dir)
    ffn = 50 if layout == "uniform" else [10, 96, 33]
    groups = 1 if layout == "uniform" else [1, 2, 2]
    per = 2 if layout == "uniform" else [2, 1, 2]
    plan = random_plan(cfg, fingerprint=FP, ffn=ffn, groups=groups, heads_per_group=per,
                       layout=layout, seed=5)
    config = CompensationConfig(mode=mode)
    out = slice_checkpoint(dense_dir, plan, tmp_path / "expert", model_fingerprint=FP,
                           compensation=Compensation(config, GramSet([grams_dir])), progress=False)
    meta = json.loads((out / "cusprun.json").read_text())
    assert meta["compensation"]["mode"] == mode
    assert f"compensation mode `{mode}`" in (out / "README.md").read_text()
    import cusprun.slicing  # noqa: F401 - per-layer model type
    sliced = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    if layout == "uniform":
        assert type(sliced).__name__ == arch          # still a stock checkpoint
    assert sum(p.numel() for p in sliced.parameters()) == meta["params"]["pruned"]["total"]
    ref, _ = make_tiny_model(arch)
    mask_model(ref, plan, grams=GramSet([grams_dir]), config=config)
    x = torch.randint(0, 256, (2, 13), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (sliced(x).logits - ref(x).logits).abs().max().item() < 1e-4
    plain, _ = make_tiny_model(arch)
    mask_model(plain, plan)
    with torch.no_grad():   # compensation changed something
        assert (plain(x).logits - ref(x).logits).abs().max().item() > 1e-3


@pytest.mark.parametrize("arch", ["MistralForCausalLM", "Qwen2ForCausalLM", "Phi3ForCausalLM",
                                  "Gemma3ForCausalLM", "Qwen3ForCausalLM"])
def test_bias_modes_refused_where_the_stock_config_has_no_bias(arch, tiny, tmp_path):
    dense_dir, grams_dir = tiny[arch]
    plan = random_plan(AutoConfig.from_pretrained(dense_dir), fingerprint=FP, ffn=50, groups=1,
                       heads_per_group=2, layout="uniform", seed=0)
    with pytest.raises(SpecError, match="cannot carry in its stock config; use mode 'ls'"):
        slice_checkpoint(dense_dir, plan, tmp_path / "x", model_fingerprint=FP,
                         compensation=Compensation(CompensationConfig(mode="bias"),
                                                   GramSet([grams_dir])), progress=False)
    assert not (tmp_path / "x").exists()


def test_bad_compensation_config_names_the_value():
    with pytest.raises(SpecError, match=r"mode='lsq'.*'none', 'bias', 'ls' or 'ls\+bias'"):
        CompensationConfig(mode="lsq")
    with pytest.raises(SpecError, match="ridge=-1"):
        CompensationConfig(ridge=-1)


def test_gram_docs_cap_takes_the_first_documents(tmp_path):
    """gram_docs: the Grams of a corpus's first N documents (the statistics still see all), and
    the cap is part of the Grams' key (tests/pipeline/test_keys.py covers the work list)."""
    from cusprun.pipeline.plan_inputs import gram_tokens
    from cusprun.pipeline.spec import ExpertSpec
    from cusprun.scoring import CorpusJob, collect_corpora

    spec = ExpertSpec.model_validate({"name": "x", "base_model": "m", "max_tokens": 256})
    assert gram_tokens(spec) == 256 and spec.gram_docs is None
    model, _ = make_tiny_model("LlamaForCausalLM")
    tok = tiny_tokenizer()
    both = collect_corpora(model, tok, {"c": CorpusJob(TEXTS, grams_dir=tmp_path / "cap",
                                                       grams_max_docs=3)}, max_tokens=32,
                           batch_size=2, progress=False)
    assert both["c"].n_docs == len(TEXTS)
    collect_grams(model, tok, TEXTS[:3], tmp_path / "first3", max_tokens=32, progress=False)
    capped, first = GramSet([tmp_path / "cap"]), GramSet([tmp_path / "first3"])
    assert capped.n_tokens == first.n_tokens == sum(min(len(tok(t)["input_ids"]), 32) for t in TEXTS[:3])
    for role in ("down", "o"):
        torch.testing.assert_close(capped.layer(2).gram[role], first.layer(2).gram[role],
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layout", ["uniform", "per_layer"])
@pytest.mark.parametrize("arch,mode", CASES + [("Phi3ForCausalLM", "none")])
def test_mask_session_cuts_ffn_and_computes_what_the_zeroed_model_computes(arch, mode, layout, tiny):
    """The sweep's and the allocation probe's in-memory pruning: FFN neurons cut out for real
    (narrower matmuls), same logits as mask_model's zeroing, and restore() gives the dense model
    back bit for bit, plan after plan."""
    from cusprun.engine import MaskSession

    dense_dir, grams_dir = tiny[arch]
    cfg = AutoConfig.from_pretrained(dense_dir)
    grams = GramSet([grams_dir])
    x = torch.randint(0, 256, (2, 13), generator=torch.Generator().manual_seed(1))
    model, _ = make_tiny_model(arch)
    with torch.no_grad():
        dense = model(x).logits
    session = MaskSession(model)
    ad = Adapter.for_model(model)
    for seed in (5, 6):
        ffn = 50 if layout == "uniform" else [10, 96, 33]
        plan = random_plan(cfg, fingerprint=FP, ffn=ffn, groups=1 if layout == "uniform" else [1, 2, 2],
                           heads_per_group=2 if layout == "uniform" else [2, 1, 2], layout=layout,
                           seed=seed)
        config = CompensationConfig(mode=mode)
        session.apply(plan, grams=grams, config=config)
        assert [ad.down_proj(layer).weight.shape[1] for layer in ad.layers(model)] == \
            [len(k.ffn) for k in plan.layers]
        ref, _ = make_tiny_model(arch)
        mask_model(ref, plan, grams=grams, config=config)
        with torch.no_grad():
            assert (model(x).logits - ref(x).logits).abs().max().item() < 1e-4
        session.restore()
        with torch.no_grad():
            assert torch.equal(model(x).logits, dense)


@pytest.mark.parametrize("mode", ["ls", "ls+bias"])
def test_a_bf16_checkpoint_is_solved_in_float_and_stays_bf16(mode, tmp_path):
    """Compensation solves in float32/float64 whatever the weights' dtype and writes the
    checkpoint's dtype: a bf16 base gives a bf16 expert equal to the bf16 masked model."""
    from safetensors import safe_open

    from cusprun.engine import LayeredModel, plan_edit
    from cusprun.models.loading import load_model

    model, _ = make_tiny_model("LlamaForCausalLM")
    model.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    tiny_tokenizer().save_pretrained(tmp_path / "bf16")
    base, tok = load_model(tmp_path / "bf16", device="cpu", dtype=torch.bfloat16)
    collect_grams(base, tok, TEXTS, tmp_path / "g", max_tokens=48, progress=False)
    grams = GramSet([tmp_path / "g"])
    plan = random_plan(base.config, fingerprint=FP, ffn=50, groups=1, heads_per_group=2,
                       layout="uniform", seed=2)
    config = CompensationConfig(mode=mode, ridge=0.1)
    out = slice_checkpoint(tmp_path / "bf16", plan, tmp_path / "expert", model_fingerprint=FP,
                           compensation=Compensation(config, grams), progress=False)
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
    expert = AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16).eval()
    ref = mask_model(base, plan, grams=grams, config=config)
    assert {p.dtype for p in ref.parameters()} == {torch.bfloat16}
    x = torch.randint(0, 256, (2, 13), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = (expert(x).logits.float() - ref(x).logits.float()).abs().max().item()
    assert diff < 2e-2     # two bf16 roundings of the same float solve
    # The streamed edit of a bf16 layer keeps bf16 parameters too.
    lm = LayeredModel.streamed(tmp_path / "bf16", device="cpu", dtype=torch.bfloat16)
    with lm.layer(0) as layer, plan_edit(lm.adapter, lm.dims, plan, grams=grams, config=config)(0, layer):
        assert {p.dtype for p in layer.parameters()} == {torch.bfloat16}


@pytest.mark.parametrize("ridge", [0.1, 0.01])
def test_the_refit_from_stored_inputs_equals_the_refit_from_their_gram(ridge):
    """With fewer calibration tokens than the width, 'ls' solves a tokens x tokens system from
    the inputs (push-through identity) instead of a |K| x |K| one from their Gram: same weights."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 96, generator=g) * torch.linspace(0.2, 2.0, 96)
    w = torch.randn(24, 96, generator=g)
    keep = sorted(torch.randperm(96, generator=g)[:70].tolist())
    dense, _ = compensate(w, None, keep, (x.t() @ x).double(), x.sum(0).double(), 40, mode="ls",
                          ridge=ridge)
    low, _ = compensate(w, None, keep, None, x.sum(0).double(), 40, mode="ls", ridge=ridge,
                        factor=x)
    torch.testing.assert_close(low, dense, rtol=1e-4, atol=1e-5 * float(dense.abs().max()))
    # The reconstruction really improved over dropping the columns.
    err = lambda wk: float((x @ w.t() - x[:, keep] @ wk.t().float()).pow(2).sum())  # noqa: E731
    assert err(low) < 0.7 * err(w[:, keep].double())


@pytest.mark.parametrize("mode", ["ls", "ls+bias"])
def test_the_sliced_bf16_expert_holds_the_streamed_references_weights_bit_for_bit(mode, tmp_path):
    """Slicing and the streamed plan_edit reference (benchmarks/scale/verify.py) round the same
    float solve to bf16, so their weights are equal bit for bit even when the corpora's Grams
    are listed in another order: a solve from concatenated inputs depends on their order, and
    the 8B-width scale check once differed by a bf16 ulp in a few weights because of it."""
    from safetensors import safe_open

    from cusprun.compensation.layer import head_channels
    from cusprun.engine import LayeredModel, plan_edit
    from cusprun.models.loading import load_model

    model, _ = make_tiny_model("LlamaForCausalLM")
    model.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    tiny_tokenizer().save_pretrained(tmp_path / "bf16")
    base, tok = load_model(tmp_path / "bf16", device="cpu", dtype=torch.bfloat16)
    for name, texts, h in (("a", TEXTS[:2], "f" * 8), ("b", TEXTS[2:4], "0" * 8)):
        s = collect_grams(base, tok, texts, tmp_path / name, max_tokens=8, progress=False,
                          extra={"corpus_hash": h})
        assert set(s["stored"].values()) == {"inputs"}     # the order-sensitive path
    plan = random_plan(base.config, fingerprint=FP, ffn=50, groups=1, heads_per_group=2,
                       layout="uniform", seed=2)
    config = CompensationConfig(mode=mode, ridge=0.1)
    out = slice_checkpoint(tmp_path / "bf16", plan, tmp_path / "expert", model_fingerprint=FP,
                           compensation=Compensation(config, GramSet([tmp_path / "a", tmp_path / "b"])),
                           progress=False)
    lm = LayeredModel.streamed(tmp_path / "bf16", device="cpu", dtype=torch.bfloat16)
    edit = plan_edit(lm.adapter, lm.dims, plan, config=config,
                     grams=GramSet([tmp_path / "b", tmp_path / "a"]))
    compared = 0
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        for li, keep in enumerate(plan.layers):
            cols = torch.tensor(head_channels(keep.heads, lm.dims.head_dim))
            with lm.layer(li) as layer, edit(li, layer):
                ad = lm.adapter
                pairs = [(ad.down_proj(layer).weight, "mlp.down_proj.weight"),
                         (ad.o_proj(layer).weight[:, cols], "self_attn.o_proj.weight")]
                if mode == "ls+bias":
                    pairs += [(ad.down_proj(layer).bias, "mlp.down_proj.bias"),
                              (ad.o_proj(layer).bias, "self_attn.o_proj.bias")]
                for ref, name in pairs:
                    got = f.get_tensor(f"model.layers.{li}.{name}")
                    assert got.dtype == ref.dtype == torch.bfloat16
                    assert torch.equal(got, ref), (li, name)
                    compared += 1
    assert compared == len(plan.layers) * (4 if mode == "ls+bias" else 2)


def test_a_gram_set_sums_in_one_order_whatever_order_it_is_given(tmp_path):
    model, _ = make_tiny_model("LlamaForCausalLM")
    for name, texts, h in (("a", TEXTS[:3], "f" * 8), ("b", TEXTS[3:], "0" * 8)):
        collect_grams(model, tiny_tokenizer(), texts, tmp_path / name, max_tokens=8,
                      progress=False, extra={"corpus_hash": h})
    ab = GramSet([tmp_path / "a", tmp_path / "b"], weights=[1.0, 3.0])
    ba = GramSet([tmp_path / "b", tmp_path / "a"], weights=[3.0, 1.0])
    assert ab.dirs == ba.dirs == [tmp_path / "b", tmp_path / "a"]     # by corpus hash
    assert ab.weights == ba.weights == [3.0, 1.0]                      # weights travel along
    for li in range(ab.n_layers):
        x, y = ab.layer(li), ba.layer(li)
        assert x.n_tokens == y.n_tokens
        for r in ("down", "o"):
            assert torch.equal(x.gram[r], y.gram[r]) and torch.equal(x.total[r], y.total[r])


def test_channel_means_give_the_bias_of_the_grams_of_the_same_tokens(tmp_path):
    """FLAP's bias from a statistics pass's channel sums (no Gram) equals the bias from the Grams
    of the same tokens; a sliced per-layer expert compensated from them computes what the masked
    model computes; they refuse a mode that needs a Gram."""
    from cusprun.compensation import ChannelMeans
    from cusprun.scoring import collect_stats

    model, dense_dir = make_tiny_model("LlamaForCausalLM", tmp_path / "dense")
    stats = collect_stats(model, tiny_tokenizer(), TEXTS, max_tokens=48, batch_size=4,
                          grams_dir=tmp_path / "grams", progress=False)
    means, grams = ChannelMeans.from_stats([stats]), GramSet([tmp_path / "grams"])
    assert means.n_tokens == grams.n_tokens and means.n_layers == grams.n_layers
    plan = random_plan(model.config, fingerprint=FP, ffn=[10, 96, 33], groups=[1, 2, 2],
                       heads_per_group=[2, 1, 2], layout="per_layer", seed=5)
    config = CompensationConfig(mode="bias")
    a, b = make_tiny_model("LlamaForCausalLM")[0], make_tiny_model("LlamaForCausalLM")[0]
    mask_model(a, plan, grams=means, config=config)
    mask_model(b, plan, grams=grams, config=config)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)
    out = slice_checkpoint(dense_dir, plan, tmp_path / "expert", model_fingerprint=FP,
                           compensation=Compensation(config, means), progress=False)
    import cusprun.slicing  # noqa: F401 - per-layer model type
    sliced = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    x = torch.randint(0, 256, (2, 13), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (sliced(x).logits - a(x).logits).abs().max().item() < 1e-4
    with pytest.raises(SpecError, match="only compensation mode 'bias'"):
        mask_model(make_tiny_model("LlamaForCausalLM")[0], plan, grams=means,
                   config=CompensationConfig(mode="ls"))
