"""Check a published expert the way a user would: stock transformers loads it, and its logits are
those of the dense model with the plan's units masked and compensated.

Run by bench_scale in a process of its own after each build (its memory is then not the
build's), or by hand:

    python -m benchmarks.scale.verify --store DIR --name EXPERT --dense MODEL_DIR \
        [--reference auto|always|never] [--out result.json]

Two checks, both on the same few tokens:
- stock load: `AutoModelForCausalLM.from_pretrained` in the checkpoint's own dtype (bfloat16
  here), a stock transformers class (not cusprun's per-layer type), the parameter count
  cusprun.json states, finite logits;
- reference: `reference_logits` (the dense model pruned and compensated layer by layer as it
  streams from disk, so any size works). The slicer and the engine round the same float solve
  to bfloat16 (the Grams are summed in one order whoever reads them: GramSet), so both models
  hold the same weights bit for bit (tests/unit/test_compensation.py). They are compared twice: in
  float64 (the expert's checkpoint streamed in float64, the reference's edited layers upcast),
  where they differ only by summation order (the expert lacks the pruned heads, the reference
  zeroes them), far below FP64_RTOL of the largest logit; a weight one bfloat16 step off would
  show well above it; and the stock-loaded expert in bfloat16 as shipped, against the
  float64 reference: its error must be at most BF16_FACTOR times the error of the reference
  computed in bfloat16 from the same weights (bfloat16 rounding adds up layer after layer, so a
  fixed tolerance would not fit every depth; the engine's own bfloat16 error is the yardstick).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from benchmarks.machine import peak_rss_bytes

FP64_RTOL = 1e-6
BF16_FACTOR = 2.0
"""The shipped bfloat16 expert may be off the float64 reference by at most this many times the
reference's own bfloat16 computation (same weights, another summation order)."""
PROMPTS = ["The patient was given a dose of", "Question: what does the river carry?\nAnswer:"]
N_TOKENS = 12


def dir_bytes(path: Path, pattern: str = "*.safetensors") -> int:
    return sum(p.stat().st_size for p in Path(path).glob(pattern))


def expert_build_inputs(store_root: str, name: str) -> dict:
    """Where the published expert is, and what made it: its plan (from its cusprun.json), the
    compensation settings, and the Grams artifacts of the plan's calibration corpora (matched
    by corpus hash in the store's grams/*/DONE.json records)."""
    from cusprun.plans.plan import PruningPlan
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
    return model(input_ids=ids, use_cache=False).logits.double()


