"""Check a published expert the way a user would: stock transformers loads it, and its logits are
those of the dense model with the plan's units masked and compensated.

Run by bench_scale.py in a process of its own after each build (its memory is then not the
build's), or by hand:

    .venv/bin/python benchmarks/scale_verify.py --store DIR --name EXPERT --dense MODEL_DIR \
        [--reference auto|always|never] [--out result.json]

Two checks, both on the same few tokens:
- stock load: `AutoModelForCausalLM.from_pretrained` in the checkpoint's own dtype (bfloat16
  here), a stock transformers class (not cusprun's per-layer type), the parameter count
  cusprun.json states, finite logits;
- reference: `reference_logits` (the dense model masked and compensated in memory). Both models
  then hold the same bfloat16 weights (the slicer and mask_model round the same float64 solve
  to bfloat16), so they are compared twice: upcast to float32, where only the summation order
  differs (tolerance FP32_RTOL of the largest logit), and run in bfloat16 as shipped, where a
  different summation order flips roundings layer after layer (tolerance BF16_RTOL).
  It needs the whole dense model in memory (about 3x the checkpoint while upcasting); 'auto'
  skips it, saying why, when that would not fit in the memory available.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

FP32_RTOL = 1e-4
BF16_RTOL = 2 ** -5
"""bfloat16 keeps 8 significant bits (relative step 2^-8); a few roundings flipped per layer
add up to a few steps by the logits."""
PROMPTS = ["The patient was given a dose of", "Question: what does the river carry?\nAnswer:"]
N_TOKENS = 12


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def mem_available_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def dir_bytes(path: Path, pattern: str = "*.safetensors") -> int:
    return sum(p.stat().st_size for p in Path(path).glob(pattern))


def expert_build_inputs(store_root: str, name: str) -> dict:
    """Where the published expert is, and what made it: its plan (from its cusprun.json), the
    compensation settings, and the Grams artifacts of the plan's calibration corpora (matched
    by corpus hash in the store's grams/*/DONE.json records)."""
    from cusprun.masks.plan import PruningPlan
    from cusprun.pipeline.artifacts import local_copy
    from cusprun.storage import ArtifactStore
    from cusprun.storage.experts import get_expert, read_expert

    store = ArtifactStore(store_root)
    pe = read_expert(store, name)
    expert_dir = Path(pe.uri) if store.is_local else get_expert(store, name, progress=False)
    meta = json.loads((expert_dir / "cusprun.json").read_text())
    plan = PruningPlan.model_validate({k: meta[k] for k in PruningPlan.model_fields if k in meta})
    hashes = {h for d in plan.dimensions.values() for h in d.get("corpus_hashes", [])}
    grams = []
    for done in sorted(Path(store.root).glob("grams/**/DONE.json")):
        record = json.loads(done.read_text())
        if record.get("corpus_hash") in hashes:
            grams.append(local_copy(store, record["key"]))
    comp = {k: meta["compensation"][k] for k in ("mode", "ridge")}
    return {"expert_dir": expert_dir, "version": pe.version, "plan": plan, "grams": grams,
            "compensation": comp, "calibration_tokens": meta["compensation"].get("calibration_tokens"),
            "params_total": meta.get("params", {}).get("pruned", {}).get("total")}


