"""Peak memory of slicing vs the size of the dense checkpoint on disk.

Each measurement runs in a fresh subprocess and reads its own peak RSS (VmHWM). The
baseline is an idle process that imported the same modules (python + torch + transformers +
cusprun.slicing); it is subtracted so the number reflects slicing itself. Slicing a 3-layer tiny
model of the same family separates fixed costs (lazy imports, config classes) from the part that
grows with the checkpoint. For reference, the same is measured for loading the dense model with
transformers and touching its weights (one full copy in memory).

Default checkpoint: a randomly initialised Llama with SmolLM2-135M's shapes saved in fp32
(~540 MB, one shard). Give a model reference (directory, alias, .gguf) to measure a real one.

    python -m benchmarks run bench_slicing_memory [MODEL] [--ratio 0.25] [--dtype float32]
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
    from transformers import AutoModelForCausalLM
    from cusprun.plans.plan import PruningPlan
    from benchmarks.machine import peak_rss_bytes as peak_bytes  # VmHWM: this process's own
""")

_JOBS = {
    "idle": "",
    "slice": textwrap.dedent("""
        a = json.loads(sys.argv[1])
        plan = PruningPlan.model_validate_json(open(a["plan"]).read())
        cusprun.slicing.slice_checkpoint(a["src"], plan, a["out"], model_fingerprint=plan.base_fingerprint,
                                         progress=False)
    """),
    "load-dense": textwrap.dedent("""
        a = json.loads(sys.argv[1])
        m = AutoModelForCausalLM.from_pretrained(a["src"], dtype="auto")
        # Weights may still be lazily mapped from the file: touch them, as any use would.
        with torch.no_grad():
            total = sum(float(p.float().sum()) for p in m.parameters())
    """),
}


def _peak(job: str, args: dict) -> int:
    code = _PRELUDE + _JOBS[job] + "\nprint('PEAK', peak_bytes())\n"
    r = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True,
                       env=python_env())
    if r.returncode:
        raise RuntimeError(f"{job} failed:\n{r.stderr[-3000:]}")
    return int(next(line for line in r.stdout.splitlines() if line.startswith("PEAK")).split()[1])


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", help="model reference (default: random SmolLM2-135M-shaped Llama)")
    ap.add_argument("--ratio", type=float, default=0.25, help="share of prunable params to remove")
    ap.add_argument("--dtype", default="float32", help="dtype of the default random checkpoint")
    args, _ = ap.parse_known_args(argv)

    import torch
    from transformers import AutoConfig

    from tests.support import (make_tiny_model, smollm2_135m_shaped_config, uniform_plan_for_ratio,
                               write_random_model)

    with tempfile.TemporaryDirectory(prefix="cusprun-bench-slicemem-") as tmp:
        if args.model:
            from cusprun.models.sources import resolve_model

            r = resolve_model(args.model)
            src, fp, label = r.path, r.fingerprint, args.model
        else:
            src = write_random_model(smollm2_135m_shaped_config(), Path(tmp) / "dense",
                                     dtype=getattr(torch, args.dtype))
            fp, label = "random", f"random SmolLM2-135M-shaped Llama ({args.dtype})"
        plan = uniform_plan_for_ratio(AutoConfig.from_pretrained(src), args.ratio, fingerprint=fp)
        plan_file = Path(tmp) / "plan.json"
        plan_file.write_text(plan.model_dump_json())
        job = {"src": str(src), "out": str(Path(tmp) / "pruned"), "plan": str(plan_file)}

        ckpt = sum(f.stat().st_size for f in Path(src).glob("*.safetensors"))
        idle = _peak("idle", job)
        sliced = _peak("slice", job)
        # The same code path on a 3-layer tiny model of the family: imports and fixed costs.
        arch = AutoConfig.from_pretrained(src).architectures[0]
        tiny = make_tiny_model(arch, Path(tmp) / "tiny")[1]
        tiny_plan = Path(tmp) / "tiny-plan.json"
        tiny_plan.write_text(uniform_plan_for_ratio(AutoConfig.from_pretrained(tiny), args.ratio,
                                                    fingerprint="tiny").model_dump_json())
        fixed = _peak("slice", {"src": str(tiny), "out": str(Path(tmp) / "tiny-out"),
                                "plan": str(tiny_plan)})
        loaded = _peak("load-dense", job)
        out_bytes = sum(f.stat().st_size for f in Path(job["out"]).glob("*.safetensors"))

    res = Result("bench_slicing_memory", "Peak memory of slicing vs the dense checkpoint size",
                 vars(args))
    res.say(f"model: {label}; plan: uniform, {100 * plan.achieved_ratio:.1f}% of prunable params removed")
    res.say(f"dense checkpoint on disk: {_mib(ckpt)} ({ckpt:,} bytes); sliced: {_mib(out_bytes)}")
    res.say(f"baseline (idle python + torch + transformers + cusprun.slicing): {_mib(idle)} peak RSS")
    res.say()
    res.table(["process", "peak RSS", "above baseline", "/ checkpoint"],
              [[name, _mib(peak), _mib(peak - idle), f"{(peak - idle) / ckpt:.2f}x"]
               for name, peak in (("slice_checkpoint (streamed)", sliced),
                                  ("slice_checkpoint, tiny model", fixed),
                                  ("from_pretrained dense (reference)", loaded))])
    res.say()
    ratio = (sliced - idle) / ckpt
    res.say(f"of which fixed cost of the code path (imports, config classes; same on a tiny model): "
            f"{_mib(fixed - idle)}; size-dependent part: {_mib(sliced - fixed)} "
            f"({(sliced - fixed) / ckpt:.2f}x the checkpoint)")
    res.say(f"slicing peak / checkpoint: {ratio:.2f}x (goal <= 1.1x, never two full copies): "
            f"{'yes' if ratio <= 1.1 else 'no'}")
    res.headline = (f"Slicing {label} ({_mib(ckpt)} on disk) peaks at {ratio:.2f}x the checkpoint size "
                    f"above an idle process (goal <= 1.1x); loading it with from_pretrained: "
                    f"{(loaded - idle) / ckpt:.2f}x")
    res.values = {"checkpoint_bytes": ckpt, "sliced_bytes": out_bytes, "idle_peak": idle,
                  "slice_peak": sliced, "tiny_slice_peak": fixed, "load_dense_peak": loaded,
                  "slice_ratio": ratio, "achieved_ratio": plan.achieved_ratio}
    res.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
