"""Random-weight bfloat16 Llama checkpoints of any width and depth, written without ever holding
the model in memory.

The directory is what a user would download: config.json (LlamaForCausalLM, untied embeddings),
model-0000X-of-0000N.safetensors shards with model.safetensors.index.json, a byte-level tokenizer
(ids 0-255 are bytes, then <s>, </s>, <pad>) and generation_config.json. Defaults are
Llama-3.1-8B's widths; the depth is the caller's. Weights are normal with std 0.02 (an init-like
scale), RMSNorm weights are 1.

Memory: the safetensors files are written directly (header first: every offset is known from the
shapes), and each tensor is generated and written in blocks of BLOCK_ELEMS values (8 MiB of
bfloat16), one block being generated while the previous one is written, so memory holds a few
blocks whatever the model size (tests/unit/test_scale_checkpoint.py checks the peak RSS).
Determinism: block k of tensor `name` comes from a generator seeded by (seed, name, k), so the
same seed gives the same bytes whatever the shard size.

    python -m benchmarks.scale.checkpoint OUT_DIR --layers 32 [--hidden 4096 ...] [--seed 0]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import queue
import struct
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from cusprun.errors import SpecError

BLOCK_ELEMS = 1 << 22
"""Values generated at once (8 MiB in bfloat16). Part of the output's definition: the random
stream is seeded per block."""
SPECIAL_TOKENS = 3   # <s>, </s>, <pad> after the 256 byte ids
MIN_VOCAB = 256 + SPECIAL_TOKENS


@dataclass(frozen=True)
class LlamaWidths:
    """Shape of the checkpoint. Defaults: Llama-3.1-8B (only the depth differs between runs)."""

    layers: int
    hidden: int = 4096
    heads: int = 32
    kv_heads: int = 8
    head_dim: int = 128
    ffn: int = 14336
    vocab: int = 128256
    rms_norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    max_position_embeddings: int = 8192

    def check(self) -> None:
        """Refuse shapes a Llama cannot have, before writing anything."""
        for field in ("layers", "hidden", "heads", "kv_heads", "head_dim", "ffn"):
            if getattr(self, field) < 1:
                raise SpecError(f"{field}={getattr(self, field)}: give a positive whole number")
        if self.heads % self.kv_heads:
            raise SpecError(f"heads={self.heads} is not a multiple of kv_heads={self.kv_heads}; "
                            "grouped attention needs whole groups (e.g. 32 heads, 8 kv heads)")
        if self.vocab < MIN_VOCAB:
            raise SpecError(f"vocab={self.vocab} is smaller than the byte-level tokenizer's "
                            f"{MIN_VOCAB} ids (256 bytes + <s>, </s>, <pad>); give {MIN_VOCAB} or more")

    def tensors(self) -> list[tuple[str, tuple[int, ...], str]]:
        """(name, shape, init) of every weight, in the order they are written; init is
        'normal' or 'ones'."""
        h, q, kv = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim
        out = [("model.embed_tokens.weight", (self.vocab, h), "normal")]
        for i in range(self.layers):
            p = f"model.layers.{i}"
            out += [(f"{p}.input_layernorm.weight", (h,), "ones"),
                    (f"{p}.self_attn.q_proj.weight", (q, h), "normal"),
                    (f"{p}.self_attn.k_proj.weight", (kv, h), "normal"),
                    (f"{p}.self_attn.v_proj.weight", (kv, h), "normal"),
                    (f"{p}.self_attn.o_proj.weight", (h, q), "normal"),
                    (f"{p}.post_attention_layernorm.weight", (h,), "ones"),
                    (f"{p}.mlp.gate_proj.weight", (self.ffn, h), "normal"),
                    (f"{p}.mlp.up_proj.weight", (self.ffn, h), "normal"),
                    (f"{p}.mlp.down_proj.weight", (h, self.ffn), "normal")]
        return out + [("model.norm.weight", (h,), "ones"), ("lm_head.weight", (self.vocab, h), "normal")]

    def n_params(self) -> int:
        return sum(_numel(shape) for _, shape, _ in self.tensors())

    def nbytes(self) -> int:
        return 2 * self.n_params()


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def plan_shards(tensors: list[tuple[str, tuple[int, ...], str]], max_shard_bytes: int
                ) -> list[list[tuple[str, tuple[int, ...], str]]]:
    """Tensors in order, cut into shards of at most max_shard_bytes (a larger tensor gets a
    shard of its own)."""
    shards: list[list] = [[]]
    size = 0
    for t in tensors:
        nb = 2 * _numel(t[1])
        if shards[-1] and size + nb > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += nb
    return shards


def _header(shard: list[tuple[str, tuple[int, ...], str]]) -> bytes:
    """The safetensors header: 8-byte little-endian length, then JSON padded with spaces to a
    multiple of 8 (the alignment the safetensors library writes)."""
    meta: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape, _ in shard:
        nb = 2 * _numel(shape)
        meta[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + nb]}
        offset += nb
    text = json.dumps(meta, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


def _block_seed(seed: int, name: str, block: int) -> int:
    digest = hashlib.sha256(f"{seed}/{name}/{block}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _blocks(name: str, shape: tuple[int, ...], init: str, seed: int, std: float):
    """The tensor's values, flat in row-major order, BLOCK_ELEMS at a time (bfloat16)."""
    n = _numel(shape)
    for k, start in enumerate(range(0, n, BLOCK_ELEMS)):
        size = min(BLOCK_ELEMS, n - start)
        if init == "ones":
            yield torch.ones(size, dtype=torch.bfloat16)
            continue
        g = torch.Generator().manual_seed(_block_seed(seed, name, k))
        yield torch.empty(size, dtype=torch.bfloat16).normal_(0.0, std, generator=g)


