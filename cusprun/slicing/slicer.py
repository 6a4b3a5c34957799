"""Physical slicing: a dense safetensors checkpoint + a plan -> a smaller standard checkpoint."""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tqdm import tqdm

from cusprun.adapters import Adapter
from cusprun.errors import CusprunError, SpecError
from cusprun.version import __version__
from cusprun.plans.plan import PruningPlan
from cusprun.compensation.config import CompensationConfig
from cusprun.slicing.card import model_card
from cusprun.slicing.compensated import Compensation, bias_config, compensated_outputs, missing_biases
from cusprun.slicing.indices import layer_slices
from cusprun.models.per_layer import per_layer_config_dict
from cusprun.models.checkpoint import INDEX_FILE, checkpoint_tensors
from cusprun.models.st_io import DTYPES, OutTensor, TensorInfo, split_shards, write_shard
from cusprun.slicing.validate import LayerWidths, check_identity, validate_plan

log = logging.getLogger(__name__)

DEFAULT_MAX_SHARD_BYTES = 5 * 2**30
_EXTRA_FILE_GLOBS = ("tokenizer*", "special_tokens*", "vocab*", "merges*", "chat_template*",
                     "added_tokens*", "*.tiktoken", "spiece.model", "generation_config.json")


def _plan_outputs(adapter: Adapter, config: Any, plan: PruningPlan,
                  tensors: dict[str, TensorInfo]) -> list[OutTensor]:
    """Every output tensor with its shape, checking the dense shapes first."""
    d = adapter.dims(config)
    ops: dict[str, tuple] = {}
    for li, keep in enumerate(plan.layers):
        for name, op in layer_slices(adapter, d, li, keep).items():
            if name.endswith(".weight") and name not in tensors:
                raise CusprunError(f"Checkpoint has no tensor {name!r}: its names do not follow the "
                                   f"{adapter.architecture} layout cusprun expects")
            ops[name] = op
    out = []
    for name, src in sorted(tensors.items(), key=lambda kv: (str(kv[1].file), kv[1].start)):
        if name not in ops:
            out.append(OutTensor(name, src, src.shape))
            continue
        dim, idx, dense = ops[name]
        if len(src.shape) <= dim or src.shape[dim] != dense:
            raise CusprunError(f"Tensor {name!r} has shape {list(src.shape)}; the config implies size "
                               f"{dense} along dim {dim}")
        if src.dtype not in DTYPES:
            raise CusprunError(f"Tensor {name!r} has dtype {src.dtype}; cusprun slices "
                               f"{', '.join(DTYPES)}")
        shape = list(src.shape)
        shape[dim] = len(idx)
        out.append(OutTensor(name, src, tuple(shape), dim, idx))
    return out


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _param_counts(shapes: dict[str, tuple[int, ...]], adapter: Adapter, tied: bool) -> dict[str, int]:
    """Total and non-embedding counts as `count_params` would report for the loaded model."""
    embed, head = adapter.embedding_names()
    total = sum(_numel(s) for s in shapes.values())
    emb = _numel(shapes[embed]) if embed in shapes else 0
    head_n = _numel(shapes[head]) if head in shapes else 0
    if tied and embed in shapes and head in shapes:
        total -= head_n  # one tensor once loaded
        head_n = 0
    return {"total": total, "non_embedding": total - emb - head_n}


def _config_dict(dense: dict, adapter: Adapter, layout: str, widths: list[LayerWidths],
                 head_dim: int) -> dict:
    if layout == "uniform":
        cfg = dict(dense)
        cfg.update(widths[0].as_config())
        cfg["head_dim"] = head_dim
        try:  # the family's own config class must accept it, or from_pretrained would fail later
            adapter.config_class()(**{k: v for k, v in cfg.items() if k != "model_type"})
        except Exception as e:  # noqa: BLE001 - any refusal is reported with its reason
            raise SpecError(f"transformers' {adapter.spec.config_class} refuses the sliced config "
                            f"{widths[0].as_config()}: {e}") from e
        return cfg
    cfg = per_layer_config_dict(dense, adapter.architecture, [w.as_config() for w in widths])
    cfg["head_dim"] = head_dim
    return cfg


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> Path:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not overwrite:
        raise SpecError(f"Output directory {out_dir} exists and is not empty; choose a new path or "
                        "pass overwrite=True")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))


def _publish_dir(tmp: Path, out_dir: Path) -> None:
    if out_dir.exists():
        if out_dir.is_dir():
            shutil.rmtree(out_dir)
        else:
            out_dir.unlink()
    os.replace(tmp, out_dir)


