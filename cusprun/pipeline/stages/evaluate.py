"""The evaluation stage: dense, Cus-Prun and baselines compared on held-out data (loss sets,
multiple-choice tasks, size, speed), plus the ratio sweep of masked plans. Models that do not fit
are streamed from disk (cusprun.engine), with the same numbers."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from cusprun.pipeline.context import scratch_dir, timed
from cusprun.pipeline.stages.common import (artifact_dir, base_path, commit_stage, corpus_table,
                                            gram_set, load_stats, open_base, read_plan, reused)
from cusprun.storage import ArtifactStore

log = logging.getLogger(__name__)

# Answer options (definitions, translated verses) are clipped to this many characters at a word
# boundary: every option token needs an LM-head row (640 x 262k for Gemma 3), so 4 options x 100
# items x 3 tasks stay affordable on CPU. Topic labels are short anyway.
OPTION_CHARS = 100


def article_chars(max_tokens: int) -> int:
    """Topic questions show the article's beginning (its defining sentence), about two characters
    per token of the budget, so max_tokens never cuts a question down to the article's tail
    (measured on Gemma 3 270M, 40 French items at 64 tokens: 0.55 accuracy with 150 characters,
    0.21 with 240 characters cut from the left)."""
    return min(600, 2 * max_tokens + 20)


def _has(table, *cols: str) -> bool:
    return all(c in table.column_names and table.column(c).null_count == 0 for c in cols)


def build_eval_inputs(store: ArtifactStore, eval_corpora: dict[str, dict], *, own_language: str | None,
                      max_docs: int, mc_items: int, seed: int, max_tokens: int = 256,
                      min_loss_tokens: int = 0, tokenizer=None) -> tuple[dict, dict]:
    """Held-out loss sets per corpus (max_docs documents, more where they score fewer than
    min_loss_tokens tokens with `tokenizer`), and the multiple-choice tasks the held-out data
    allows (cusprun.evaluation.mc_tasks_from_tables), completed from what an expert's corpora
    hold: definition QA from domain/general articles when there is no QA task corpus, and
    translation selection between the expert's language and another verse-aligned language."""
    from cusprun.evaluation import (build_definition_items, build_translation_items,
                                    loss_sets_from_tables, mc_tasks_from_tables, scored_tokens)

    from cusprun.evaluation.set_names import is_out_of_source

    every = {name: corpus_table(store, c, "eval") for name, c in eval_corpora.items()}
    count = scored_tokens(tokenizer, max_tokens) if tokenizer is not None else None
    loss_sets = loss_sets_from_tables(every, max_docs=max_docs, min_tokens=min_loss_tokens,
                                      count_tokens=count)
    # out-of-source text is scored as loss only: the tasks stay those of the in-source data
    tables = {n: t for n, t in every.items() if not is_out_of_source(n)}
    mc = mc_tasks_from_tables(tables, n_items=mc_items, seed=seed, max_option_chars=OPTION_CHARS,
                              max_article_chars=article_chars(max_tokens))
    articles = [n for n in sorted(tables) if n.split("=")[0] in ("domain", "general")
                and _has(tables[n], "label", "title")]
    if "definition QA" not in mc and articles:
        mc["definition QA"] = build_definition_items(tables[articles[0]], n_items=mc_items, seed=seed)
    own = f"language={own_language}"
    others = [n for n in sorted(tables) if n.startswith("language=") and n != own
              and _has(tables[n], "group_id")]
    if "translation selection" not in mc and own in tables and others and _has(tables[own], "group_id"):
        src = others[0]
        mc["translation selection"] = build_translation_items(
            tables[src], tables[own], n_items=mc_items, seed=seed,
            source_name=src.split("=")[1], target_name=own_language,
            max_context_chars=OPTION_CHARS)
    return loss_sets, {k: v for k, v in mc.items() if v}


def _overlap_pairs(overlap) -> dict | None:
    """Plan reports keep overlaps as {'a|b': jaccard}; the plot wants {(a, b): jaccard}."""
    if not overlap:
        return None
    pairs = {}
    for k, v in overlap.items():
        if isinstance(v, (int, float)) and "|" in k:
            a, b = k.split("|", 1)
            pairs[(a, b)] = float(v)
    return pairs or None


def _known(report, loss_sets: dict, mode: str, own: dict | None = None) -> dict:
    """Loss per set of the dense model and of the sliced (compensated) checkpoints, as measured by
    the main comparison: the sweep does not measure those points again. `own`: models sliced
    under their own compensation (name -> ({mode, ridge}, source))."""
    out: dict = {}
    for r in report.rows:
        if r.metric == "loss" and r.eval_set in loss_sets:
            m = (own or {}).get(r.model, ({"mode": mode},))[0]["mode"]
            key = ("dense", "none") if r.method == "dense" else (r.model, m)
            out.setdefault(key, {})[r.eval_set] = (r.value, r.n or 0)
    return {k: v for k, v in out.items() if set(v) == set(loss_sets)}


