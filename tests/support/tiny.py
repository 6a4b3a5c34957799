"""Tiny randomly initialised models from transformers configs (no downloads).

Shapes are small but keep every structural feature: grouped key/value heads, biases (Qwen2),
q/k norms (Qwen3, Gemma3), sliding windows (Gemma3), fused projections (Phi-3).
"""
from __future__ import annotations

from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from cusprun.adapters.table import ARCHITECTURES

_COMMON = dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
               intermediate_size=96, num_hidden_layers=3, vocab_size=300,
               max_position_embeddings=512, tie_word_embeddings=False,
               bos_token_id=256, eos_token_id=257, pad_token_id=258)

_EXTRA: dict[str, dict] = {
    "LlamaForCausalLM": dict(rms_norm_eps=1e-5),
    "MistralForCausalLM": dict(sliding_window=None),
    "Qwen2ForCausalLM": dict(),
    "Qwen3ForCausalLM": dict(),
    "Gemma3ForCausalLM": dict(sliding_window=8, query_pre_attn_scalar=16,
                              layer_types=["sliding_attention", "sliding_attention", "full_attention"]),
    "Phi3ForCausalLM": dict(),
}

TINY_FAMILIES = tuple(ARCHITECTURES)


def tiny_config(architecture: str, **overrides):
    cls = getattr(transformers, ARCHITECTURES[architecture].config_class)
    kw = {**_COMMON, **_EXTRA[architecture], **overrides}
    cfg = cls(**kw)
    cfg.architectures = [architecture]
    return cfg


def tiny_tokenizer() -> transformers.PreTrainedTokenizerFast:
    """A byte-level tokenizer: ids 0-255 are bytes, then <s>, </s>, <pad>."""
    vocab = {bytes_char: i for i, bytes_char in enumerate(pre_tokenizers.ByteLevel.alphabet())}
    vocab = {ch: i for i, ch in enumerate(sorted(vocab, key=lambda c: ord(c)))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<s>", "</s>", "<pad>"])
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def make_tiny_model(architecture: str, out_dir: str | Path | None = None, seed: int = 0, **overrides):
    """Build a tiny random model; if out_dir is given, save it (safetensors + tokenizer) there."""
    torch.manual_seed(seed)
    cfg = tiny_config(architecture, **overrides)
    model = getattr(transformers, architecture)(cfg).eval()
    # Random init leaves norms at 1 and biases at 0; perturb them so tests exercise them.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith(".bias"):
                p.add_(0.1 * torch.randn_like(p))
    if out_dir is not None:
        out = Path(out_dir)
        model.save_pretrained(out)
        tiny_tokenizer().save_pretrained(out)
        return model, out
    return model, None
