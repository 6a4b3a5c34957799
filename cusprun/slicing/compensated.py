"""Compensation while slicing: the kept columns of down_proj / o_proj are written corrected
(cusprun.compensation.solve), and with bias compensation the output biases are added, together
with the zero biases the stock config then expects on the other projections (Llama's mlp_bias
also gives gate/up a bias; attention_bias gives q/k/v one). One layer's solve is in memory at a
time: the weight and its bias come from the same solve, cached until the next layer."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from cusprun.adapters import Adapter
from cusprun.compensation.config import CompensationConfig, check_bias_support
from cusprun.compensation.layer import compensate_role, head_channels
from cusprun.compensation.gram_set import GramSet
from cusprun.errors import SpecError
from cusprun.system import release_free_memory
from cusprun.plans.plan import PruningPlan
from cusprun.models.st_io import OutTensor, TensorInfo, read_tensor


@dataclass
class Compensation:
    """What slicing needs to compensate: the config and (unless mode is 'none') the Grams."""

    config: CompensationConfig
    grams: GramSet | None = None

    def check(self, adapter: Adapter, n_layers: int) -> None:
        check_bias_support(adapter, self.config)
        if self.config.enabled:
            if self.grams is None:
                raise SpecError(f"compensation mode {self.config.mode!r} needs calibration Grams.")
            if self.grams.n_layers != n_layers:
                raise SpecError(f"Grams cover {self.grams.n_layers} layers, the model has {n_layers}.")

    def describe(self) -> dict:
        out = self.config.model_dump()
        if self.grams is not None:
            out["calibration_tokens"] = self.grams.n_tokens
        return out


class _Solver:
    """Solves one layer's projection once; serves its weight and bias to the writer."""

    def __init__(self, comp: Compensation, tensors: dict[str, TensorInfo]):
        self.comp, self.tensors = comp, tensors
        self._key: tuple | None = None
        self._value: tuple[torch.Tensor, torch.Tensor | None] | None = None
        self._layer: tuple[int, Any] | None = None

    def get(self, li: int, role: str, prefix: str, cols: list[int]):
        key = (li, role)
        if self._key != key:
            if self._layer is None or self._layer[0] != li:
                self._layer = self._value = None
                release_free_memory()   # the previous layer's solve
                self._layer = (li, self.comp.grams.layer(li) if self.comp.config.enabled else None)
            g = self._layer[1]
            w = read_tensor(self.tensors[f"{prefix}.weight"])
            b = self.tensors.get(f"{prefix}.bias")
            self._value = compensate_role(w, read_tensor(b) if b is not None else None, role,
                                          cols, g, self.comp.config)
            self._key = key
        return self._value


def compensated_outputs(adapter: Adapter, config: Any, plan: PruningPlan, outputs: list[OutTensor],
                        tensors: dict[str, TensorInfo], comp: Compensation) -> list[OutTensor]:
    """`outputs` with down/o weights (and biases) computed by the compensation; new bias tensors
    follow their weight. Bias tensors the stock config will expect but that the checkpoint lacks
    are added by `missing_biases` once the output config is known."""
    d = adapter.dims(config)
    comp.check(adapter, d.n_layers)
    if not comp.config.enabled:
        return outputs
    solver = _Solver(comp, tensors)
    roles = {}
    for li, keep in enumerate(plan.layers):
        names = adapter.module_names(li)
        roles[names["down"]] = (li, "down", keep.ffn)
        roles[names["o"]] = (li, "o", head_channels(keep.heads, d.head_dim))
    out = []
    for t in outputs:
        prefix, _, kind = t.name.rpartition(".")
        if prefix not in roles or (kind == "bias" and not comp.config.adds_bias):
            out.append(t)       # untouched (LS leaves an existing output bias as it is)
            continue
        if kind == "bias":      # replaced by the compensated bias written after the weight
            continue
        li, role, cols = roles[prefix]
        out.append(OutTensor(t.name, t.src, t.shape,
                             make=lambda li=li, role=role, p=prefix, c=cols: solver.get(li, role, p, c)[0]))
        if comp.config.adds_bias:
            wdt = t.src.dtype
            out.append(OutTensor(f"{prefix}.bias", None, (t.shape[0],), dtype=wdt,
                                 make=lambda li=li, role=role, p=prefix, c=cols: solver.get(li, role, p, c)[1]))
    return out


def bias_config(adapter: Adapter, comp: Compensation) -> dict:
    """Config keys that make stock transformers create the compensated biases."""
    if not comp.config.adds_bias:
        return {}
    return {adapter.spec.down_bias_key: True, adapter.spec.o_bias_key: True}


def missing_biases(cfg: dict, outputs: list[OutTensor], dtype: str) -> list[OutTensor]:
    """Zero tensors for every bias the model built from `cfg` has but `outputs` lacks."""
    from transformers import AutoConfig, AutoModelForCausalLM

    import cusprun.models.per_layer  # noqa: F401 - registers the per-layer model type

    conf = AutoConfig.for_model(cfg["model_type"], **{k: v for k, v in cfg.items() if k != "model_type"})
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(conf)
    have = {t.name for t in outputs}
    extra = []
    for name, p in model.named_parameters():
        if name.endswith(".bias") and name not in have:
            extra.append(OutTensor(name, None, tuple(p.shape), dtype=dtype,
                                   make=lambda shape=tuple(p.shape): torch.zeros(shape)))
    return extra
