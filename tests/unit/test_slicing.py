"""Sliced checkpoints compute exactly what the dense model computes with the same units zeroed,
for every supported family and both layouts, and load with transformers' Auto classes."""
from __future__ import annotations

import json

import pytest
import torch
import yaml
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

import cusprun
from cusprun.adapters import Adapter, count_params, zero_units
from cusprun.plans.plan import PruningPlan
from cusprun.slicing import slice_checkpoint
from cusprun.models.per_layer import MODEL_TYPE
from tests.support import TINY_FAMILIES, make_tiny_model, random_plan, tiny_tokenizer

FP = "tinyfingerprint0000000000000000"

# (layout, ffn kept, KV groups kept, query heads kept per group), for tiny models with
# 3 layers, 96 FFN neurons, 4 query heads in 2 KV groups.
PLANS = {
    "uniform-drop-kv-group": ("uniform", 50, 1, 2),
    "uniform-partial-groups": ("uniform", 70, 2, 1),
    "per-layer-uneven": ("per_layer", [10, 96, 33], [1, 2, 2], [2, 1, 2]),
    "per-layer-empty-ffn": ("per_layer", [0, 5, 95], [2, 1, 1], [2, 2, 1]),
}


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    """arch -> directory of a saved tiny model (built once per module)."""
    root = tmp_path_factory.mktemp("dense")
    return {arch: make_tiny_model(arch, root / arch)[1] for arch in TINY_FAMILIES}


def _plan(model_dir, kind: str, seed: int = 0) -> PruningPlan:
    layout, ffn, groups, per_group = PLANS[kind]
    cfg = AutoConfig.from_pretrained(model_dir)
    return random_plan(cfg, fingerprint=FP, ffn=ffn, groups=groups, heads_per_group=per_group,
                       layout=layout, seed=seed)


def _zeroed_reference(arch: str, plan: PruningPlan):
    model, _ = make_tiny_model(arch)  # same seed as the saved one
    d = Adapter.for_model(model).dims(model.config)
    zero_units(model, *plan.pruned(d.ffn, d.n_heads))
    return model


@pytest.mark.parametrize("arch", TINY_FAMILIES)
def test_module_names_are_state_dict_names(arch):
    model, _ = make_tiny_model(arch)
    keys = set(model.state_dict())
    ad = Adapter.for_model(model)
    for li in range(model.config.num_hidden_layers):
        for name in ad.module_names(li).values():
            assert f"{name}.weight" in keys
    assert ad.embedding_names()[0] in keys