@torch.no_grad()
def _engine_logits(lm, ids: torch.Tensor, edit) -> torch.Tensor:
    """Full logits [B, T, vocab] (as float64) of `ids` through the layer-by-layer engine under
    `edit`."""
    import torch.nn.functional as F

    from cusprun.engine import Batch, Variant, run_pass

    mask = torch.ones_like(ids)
    finals: list[torch.Tensor] = []
    run_pass(lm, [Batch(ids, mask, list(range(len(ids))), {"attention_mask": mask})],
             [Variant("reference", edit)], on_final=lambda v, i, b, h: finals.append(lm.norm(h)),
             progress=False)
    hidden, vocab, out = finals[0], lm.config.vocab_size, []
    step = max(1, (64 << 20) // (4 * hidden.shape[0] * hidden.shape[1]))
    for start in range(0, vocab, step):
        with lm.head(start, min(vocab, start + step)) as head:
            out.append(F.linear(hidden.to(head.weight.dtype), head.weight, head.bias).double())
    return torch.cat(out, dim=-1)


@torch.no_grad()
def expert_float64_logits(expert_dir: Path, ids: torch.Tensor) -> torch.Tensor:
    """The expert checkpoint's own logits in float64, read layer by layer (cusprun.engine), so an
    expert of any size is compared in float64 without holding 8 bytes per weight."""
    from cusprun.engine import LayeredModel

    lm = LayeredModel.streamed(expert_dir, device="cpu", dtype=torch.float64)
    return _engine_logits(lm, ids, None)


@torch.no_grad()
def reference_logits(dense_dir: Path, plan, grams: list[Path], compensation: dict,
                     ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """Logits on `ids` of the dense checkpoint with `plan`'s pruned FFN neurons cut and query
    heads zeroed and the kept down_proj/o_proj columns refitted in closed form (`compensation`:
    mode and ridge) from the summed Grams of `grams`: the computation the sliced expert must
    reproduce. The dense model streams one layer at a time (cusprun.engine), so this works for
    a model of any size; each layer is edited in its checkpoint dtype (bfloat16), so the
    compensated weights are rounded as the slicer rounds them. Returns {'bfloat16': computed in
    bfloat16, 'float64': the same edited layers upcast to float64}."""
    from contextlib import contextmanager

    from cusprun.compensation import CompensationConfig, GramSet
    from cusprun.engine import LayeredModel, plan_edit

    config = CompensationConfig.model_validate(compensation)
    gs = GramSet(grams) if config.enabled else None
    lm = LayeredModel.streamed(dense_dir, device="cpu", dtype=torch.bfloat16)
    edit = plan_edit(lm.adapter, lm.dims, plan, grams=gs, config=config)

    @contextmanager
    def upcast(li, layer):
        layer.to(torch.bfloat16)     # read as float64: back to the checkpoint's bf16 (exact)
        with edit(li, layer):        # pruned and compensated in bf16, as the slicer writes it
            layer.double()
            yield layer

    out = {"bfloat16": _engine_logits(lm, ids, edit)}
    lm.dtype = torch.float64         # from here on everything is read and run in float64
    lm.model.get_decoder().norm.double()
    out["float64"] = _engine_logits(lm, ids, upcast)
    return out


def _diff(a: torch.Tensor, b: torch.Tensor, rtol: float) -> dict:
    scale = float(b.abs().max())
    d = float((a - b).abs().max())
    return {"max_abs_diff": d, "max_abs_logit": scale, "tolerance": rtol * scale,
            "ok": math.isfinite(d) and d <= rtol * scale}


def _bf16_check(shipped: torch.Tensor, ref_bf16: torch.Tensor, ref64: torch.Tensor) -> dict:
    """The shipped bfloat16 expert's distance to the float64 reference, against BF16_FACTOR times
    the reference's own bfloat16 computation's."""
    d = float((shipped - ref64).abs().max())
    engine = float((ref_bf16 - ref64).abs().max())
    return {"max_abs_diff": d, "max_abs_logit": float(ref64.abs().max()),
            "engine_bf16_diff": engine, "tolerance": BF16_FACTOR * engine,
            "ok": math.isfinite(d) and d <= BF16_FACTOR * engine}


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
    if reference == "never":
        res["reference"] = "skipped (--reference never)"
        res["logits_match"] = None
    else:
        del model     # the float64 comparison streams the expert instead (50 GB whole at 8B)
        upcast = expert_float64_logits(exp_dir, ids)
        from cusprun.compensation import GramSet

        # the Grams found in the store are the expert's: same calibration token count
        res["grams_tokens_match"] = (inputs["calibration_tokens"] is None or
                                     GramSet(inputs["grams"]).n_tokens == inputs["calibration_tokens"])
        ref = reference_logits(dense_dir, inputs["plan"], inputs["grams"], inputs["compensation"], ids)
        res["reference"] = ("the dense checkpoint streamed layer by layer, each layer pruned and "
                            "compensated with the build's plan and Grams (cusprun.engine)")
        res["fp64"] = _diff(upcast, ref["float64"], FP64_RTOL)
        res["bf16"] = _bf16_check(shipped, ref["bfloat16"], ref["float64"])
        res["logits_match"] = res["fp64"]["ok"] and res["bf16"]["ok"] and res["grams_tokens_match"]
    res["peak_rss_gb"] = round(peak_rss_bytes() / 2 ** 30, 3)
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
