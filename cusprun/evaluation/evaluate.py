"""Evaluate one model: load it, then loss per eval set, MC accuracy per task, size and speed."""
from __future__ import annotations

import gc
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel
from tqdm.auto import tqdm

from cusprun.evaluation.config import EvalConfig, EvaluationError, ModelEntry
from cusprun.evaluation.intervals import interval, samples_of
from cusprun.evaluation.items import LossExample, MCItem, as_loss_examples, as_mc_items, subsample
from cusprun.evaluation.likelihood import heldout_losses, mc_accuracy
from cusprun.evaluation.size import size_metrics
from cusprun.evaluation.speed import speed_metrics

log = logging.getLogger(__name__)


class MetricValue(BaseModel):
    metric: str
    eval_set: str = ""
    """Loss set or MC task name; empty for size and speed."""
    value: float
    chance: float | None = None
    """MC accuracy of uniform guessing (mean 1/#options)."""
    n: int | None = None
    """Scored tokens (loss, perplexity) or items (MC accuracy)."""
    n_units: int | None = None
    """Documents (loss, perplexity) or items (MC accuracy) the interval resamples."""
    ci_low: float | None = None
    ci_high: float | None = None
    """95 % interval (Wilson for accuracy, t interval over documents for loss and perplexity)."""
    unit_num: list[float] | None = None
    unit_den: list[float] | None = None
    """Per document NLL and tokens (loss) or per item 1/0 correct (accuracy): value =
    sum(unit_num) / sum(unit_den), kept for paired comparisons between models."""


class ModelResult(BaseModel):
    name: str
    entry: ModelEntry
    values: list[MetricValue]


def prepare_inputs(eval_sets: Mapping[str, Sequence[Any]] | None,
                   mc_tasks: Mapping[str, Sequence[Any]] | None, config: EvalConfig
                   ) -> tuple[dict[str, list[LossExample]], dict[str, list[MCItem]]]:
    """Validate and normalise every input up front (before any model is loaded)."""
    loss = {}
    for name, items in (eval_sets or {}).items():
        ex = as_loss_examples(name, items)
        loss[name] = ex[: config.max_docs_per_set] if config.max_docs_per_set else ex
    mc = {name: subsample(as_mc_items(name, items), config.n_mc_items, config.seed)
          for name, items in (mc_tasks or {}).items()}
    return loss, mc


def load_for_eval(path: str | Path, config: EvalConfig):
    """(model, tokenizer) in eval mode: the whole model (either expert layout loads stock), or a
    cusprun.engine.LayeredModel streamed from disk when config.streaming says so ('auto': when
    the weights take more than half the free memory). Decided and loaded under the machine's
    placement lock (cusprun.engine.machine_lock)."""
    from cusprun.engine import LayeredModel, decide
    from cusprun.engine.machine_lock import placement_lock
    from cusprun.models.loading import load_model, load_tokenizer

    device, dtype = config.resolved_device(), config.resolved_dtype()
    with placement_lock():
        if not decide(path, device, dtype, config.streaming):
            return load_model(path, dtype=dtype, device=device)
    return LayeredModel.streamed(path, device=device, dtype=dtype), load_tokenizer(path)


def evaluate_loaded(model, tokenizer, loss_sets: Mapping[str, list[LossExample]],
                    mc_tasks: Mapping[str, list[MCItem]], config: EvalConfig,
                    path: str | Path | None = None, name: str = "model") -> list[MetricValue]:
    """Every configured metric for an already loaded model (inputs as from prepare_inputs)."""
    from cusprun.engine import LayeredModel

    out: list[MetricValue] = []
    fams, bar = set(config.metrics), config.progress
    streamed = isinstance(model, LayeredModel) and model.checkpoint is not None
    if "size" in fams:
        whole = model.model if isinstance(model, LayeredModel) else model
        out += [MetricValue(metric=k, value=v) for k, v in size_metrics(whole, path).items()]
    if "loss" in fams:
        losses = heldout_losses(model, tokenizer, loss_sets, max_tokens=config.max_tokens,
                                batch_size=config.batch_size, progress=bar) if loss_sets else {}
        for set_name, r in losses.items():
            units = samples_of([nll for nll, _ in r.per_doc], [k for _, k in r.per_doc])
            for metric, value in (("loss", r.loss), ("perplexity", r.perplexity)):
                lo, hi = interval(metric, units)
                out.append(MetricValue(metric=metric, eval_set=set_name, value=value, n=r.n_tokens,
                                       n_units=len(units), ci_low=lo, ci_high=hi,
                                       unit_num=list(units.num), unit_den=list(units.den)))
    if "mc" in fams:
        for task, items in tqdm(mc_tasks.items(), desc=f"{name}: MC tasks", disable=not bar):
            r = mc_accuracy(model, tokenizer, items, normalization=config.mc_normalization,
                            max_tokens=config.max_tokens, batch_size=config.batch_size,
                            name=task, progress=bar, shared_prefix=config.mc_shared_prefix)
            lo, hi = interval("mc_accuracy", samples_of(r.correct))
            out.append(MetricValue(metric="mc_accuracy", eval_set=task, value=r.accuracy,
                                   chance=r.chance, n=r.n_items, n_units=r.n_items, ci_low=lo,
                                   ci_high=hi, unit_num=[float(c) for c in r.correct]))
    if "speed" in fams and streamed:
        log.info("%s: speed not measured (the model is streamed from disk: it does not fit)", name)
    elif "speed" in fams:
        sp = speed_metrics(model, tokenizer, prompt_tokens=config.speed_prompt_tokens,
                           decode_tokens=config.speed_decode_tokens, warmup=config.speed_warmup,
                           iters=config.speed_iters)
        out += [MetricValue(metric=k, value=v) for k, v in sp.items()]
    return out


def evaluate_model(name: str, entry: ModelEntry, eval_sets: Mapping[str, Sequence[Any]] | None,
                   mc_tasks: Mapping[str, Sequence[Any]] | None,
                   config: EvalConfig | None = None) -> ModelResult:
    """Load one checkpoint, evaluate it and free it. Inputs as accepted by `compare`."""
    config = config or EvalConfig()
    loss_sets, mc = prepare_inputs(eval_sets, mc_tasks, config)
    if not Path(entry.path).exists():
        raise EvaluationError(f"Model {name!r}: path {str(entry.path)!r} does not exist.")
    log.info("evaluating %s (%s, ratio %.2f) from %s", name, entry.method, entry.ratio, entry.path)
    model, tok = load_for_eval(entry.path, config)
    try:
        values = evaluate_loaded(model, tok, loss_sets, mc, config, path=entry.path, name=name)
    finally:
        del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return ModelResult(name=name, entry=entry, values=values)