@pytest.mark.parametrize("kind", list(PLANS))
@pytest.mark.parametrize("arch", TINY_FAMILIES)
def test_sliced_equals_dense_with_units_zeroed(arch, kind, dense, tmp_path):
    plan = _plan(dense[arch], kind, seed=list(PLANS).index(kind))
    out = slice_checkpoint(dense[arch], plan, tmp_path / "expert", model_fingerprint=FP,
                           progress=False)
    cfg = json.loads((out / "config.json").read_text())
    if plan.layout == "uniform":
        assert cfg["model_type"] == json.loads((dense[arch] / "config.json").read_text())["model_type"]
        assert cfg["model_type"] != MODEL_TYPE and cfg["head_dim"] == 16
    else:
        assert cfg["model_type"] == MODEL_TYPE
        assert [w["intermediate_size"] for w in cfg["layer_widths"]] == [len(k.ffn) for k in plan.layers]
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    if plan.layout == "uniform":
        assert type(model).__name__ == arch  # the stock family class
    ref = _zeroed_reference(arch, plan)

    x = torch.randint(0, 256, (2, 13), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = (model(x).logits - ref(x).logits).abs().max().item()
        assert diff < 1e-4
        # Greedy decoding with a KV cache gives the same tokens as the zeroed dense model.
        prompt = x[:1, :5]
        got = model.generate(prompt, max_new_tokens=8, do_sample=False, use_cache=True)
        want = ref.generate(prompt, max_new_tokens=8, do_sample=False, use_cache=True)
    assert got.shape == (1, 13) and torch.equal(got, want)

    # Widths really shrank, layer by layer.
    ad = Adapter.for_model(ref)
    for layer, keep in zip(ad.layers(model), plan.layers):
        assert ad.down_proj(layer).in_features == len(keep.ffn)
        assert ad.o_proj(layer).in_features == len(keep.heads) * 16


@pytest.mark.parametrize("arch", TINY_FAMILIES)
def test_param_counts_follow_the_plan_arithmetic(arch, dense, tmp_path):
    plan = _plan(dense[arch], "per-layer-uneven")
    out = slice_checkpoint(dense[arch], plan, tmp_path / "e", model_fingerprint=FP, progress=False)
    sliced, _ = cusprun.load_expert(out)
    base, _ = make_tiny_model(arch)
    got, dense_counts = count_params(sliced), count_params(base)
    cfg = base.config
    ad = Adapter.for_config(cfg)
    u, d = ad.unit_params(cfg), ad.dims(cfg)
    removed = sum((d.ffn - len(k.ffn)) * u["ffn_neuron"] + (d.n_heads - len(k.heads)) * u["query_head"]
                  + (d.n_kv_heads - len(k.kv_heads)) * u["kv_group"] for k in plan.layers)
    assert removed == plan.removed_params > 0
    assert got["total"] == dense_counts["total"] - removed
    assert got["non_embedding"] == dense_counts["non_embedding"] - removed
    meta = json.loads((out / "cusprun.json").read_text())
    assert meta["params"]["pruned"] == got and meta["params"]["dense"] == dense_counts
    assert meta["params"]["removed"] == removed


def test_tied_embeddings_stay_tied(tmp_path):
    arch = "LlamaForCausalLM"
    base, src = make_tiny_model(arch, tmp_path / "dense", tie_word_embeddings=True)
    plan = _plan(src, "uniform-drop-kv-group")
    out = slice_checkpoint(src, plan, tmp_path / "e", model_fingerprint=FP, progress=False)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert torch.equal(model.lm_head.weight, base.lm_head.weight)
    meta = json.loads((out / "cusprun.json").read_text())
    assert meta["params"]["pruned"] == count_params(model)


def test_uniform_and_per_layer_load_in_a_fresh_process(dense, tmp_path):
    """Uniform: stock transformers, cusprun never imported. Per-layer: AutoModelForCausalLM after
    importing cusprun, no remote code."""
    import subprocess
    import sys

    arch = "Qwen3ForCausalLM"
    uni = slice_checkpoint(dense[arch], _plan(dense[arch], "uniform-drop-kv-group"), tmp_path / "u",
                           model_fingerprint=FP, progress=False)
    per = slice_checkpoint(dense[arch], _plan(dense[arch], "per-layer-uneven"), tmp_path / "p",
                           model_fingerprint=FP, progress=False)
    script = f"""
import sys, torch
from transformers import AutoModelForCausalLM
m = AutoModelForCausalLM.from_pretrained({str(uni)!r})
assert type(m).__name__ == {arch!r} and "cusprun" not in sys.modules
try:
    AutoModelForCausalLM.from_pretrained({str(per)!r})
    raise SystemExit("per-layer loaded without cusprun")
except (ValueError, KeyError):
    pass
import cusprun.slicing
p = AutoModelForCausalLM.from_pretrained({str(per)!r})
assert p.config.model_type == "cusprun_per_layer"
print(p.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=3, do_sample=False).shape)
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "torch.Size([1, 6])" in r.stdout


def test_per_layer_model_follows_attention_implementation_changes(dense, tmp_path):
    arch = "Phi3ForCausalLM"  # splits its fused qkv by the layer's own head counts
    plan = _plan(dense[arch], "per-layer-uneven")
    out = slice_checkpoint(dense[arch], plan, tmp_path / "e", model_fingerprint=FP, progress=False)
    model, _ = cusprun.load_expert(out, dtype=torch.float32, device="cpu")
    ref = _zeroed_reference(arch, plan)
    x = torch.randint(0, 256, (1, 9))
    model.set_attn_implementation("eager")
    assert Adapter.for_model(ref).attention(model.model.layers[0]).config._attn_implementation == "eager"
    with torch.no_grad():
        assert (model(x).logits - ref(x).logits).abs().max() < 1e-4
    # save_pretrained of a loaded per-layer expert round-trips.
    model.save_pretrained(tmp_path / "again")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "again", attn_implementation="eager")
    assert type(again) is type(model)
    with torch.no_grad():
        assert torch.equal(again(x).logits, model(x).logits)


def test_written_files_metadata_and_card(dense, tmp_path):
    arch = "LlamaForCausalLM"
    plan = _plan(dense[arch], "uniform-drop-kv-group")
    plan.dimensions = {"domain": {"value": "medical", "corpus_hashes": ["c0ffee12"], "stats": []},
                       "language": {"value": "fr", "corpus_hashes": ["beef3456"]}}
    plan.rule, plan.target_ratio = "exact-ratio", 0.3
    out = slice_checkpoint(dense[arch], plan, tmp_path / "e", model_fingerprint=FP, progress=False,
                           card={"base_model": "HuggingFaceTB/SmolLM2-135M", "expert": "medical-fr"})
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json",
            "generation_config.json", "cusprun.json", "README.md"} <= names
    assert not list(tmp_path.glob(".*partial"))  # no temporary directory left behind

    meta = json.loads((out / "cusprun.json").read_text())
    assert PruningPlan.model_validate(meta) == plan
    assert meta["base_model_fingerprint"] == FP and meta["layout"] == "uniform"
    assert meta["cusprun_version"] == cusprun.__version__ and meta["created"]
    assert meta["layer_widths"][0] == {"intermediate_size": 50, "num_attention_heads": 2,
                                       "num_key_value_heads": 1}

    text = (out / "README.md").read_text()
    assert text.startswith("---\n")
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["base_model"] == "HuggingFaceTB/SmolLM2-135M"
    assert front["library_name"] == "transformers"
    assert {"cusprun", "pruned", "domain", "language"} <= set(front["tags"])
    assert front["cusprun"]["params_total"] == meta["params"]["pruned"]["total"]
    body = text.split("---\n", 2)[2]
    for needle in ("# medical-fr", "No post-training", "exact-ratio", "medical", "c0ffee12", "fr",
                   "beef3456", "30.0%", "hidden size is not a multiple"):
        assert needle in body

    dense_tok, tok = AutoTokenizer.from_pretrained(dense[arch]), AutoTokenizer.from_pretrained(out)
    assert tok("hello world")["input_ids"] == dense_tok("hello world")["input_ids"]


def test_many_shards_with_index(dense, tmp_path):
    arch = "Gemma3ForCausalLM"
    plan = _plan(dense[arch], "per-layer-uneven")
    out = slice_checkpoint(dense[arch], plan, tmp_path / "e", model_fingerprint=FP, progress=False,
                           max_shard_bytes=40_000)
    shards = sorted(out.glob("model-*.safetensors"))
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(shards) > 2 and set(index["weight_map"].values()) == {s.name for s in shards}
    model, _ = cusprun.load_expert(out)
    ref = _zeroed_reference(arch, plan)
    x = torch.randint(0, 256, (1, 9))
    with torch.no_grad():
        assert (model(x).logits - ref(x).logits).abs().max() < 1e-4


def test_reads_a_sharded_bf16_checkpoint(tmp_path):
    """Input sharded with an index, bf16 weights: dtype kept, values exactly the kept rows."""
    arch = "Qwen2ForCausalLM"
    base, _ = make_tiny_model(arch)
    src = tmp_path / "dense"
    base.to(torch.bfloat16).save_pretrained(src, max_shard_size="60KB")
    tiny_tokenizer().save_pretrained(src)
    assert (src / "model.safetensors.index.json").exists()
    plan = _plan(src, "per-layer-uneven")
    out = slice_checkpoint(src, plan, tmp_path / "e", model_fingerprint=FP, progress=False)
    model, _ = cusprun.load_expert(out, dtype=torch.bfloat16, device="cpu")
    layer, keep = model.model.layers[0], plan.layers[0]
    rows = torch.cat([torch.arange(h * 16, h * 16 + 16) for h in keep.heads])
    want = base.model.layers[0].self_attn.q_proj
    assert layer.self_attn.q_proj.weight.dtype == torch.bfloat16
    assert torch.equal(layer.self_attn.q_proj.weight, want.weight[rows])
    assert torch.equal(layer.self_attn.q_proj.bias, want.bias[rows])
    assert torch.equal(layer.mlp.down_proj.weight, base.model.layers[0].mlp.down_proj.weight[:, keep.ffn])


@pytest.mark.s3
def test_load_expert_from_a_store_uri(dense, tmp_path, s3_bucket, monkeypatch):
    from cusprun.storage import ArtifactStore

    monkeypatch.setenv("CUSPRUN_CACHE", str(tmp_path / "cache"))
    arch = "MistralForCausalLM"
    plan = _plan(dense[arch], "per-layer-uneven")
    out = slice_checkpoint(dense[arch], plan, tmp_path / "e", model_fingerprint=FP, progress=False)
    store = ArtifactStore(s3_bucket.uri, s3_bucket.storage_options)
    store.put_dir(out, "experts/x/v1", progress=False)
    model, tok = cusprun.load_expert(store.uri("experts/x/v1"), storage_options=s3_bucket.storage_options)
    ref = _zeroed_reference(arch, plan)
    x = torch.tensor([tok("abc")["input_ids"]])
    with torch.no_grad():
        assert (model(x).logits - ref(x).logits).abs().max() < 1e-4
    assert list((tmp_path / "cache" / "experts").iterdir())


@pytest.mark.integration
def test_bundled_smollm2_uniform_expert(tmp_path):
    """The real SmolLM2-135M (9 heads / 3 KV, tied embeddings, real tokenizer and chat template):
    drop a KV group and a third of the FFN; the expert matches the zeroed dense model."""
    from cusprun.models.sources import resolve_model

    r = resolve_model("smollm2-135m")
    cfg = AutoConfig.from_pretrained(r.path)
    plan = random_plan(cfg, fingerprint=r.fingerprint, ffn=1024, groups=2, heads_per_group=3,
                       layout="uniform", seed=3)
    out = slice_checkpoint(r.path, plan, tmp_path / "e", model_fingerprint=r.fingerprint,
                           card={"base_model": "HuggingFaceTB/SmolLM2-135M-Instruct"}, progress=False)
    assert (out / "chat_template.jinja").exists()
    model, tok = cusprun.load_expert(out, dtype=torch.float32, device="cpu")
    dense, _ = cusprun.load_expert(r.path, dtype=torch.float32, device="cpu")
    zero_units(dense, *plan.pruned(1536, 9))
    x = tok(["The capital of France is"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert (model(x).logits - dense(x).logits).abs().max() < 1e-3
        got = model.generate(x, max_new_tokens=6, do_sample=False)
        assert torch.equal(got, dense.generate(x, max_new_tokens=6, do_sample=False))
    meta = json.loads((out / "cusprun.json").read_text())
    assert meta["params"]["pruned"] == count_params(model)
    assert meta["params"]["dense"]["total"] - meta["params"]["pruned"]["total"] == plan.removed_params


def test_layer_modules_are_rebuilt_through_opaque_init_wrappers():
    """transformers >= 5.25 wraps attention classes' __init__ in the `kernels` hub's
    new_init(self, *args, **kwargs): layer_idx must still reach the real __init__."""
    from cusprun.models.per_layer import _construct

    def opaque(cls):
        orig = cls.__init__

        def new_init(self, *args, **kwargs):
            orig(self, *args, **kwargs)
        cls.__init__ = new_init
        return cls

    class WithIdx:
        def __init__(self, config, layer_idx):
            self.config, self.layer_idx = config, layer_idx

    class WithoutIdx:
        def __init__(self, config):
            self.config = config

    class Broken:
        def __init__(self, config, layer_idx):
            raise TypeError("something else")

    assert _construct(WithIdx, "c", 3).layer_idx == 3
    assert _construct(WithoutIdx, "c", 3).config == "c"
    assert _construct(opaque(type("A", (WithIdx,), {})), "c", 4).layer_idx == 4
    assert _construct(opaque(type("B", (WithoutIdx,), {})), "c", 4).config == "c"
    with pytest.raises(TypeError, match="something else"):
        _construct(opaque(type("C", (Broken,), {})), "c", 1)
