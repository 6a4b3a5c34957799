"""Tiny sliced experts that llama.cpp's converter accepts. The converter recognises a byte-level
BPE tokenizer only by a hash of how a real model's vocabulary cuts a test text, so the tiny byte
tokenizer is refused; a SentencePiece model (tokenizer.model, which the converter reads first
for Llama, Mistral, Qwen2/3, Gemma3 and Phi-3) is trained here in milliseconds instead."""
from __future__ import annotations

import io
import json
from pathlib import Path

from transformers import AutoConfig

from tests.support.synthetic import random_plan
from tests.support.tiny import make_tiny_model

FP = "tinyggufexpert00000000000000000"
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")
_TEXT = ["The quick brown fox jumps over the lazy dog.",
         "Patients with a fever should drink water and rest.",
         "What is the capital of France? Paris is the capital of France."] * 20


def add_sentencepiece_tokenizer(model_dir: Path, vocab_size: int = 80) -> None:
    """A trained SentencePiece tokenizer.model and a chat template beside the model."""
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(_TEXT), model_writer=buf,
                                   vocab_size=vocab_size, model_type="bpe", character_coverage=1.0,
                                   unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2)
    (model_dir / "tokenizer.model").write_bytes(buf.getvalue())
    tc = model_dir / "tokenizer_config.json"
    cfg = json.loads(tc.read_text())
    cfg["chat_template"] = CHAT_TEMPLATE
    tc.write_text(json.dumps(cfg, indent=2))


def tiny_gguf_dense(arch: str, out_dir: Path) -> Path:
    _, d = make_tiny_model(arch, out_dir)
    add_sentencepiece_tokenizer(d)
    return d


def tiny_gguf_expert(arch: str, root: Path, *, layout: str = "uniform") -> Path:
    """A sliced tiny expert: uniform (every layer 64 FFN neurons (a multiple of 32,
    so Q8_0 blocks fit every row), one KV group of two heads), or
    per-layer (different FFN widths per layer)."""
    from cusprun.slicing import slice_checkpoint

    dense = tiny_gguf_dense(arch, root / f"{arch}-dense")
    cfg = AutoConfig.from_pretrained(dense)
    ffn = 64 if layout == "uniform" else [32, 64, 96]
    plan = random_plan(cfg, fingerprint=FP, ffn=ffn, groups=1, heads_per_group=2, layout=layout)
    return slice_checkpoint(dense, plan, root / f"{arch}-{layout}", model_fingerprint=FP,
                            progress=False)
