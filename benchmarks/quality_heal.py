"""Healing on the demo: the expert at 25 % one-shot and healed at two token budgets, beside
`wanda-sp` sliced and healed the same way, scored by held-out retention per loss set (the demo
report's documents) with each healing's cost (tokens, wall time, device).

Every model is built with the library (cusprun.prune, cusprun.healing), as the heal stage does:
healing reads the training side of the calibration corpora plus general text, never a held-out
document. `--tiny` runs the same code on a tiny random model with small budgets (a check that
it runs end to end, in about a minute; its numbers mean nothing).

    python -m benchmarks run quality_heal [--budgets 25000 50000] [--tiny]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

METHODS = ("cusprun", "wanda-sp")


def _texts(spec, work: Path) -> dict[str, list[str]]:
    """group -> calibration-side documents (calib, then holdback), as the corpus stage splits."""
    from cusprun.corpora import prepare_corpus
    from cusprun.healing.data import TRAIN_SPLITS
    from cusprun.pipeline.plan_inputs import calibration_corpora

    out: dict[str, list[str]] = {}
    for group, corpora in calibration_corpora(spec).items():
        for c in corpora:
            p = prepare_corpus(c, work / "corpora")
            out.setdefault(group, []).extend(t for s in TRAIN_SPLITS for t in p.texts(s))
    return out


def _losses(path: Path, sets: dict, max_tokens: int) -> dict[str, float]:
    import cusprun.slicing  # noqa: F401
    from benchmarks.quality_common import losses
    from cusprun.models import load_model

    model, tok = load_model(path, device="cpu")
    return losses(model, tok, sets, max_tokens)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budgets", type=int, nargs="+", default=[25_000, 50_000],
                    help="healing token budgets")
    ap.add_argument("--ratio", type=float, default=0.25)
    ap.add_argument("--tiny", action="store_true", help="a tiny random model, small budgets")
    args = ap.parse_args(argv)

    import cusprun
    from benchmarks.quality_common import DEMO, eval_sets, own_sets
    from benchmarks.results_io import Result
    from cusprun.evaluation.metrics import retention
    from cusprun.healing import HealSpec
    from cusprun.healing.distill import heal
    from cusprun.models import resolve_model
    from cusprun.models.loading import load_tokenizer
    from cusprun.pipeline.runtime import resolve_runtime
    from cusprun.pipeline.spec import ExpertSpec

    data = {**DEMO, "target_ratios": [args.ratio]}
    heal_over: dict = {}
    if args.tiny:
        small = {"max_docs": 24}
        data.update({d: {**data[d], **small} for d in ("language", "domain", "task", "general")})
        data.update({"max_tokens": 64, "min_docs": 4, "evaluation": {
            "max_docs": 4, "min_loss_tokens": 0, "max_tokens": 32, "other_languages": []}})
        args.budgets = [b for b in args.budgets if b <= 4096] or [1024, 2048]
        heal_over = {"seq_len": 64}
    spec = ExpertSpec.model_validate(data)
    with tempfile.TemporaryDirectory(prefix="cusprun-bench-heal-") as tmp:
        work = Path(tmp)
        if args.tiny:
            from tests.support import make_tiny_model

            base = make_tiny_model("LlamaForCausalLM", work / "tiny")[1]
        else:
            base = resolve_model(spec.base_model).path
        tok = load_tokenizer(base)
        sets = eval_sets(spec, work, tok)
        mt = spec.evaluation.max_tokens
        texts = _texts(spec, work)
        device = resolve_runtime(spec).device
        dense = _losses(base, sets, mt)
        rows, values = [], {"dense": dense, "models": {}}
        dims = {d: texts[d] for d in spec.dimensions()}
        for method in METHODS:
            expert = cusprun.prune(base, dims, ratio=args.ratio, method=method,
                                   general=texts["general"], max_tokens=spec.max_tokens,
                                   min_docs=spec.min_docs, seed=spec.seed,
                                   work_dir=work / f"prune-{method}", progress=False)
            sliced = expert.save(work / f"{method}-one-shot", progress=False)
            runs = [(f"{method}@{args.ratio:g}", sliced, None)]
            for budget in args.budgets:
                hs = HealSpec(tokens=budget, **heal_over)
                out = work / f"{method}-heal-{budget}"
                rec = heal(sliced, base, texts, hs, out, device=device, progress=True)
                runs.append((f"{method}@{args.ratio:g}+heal {budget}", out, rec))
            for name, path, rec in runs:
                loss = _losses(path, sets, mt)
                kept = {n: retention("loss", loss[n], dense[n]) for n in sets}
                cost = ({k: rec[k] for k in ("tokens", "wall_s", "train_s", "teacher_s",
                                             "tokens_per_s", "device_name", "kl_before",
                                             "kl_after")} if rec else {})
                values["models"][name] = {"method": method, "loss": loss, "retention": kept,
                                          "healing": cost}
                rows.append([name, f"{cost.get('tokens', 0):,}", f"{cost.get('wall_s', 0):.0f}",
                             *[f"{kept[n]:.3f}" for n in sets]])
    own = own_sets(sets, spec)
    res = Result("quality_heal" + ("-tiny" if args.tiny else ""),
                 "Healing: one-shot vs healed retention on held-out sets, and its cost",
                 {**vars(args), "heal": HealSpec(tokens=args.budgets[0], **heal_over)
                  .model_dump(exclude={"tokens"})})
    res.say(f"base model: {spec.base_model if not args.tiny else 'tiny random Llama'}; ratio "
            f"{args.ratio:g}; device {device}; retention = dense loss / model loss")
    res.table(["model", "healing tokens", "healing s", *sets], rows)
    best = {m: max((v for v in values["models"].values() if v["method"] == m),
                   key=lambda v: min(v["retention"][n] for n in own)) for m in METHODS}
    res.headline = "; ".join(
        f"{m}: own-set retention {min(best[m]['retention'][n] for n in own):.3f} (min) healed with "
        f"{best[m]['healing'].get('tokens', 0):,} tokens" for m in METHODS)
    res.values = values
    res.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