def _own_compensation(store: ArtifactStore, sweep: dict[str, dict], comp: dict, grams) -> dict:
    """Sweep points whose method brings its own compensation (flap: FLAP's bias from the channel
    means of general text; or none where the family cannot carry it): name -> ({mode, ridge},
    channel means or the build's Grams)."""
    from cusprun.compensation import ChannelMeans

    out, means = {}, {}
    for name, v in sweep.items():
        c = v.get("compensation", comp)
        if v.get("means"):
            k = tuple(v["means"])
            if k not in means:
                means[k] = ChannelMeans.from_stats([load_stats(store, s) for s in k])
            out[name] = (c, means[k])
        elif c["mode"] != comp["mode"]:
            out[name] = (c, grams)
    return out


def _ratio_sweep(store: ArtifactStore, model: dict, runtime: dict, sweep: dict[str, dict],
                 loss_sets: dict, options: dict, grams: list[str] | None, out: Path,
                 report=None) -> str:
    """Masked (and compensated) sweep points on the loss sets: sweep.json, the retention-vs-
    ratio plot and the markdown section appended to report.md."""
    from cusprun.evaluation.sweep import plot_sweep, run_sweep, sweep_markdown

    comp = options.get("compensation") or {"mode": "none", "ridge": 0.0}
    modes = [comp["mode"]] + (["none"] if comp["mode"] != "none" and options.get("sweep_compensation", True)
                              else [])
    plans = {name: (v["method"], v["ratio"], read_plan(store, v["plan"])) for name, v in sweep.items()}
    from cusprun.evaluation.set_names import is_out_of_source

    own = [n for n in loss_sets if not is_out_of_source(n) and (n.split("=")[0] in ("domain", "task")
           or n == f"language={options.get('own_language')}")]
    # The expert's own sets and general text: what a ratio is chosen by (other languages and
    # out-of-source text are in the main tables at the published ratio).
    loss_sets = {n: ex for n, ex in loss_sets.items()
                 if n in own or (n.startswith("general=") and not is_out_of_source(n))}
    with timed(f"ratio sweep: {len(plans)} plans x {len(modes)} compensation settings"):
        m, tok = open_base(store, model, runtime, "sweep_precision")
        gs = gram_set(store, grams or []) if comp["mode"] != "none" else None
        own_comp = _own_compensation(store, sweep, comp, gs)
        rows = run_sweep(m, tok, plans, loss_sets, grams=gs, modes=modes, ridge=comp.get("ridge", 0.0),
                         max_tokens=options["max_tokens"],
                         precision=options.get("sweep_precision", "float32"),
                         workers=options.get("sweep_workers", 1), own=own_comp,
                         known=(_known(report, loss_sets, comp["mode"], own_comp)
                                if report is not None else None))
    (out / "sweep.json").write_text(json.dumps(rows, indent=1))
    plot_sweep(rows, out / "retention_vs_ratio.png", own)
    return sweep_markdown(rows, own)


def _healing_section(store: ArtifactStore, report, healing: dict[str, dict], out: Path) -> str:
    """One-shot and healed side by side, with healing's cost and loss curves (healing.json of
    each heal artifact, copied beside the report)."""
    from cusprun.evaluation.healing import healing_markdown
    from cusprun.healing.save import HEALING_FILE

    pairs, records = {}, {}
    for name, h in healing.items():
        rec = json.loads((artifact_dir(store, "heal", h["key"]) / HEALING_FILE).read_text())
        pairs[name], records[name] = (h["one_shot"], rec), rec
    (out / "healing.json").write_text(json.dumps(records, indent=1))
    return healing_markdown(report, pairs, out)


CACHED_FAMILIES = ("loss", "mc", "size")
"""What of the dense model's evaluation is cached across builds; speed is measured beside the
experts every time (a timing from another day on another load is no comparison)."""


