"""ExpertSpec: everything that defines one customized expert. Used by the CLI (YAML), by the
Prefect flow (its parameters, rendered as the UI form) and by customer profiles."""
from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cusprun.compensation.config import CompensationConfig
from cusprun.errors import SpecError
from cusprun.engine.placement import Streaming
from cusprun.healing.config import HealSpec
from cusprun.plans.config import MAX_RATIO, PruneConfig, ratio_problem
from cusprun.plans.rounds import MAX_ROUNDS
from cusprun.models.precision import Precision

Dimension = Literal["language", "domain", "task"]
DIMENSIONS: tuple[str, ...] = ("language", "domain", "task")
BaselineName = Literal["random", "magnitude", "wanda-sp", "flap", "flap-score"]
Stage = Literal["corpus", "stats", "grams", "scores", "plan", "baseline", "slice", "heal",
                "evaluate"]
ExecutionMode = Literal["local", "distributed"]
DeviceName = Literal["auto", "cpu", "cuda"]


def _default(model, name: str):
    """The library's default of a setting: declared once, on the config it configures."""
    return model.model_fields[name].default


_PRUNE, _COMP = PruneConfig, CompensationConfig


# GGUF types a build can publish (cusprun.export.GGUF_TYPES; a test keeps the two equal).
GGUFTypeName = Literal["F16", "Q8_0", "Q4_K_M"]

class DimensionSpec(BaseModel):
    """One dimension of the expert: its value and the corpora that show what it needs."""

    model_config = ConfigDict(extra="forbid", title="Dimension")  # the UI form's label
    value: str = Field(description="e.g. 'en' for a language, 'health' for a domain, 'qa' for a task")
    sources: list[str] = Field(
        default_factory=list,
        description="Corpus source URIs (bundled://..., hf://..., s3://..., local paths). "
                    "Empty: the bundled demo corpus for this dimension and value.")
    text_field: str = Field("text", description="Column or JSON field holding the text")
    max_docs: int = Field(128, ge=1, le=100_000, description=(
        "Calibration documents sampled per corpus (128: where held-out retention stops improving "
        "on the demo, see benchmarks/quality_calibration.py)"))
    eval_sources: list[str] = Field(default_factory=list, title="Evaluation sources", description=(
        "Out-of-source text of this value (same URI kinds as sources, text in text_field), e.g. "
        "the customer's own documents: each source adds the loss set 'dimension=value "
        "(out-of-source: <name>)', all of its documents held out, to measure what the expert "
        "keeps on text its calibration never read. Empty: a bundled source other than the "
        "calibration one where there is one (another Bible translation for a bundled language)"))

    @field_validator("eval_sources")
    @classmethod
    def _eval_sources(cls, v: list[str]) -> list[str]:
        v = [s.strip() for s in v]
        if "" in v:
            raise ValueError("eval_sources holds an empty source; give corpus URIs or paths")
        if (dup := sorted({s for s in v if v.count(s) > 1})):
            raise ValueError(f"eval_sources lists {dup[0]!r} twice")
        return v


