"""Synthetic plans with correct accounting and random model shapes, for tests and benchmarks
(not a pruning method)."""
from __future__ import annotations

import random
from typing import Any

from cusprun.adapters import Adapter
from cusprun.plans.plan import LayerKeep, PruningPlan
from cusprun.slicing.validate import LayerWidths, removed_params


def plan_from_keeps(config: Any, layers: list[LayerKeep], *, fingerprint: str,
                    layout: str = "per_layer", method: str = "random") -> PruningPlan:
    """A PruningPlan for explicit kept units, with prunable/removed params and ratio filled in."""
    ad = Adapter.for_config(config)
    widths = [LayerWidths(len(k.ffn), len(k.heads), len(k.kv_heads)) for k in layers]
    prunable = ad.prunable_params(config)
    removed = removed_params(ad, config, widths)
    return PruningPlan(base_fingerprint=fingerprint, architecture=ad.architecture, method=method,
                       layout=layout, achieved_ratio=removed / prunable, prunable_params=prunable,
                       removed_params=removed, layers=layers)


def _per_layer(value: int | list[int], n: int) -> list[int]:
    return list(value) if isinstance(value, (list, tuple)) else [value] * n


def random_plan(config: Any, *, fingerprint: str, ffn: int | list[int], groups: int | list[int],
                heads_per_group: int | list[int], layout: str = "per_layer", seed: int = 0) -> PruningPlan:
    """Random kept units: per layer `ffn` neurons, `groups` KV groups with `heads_per_group`
    query heads each (ints apply to every layer, lists give one value per layer)."""
    ad = Adapter.for_config(config)
    d = ad.dims(config)
    rng = random.Random(seed)
    layers = []
    for f, g, h in zip(_per_layer(ffn, d.n_layers), _per_layer(groups, d.n_layers),
                       _per_layer(heads_per_group, d.n_layers)):
        kv = sorted(rng.sample(range(d.n_kv_heads), g))
        heads = sorted(q for grp in kv
                       for q in rng.sample(range(grp * d.group_size, (grp + 1) * d.group_size), h))
        layers.append(LayerKeep(ffn=sorted(rng.sample(range(d.ffn), f)), heads=heads, kv_heads=kv))
    return plan_from_keeps(config, layers, fingerprint=fingerprint, layout=layout)


def uniform_plan_for_ratio(config: Any, ratio: float, *, fingerprint: str, seed: int = 0,
                           ffn_multiple: int = 1) -> PruningPlan:
    """A random uniform plan removing about `ratio` of the prunable params: about `ratio` of the
    KV groups (whole groups, with a head count the family accepts), FFN neurons for the rest
    (their count rounded to the nearest multiple of `ffn_multiple`)."""
    ad = Adapter.for_config(config)
    d, u = ad.dims(config), ad.unit_params(config)
    target = ratio * ad.prunable_params(config) / d.n_layers
    valid = [g for g in range(d.n_kv_heads, 0, -1) if ad.valid_head_count(config, g * d.group_size, g)]
    for g in sorted(valid, key=lambda g: abs(g - d.n_kv_heads * (1 - ratio))):
        attn = (d.n_kv_heads - g) * (d.group_size * u["query_head"] + u["kv_group"])
        f = d.ffn - max(0, round((target - attn) / u["ffn_neuron"]))
        f = min(d.ffn, max(ffn_multiple, round(f / ffn_multiple) * ffn_multiple))
        if 1 <= f <= d.ffn:
            return random_plan(config, fingerprint=fingerprint, ffn=f, groups=g,
                               heads_per_group=d.group_size, layout="uniform", seed=seed)
    raise ValueError(f"no uniform plan reaches ratio {ratio}")


def smollm2_135m_shaped_config():
    """A Llama config with SmolLM2-135M's shapes (random weights; for benchmarks)."""
    from transformers import LlamaConfig

    cfg = LlamaConfig(hidden_size=576, num_hidden_layers=30, num_attention_heads=9,
                      num_key_value_heads=3, head_dim=64, intermediate_size=1536, vocab_size=49152,
                      tie_word_embeddings=True, max_position_embeddings=8192, rms_norm_eps=1e-5,
                      bos_token_id=0, eos_token_id=0, pad_token_id=0)
    cfg.architectures = ["LlamaForCausalLM"]
    return cfg


def write_random_model(config, out_dir, *, dtype=None, seed: int = 0):
    """Save a randomly initialised CausalLM of `config` (safetensors) plus the tiny byte tokenizer."""
    import torch
    import transformers

    from tests.support.tiny import tiny_tokenizer

    torch.manual_seed(seed)
    model = getattr(transformers, config.architectures[0])(config)
    if dtype is not None:
        model.to(dtype)
    model.save_pretrained(out_dir)
    tiny_tokenizer().save_pretrained(out_dir)
    return out_dir
