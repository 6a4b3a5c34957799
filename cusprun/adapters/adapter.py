"""Uniform access to the prunable structure of any supported architecture."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cusprun.adapters.table import ARCHITECTURES, CONFIG_KEYS, ArchSpec
from cusprun.errors import UnsupportedArchitectureError


@dataclass(frozen=True)
class Dims:
    """Shapes that pruning cares about."""

    n_layers: int
    hidden: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn: int

    @property
    def group_size(self) -> int:
        """Query heads per key/value head."""
        return self.n_heads // self.n_kv_heads


@dataclass(frozen=True)
class RowPart:
    """A contiguous block of output rows of a Linear that belongs to one logical projection."""

    linear: nn.Linear
    start: int
    width: int


def _get(obj: Any, dotted: str) -> Any:
    for name in dotted.split("."):
        obj = getattr(obj, name)
    return obj


def architecture_of(config: Any) -> str:
    """The family of `config` (a per-layer expert's is its base model's)."""
    base = getattr(config, "base_architecture", None)
    if base in ARCHITECTURES:
        return base
    archs = list(getattr(config, "architectures", None) or [])
    for arch in archs:
        if arch in ARCHITECTURES:
            return arch
    mt = getattr(config, "model_type", None)
    for arch, spec in ARCHITECTURES.items():
        if mt in spec.model_types:
            return arch
    shown = archs[0] if archs else f"model_type={mt!r}"
    raise UnsupportedArchitectureError(
        f"Unsupported architecture {shown}. Supported: {', '.join(sorted(ARCHITECTURES))}."
    )


class Adapter:
    """Reads the declarative table for one architecture; the only door to module paths."""

    def __init__(self, architecture: str):
        if architecture not in ARCHITECTURES:
            raise UnsupportedArchitectureError(
                f"Unsupported architecture {architecture!r}. "
                f"Supported: {', '.join(sorted(ARCHITECTURES))}."
            )
        self.architecture = architecture
        self.spec: ArchSpec = ARCHITECTURES[architecture]

    @classmethod
    def for_config(cls, config: Any) -> "Adapter":
        return cls(architecture_of(config))

    @classmethod
    def for_model(cls, model: nn.Module) -> "Adapter":
        return cls.for_config(model.config)

    # ---- shapes -------------------------------------------------------------
    def dims(self, config: Any) -> Dims:
        k = CONFIG_KEYS
        hidden = getattr(config, k["hidden"])
        heads = getattr(config, k["heads"])
        head_dim = getattr(config, k["head_dim"], None) or hidden // heads
        kv = getattr(config, k["kv_heads"], None) or heads
        return Dims(
            n_layers=getattr(config, k["layers"]), hidden=hidden, n_heads=heads,
            n_kv_heads=kv, head_dim=head_dim, ffn=getattr(config, k["ffn"]),
        )

    def activation(self, config: Any) -> str:
        return getattr(config, self.spec.act_key)

    def config_class(self):
        import transformers

        return getattr(transformers, self.spec.config_class)

    # ---- modules ------------------------------------------------------------
    def layers(self, model: nn.Module) -> list[nn.Module]:
        return list(_get(model, self.spec.layers))

    def attention(self, layer: nn.Module) -> nn.Module:
        return getattr(layer, self.spec.attention)

    def mlp(self, layer: nn.Module) -> nn.Module:
        return getattr(layer, self.spec.mlp)

    def o_proj(self, layer: nn.Module) -> nn.Linear:
        """Input columns are the concatenated query-head outputs."""
        return getattr(self.attention(layer), self.spec.o)

    def down_proj(self, layer: nn.Module) -> nn.Linear:
        """Input columns are the FFN neurons."""
        return getattr(self.mlp(layer), self.spec.down)

    def ffn_in_parts(self, layer: nn.Module, dims: Dims) -> list[RowPart]:
        """Row blocks (gate, up) whose row k belongs to FFN neuron k."""
        mlp, s = self.mlp(layer), self.spec
        if s.gate_up:
            lin = getattr(mlp, s.gate_up)
            width = lin.out_features // 2
            return [RowPart(lin, 0, width), RowPart(lin, width, width)]
        return [RowPart(getattr(mlp, name), 0, getattr(mlp, name).out_features)
                for name in (s.gate, s.up) if name]

    def qkv_parts(self, layer: nn.Module, n_heads: int, n_kv: int, head_dim: int) -> dict[str, RowPart]:
        """Row blocks of the q, k and v projections (fused or separate)."""
        attn, s = self.attention(layer), self.spec
        if s.qkv:
            lin = getattr(attn, s.qkv)
            q_w, kv_w = n_heads * head_dim, n_kv * head_dim
            return {"q": RowPart(lin, 0, q_w), "k": RowPart(lin, q_w, kv_w),
                    "v": RowPart(lin, q_w + kv_w, kv_w)}
        return {name: RowPart(getattr(attn, attr), 0, getattr(attn, attr).out_features)
                for name, attr in (("q", s.q), ("k", s.k), ("v", s.v))}

    # ---- state-dict names ---------------------------------------------------
    def module_names(self, layer_idx: int) -> dict[str, str]:
        """Dotted state-dict prefixes of layer `layer_idx`'s prunable projections, by role
        (q, k, v or qkv; o; gate, up or gate_up; down); append ".weight" / ".bias"."""
        s = self.spec
        attn, mlp = f"{s.layers}.{layer_idx}.{s.attention}", f"{s.layers}.{layer_idx}.{s.mlp}"
        roles = {"q": s.q, "k": s.k, "v": s.v, "qkv": s.qkv, "o": s.o}
        names = {role: f"{attn}.{attr}" for role, attr in roles.items() if attr}
        roles = {"gate": s.gate, "up": s.up, "gate_up": s.gate_up, "down": s.down}
        names.update({role: f"{mlp}.{attr}" for role, attr in roles.items() if attr})
        return names

    def embedding_names(self) -> tuple[str, str]:
        """State-dict names of the input embedding and the output head weights."""
        return f"{self.spec.embed}.weight", f"{self.spec.lm_head}.weight"

    # ---- parameter accounting ----------------------------------------------
    def unit_params(self, config: Any) -> dict[str, int]:
        """Parameters removed with one FFN neuron, one query head, one whole KV group's k/v."""
        d = self.dims(config)
        attn_bias = self.spec.qkv_bias
        if attn_bias is None:
            attn_bias = bool(getattr(config, "attention_bias", False))
        mlp_bias = bool(getattr(config, "mlp_bias", False))
        n_in = 2  # gate and up (or the two halves of gate_up)
        return {
            "ffn_neuron": (n_in + 1) * d.hidden + (n_in if mlp_bias else 0),
            "query_head": 2 * d.head_dim * d.hidden + (d.head_dim if attn_bias else 0),
            "kv_group": 2 * d.head_dim * d.hidden + (2 * d.head_dim if attn_bias else 0),
        }

    def prunable_params(self, config: Any) -> int:
        d, u = self.dims(config), self.unit_params(config)
        per_layer = d.ffn * u["ffn_neuron"] + d.n_heads * u["query_head"] + d.n_kv_heads * u["kv_group"]
        return d.n_layers * per_layer

    def valid_head_count(self, config: Any, n_heads: int, n_kv: int) -> bool:
        """Whether the family's own config class accepts these head counts (transformers 5
        rejects some, e.g. Llama needs hidden_size % num_attention_heads == 0)."""
        if n_heads < 1 or n_kv < 1 or n_heads % n_kv:
            return False
        d = self.dims(config)
        try:
            self.config_class()(hidden_size=d.hidden, num_attention_heads=n_heads,
                                num_key_value_heads=n_kv, head_dim=d.head_dim,
                                intermediate_size=8, num_hidden_layers=1, vocab_size=8,
                                pad_token_id=0, bos_token_id=0, eos_token_id=0)
        except Exception:  # noqa: BLE001 - any refusal means "not loadable by stock transformers"
            return False
        return True


def count_params(model: nn.Module) -> dict[str, int]:
    """Total and non-embedding parameter counts (tied weights counted once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    emb = 0
    for mod in (model.get_input_embeddings(), model.get_output_embeddings()):
        if mod is not None and id(mod.weight) in seen:
            emb += mod.weight.numel()
            seen.discard(id(mod.weight))
    return {"total": total, "non_embedding": total - emb}


@torch.no_grad()
def zero_units(model: nn.Module, ffn_pruned: dict[int, list[int]],
               heads_pruned: dict[int, list[int]]) -> None:
    """Zero the output contribution of pruned units in place (the dense reference for slicing)."""
    ad = Adapter.for_model(model)
    d = ad.dims(model.config)
    for li, layer in enumerate(ad.layers(model)):
        if ffn_pruned.get(li):
            ad.down_proj(layer).weight[:, list(ffn_pruned[li])] = 0
        for h in heads_pruned.get(li, []):
            ad.o_proj(layer).weight[:, h * d.head_dim:(h + 1) * d.head_dim] = 0
