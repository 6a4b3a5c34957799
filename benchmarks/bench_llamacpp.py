"""The demo expert in llama.cpp (llama-cpp-python): prefill and decode tokens/s of the dense
SmolLM2-135M and the 25 %-pruned expert, as F16 and Q8_0 GGUF files, measured alternately in one
process (best of `--repeats`), with the files' sizes. Needs `make llamacpp`.

    python -m benchmarks run bench_llamacpp [--threads 2] [--repeats 3]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

TYPES = ("F16", "Q8_0")
PROMPT_TOKENS = 128
DECODE_TOKENS = 32


def _dense_gguf(root: Path, types: tuple[str, ...]) -> dict[str, Path]:
    """The dense base model's GGUF files of `types`, through the same export path."""
    from cusprun.export.gguf import export_gguf
    from cusprun.models import resolve_model

    base = resolve_model("smollm2-135m").path
    out = root / "dense"
    export_gguf(base, out, list(types), name="smollm2-135m")
    return {t: out / f"smollm2-135m-{t}.gguf" for t in types}


def _speed(path: Path, ids: list[int], threads: int) -> tuple[float, float]:
    """(prefill tokens/s, decode tokens/s) of one load: the prompt in one eval, then greedy
    decoding one token at a time."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=len(ids) + DECODE_TOKENS + 8, n_threads=threads,
                n_batch=len(ids), verbose=False)
    t0 = time.perf_counter()
    llm.eval(ids)
    prefill = len(ids) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for _ in range(DECODE_TOKENS):
        tok = llm.sample(temp=0.0)
        llm.eval([tok])
    decode = DECODE_TOKENS / (time.perf_counter() - t0)
    del llm
    return prefill, decode


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    from benchmarks.results_io import Result
    from tests.support.demo_expert import demo_expert_with_gguf

    with tempfile.TemporaryDirectory(prefix="cusprun-bench-llamacpp-") as tmp:
        root = Path(tmp)
        expert, held = demo_expert_with_gguf(root, list(TYPES))
        files = {("dense", t): p for t, p in _dense_gguf(root, TYPES).items()}
        files.update({("expert", t): expert / f"{expert.name}-{t}.gguf" for t in TYPES})
        from llama_cpp import Llama

        vocab = Llama(model_path=str(files[("dense", "F16")]), vocab_only=True, verbose=False)
        text = " ".join(held)
        ids = vocab.tokenize(text.encode(), add_bos=False, special=False)[:PROMPT_TOKENS]
        best: dict[tuple[str, str], list[float]] = {k: [0.0, 0.0] for k in files}
        for _ in range(args.repeats):          # models alternate: load drifts hit both alike
            for k, path in files.items():
                p, d = _speed(path, ids, args.threads)
                best[k] = [max(best[k][0], p), max(best[k][1], d)]
        sizes = {k: p.stat().st_size for k, p in files.items()}

    res = Result("llamacpp", "The demo expert in llama.cpp: speed and file size, dense vs expert",
                 {**vars(args), "prompt_tokens": len(ids), "decode_tokens": DECODE_TOKENS})
    res.say(f"llama-cpp-python on cpu, {args.threads} threads; prompt {len(ids)} tokens of held-out "
            f"text, then {DECODE_TOKENS} greedy tokens; best of {args.repeats}, models alternating")
    rows, values = [], {}
    for t in TYPES:
        d, e = ("dense", t), ("expert", t)
        rows.append([t, f"{sizes[d] / 1e6:.1f}", f"{sizes[e] / 1e6:.1f}", f"{sizes[e] / sizes[d]:.3f}",
                     f"{best[d][0]:.0f}", f"{best[e][0]:.0f}", f"{best[e][0] / best[d][0]:.2f}",
                     f"{best[d][1]:.1f}", f"{best[e][1]:.1f}", f"{best[e][1] / best[d][1]:.2f}"])
        values[t] = {"size_bytes": {"dense": sizes[d], "expert": sizes[e]},
                     "prefill_tok_s": {"dense": best[d][0], "expert": best[e][0]},
                     "decode_tok_s": {"dense": best[d][1], "expert": best[e][1]}}
    res.table(["type", "dense MB", "expert MB", "size ratio", "dense prefill tok/s",
               "expert prefill tok/s", "prefill x", "dense decode tok/s", "expert decode tok/s",
               "decode x"], rows)
    res.headline = "; ".join(f"{t}: expert {float(r[3]):.2f}x the size, prefill x{r[6]}, decode "
                             f"x{r[9]}" for t, r in zip(TYPES, rows))
    res.values = values
    res.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
