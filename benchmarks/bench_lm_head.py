"""The LM head on a CPU: cache-sized tiles vs one big chunk of logits, on the real Gemma 3 270M
head (262,144 x 640, the model whose evaluation the head dominates). Same positions, same
targets, interleaved runs in one process; both must give the same log-probs. Run alone and
two at once from two Python threads, as a build's evaluation measures two models at a time
(cusprun.evaluation.replicas): two big chunks then evict each other from the cache.

    python -m benchmarks run bench_lm_head [MODEL] [--positions 64,512,2048] [--threads 2]
"""
from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

import torch

from benchmarks.results_io import Result
import cusprun.engine.logprobs as lp
from cusprun.engine import LayeredModel, token_logprobs
from cusprun.models import load_model, resolve_model


def timed(fn, repeats: int, at_once: int = 1) -> tuple[float, torch.Tensor]:
    """Best wall time of `at_once` concurrent calls of fn (each from its own thread)."""
    best, out = float("inf"), None
    with ThreadPoolExecutor(at_once) as pool:
        for _ in range(repeats):
            t0 = time.perf_counter()
            outs = list(pool.map(lambda _: fn(), range(at_once)))
            best = min(best, time.perf_counter() - t0)
            out = outs[0]
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", default="gemma3-270m")
    ap.add_argument("--positions", default="64,512,2048")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, _ = load_model(resolve_model(args.model).path)
    lm = LayeredModel.resident(model)
    vocab, width = lm.config.vocab_size, lm.dims.hidden
    g = torch.Generator().manual_seed(0)
    rows, values = [], {}
    for n in [int(x) for x in args.positions.split(",")]:
        hidden = {"m": lm.norm(torch.randn(n, width, generator=g) * 4)}
        targets = {"m": torch.randint(0, vocab, (n,), generator=g)}

        def whole():      # the previous layout: all positions, 256 MB of logits per chunk
            return token_logprobs(lm, hidden, targets, budget=lp.LOGITS_BUDGET, block=n)["m"]

        def tiled():
            return token_logprobs(lm, hidden, targets)["m"]

        for at_once in (1, 2):
            t_whole = t_tiled = float("inf")
            for _ in range(2):          # interleaved: load drifts hit both
                a, ref = timed(whole, args.repeats, at_once)
                b, out = timed(tiled, args.repeats, at_once)
                t_whole, t_tiled = min(t_whole, a), min(t_tiled, b)
            diff = float((out - ref).abs().max())
            steps, blk = lp.head_tiles(n, vocab, lp.default_budget("cpu"), "cpu")
            per = n * at_once
            rows.append([n, at_once, f"{t_whole * 1e3 / per:.2f}", f"{t_tiled * 1e3 / per:.2f}",
                         f"{t_whole / t_tiled:.2f}x", f"{steps} x {blk}", f"{diff:.1e}"])
            values[f"{n}x{at_once}"] = {"positions": n, "at_once": at_once, "whole_s": t_whole,
                                        "tiled_s": t_tiled, "speedup": t_whole / t_tiled,
                                        "tile_rows": steps, "tile_positions": blk,
                                        "max_abs_diff": diff}
            print(f"{n} positions, {at_once} at once: whole {t_whole:.2f}s, tiled {t_tiled:.2f}s",
                  flush=True)
    result = Result("bench_lm_head", "LM head log-probs on a CPU: cache-sized tiles vs one big chunk",
                    vars(args))
    result.say(f"\n{args.model} head ({vocab} x {width}), float32, {args.threads} threads, "
               f"best of {2 * args.repeats} interleaved runs; whole: 256 MB of logits per chunk\n")
    result.table(["positions", "at once", "whole (ms/position)", "tiled (ms/position)", "speed-up",
                  "tile (vocab rows x positions)", "max |difference| (nats)"], rows)
    alone = [v["speedup"] for v in values.values() if v["at_once"] == 1]
    two = [v["speedup"] for v in values.values() if v["at_once"] == 2]
    result.headline = (f"LM head on {args.threads} CPU threads ({args.model}): cache-sized tiles "
                       f"{min(alone):.2f}-{max(alone):.2f}x faster than 256 MB chunks alone, "
                       f"{min(two):.2f}-{max(two):.2f}x with two models at once; same log-probs")
    result.values = values
    result.write()


if __name__ == "__main__":
    main()