def dense_values(store: ArtifactStore, key: str, dense: Path, loss_sets: dict, mc_tasks: dict,
                 config, refresh: bool = False) -> list:
    """The dense model's loss, multiple-choice and size values on these evaluation inputs:
    computed once per (model fingerprint, evaluation sets, settings), under the dense-eval key,
    then reused by every build that evaluates on the same inputs (a new ratio, new baselines,
    new calibration data)."""
    from cusprun.evaluation import ModelEntry, evaluate_model
    from cusprun.evaluation.evaluate import MetricValue

    if reused(store, "dense-eval", key, refresh) is not None:
        data = json.loads((artifact_dir(store, "dense-eval", key) / "dense.json").read_text())
        return [MetricValue.model_validate(v) for v in data["values"]]
    fams = [f for f in config.metrics if f in CACHED_FAMILIES]
    res = evaluate_model("dense", ModelEntry(path=dense, method="dense", ratio=0.0), loss_sets,
                         mc_tasks, config.model_copy(update={"metrics": fams}))
    with scratch_dir("dense-eval", key) as out:
        (out / "dense.json").write_text(json.dumps({"values": [v.model_dump(mode="json")
                                                               for v in res.values]}))
        commit_stage(store, "dense-eval", key, out, {"families": fams})
    return res.values


def evaluate_stage(store: ArtifactStore, key: str, model: dict, runtime: dict,
                   candidates: dict[str, dict], eval_corpora: dict[str, dict], options: dict,
                   overlap_plan: str | None = None, sweep: dict[str, dict] | None = None,
                   grams: list[str] | None = None, dense_key: str | None = None,
                   healing: dict[str, dict] | None = None, refresh: bool = False) -> dict:
    """`candidates`: name -> {key (slice key), method, ratio}; the dense model is added.
    `overlap_plan`: the key of the Cus-Prun plan whose report holds the overlap between
    dimensions. `sweep`: name -> {plan (key), method, ratio}: masked sweep points (with `grams`,
    keys, for compensation). A candidate with stage 'heal' is a healed checkpoint; `healing`:
    healed name -> {one_shot (its slice's name), key (heal key)}: the side-by-side section."""
    from cusprun.evaluation import METRIC_FAMILIES, EvalConfig, ModelEntry, compare
    from cusprun.evaluation.markdown import summary_markdown
    from cusprun.models.loading import load_tokenizer
    from cusprun.pipeline.runtime import Runtime

    if (done := reused(store, "evaluate", key, refresh)) is not None:
        return done
    rt = Runtime.model_validate(runtime)
    with timed(f"evaluate {len(candidates) + 1} models"), scratch_dir("evaluate", key) as out:
        dense = base_path(store, model)
        min_tokens = options.get("min_loss_tokens", 0)
        loss_sets, mc_tasks = build_eval_inputs(
            store, eval_corpora, own_language=options.get("own_language"),
            max_docs=options["max_docs"], mc_items=options["mc_items"],
            seed=options.get("seed", 0), max_tokens=options["max_tokens"],
            min_loss_tokens=min_tokens, tokenizer=load_tokenizer(dense) if min_tokens else None)
        entries = {"dense": ModelEntry(path=dense, method="dense", ratio=0.0)}
        for name, c in candidates.items():
            entries[name] = ModelEntry(path=artifact_dir(store, c.get("stage", "slice"), c["key"]),
                                       method=c["method"], ratio=c["ratio"])
        # float32 on every device, as the spec says: bf16 weights would multiply in bf16
        config = EvalConfig(max_tokens=options["max_tokens"], n_mc_items=options["mc_items"],
                            device=rt.device, dtype="float32", streaming=rt.streaming,
                            workers=options.get("sweep_workers", "auto"),
                            seed=options.get("seed", 0), speed_iters=options.get("speed_iters", 3),
                            speed_warmup=1, speed_decode_tokens=16,
                            **({} if options.get("measure_speed", True) else
                               {"metrics": [m for m in METRIC_FAMILIES if m != "speed"]}))
        overlap = read_plan(store, overlap_plan).report.get("overlap") if overlap_plan else None
        known = {"dense": dense_values(store, dense_key, dense, loss_sets, mc_tasks, config,
                                       refresh)} if dense_key else None
        report = compare(entries, loss_sets, mc_tasks, out, config=config,
                         overlap=_overlap_pairs(overlap), known=known)
        if sweep:
            section = _ratio_sweep(store, model, runtime, sweep, loss_sets, options, grams, out,
                                   report)
            with open(out / "report.md", "a") as f:
                f.write("\n" + section)
        if healing:
            with open(out / "report.md", "a") as f:
                f.write("\n" + _healing_section(store, report, healing, out))
        md = (out / "report.md").read_text()
        # summary: the narrow table the Prefect UI artifact and the quick demo show
        summary = summary_markdown(report)
        (out / "summary.md").write_text(summary + "\n")
        return commit_stage(store, "evaluate", key, out, {
            "markdown": md, "summary_markdown": summary, "models": list(entries),
            "mc_tasks": list(mc_tasks), "loss_sets": list(loss_sets)})