class EvaluationOptions(BaseModel):
    """Held-out evaluation of dense, expert and baselines: which sets, how much, speed timing."""

    model_config = ConfigDict(extra="forbid", title="Evaluation")
    SPEED_ONLY: ClassVar[tuple[str, ...]] = ("sweep_workers",)
    """Settings that change how fast the report is made, not what it says: left out of its key."""
    enabled: bool = True
    other_languages: list[str] = Field(default_factory=lambda: ["de", "fr"],
                                       description="Languages measured to show what the expert gave up")
    max_docs: int = Field(24, ge=1, le=10_000, description="Held-out documents per evaluation set")
    out_of_source: bool = Field(True, description=(
        "Also score each dimension on out-of-source text (its eval_sources, else a bundled source "
        "other than the calibration one where there is one): what the expert keeps on text its "
        "calibration never read, beside the in-source sets; off: in-source sets only"))
    min_loss_tokens: int = Field(1024, ge=0, le=1_000_000, description=(
        "Scored tokens each loss set reaches where its held-out documents allow: a set of short "
        "documents (QA answers, ~25 tokens each) takes more than max_docs of them, so its loss "
        "is not noise; 0: exactly max_docs"))
    mc_items: int = Field(24, ge=1, le=10_000, title="MC items",
                          description="Multiple-choice items per task")
    max_tokens: int = Field(256, ge=16, le=4096)
    measure_speed: bool = True
    speed_iters: int = Field(3, ge=1, le=100, description="Timed prefill/decode repetitions per model")
    sweep_ratios: list[float] = Field(default_factory=lambda: [0.1, 0.25, 0.4], description=(
        "Ratios at which Cus-Prun and every baseline are also measured (held-out loss, masked in "
        "memory) for the retention-vs-ratio table and plot; empty: no sweep"))
    sweep_compensation: bool = Field(True, description=(
        "Measure every sweep point with and without compensation (else only with the build's setting)"))
    sweep_precision: Precision = Field("auto", description=(
        "Precision of the sweep's forwards: bfloat16 halves their time where matmuls are native "
        "in bfloat16 (recent GPUs, CPUs with AVX512-BF16 or AMX; 'auto' picks it only there) and "
        "moved retention by 0.0007 on average on the demo (at most 0.015, a badly damaged baseline). "
        "float32 is float32 on every device (a GPU then holds float32 weights); bfloat16 on a GPU "
        "also holds the weights in bfloat16. The main comparison is float32 on every device"))
    sweep_workers: int | Literal["auto"] = Field("auto", description=(
        "Models of the main comparison, and sweep points, measured at once, each on its own copy "
        "in memory: 'auto' is 2 on a CPU with 2+ cores when two fit in a quarter of free memory "
        "(same numbers; speed is still timed one model at a time), else 1; GPUs measure one at "
        "a time"))

    @field_validator("sweep_workers")
    @classmethod
    def _workers(cls, v: int | str) -> int | str:
        if v != "auto" and not 1 <= v <= 64:
            raise ValueError(f"sweep_workers {v!r}: give 'auto' or a whole number from 1 to 64")
        return v

    @field_validator("sweep_ratios")
    @classmethod
    def _sweep(cls, v: list[float]) -> list[float]:
        for r in v:
            if (problem := ratio_problem(r)) is not None:
                raise ValueError(f"sweep {problem}")
        return sorted(set(v))