def slice_checkpoint(model_dir: str | Path, plan: PruningPlan | dict, out_dir: str | Path, *,
                     model_fingerprint: str, card: dict | None = None,
                     compensation: Compensation | None = None,
                     max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES, overwrite: bool = False,
                     progress: bool = True) -> Path:
    """Write the pruned model `plan` describes as a smaller standard checkpoint in `out_dir`.

    Streams the dense safetensors tensor by tensor (peak memory: about one tensor), writes
    safetensors shards (+ index when more than one), config.json, tokenizer and generation
    files, `cusprun.json` (plan, kept indices, parameter counts) and a model card README.md.
    `card` may give base_model (a Hub id), expert (title), description, tags, license, language.
    `compensation` corrects the kept down_proj / o_proj columns (and adds output biases) in
    closed form from calibration Grams, one layer in memory at a time.
    Everything is checked before any weight is read; the directory appears atomically."""
    from cusprun.models.loading import load_config


    if not isinstance(plan, PruningPlan):
        plan = PruningPlan.model_validate(plan)
    check_identity(plan, model_fingerprint)
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if not (model_dir / "config.json").exists():
        raise CusprunError(f"{model_dir} has no config.json; give a local Hugging Face model directory")
    dense_cfg = json.loads((model_dir / "config.json").read_text())
    config = load_config(model_dir)
    adapter = Adapter.for_config(config)
    widths = validate_plan(plan, config, model_fingerprint=model_fingerprint)
    tensors = checkpoint_tensors(model_dir)
    outputs = _plan_outputs(adapter, config, plan, tensors)
    comp = compensation or Compensation(CompensationConfig(mode="none"))
    comp.check(adapter, len(widths))
    dense_cfg = {**dense_cfg, **bias_config(adapter, comp)}
    cfg = _config_dict(dense_cfg, adapter, plan.layout, widths, adapter.dims(config).head_dim)

    tied = bool(getattr(config, "tie_word_embeddings", False))
    sliced = {t.name: t.shape for t in outputs}
    outputs = compensated_outputs(adapter, config, plan, outputs, tensors, comp)
    if comp.config.adds_bias:
        down_dtype = tensors[adapter.module_names(0)["down"] + ".weight"].dtype
        outputs += missing_biases(cfg, outputs, down_dtype)
    params = {"dense": _param_counts({n: t.shape for n, t in tensors.items()}, adapter, tied),
              "pruned": _param_counts({t.name: t.shape for t in outputs}, adapter, tied)}
    params["removed"] = params["dense"]["total"] - _param_counts(sliced, adapter, tied)["total"]
    params["added_biases"] = params["pruned"]["total"] - _param_counts(sliced, adapter, tied)["total"]
    if params["removed"] != plan.removed_params:  # the plan and the checkpoint must agree
        raise CusprunError(f"Slicing would remove {params['removed']} parameters, the plan says "
                           f"{plan.removed_params}: checkpoint and config disagree")

    card = dict(card or {})
    base_model = card.get("base_model") or dense_cfg.get("_name_or_path") or model_dir.name
    tmp = _prepare_out_dir(out_dir, overwrite)
    try:
        shards = split_shards(outputs, max_shard_bytes)
        names = (["model.safetensors"] if len(shards) == 1 else
                 [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
        log.info("slicing %s (%s layout, %.1f%% of prunable params removed) into %d shard(s) at %s",
                 model_dir, plan.layout, 100 * plan.achieved_ratio, len(shards), out_dir)
        with tqdm(total=len(outputs), desc="slice", unit="tensor", disable=not progress) as bar:
            for name, shard in zip(names, shards):
                write_shard(tmp / name, shard, {"format": "pt"}, progress=bar)
        if len(shards) > 1:
            index = {"metadata": {"total_size": sum(t.nbytes for t in outputs)},
                     "weight_map": {t.name: n for n, s in zip(names, shards) for t in s}}
            (tmp / INDEX_FILE).write_text(json.dumps(index, indent=2, sort_keys=True))
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        for pattern in _EXTRA_FILE_GLOBS:
            for f in model_dir.glob(pattern):
                if f.is_file():
                    shutil.copy2(f, tmp / f.name)
        width_dicts = [w.as_config() for w in widths]
        meta = {**plan.model_dump(mode="json"),
                "base_model": base_model, "base_model_fingerprint": model_fingerprint,
                "base_architecture": adapter.architecture, "layer_widths": width_dicts,
                "params": params, "compensation": comp.describe(), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "cusprun_version": __version__}
        (tmp / "cusprun.json").write_text(json.dumps(meta, indent=2) + "\n")
        (tmp / "README.md").write_text(model_card(plan, base_model=base_model, params=params,
                                                  widths=width_dicts, card=card,
                                                  version=__version__,
                                                  compensation=comp.describe()))
        _publish_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("sliced model at %s: %d -> %d parameters", out_dir, params["dense"]["total"],
             params["pruned"]["total"])
    return out_dir
