"""Prefill throughput of a sliced (pruned) model vs its dense base, measured side by side.

Default: a randomly initialised Llama with SmolLM2-135M's shapes (hidden 576, 30 layers, 9 heads /
3 KV heads, head_dim 64, FFN 1536, vocab 49152, tied embeddings), pruned by the product's own
selection (the `random` baseline, uniform layout) to 25% of the prunable parameters, and by a
plan that drops whole KV groups (as Cus-Prun does when a group's heads all score low) with exact
FFN widths (1195 neurons) and with widths aligned to 64 (1216), as `ffn_multiple=64` would.
On CPU: fp32, batch 4 x 128 tokens. On CUDA (`--device cuda`, the default when a GPU is visible):
bf16, batch 32 x 512, so the GPU is busy with matmuls rather than waiting on kernel launches.
Give a model reference (local directory, alias such as smollm2-135m, .gguf) to use real weights.

Prefill runs with logits_to_keep=1: the 49k-vocab LM head is the same size in both models, so
computing logits for every position would mostly time that; we measure the transformer body.

    python -m benchmarks run bench_prefill [MODEL] [--ratio 0.25] [--device cuda] [--batch 4] [--seq 128]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.results_io import Result
from cusprun.adapters import Adapter, count_params
from cusprun.baselines import baseline_plan
from cusprun.models.loading import default_device, default_dtype
from cusprun.slicing import load_expert, slice_checkpoint
from tests.support import smollm2_135m_shaped_config, uniform_plan_for_ratio, write_random_model


@torch.no_grad()
def _prefill_seconds(model, ids: torch.Tensor) -> float:
    cuda = ids.is_cuda
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    model(input_ids=ids, use_cache=False, logits_to_keep=1)
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", help="model reference (default: random SmolLM2-135M-shaped Llama)")
    ap.add_argument("--ratio", type=float, default=0.25, help="share of prunable params to remove")
    ap.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda when visible)")
    ap.add_argument("--batch", type=int, default=None, help="sequences per prefill (CPU 4, CUDA 32)")
    ap.add_argument("--seq", type=int, default=None, help="tokens per sequence (CPU 128, CUDA 512)")
    ap.add_argument("--reps", type=int, default=7, help="timed prefills per model (after one warm-up)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args, _ = ap.parse_known_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or default_device()
    cuda = device.startswith("cuda")
    dtype = default_dtype(device)
    args.batch = args.batch or (32 if cuda else 4)
    args.seq = args.seq or (512 if cuda else 128)

    with tempfile.TemporaryDirectory(prefix="cusprun-bench-prefill-") as tmp:
        if args.model:
            from cusprun.models.sources import resolve_model

            r = resolve_model(args.model)
            src, fp, label = r.path, r.fingerprint, args.model
        else:
            src, fp = write_random_model(smollm2_135m_shaped_config(), Path(tmp) / "dense"), "random"
            label = "random SmolLM2-135M-shaped Llama"
        dense, _ = load_expert(src, dtype=dtype, device=device)
        models, plans = {"dense": dense}, {}
        plans["random baseline"] = baseline_plan("random", dense, args.ratio, "uniform", base_fingerprint=fp)
        for m in (1, 64):
            plans[f"whole KV groups, ffn_multiple={m}"] = uniform_plan_for_ratio(
                dense.config, args.ratio, fingerprint=fp, ffn_multiple=m)
        for i, (name, plan) in enumerate(plans.items()):
            out = slice_checkpoint(src, plan, Path(tmp) / f"pruned-{i}", model_fingerprint=fp, progress=False)
            models[name], _ = load_expert(out, dtype=dtype, device=device)

        ids = torch.randint(0, dense.config.vocab_size, (args.batch, args.seq),
                            generator=torch.Generator().manual_seed(0)).to(device)
        times: dict[str, list[float]] = {k: [] for k in models}
        for model in models.values():  # warm-up
            _prefill_seconds(model, ids)
        for _ in range(args.reps):  # interleaved, so load from other processes hits all alike
            for k, model in models.items():
                times[k].append(_prefill_seconds(model, ids))

    n_tok = args.batch * args.seq
    tps = {k: n_tok / min(v) for k, v in times.items()}  # fastest run: least disturbed by other load
    pc = {k: count_params(m)["non_embedding"] for k, m in models.items()}
    res = Result("bench_prefill", "Prefill throughput: sliced (pruned) model vs its dense base",
                 {**vars(args), "device": device, "dtype": str(dtype).removeprefix("torch.")})
    res.say(f"model: {label}; uniform plans at target {args.ratio} of prunable parameters")
    where = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} threads"
    res.say(f"prefill: batch {args.batch} x {args.seq} tokens, {str(dtype).removeprefix('torch.')}, {where}, "
            f"best of {args.reps} interleaved runs; logits_to_keep=1 (LM head of the last position only: this "
            "times the transformer body)")
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    busy = " - other processes compete for the CPU, ratios are noisy" if load > cores else ""
    res.say(f"machine: {cores} cores, 1-min load average {load:.1f} at the end{busy}")
    res.say()
    rows, values = [], {}
    for k in models:
        if k == "dense":
            d = Adapter.for_model(dense).dims(dense.config)
            rows.append(["dense", "0", f"{d.ffn} / {d.n_heads} / {d.n_kv_heads}", f"{pc[k]:,}",
                         f"{tps[k]:,.0f}", "1.000", "1.000", ""])
            values[k] = {"non_embedding_params": pc[k], "tokens_per_s": tps[k]}
            continue
        plan, w = plans[k], plans[k].layers[0]
        ratio, speedup = pc["dense"] / pc[k], tps[k] / tps["dense"]
        ok = "met" if speedup >= 0.9 * ratio else "not met"
        rows.append([f"pruned, {k}", f"{100 * plan.achieved_ratio:.1f}%",
                     f"{len(w.ffn)} / {len(w.heads)} / {len(w.kv_heads)}", f"{pc[k]:,}", f"{tps[k]:,.0f}",
                     f"{ratio:.3f}", f"{speedup:.3f}", f"{ok} ({0.9 * ratio:.3f})"])
        values[k] = {"non_embedding_params": pc[k], "tokens_per_s": tps[k], "param_ratio": ratio,
                     "speedup": speedup, "achieved_ratio": plan.achieved_ratio, "goal_met": ok == "met"}
    res.table(["model", "removed of prunable", "per layer: FFN / heads / KV", "non-embedding params",
               "prefill tok/s", "param ratio", "tok/s ratio", "goal: >= 0.9 x param ratio"], rows,
              align=["l", "r", "l", "r", "r", "r", "r", "l"])
    best = max((v for k, v in values.items() if k != "dense"), key=lambda v: v["speedup"])
    res.headline = (f"Prefill of a model pruned to {args.ratio:g} of prunable parameters ({label}, "
                    f"{'GPU' if cuda else 'CPU'}): up to {best['speedup']:.2f}x dense tokens/s with "
                    f"{1 / best['param_ratio']:.0%} of its non-embedding parameters")
    res.values = {"models": values, "tokens_per_prefill": n_tok, "load_avg_1m": load}
    res.write(f"bench_prefill-{'cuda' if cuda else 'cpu'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
