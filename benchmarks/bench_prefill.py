"""Prefill throughput of a sliced (pruned) model vs its dense base, measured side by side.

Default: a randomly initialised Llama with SmolLM2-135M's shapes (hidden 576, 30 layers, 9 heads /
3 KV heads, head_dim 64, FFN 1536, vocab 49152, tied embeddings), a random uniform plan removing
about 25% of the prunable parameters, fp32 on CPU, batch 4 x 128 tokens. Give a model reference
(local directory, alias such as smollm2-135m, .gguf) to use real weights instead.

Prefill runs with logits_to_keep=1: the 49k-vocab LM head is the same size in both models, so
computing logits for every position would mostly time that; we measure the transformer body.

    .venv/bin/python benchmarks/bench_prefill.py [MODEL] [--ratio 0.25] [--batch 4] [--seq 128]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoConfig

from cusprun.adapters import count_params
from cusprun.slicing import load_expert, slice_checkpoint
from cusprun.slicing.synthetic import smollm2_135m_shaped_config, uniform_plan_for_ratio, write_random_model


@torch.no_grad()
def _prefill_seconds(model, ids: torch.Tensor) -> float:
    t0 = time.perf_counter()
    model(input_ids=ids, use_cache=False, logits_to_keep=1)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", help="model reference (default: random SmolLM2-135M-shaped Llama)")
    ap.add_argument("--ratio", type=float, default=0.25, help="share of prunable params to remove")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--reps", type=int, default=5, help="timed prefills per model (after one warm-up)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args, _ = ap.parse_known_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="cusprun-bench-prefill-") as tmp:
        if args.model:
            from cusprun.models.sources import resolve_model

            r = resolve_model(args.model)
            src, fp, label = r.path, r.fingerprint, args.model
        else:
            src, fp = write_random_model(smollm2_135m_shaped_config(), Path(tmp) / "dense"), "random"
            label = "random SmolLM2-135M-shaped Llama"
        plan = uniform_plan_for_ratio(AutoConfig.from_pretrained(src), args.ratio, fingerprint=fp)
        out = slice_checkpoint(src, plan, Path(tmp) / "pruned", model_fingerprint=fp, progress=False)
        dense, _ = load_expert(src, dtype=torch.float32, device="cpu")
        pruned, _ = load_expert(out, dtype=torch.float32, device="cpu")

        ids = torch.randint(0, dense.config.vocab_size, (args.batch, args.seq),
                            generator=torch.Generator().manual_seed(0))
        times: dict[str, list[float]] = {"dense": [], "pruned": []}
        for m in (dense, pruned):  # warm-up
            _prefill_seconds(m, ids)
        for _ in range(args.reps):  # interleaved, so load from other processes hits both alike
            times["dense"].append(_prefill_seconds(dense, ids))
            times["pruned"].append(_prefill_seconds(pruned, ids))

    n_tok = args.batch * args.seq
    tps = {k: n_tok / min(v) for k, v in times.items()}  # fastest run: least disturbed by other load
    pc = {"dense": count_params(dense)["non_embedding"], "pruned": count_params(pruned)["non_embedding"]}
    param_ratio = pc["dense"] / pc["pruned"]
    speedup = tps["pruned"] / tps["dense"]
    w = plan.layers[0]
    print(f"model: {label}; plan: uniform, {100 * plan.achieved_ratio:.1f}% of prunable params removed "
          f"(per layer: {len(w.ffn)} FFN neurons, {len(w.heads)} heads, {len(w.kv_heads)} KV heads)")
    print(f"prefill: batch {args.batch} x {args.seq} tokens, fp32, CPU, {torch.get_num_threads()} threads, "
          f"best of {args.reps} interleaved runs; logits_to_keep=1 (LM head of the last position only: this times "
          "the transformer body)")
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    busy = " - other processes compete for the CPU, ratios are noisy" if load > cores else ""
    print(f"machine: {cores} cores, 1-min load average {load:.1f} at the end{busy}")
    print()
    print("| model  | non-embedding params | prefill tok/s |")
    print("|--------|---------------------:|--------------:|")
    for k in ("dense", "pruned"):
        print(f"| {k:<6} | {pc[k]:>20,} | {tps[k]:>13,.0f} |")
    print()
    print(f"param ratio (dense/pruned, non-embedding): {param_ratio:.3f}")
    print(f"tok/s ratio (pruned/dense):                {speedup:.3f}")
    ok = speedup >= 0.9 * param_ratio
    print(f"speedup >= 0.9 x param ratio ({0.9 * param_ratio:.3f}): {'yes' if ok else 'no'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
