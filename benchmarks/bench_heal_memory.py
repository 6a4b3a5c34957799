"""Peak memory of healing at small scale, and what it implies for an 8B-class model on one GPU.

Each healing runs in a fresh subprocess and reads its own peak RSS (VmHWM); an idle process
that imported the same modules is subtracted. Measured on a CPU (float32) for a random
SmolLM2-135M-shaped Llama sliced at 25 %, training 'layers' (full) and 'lora', 2 optimizer
steps of batch_size x seq_len tokens. The 8B numbers are the same accounting (bytes per weight
for weights, gradients and AdamW states; logits of one micro-batch; activations per token and
layer) with each term's constant fitted at 135M: an extrapolation, not a GPU measurement.

    python -m benchmarks run bench_heal_memory [--seq-len 256] [--batch 4]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from benchmarks import python_env
from benchmarks.results_io import Result

_PRELUDE = textwrap.dedent("""
    import json, sys
    import torch, transformers
    import cusprun.slicing
    from cusprun.healing import HealSpec
    from cusprun.healing.distill import heal
    from benchmarks.machine import peak_rss_bytes as peak_bytes
""")
_HEAL = textwrap.dedent("""
    a = json.loads(sys.argv[1])
    rec = heal(a["student"], a["teacher"], {"language": a["texts"]}, HealSpec(**a["spec"]),
               a["out"], progress=False)
    print("TRAINABLE", rec["trainable_params"])
""")

# Llama-3.1-8B's shapes, sliced at 25 % of the prunable parameters.
LLAMA8B = {"hidden": 4096, "layers": 32, "ffn": 14336, "heads": 32, "kv": 8, "head_dim": 128,
           "vocab": 128256}


def _run(code: str, args: dict) -> tuple[int, int]:
    r = subprocess.run([sys.executable, "-c", _PRELUDE + code + "\nprint('PEAK', peak_bytes())\n",
                        json.dumps(args)], capture_output=True, text=True, env=python_env())
    if r.returncode:
        raise RuntimeError(r.stderr[-3000:])
    out = dict(line.split() for line in r.stdout.splitlines() if line.startswith(("PEAK", "TRAIN")))
    return int(out["PEAK"]), int(out.get("TRAINABLE", 0))


def _gib(n: float) -> str:
    return f"{n / 2**30:,.2f} GiB"


def _params_8b(ratio: float = 0.25) -> dict:
    d = LLAMA8B
    attn = d["hidden"] * d["head_dim"] * (2 * d["heads"] + 2 * d["kv"])
    layer = (attn + 3 * d["hidden"] * d["ffn"]) * (1 - ratio)
    layers = d["layers"] * layer
    return {"layers": layers, "embed_head": 2 * d["vocab"] * d["hidden"],
            "lora16": d["layers"] * 16 * (d["hidden"] * 4 + d["heads"] * d["head_dim"] + 2 * d["kv"]
                                          * d["head_dim"] + 2 * d["hidden"] + 2 * d["ffn"]) * 2}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    args = ap.parse_args(argv)

    from transformers import AutoConfig

    from cusprun.slicing import slice_checkpoint
    from tests.support import smollm2_135m_shaped_config, uniform_plan_for_ratio, write_random_model

    spec = {"tokens": 2 * args.batch * args.seq_len, "seq_len": args.seq_len,
            "batch_size": args.batch, "top_k": 64}
    texts = [" ".join(["the patient has a fever and a cough", str(i)] * 40) for i in range(64)]
    res = Result("bench_heal_memory", "Peak memory of healing, extrapolated to 8B on one GPU",
                 vars(args))
    with tempfile.TemporaryDirectory(prefix="cusprun-bench-healmem-") as tmp:
        t = Path(tmp)
        dense = write_random_model(smollm2_135m_shaped_config(), t / "dense")
        plan = uniform_plan_for_ratio(AutoConfig.from_pretrained(dense), 0.25, fingerprint="r")
        student = slice_checkpoint(dense, plan, t / "sliced", model_fingerprint="r", progress=False)
        weights = sum(f.stat().st_size for f in Path(student).glob("*.safetensors"))
        idle, _ = _run("", {})
        job = {"student": str(student), "teacher": str(dense), "texts": texts}
        peaks = {}
        for train in ("layers", "lora"):
            peaks[train] = _run(_HEAL, {**job, "spec": {**spec, "train": train},
                                        "out": str(t / f"out-{train}")})
    cfg = smollm2_135m_shaped_config()
    n_w = weights // 4                                   # float32 checkpoint
    tokens = args.batch * args.seq_len
    logits = tokens * cfg.vocab_size * 4                 # one float32 logits tensor
    rows, values = [], {"idle_peak": idle, "student_bytes": weights, "tokens_per_step": tokens}
    fit = {}
    for train, (peak, trainable) in peaks.items():
        above = peak - idle
        # weights + gradients and AdamW states of the trainable parameters (float32: 4 + 8 + 4)
        states = n_w * 4 + trainable * 12
        fit[train] = (above - states) / (tokens * cfg.hidden_size * cfg.num_hidden_layers + logits)
        values[train] = {"peak": peak, "above_idle": above, "trainable_params": trainable,
                         "weights_and_states": states, "activation_factor": fit[train]}
        rows.append([train, f"{trainable:,}", _gib(above), _gib(states), _gib(above - states)])
    res.say(f"random SmolLM2-135M-shaped Llama sliced at 25 % ({_gib(weights)} float32); "
            f"{tokens} tokens per step; idle process {_gib(idle)}")
    res.table(["train", "trainable params", "peak above idle", "weights + grads + AdamW",
               "rest (activations, logits, teacher cache)"], rows)
    p8 = _params_8b()
    d = LLAMA8B
    t8 = 2048                                           # one micro-batch of 1 x 2048 tokens
    act = lambda f: f * (t8 * d["hidden"] * d["layers"] + t8 * d["vocab"] * 4)  # noqa: E731
    full = (p8["layers"] * 16 + p8["embed_head"] * 4) + act(fit["layers"])
    lora = (p8["layers"] + p8["embed_head"]) * 2 + p8["lora16"] * 16 + act(fit["lora"])
    res.say(f"8B-class (Llama-3.1-8B widths, 25 % pruned: {p8['layers'] / 1e9:.2f}B layer "
            f"parameters), 1 x 2048 tokens per micro-batch, activation factor fitted above:")
    res.table(["train", "weights", "estimated peak"],
              [["layers (float32 weights + AdamW)", "float32", _gib(full)],
               ["lora (rank 16, frozen bf16 base)", "bfloat16", _gib(lora)]])
    values["llama8b"] = {"params": p8, "layers_peak": full, "lora_peak": lora}
    res.headline = (f"Healing an 8B-class expert on one GPU: about {_gib(lora)} with LoRA (bf16 "
                    f"base), {_gib(full)} training every layer weight (float32 + AdamW): use "
                    "train: lora there")
    res.values = values
    res.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
