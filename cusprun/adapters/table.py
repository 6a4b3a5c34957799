"""The one declarative place that knows model families.

Each entry says where a family keeps its decoder layers, attention and MLP projections,
whether projections are fused, which config key names the activation, and which config
class validates head counts. Algorithm code asks `cusprun.adapters.Adapter`; it never
branches on a family name.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ArchSpec:
    family: str                      # human label for summaries
    config_class: str                # transformers config class (validates sliced head counts)
    model_types: tuple[str, ...]     # config.model_type values of this family
    layers: str = "model.layers"     # dotted path from the CausalLM to the decoder layer list
    embed: str = "model.embed_tokens"  # dotted path of the input embedding (state-dict prefix)
    lm_head: str = "lm_head"         # dotted path of the output head (absent from tied checkpoints)
    attention: str = "self_attn"     # attribute of a decoder layer
    q: str | None = "q_proj"
    k: str | None = "k_proj"
    v: str | None = "v_proj"
    qkv: str | None = None           # fused projection, rows ordered [q | k | v]
    o: str = "o_proj"
    q_norm: str | None = None        # per-head_dim norms (shared by heads, so slicing keeps them)
    k_norm: str | None = None
    mlp: str = "mlp"
    gate: str | None = "gate_proj"
    up: str | None = "up_proj"
    gate_up: str | None = None       # fused projection, rows ordered [gate | up]
    down: str = "down_proj"
    act_key: str = "hidden_act"      # config key naming the MLP activation
    qkv_bias: bool | None = None     # q/k/v carry biases; None: read config.attention_bias
    sliding_window: bool = False     # family interleaves sliding-window layers
    down_bias_key: str | None = None # config key that gives down_proj a bias (bias compensation)
    o_bias_key: str | None = None    # config key that gives o_proj a bias


ARCHITECTURES: dict[str, ArchSpec] = {
    "LlamaForCausalLM": ArchSpec(
        family="Llama (2, 3)", config_class="LlamaConfig", model_types=("llama",),
        down_bias_key="mlp_bias", o_bias_key="attention_bias"),
    "MistralForCausalLM": ArchSpec(
        family="Mistral", config_class="MistralConfig", model_types=("mistral",)),
    "Qwen2ForCausalLM": ArchSpec(
        family="Qwen2 / Qwen2.5", config_class="Qwen2Config", model_types=("qwen2",),
        qkv_bias=True),
    "Qwen3ForCausalLM": ArchSpec(
        family="Qwen3", config_class="Qwen3Config", model_types=("qwen3",),
        q_norm="q_norm", k_norm="k_norm", o_bias_key="attention_bias"),
    "Gemma3ForCausalLM": ArchSpec(
        family="Gemma3", config_class="Gemma3TextConfig", model_types=("gemma3_text",),
        q_norm="q_norm", k_norm="k_norm", act_key="hidden_activation", sliding_window=True,
        o_bias_key="attention_bias"),
    "Phi3ForCausalLM": ArchSpec(
        family="Phi-3", config_class="Phi3Config", model_types=("phi3",),
        q=None, k=None, v=None, qkv="qkv_proj", gate=None, up=None, gate_up="gate_up_proj"),
}

# Config keys are shared by every supported family.
CONFIG_KEYS = dict(
    layers="num_hidden_layers", hidden="hidden_size", heads="num_attention_heads",
    kv_heads="num_key_value_heads", head_dim="head_dim", ffn="intermediate_size",
)
