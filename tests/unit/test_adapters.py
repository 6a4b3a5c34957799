"""The declarative adapter table drives every family; no family branches in algorithm code."""
import pytest
import torch

from cusprun.adapters import ARCHITECTURES, Adapter, architecture_of, count_params
from cusprun.errors import UnsupportedArchitectureError
from tests.support import TINY_FAMILIES, make_tiny_model, tiny_config


@pytest.mark.parametrize("arch", TINY_FAMILIES)
def test_dims_and_unit_params_match_real_modules(arch):
    model, _ = make_tiny_model(arch)
    ad = Adapter.for_model(model)
    d = ad.dims(model.config)
    assert (d.n_layers, d.hidden, d.n_heads, d.n_kv_heads, d.head_dim, d.ffn) == (3, 64, 4, 2, 16, 96)
    layers = ad.layers(model)
    assert len(layers) == d.n_layers
    layer = layers[0]
    # Every prunable projection's parameters, counted from the live modules.
    mods = {p.linear for p in ad.ffn_in_parts(layer, d)} | {ad.down_proj(layer)}
    mods |= {p.linear for p in ad.qkv_parts(layer, d.n_heads, d.n_kv_heads, d.head_dim).values()}
    live = sum(p.numel() for m in mods for p in m.parameters())
    o = ad.o_proj(layer)
    live += o.weight.numel()  # o's bias (if any) is per hidden unit, never pruned
    assert ad.prunable_params(model.config) == d.n_layers * live
    assert ad.down_proj(layer).in_features == d.ffn
    assert o.in_features == d.n_heads * d.head_dim
    parts = ad.qkv_parts(layer, d.n_heads, d.n_kv_heads, d.head_dim)
    assert parts["q"].width == d.n_heads * d.head_dim
    assert parts["k"].width == parts["v"].width == d.n_kv_heads * d.head_dim


@pytest.mark.parametrize("arch", TINY_FAMILIES)
def test_count_params_excludes_embeddings(arch):
    model, _ = make_tiny_model(arch)
    c = count_params(model)
    emb = model.get_input_embeddings().weight.numel()
    out = model.get_output_embeddings().weight.numel()
    assert c["total"] == sum(p.numel() for p in model.parameters())
    assert c["non_embedding"] == c["total"] - emb - out


def test_valid_head_count_follows_the_family_config_class():
    llama = tiny_config("LlamaForCausalLM")
    ad = Adapter.for_config(llama)
    assert ad.valid_head_count(llama, 4, 2)
    assert ad.valid_head_count(llama, 2, 1)
    assert not ad.valid_head_count(llama, 3, 1)   # 64 % 3 != 0: transformers 5 refuses it
    assert not ad.valid_head_count(llama, 3, 2)   # not a whole number of heads per group
    qwen = tiny_config("Qwen2ForCausalLM")
    assert Adapter.for_config(qwen).valid_head_count(qwen, 3, 1)


def test_unsupported_architecture_names_it_and_lists_supported():
    from types import SimpleNamespace

    with pytest.raises(UnsupportedArchitectureError) as e:
        architecture_of(SimpleNamespace(architectures=["GPT2LMHeadModel"], model_type="gpt2"))
    msg = str(e.value)
    assert "GPT2LMHeadModel" in msg
    for arch in ARCHITECTURES:
        assert arch in msg
    with pytest.raises(UnsupportedArchitectureError, match="Falcon"):
        Adapter("FalconForCausalLM")


def test_model_type_fallback_when_architectures_missing():
    from types import SimpleNamespace

    assert architecture_of(SimpleNamespace(model_type="qwen3")) == "Qwen3ForCausalLM"


@pytest.mark.parametrize("arch", ["Phi3ForCausalLM", "LlamaForCausalLM"])
def test_zero_units_removes_exactly_those_contributions(arch):
    from cusprun.adapters import zero_units

    model, _ = make_tiny_model(arch)
    ad = Adapter.for_model(model)
    d = ad.dims(model.config)
    zero_units(model, {0: [1, 5]}, {1: [2]})
    down = ad.down_proj(ad.layers(model)[0]).weight
    assert torch.all(down[:, [1, 5]] == 0) and torch.any(down[:, 0] != 0)
    o = ad.o_proj(ad.layers(model)[1]).weight
    assert torch.all(o[:, 2 * d.head_dim:3 * d.head_dim] == 0)