def sample_ids(model_dir: Path) -> torch.Tensor:
    """A few real tokens of the model's own tokenizer, [len(PROMPTS), N_TOKENS]."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    rows = [tok(p, add_special_tokens=False)["input_ids"][:N_TOKENS] for p in PROMPTS]
    return torch.tensor(rows)


@torch.no_grad()
def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids, use_cache=False).logits.float()


@torch.no_grad()
def reference_logits(dense_dir: Path, plan, grams: list[Path], compensation: dict,
                     ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """Logits on `ids` of the dense checkpoint with `plan`'s pruned FFN neurons and query heads
    zeroed at their output projections and the kept down_proj/o_proj columns refitted in closed
    form (`compensation`: mode and ridge) from the summed Grams of `grams`, i.e.
    cusprun.compensation.apply.mask_model: the computation the sliced expert must reproduce.
    The dense model is loaded whole, in its checkpoint dtype, so the masked weights are rounded
    to that dtype as the slicer rounds them. Returns {'bfloat16': logits computed in the
    checkpoint dtype, 'float32': logits computed after upcasting}. For models that fit in
    memory (about 3x the checkpoint while upcasting)."""
    from transformers import AutoModelForCausalLM

    from cusprun.compensation import CompensationConfig, GramSet, mask_model

    model = AutoModelForCausalLM.from_pretrained(str(dense_dir), dtype="auto").eval()
    config = CompensationConfig.model_validate(compensation)
    mask_model(model, plan, grams=GramSet(grams) if config.enabled else None, config=config)
    out = {"bfloat16": _logits(model, ids)}
    out["float32"] = _logits(model.float(), ids)
    return out


def _diff(a: torch.Tensor, b: torch.Tensor, rtol: float) -> dict:
    scale = float(b.abs().max())
    d = float((a - b).abs().max())
    return {"max_abs_diff": d, "max_abs_logit": scale, "tolerance": rtol * scale,
            "ok": math.isfinite(d) and d <= rtol * scale}


@torch.no_grad()
def verify(store_root: str, name: str, dense_dir: Path, reference: str = "auto") -> dict:
    """Stock-load check and (when possible) the reference comparison; a JSON-able dict."""
    from transformers import AutoModelForCausalLM

    inputs = expert_build_inputs(store_root, name)
    exp_dir: Path = inputs["expert_dir"]
    ids = sample_ids(exp_dir)
    res: dict = {"expert_dir": str(exp_dir), "version": inputs["version"],
                 "expert_gb": round(dir_bytes(exp_dir) / 1e9, 4),
                 "compensation": inputs["compensation"], "grams_corpora": len(inputs["grams"]),
                 "tokens": list(ids.shape)}
    model = AutoModelForCausalLM.from_pretrained(str(exp_dir), dtype="auto").eval()
    n = sum(p.numel() for p in model.parameters())
    shipped = _logits(model, ids)
    res.update(stock_class=f"{type(model).__module__}.{type(model).__name__}",
               stock_dtype=str(next(model.parameters()).dtype).removeprefix("torch."),
               params=n, params_expected=inputs["params_total"],
               finite=bool(torch.isfinite(shipped).all()))
    res["stock_load_ok"] = (res["stock_class"].startswith("transformers.models.") and res["finite"]
                            and n == inputs["params_total"])
    need = 3 * (dir_bytes(dense_dir) + dir_bytes(exp_dir))
    if reference == "never" or (reference == "auto" and need > 0.7 * mem_available_bytes()):
        res["reference"] = (f"skipped: the masked + compensated reference holds the whole dense "
                            f"model (~{need / 1e9:.1f} GB with the upcast), "
                            f"{mem_available_bytes() / 1e9:.1f} GB available" if reference == "auto"
                            else "skipped (--reference never)")
        res["logits_match"] = None
    else:
        upcast = _logits(model.float(), ids)
        del model
        from cusprun.compensation import GramSet

        # the Grams found in the store are the expert's: same calibration token count
        res["grams_tokens_match"] = (inputs["calibration_tokens"] is None or
                                     GramSet(inputs["grams"]).n_tokens == inputs["calibration_tokens"])
        ref = reference_logits(dense_dir, inputs["plan"], inputs["grams"], inputs["compensation"], ids)
        res["reference"] = "mask_model on the dense checkpoint with the build's plan and Grams"
        res["fp32"] = _diff(upcast, ref["float32"], FP32_RTOL)
        res["bf16"] = _diff(shipped, ref["bfloat16"], BF16_RTOL)
        res["logits_match"] = res["fp32"]["ok"] and res["bf16"]["ok"] and res["grams_tokens_match"]
    res["peak_rss_gb"] = round(_status_kb("VmHWM") / 2 ** 20, 3)
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", required=True, help="the build's storage_root (local directory)")
    p.add_argument("--name", required=True, help="expert name")
    p.add_argument("--dense", required=True, help="the dense model directory")
    p.add_argument("--reference", choices=["auto", "always", "never"], default="auto")
    p.add_argument("--out", help="write the result as JSON here (default: print it)")
    args = p.parse_args(argv)
    res = verify(args.store, args.name, Path(args.dense), args.reference)
    text = json.dumps(res, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    else:
        print(text)
    return 0 if res["stock_load_ok"] and res["logits_match"] is not False else 1


if __name__ == "__main__":
    sys.exit(main())