class _Writer:
    """Writes blocks on a thread (file writes release the GIL), so generating the next block
    overlaps writing this one; the queue bounds what is held to a few blocks."""

    def __init__(self) -> None:
        self.q: queue.Queue = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            item = self.q.get()
            if item is None:
                return
            fh, block = item
            try:
                if self.error is None:
                    fh.write(block.view(torch.int16).numpy().data)
            except BaseException as e:  # noqa: BLE001 - re-raised by the generating thread
                self.error = e

    def put(self, fh, block: torch.Tensor) -> None:
        if self.error is not None:
            raise self.error
        self.q.put((fh, block))

    def drain(self) -> None:
        """Wait until every queued block is written (then the caller may close its file)."""
        self.q.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.q.put(None)
        self.thread.join()


def write_config(out: Path, w: LlamaWidths) -> None:
    """config.json, generation_config.json and the tokenizer (special ids inside the vocab)."""
    import transformers

    from tests.support import tiny_tokenizer

    bos, eos, pad = 256, 257, 258
    cfg = transformers.LlamaConfig(
        vocab_size=w.vocab, hidden_size=w.hidden, intermediate_size=w.ffn,
        num_hidden_layers=w.layers, num_attention_heads=w.heads, num_key_value_heads=w.kv_heads,
        head_dim=w.head_dim, max_position_embeddings=w.max_position_embeddings,
        rms_norm_eps=w.rms_norm_eps, rope_parameters={"rope_type": "default", "rope_theta": w.rope_theta},
        tie_word_embeddings=False, bos_token_id=bos, eos_token_id=eos, pad_token_id=pad,
        dtype="bfloat16")
    cfg.architectures = ["LlamaForCausalLM"]
    cfg.save_pretrained(out)
    transformers.GenerationConfig(bos_token_id=bos, eos_token_id=eos, pad_token_id=pad).save_pretrained(out)
    tok = tiny_tokenizer()
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (bos, eos, pad)
    tok.save_pretrained(out)


def write_checkpoint(out_dir: str | Path, widths: LlamaWidths, *, seed: int = 0, std: float = 0.02,
                     max_shard_bytes: int = 2 * 10**9) -> dict:
    """Write the checkpoint into out_dir (created; must not hold a model already). Returns a
    summary: widths, params, bytes, shard files, seconds."""
    widths.check()
    out = Path(out_dir)
    if (out / "config.json").exists():
        raise SpecError(f"{out} already holds a model (config.json); give an empty or new directory")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    write_config(out, widths)
    shards = plan_shards(widths.tensors(), max_shard_bytes)
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map, total = {}, 0
    writer = _Writer()
    try:
        for fname, shard in zip(names, shards):
            with open(out / fname, "wb") as fh:
                fh.write(_header(shard))
                for name, shape, init in shard:
                    for block in _blocks(name, shape, init, seed, std):
                        writer.put(fh, block)
                    weight_map[name] = fname
                    total += 2 * _numel(shape)
                writer.drain()
    finally:
        writer.close()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return {"path": str(out), "widths": asdict(widths), "params": widths.n_params(), "bytes": total,
            "shards": names, "seed": seed, "std": std, "seconds": round(time.perf_counter() - t0, 2)}


def widths_arguments(p: argparse.ArgumentParser) -> None:
    """--hidden/--ffn/--heads/--kv-heads/--head-dim/--vocab, defaulting to Llama-3.1-8B."""
    d = LlamaWidths(layers=1)
    p.add_argument("--hidden", type=int, default=d.hidden, help=f"hidden size (default {d.hidden})")
    p.add_argument("--ffn", type=int, default=d.ffn, help=f"FFN width (default {d.ffn})")
    p.add_argument("--heads", type=int, default=d.heads, help=f"query heads (default {d.heads})")
    p.add_argument("--kv-heads", type=int, default=d.kv_heads, help=f"key/value heads (default {d.kv_heads})")
    p.add_argument("--head-dim", type=int, default=d.head_dim, help=f"head size (default {d.head_dim})")
    p.add_argument("--vocab", type=int, default=d.vocab, help=f"vocabulary (default {d.vocab})")


def widths_from(args: argparse.Namespace, layers: int) -> LlamaWidths:
    return LlamaWidths(layers=layers, hidden=args.hidden, heads=args.heads, kv_heads=args.kv_heads,
                       head_dim=args.head_dim, ffn=args.ffn, vocab=args.vocab)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir", help="new directory for the checkpoint")
    p.add_argument("--layers", type=int, required=True, help="decoder layers")
    widths_arguments(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-shard-gb", type=float, default=2.0, help="largest shard (GB, default 2)")
    args = p.parse_args(argv)
    try:
        info = write_checkpoint(args.out_dir, widths_from(args, args.layers), seed=args.seed,
                                max_shard_bytes=int(args.max_shard_gb * 1e9))
    except SpecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    gb = info["bytes"] / 1e9
    print(f"wrote {info['params'] / 1e9:.3f}B parameters, {gb:.2f} GB in {len(info['shards'])} shards "
          f"to {info['path']} in {info['seconds']:.1f}s ({gb / max(info['seconds'], 1e-9):.2f} GB/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