class ExpertSpec(BaseModel):
    """A customized expert: base model, up to three dimensions, pruning and evaluation settings."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field("en-health-qa", description="Expert name: lowercase letters, digits, '-' and '_'")
    base_model: str = Field("smollm2-135m", description="Alias, hub id[@revision], local dir, s3:// prefix or .gguf")
    language: DimensionSpec | None = Field(default_factory=lambda: DimensionSpec(value="en"))
    domain: DimensionSpec | None = Field(default_factory=lambda: DimensionSpec(value="health"))
    task: DimensionSpec | None = Field(default_factory=lambda: DimensionSpec(value="qa"))
    general: DimensionSpec | None = Field(
        default_factory=lambda: DimensionSpec(value="en"),
        description="General text: protects units it needs; feeds the wanda-sp and flap baselines")
    rule: Literal["exact-ratio", "paper"] = _default(_PRUNE, "rule")
    score: Literal["centered", "impact", "percentile"] = Field(_default(_PRUNE, "score"), description=(
        "exact-ratio's unit score: 'centered' (per dimension, the impact once compensation "
        "restores the unit's mean, relative to its layer; max over dimensions), 'impact' (mean "
        "impact, likewise) or 'percentile' (max per-document rank percentile)"))
    allocation: Literal["measured", "rank"] = Field(_default(_PRUNE, "allocation"), description=(
        "'measured': head structures and FFN widths chosen by the held-back loss of masked "
        "candidates; 'rank': by one global order of unit scores"))
    protect_fraction: float = Field(_default(_PRUNE, "protect_fraction"), ge=0, lt=1, description=(
        "With a general corpus: units whose mean rank percentile over its documents is at least "
        "1 - protect_fraction are never pruned (0: off). Higher keeps more of what general text "
        "needs; too high makes a large target_ratio unreachable (the plan says so)"))
    probe_precision: Precision = Field("auto", description=(
        "Precision of the allocation probes' forwards ('auto': bfloat16 where matmuls are native "
        "in it, else float32). float32 is float32 on every device (a GPU then holds float32 "
        "weights); bfloat16 on a GPU also holds the weights in bfloat16. On the demo bfloat16 took "
        "0.6x the time per candidate and shifted every candidate's damage alike (-0.0007)"))
    holdback_docs: int = Field(8, ge=0, le=10_000, description=(
        "Calibration docs per dimension corpus kept out of the statistics to measure candidate "
        "allocations (allocation='measured')"))
    compensation: Literal["none", "bias", "ls", "ls+bias"] = Field(_default(_COMP, "mode"), description=(
        "Closed-form correction of kept weights: 'ls' refits kept down_proj/o_proj columns by ridge "
        "least squares on calibration tokens; 'bias' adds removed units' mean to output biases "
        "(FLAP; Llama only); 'none'. Applied to Cus-Prun and every baseline but flap, which "
        "brings FLAP's own bias compensation"))
    ridge: float = Field(_default(_COMP, "ridge"), ge=0, le=10,
                         description="Relative ridge term of the 'ls' refit")
    gram_docs: int | None = Field(None, ge=1, le=100_000, description=(
        "Cap on the calibration docs per corpus whose activations feed the compensation Grams "
        "(the first ones; unset: all). The Grams cost a forward pass plus a width^2 product per "
        "token; on the demo, halving them cost up to 0.03 of held-out retention on short QA texts"))
    gram_precision: Precision = Field("auto", description=(
        "Precision of the compensation Grams' per-batch x^T x products ('auto': bfloat16 where "
        "matmuls are native in it, else float32; sums stay float64). The statistics forward that "
        "feeds them runs in the worker's weight dtype: float32 on a CPU, bfloat16 on a GPU. On the "
        "demo bfloat16 made them about half as costly and moved compensated retention by at most 0.002"))
    target_ratios: list[float] = Field(default_factory=lambda: [_default(_PRUNE, "target_ratio")],
                                       description="Fractions of prunable parameters to remove; the first is published")
    rounds: int = Field(1, ge=1, le=MAX_ROUNDS, description=(
        "Iterative pruning: reach each target ratio in this many rounds, re-collecting the "
        "statistics (and Grams) on the partly pruned, compensated model before each next plan "
        "(1: one shot; docs/method.md, Iterative pruning)"))
    sigma: float = Field(_default(_PRUNE, "sigma"), gt=0, lt=1, description="Per-document irrelevant fraction (rule='paper')")
    layout: Literal["uniform", "per_layer"] = _default(_PRUNE, "layout")
    ffn_multiple: int = Field(_default(_PRUNE, "ffn_multiple"), ge=1, le=65536, title="FFN multiple", description=(
        "Round kept FFN widths to a multiple of this (1: exact target; 64 or 128: faster matmuls, "
        "target met to within about that many neurons per layer)"))
    baselines: list[BaselineName] = Field(
        default_factory=lambda: ["random", "magnitude", "wanda-sp", "flap", "flap-score"],
        description=("Baselines compared with the expert: 'flap' is FLAP as published (its own "
                     "per-layer widths and bias compensation), 'flap-score' FLAP's scores under "
                     "this build's layout and compensation (docs/method.md, Baselines)"))
    max_tokens: int = Field(256, ge=16, le=8192, description="Tokens per calibration document")
    batch_size: int = Field(8, ge=1, le=512)
    min_docs: int = Field(_default(_PRUNE, "min_docs"), ge=1)
    heal: HealSpec | None = Field(None, description=(
        "Optional healing after slicing: the expert (and the baselines heal.baselines names) "
        "distilled from the dense model on calibration and general text for a token budget "
        "(docs/healing.md); the published expert is then the healed one. Unset: no healing"))
    evaluation: EvaluationOptions = Field(default_factory=EvaluationOptions)
    gguf: list[GGUFTypeName] = Field(default_factory=list, title="GGUF types", description=(
        "GGUF files for llama.cpp published beside the safetensors expert (uniform layout "
        "only): F16, Q8_0 (llama.cpp's converter, the gguf extra) and Q4_K_M (llama.cpp's "
        "quantizer, the llamacpp extra); docs/llamacpp.md. Empty: safetensors only"))
    storage_root: str = Field("./artifacts", description="Local directory or s3://bucket/prefix")
    execution: ExecutionMode = Field("local", description="'distributed' runs statistics on the gpu work pool")
    device: DeviceName = Field("auto", description=(
        "Where passes run: 'cuda', 'cpu', or 'auto' (CUDA when this worker has it; the gpu work "
        "pool in distributed mode). Part of every cache key: CPU and GPU numbers differ"))
    streaming: Streaming = Field("auto", description=(
        "How passes hold the model: 'always' reads one decoder layer at a time from its "
        "safetensors checkpoint (memory: one layer), 'never' loads it whole, 'auto' streams only "
        "when the weights take more than half the device's free memory. Same numbers either way"))
    hub_kernels: bool = Field(False, description=(
        "Let transformers fetch Hub kernels at model load (needs the hub or a populated kernel "
        "cache; off: every load works on an air-gapped worker)"))
    seed: int = 0

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,62}", v):
            raise ValueError(f"expert name {v!r} must be lowercase letters, digits, '-' or '_' (max 63)")
        return v

    @field_validator("target_ratios")
    @classmethod
    def _ratios(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError(f"target_ratios must hold at least one ratio in (0, {MAX_RATIO:g}]")
        for r in v:
            if (problem := ratio_problem(r)) is not None:
                raise ValueError(f"target {problem}")
        return v

    @model_validator(mode="after")
    def _some_dimension(self) -> "ExpertSpec":
        if not self.dimensions():
            raise ValueError("an expert needs at least one of language, domain, task")
        if self.rule == "exact-ratio" and self.allocation == "measured" and self.holdback_docs < 1:
            raise ValueError("allocation='measured' needs holdback_docs >= 1 (held-back documents "
                             "to measure candidates); set holdback_docs or allocation='rank'")
        groups = {**self.dimensions(), **({"general": self.general} if self.general else {})}
        calibrating = {s: g for g, dim in groups.items() for s in dim.sources}
        for g, dim in groups.items():
            for s in dim.eval_sources:
                if s in calibrating:
                    raise ValueError(f"{g}.eval_sources {s!r} is a calibration source of "
                                     f"{calibrating[s]}: out-of-source text must be text no "
                                     "calibration reads")
        return self

    def dimensions(self) -> dict[str, DimensionSpec]:
        return {d: getattr(self, d) for d in DIMENSIONS if getattr(self, d) is not None}


def load_spec(data: dict | str) -> ExpertSpec:
    """Validate a dict or a YAML file path into an ExpertSpec; errors say which field and why."""
    import yaml
    from pydantic import ValidationError

    if isinstance(data, str):
        path = data
        try:
            with open(path) as f:
                data = yaml.safe_load(f) or {}
        except OSError as e:
            raise SpecError(f"Cannot read spec file {path!r}: {e.strerror or e}") from e
        except yaml.YAMLError as e:
            where = getattr(e, "problem_mark", None)
            at = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
            raise SpecError(f"Spec file {path!r} is not valid YAML{at}: "
                            f"{getattr(e, 'problem', None) or e}") from e
        if not isinstance(data, dict):
            raise SpecError(f"Spec file {path!r} must be a YAML mapping of ExpertSpec fields "
                            f"(name, base_model, language, ...), not a {type(data).__name__}")
    try:
        return ExpertSpec.model_validate(data)
    except ValidationError as e:
        raise SpecError(validation_message("Invalid expert spec", e)) from e


def validation_message(what: str, e) -> str:
    """A pydantic ValidationError as 'what: field: problem (got value)', one line per problem
    (one line in all when there is one problem)."""
    lines = []
    for err in e.errors():
        msg = err["msg"].removeprefix("Value error, ")
        got = (f" (got {err['input']!r})" if err["loc"] and "input" in err
               and err["type"] != "missing" else "")
        where = ".".join(map(str, err["loc"]))
        lines.append(f"{where}: {msg}{got}" if where else msg)
    return f"{what}: {lines[0]}" if len(lines) == 1 else f"{what}:\n  " + "\n  ".join(lines)
