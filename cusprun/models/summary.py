"""Architecture summary and a quick greedy continuation, for humans checking a model."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from cusprun.adapters import Adapter, count_params


@dataclass
class ArchSummary:
    architecture: str
    family: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    activation: str
    vocab: int
    tied_embeddings: bool
    params_total: int
    params_non_embedding: int
    prunable_params: int
    unit_params: dict

    def as_text(self) -> str:
        u = self.unit_params
        return "\n".join([
            f"architecture     {self.architecture} ({self.family})",
            f"layers           {self.layers}",
            f"hidden size      {self.hidden}",
            f"attention        {self.heads} query heads, {self.kv_heads} key/value heads, head_dim {self.head_dim}",
            f"FFN              {self.ffn} neurons per layer ({self.activation})",
            f"vocabulary       {self.vocab} (tied embeddings: {self.tied_embeddings})",
            f"parameters       {self.params_total:,} total, {self.params_non_embedding:,} non-embedding",
            f"prunable         {self.prunable_params:,} "
            f"({100 * self.prunable_params / self.params_non_embedding:.1f}% of non-embedding):",
            f"  FFN neurons    {self.layers} x {self.ffn}, {u['ffn_neuron']:,} params each",
            f"  query heads    {self.layers} x {self.heads}, {u['query_head']:,} params each",
            f"  KV groups      {self.layers} x {self.kv_heads}, {u['kv_group']:,} params each "
            f"(removed only with all their query heads)",
            "  never pruned   embeddings, norms, LM head",
        ])

    def as_dict(self) -> dict:
        return asdict(self)


def summarize(path: str | Path) -> ArchSummary:
    """Shapes from config; parameter counts from a meta-device instantiation (no weights read)."""
    from transformers import AutoModelForCausalLM

    from cusprun.models.loading import load_config

    config = load_config(path)
    ad = Adapter.for_config(config)
    d = ad.dims(config)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    counts = count_params(model)
    return ArchSummary(
        architecture=ad.architecture, family=ad.spec.family, layers=d.n_layers, hidden=d.hidden,
        heads=d.n_heads, kv_heads=d.n_kv_heads, head_dim=d.head_dim, ffn=d.ffn,
        activation=str(ad.activation(config)), vocab=config.vocab_size,
        tied_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
        params_total=counts["total"], params_non_embedding=counts["non_embedding"],
        prunable_params=ad.prunable_params(config), unit_params=ad.unit_params(config))


@torch.no_grad()
def greedy_continuation(model, tokenizer, prompt: str, max_new_tokens: int = 16) -> str:
    from cusprun.models.loading import input_device

    enc = tokenizer(prompt, return_tensors="pt").to(input_device(model))
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                         pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
