"""Every benchmark, in one place: its name, module, cost class, what it writes and what it
measures. `python -m benchmarks list` shows this table, `python -m benchmarks run NAME` runs one,
`python -m benchmarks cheap` (`make bench`) runs every cheap one.

Cost classes, on the two-core CPU box the recorded results come from: `cheap` takes seconds to a
few minutes, `minutes` up to an hour, `hours` more (the quality benchmarks and whole demo builds,
several times over). A benchmark's JSON goes to benchmarks/results/ (CUSPRUN_RESULTS_DIR sends it
elsewhere), and `make results` renders docs/results.md from it."""
from __future__ import annotations

from dataclasses import dataclass

COSTS = ("cheap", "minutes", "hours")


@dataclass(frozen=True)
class Entry:
    name: str                 # what `python -m benchmarks run NAME` takes
    module: str               # the module that runs it: `python -m MODULE ARGS` does the same
    cost: str                 # one of COSTS ("tool" for TOOLS)
    writes: tuple[str, ...]   # files it writes, relative to the repository root
    about: str                # one line: what it measures or does
    args: tuple[str, ...] = ()   # arguments used when none are given (`run NAME`, `cheap`)

    def __post_init__(self) -> None:
        if self.cost not in (*COSTS, "tool"):
            raise ValueError(f"{self.name}: cost {self.cost!r} is none of {COSTS}")


R = "benchmarks/results/"

BENCHMARKS: tuple[Entry, ...] = (
    Entry("bench_stats", "benchmarks.bench_stats", "cheap", (R + "bench_stats-<device>.json",),
          "statistics pass vs plain forward pass: time and peak memory"),
    Entry("bench_prefill", "benchmarks.bench_prefill", "cheap", (R + "bench_prefill-<device>.json",),
          "prefill throughput of a sliced (pruned) model vs its dense base"),
    Entry("bench_slicing_memory", "benchmarks.bench_slicing_memory", "cheap",
          (R + "bench_slicing_memory.json",), "peak memory of slicing vs the dense checkpoint size"),
    Entry("language_cross", "benchmarks.language_cross", "cheap", (R + "language_cross.json",),
          "language specificity from two recorded builds' reports (no model is run)",
          args=("fr-health-qa", "es-history-qa")),
    Entry("bench_interval_coverage", "benchmarks.bench_interval_coverage", "minutes",
          (R + "interval_coverage.json",),
          "coverage of the report's 95 % intervals on simulated small samples"),
    Entry("bench_lm_head", "benchmarks.bench_lm_head", "minutes", (R + "bench_lm_head.json",),
          "LM head log-probs on a CPU: cache-sized tiles vs one big chunk (Gemma 3 270M)"),
    Entry("bench_mc", "benchmarks.bench_mc", "minutes", (R + "bench_mc.json",),
          "multiple-choice scoring: packed options vs one sequence per option"),
    Entry("base_model_loss", "benchmarks.base_model_loss", "minutes", (R + "base_model_loss.json",),
          "held-out loss (nats/token, bits/byte) of the embedded base models on the same documents"),
    Entry("record_build", "benchmarks.record_build", "minutes",
          (R + "<expert>/report.json", R + "<expert>/build.json", R + "<expert>/sweep.json"),
          "an expert's build and comparison (--demo; --demo --full or --profile NAME: an hour)"),
    Entry("quality_calibration", "benchmarks.quality_calibration", "hours",
          (R + "quality_calibration.json",), "held-out retention of the demo expert against "
          "calibration size"),
    Entry("quality_ablation", "benchmarks.quality_ablation", "hours", (R + "quality_ablation.json",),
          "what each piece of the selection contributes to the demo expert's quality"),
    Entry("quality_rounds", "benchmarks.quality_rounds", "hours", (R + "quality_rounds.json",),
          "held-out retention and build time of the demo expert at 25 % in k = 1, 2, 4 rounds"),
    Entry("quality_baselines", "benchmarks.quality_baselines", "hours",
          (R + "quality_baselines.json",),
          "the baselines on the demo as each defines itself, and how much general text FLAP needs"),
    Entry("bench_quality_overhead", "benchmarks.bench_quality_overhead", "hours",
          (R + "bench_quality_overhead.json",),
          "the demo build with and without measured allocation + compensation: wall time"),
    Entry("bench_sweep_precision", "benchmarks.bench_sweep_precision", "hours",
          (R + "bench_sweep_precision.json",),
          "the ratio sweep in float32 vs bfloat16: time per point and retention moved"),
    Entry("quality_heal", "benchmarks.quality_heal", "hours", (R + "quality_heal.json",),
          "the demo expert and wanda-sp at 25 %: one-shot vs healed at two token budgets"),
    Entry("bench_llamacpp", "benchmarks.bench_llamacpp", "minutes", (R + "llamacpp.json",),
          "the demo expert in llama.cpp (F16, Q8_0): prefill/decode tokens/s and file sizes vs "
          "dense; needs make llamacpp"),
    Entry("bench_heal_memory", "benchmarks.bench_heal_memory", "minutes",
          (R + "bench_heal_memory.json",),
          "peak memory of healing (full and LoRA) at small scale, extrapolated to 8B on one GPU"),
    Entry("bench_scale", "benchmarks.bench_scale", "hours", (R + "scale.json",),
          "a whole build on random checkpoints at Llama-3.1-8B widths (8, 16, 32 layers): "
          "memory, time, disk reads per layer"),
)

TOOLS: tuple[Entry, ...] = (
    Entry("render_results", "benchmarks.render_results", "tool",
          ("docs/results.md", "README.md", "cusprun/pipeline/demo_baseline.json"),
          "render the results page and the README's results block (`make results`)"),
    Entry("build_runner", "benchmarks.build_runner", "tool", ("RESULT.json (its first argument)",),
          "`cusprun ARGS` in this process, recording its own peak RSS, reads and CPU time"),
    Entry("scale.checkpoint", "benchmarks.scale.checkpoint", "tool", ("OUT_DIR/",),
          "write a random bfloat16 Llama checkpoint of any size, shard by shard"),
    Entry("scale.verify", "benchmarks.scale.verify", "tool", ("--out FILE (else prints)",),
          "check a published expert: stock load, and logits against the pruned dense model"),
)
"""Modules that run on their own but measure nothing by themselves: runnable by name, never by
`cheap`."""

BY_NAME: dict[str, Entry] = {e.name: e for e in (*BENCHMARKS, *TOOLS)}


def cheap() -> list[Entry]:
    return [e for e in BENCHMARKS if e.cost == "cheap"]
