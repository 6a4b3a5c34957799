"""Memory, time and disk reads of a whole `cusprun build` as the model gets deeper.

For each depth of --layers (default 8,16,32) at Llama-3.1-8B widths (or smaller ones for trial
runs): write a random bfloat16 checkpoint (benchmarks/scale/checkpoint.py, shard by shard), drop
it from the page cache, run `cusprun build --spec` on it in a subprocess with a fresh artifact
store, cache and Prefect home, watched while it runs (benchmarks.build_runner with
benchmarks/scale/monitor.py), then check the published expert (benchmarks/scale/verify.py, in
a process of its own). Results go to benchmarks/results/scale.json.

The build is the default one (statistics + Grams, measured allocation, ls compensation, slicing,
evaluation) on the smallest calibration that runs every stage: per dimension (language, domain,
task) and for general text, generated word-salad documents in local .jsonl files, 8 calibration
documents x --max-tokens 64 tokens, 4 more held back for the allocation probes, and 4 held-out
documents per evaluation set. Reduced on purpose (the point is memory and cost per layer, not
quality on random weights): one baseline, magnitude (the other pass that loads the whole dense
model, and the cheapest: no forward pass, no general statistics needed), and an evaluation
without multiple-choice items (plain text has none), other languages, ratio sweep or speed
timing. --baselines and --measure-speed put more back.

Measured per run (the build process only, not the temporary Prefect server it starts):
- peak_rss_gb: VmHWM of the build process as it exits (benchmarks/build_runner.py); if it is
  killed, the last VmHWM sampled every second from /proc/<pid>/status;
- read_gb: /proc/<pid>/io read_bytes of the build (bytes fetched from storage; page-cache hits
  are not counted, so the checkpoint is dropped from the cache first: a lower bound on reads);
  read_before_stages_gb of it came before the first stage (libraries, and the fingerprint's
  pass over the checkpoint); checkpoint_reads = read_gb / checkpoint_gb, which at small widths
  mostly counts library files instead;
- stage_s: wall time per stage kind (corpus, stats, grams, plan, baseline, slice, evaluate,
  publish) from the build's "<stage>: started" / "<stage>: done in Xs" log lines, first start
  to last end (the flow runs corpora, statistics, plans and slices concurrently, so kinds
  overlap); stage_sum_s adds up the runs of each kind; stages_wall_s runs from the first
  stage's start to the last one's end (no process start, imports or Prefect server);
  per_layer_s: wall_s, stages_wall_s and stage_s divided by the depth;
- disk_peak_gb: the largest drop in free space on the work directory's filesystem (other
  processes on the machine count too).

    python -m benchmarks run bench_scale [--layers 8,16,32] [--hidden 256 --ffn 512 ...]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from benchmarks import module_command, python_env
from benchmarks.build_runner import build_process
from benchmarks.machine import describe, mem_available_bytes
from benchmarks.results_io import git_state, results_dir
from benchmarks.scale.checkpoint import LlamaWidths, widths_arguments, widths_from, write_checkpoint
from benchmarks.scale.workload import CALIB_DOCS, spec_for, write_corpora

EXPERT = "scale-bench"


def drop_page_cache(model_dir: Path) -> bool:
    """Flush the checkpoint and ask the kernel to forget its pages (no root needed for our own
    files), so the build's disk reads count what it really reads."""
    ok = True
    for f in model_dir.glob("*.safetensors"):
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError:
            ok = False
        finally:
            os.close(fd)
    return ok


def disk_estimate(w: LlamaWidths, dimensions: int, baselines: int, max_tokens: int) -> int:
    """Bytes the build writes besides the checkpoint: each calibration corpus's Grams in the
    store's format (cusprun.compensation.gram_set: the Gram or the tokens' inputs, whichever is
    smaller; inputs here), twice while a scratch copy is committed, and a sliced checkpoint per
    plan (counted at the dense size). A local store hard-links the committed and published
    copies (cusprun.storage.ArtifactStore.put_file), so they take no more space."""
    from cusprun.compensation.gram_set import gram_file_bytes

    per = gram_file_bytes(w.layers, {"down": w.ffn, "o": w.heads * w.head_dim},
                          CALIB_DOCS * max_tokens)
    return 2 * dimensions * per + w.nbytes() * (1 + baselines)


def _dir_gb(path: Path) -> float:
    return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e9, 4)


def _env(run_dir: Path, device: str) -> dict:
    env = {**os.environ, "CUSPRUN_CACHE": str(run_dir / "cache"), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "USE_HUB_KERNELS": os.environ.get("USE_HUB_KERNELS", "0"),
           "TQDM_DISABLE": "1"}
    if not env.get("PREFECT_API_URL"):     # the CLI's temporary server: its own database
        env["PREFECT_HOME"] = str(run_dir / "prefect")
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def run_depth(layers: int, args: argparse.Namespace) -> dict:
    w = widths_from(args, layers)
    run_dir = Path(args.workdir) / f"scale-{layers}L-{datetime.now().strftime('%Y%m%dT%H%M%S')}"
    run_dir.mkdir(parents=True)
    baselines = [b for b in args.baselines.split(",") if b]
    res: dict = {"layers": layers, "hidden": w.hidden, "ffn": w.ffn, "heads": w.heads,
                 "kv_heads": w.kv_heads, "head_dim": w.head_dim, "vocab": w.vocab,
                 "params": w.n_params(), "checkpoint_gb": round(w.nbytes() / 1e9, 3),
                 "device": args.device, "baselines": baselines, "completed": False,
                 "stock_load_ok": False}
    free = shutil.disk_usage(args.workdir).free
    need = w.nbytes() + disk_estimate(w, 3, len(baselines), args.max_tokens)
    res.update(disk_free_before_gb=round(free / 1e9, 2), disk_estimate_gb=round(need / 1e9, 2))
    try:
        if need > free and not args.ignore_disk_estimate:
            res["error"] = (f"needs about {need / 1e9:.1f} GB of disk (checkpoint + Gram inputs + "
                            f"sliced copies), {free / 1e9:.1f} GB free in {args.workdir}; "
                            "give --workdir on a larger disk or --ignore-disk-estimate")
            return res
        info = write_checkpoint(run_dir / "model", w, seed=args.seed)
        res["checkpoint_write_s"] = info["seconds"]
        res["page_cache_dropped"] = drop_page_cache(run_dir / "model")
        corpora = write_corpora(run_dir / "corpora", seed=args.seed)
        spec = spec_for(run_dir / "model", corpora, run_dir / "store", name=EXPERT,
                        max_tokens=args.max_tokens, baselines=baselines,
                        measure_speed=args.measure_speed)
        limit = int((args.max_rss_gb or 0.85 * mem_available_bytes() / 1e9) * 1e9)
        mon = build_process(spec, run_dir, "build", env=_env(run_dir, args.device), cwd=run_dir,
                            monitor={"timeout_s": args.timeout, "disk_path": args.workdir,
                                     "rss_limit": limit}).monitored
        res.update(mon)
        res["completed"] = mon["rc"] == 0
        res["checkpoint_reads"] = round(mon["read_gb"] / max(res["checkpoint_gb"], 1e-9), 2)
        res["per_layer_s"] = {"wall": round(mon["wall_s"] / layers, 3),
                              "stages_wall": round((mon["stages_wall_s"] or 0) / layers, 3),
                              **{k: round(v / layers, 3) for k, v in mon["stage_s"].items()}}
        if (run_dir / "store").exists():
            res["store_gb"] = _dir_gb(run_dir / "store")
        if res["completed"]:
            res.update(_verify(run_dir, args))
        else:
            res["error"] = _failure(mon, args.timeout)
    except KeyboardInterrupt:   # Ctrl-C or SIGTERM (a timeout around this script)
        res["error"] = res["interrupted"] = "interrupted: the build was stopped"
    except Exception as e:  # noqa: BLE001 - one failed depth still leaves the others' results
        res["error"] = f"{type(e).__name__}: {e}"
    finally:
        res["kept"] = str(run_dir) if args.keep else None
        if not args.keep:
            shutil.rmtree(run_dir, ignore_errors=True)
    return res


def _failure(mon: dict, timeout: float) -> str:
    """Why the build did not complete, in one line."""
    rc = mon["rc"]
    if mon["timed_out"]:
        why = f"stopped after the {timeout:g}s timeout"
    elif mon["stopped_over_rss_limit"]:
        why = f"stopped: its RSS passed {mon['rss_limit_gb']} GB (--max-rss-gb)"
    elif rc < 0:
        why = f"killed by signal {-rc}" + (" (SIGKILL: the kernel's OOM killer, or another process)"
                                           if rc == -9 else "")
    else:
        why = f"exited with rc {rc}"
    return f"build {why}; last log line: {mon['log_tail'][-1] if mon['log_tail'] else '(none)'}"


def _verify(run_dir: Path, args: argparse.Namespace) -> dict:
    out = run_dir / "verify.json"
    cmd = module_command("benchmarks.scale.verify", "--store", str(run_dir / "store"),
                         "--name", EXPERT, "--dense", str(run_dir / "model"),
                         "--reference", args.reference, "--out", str(out))
    env = python_env({**_env(run_dir, args.device), "CUDA_VISIBLE_DEVICES": ""})   # on CPU
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"verify_error": f"verification took over {args.timeout}s"}
    if not out.exists():
        return {"verify_error": (p.stderr or p.stdout).strip().splitlines()[-1:] or f"rc {p.returncode}"}
    v = json.loads(out.read_text())
    return {"stock_load_ok": v["stock_load_ok"], "logits_match": v["logits_match"],
            "expert_gb": v["expert_gb"], "verify": v}


def machine() -> dict:
    """The shared machine record (benchmarks.machine) plus the transformers version."""
    import transformers

    return {**describe(), "transformers": transformers.__version__}


def table(runs: list[dict]) -> str:
    kinds = sorted({k for r in runs for k in r.get("stage_s", {})})
    head = ["layers", "ckpt GB", "done", "stock load", "logits", "peak RSS GB", "read GB", "wall s",
            "stages s", "stages/layer s", *[f"{k} s" for k in kinds]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for r in runs:
        st = r.get("stage_s", {})
        cells = [r["layers"], r["checkpoint_gb"], "yes" if r["completed"] else "NO",
                 "ok" if r["stock_load_ok"] else "NO",
                 {True: "match", False: "DIFFER", None: "-"}[r.get("logits_match")],
                 r.get("peak_rss_gb", "-"), r.get("read_gb", "-"), r.get("wall_s", "-"),
                 r.get("stages_wall_s", "-"), r.get("per_layer_s", {}).get("stages_wall", "-"),
                 *[st.get(k, "-") for k in kinds]]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def summary(runs: list[dict]) -> list[str]:
    done = sorted((r for r in runs if r["completed"] and r.get("peak_rss_gb")), key=lambda r: r["layers"])
    if len(done) < 2:
        return []
    lo, hi = done[0], done[-1]
    ratio = hi["peak_rss_gb"] / lo["peak_rss_gb"]
    return [f"peak RSS {hi['layers']} layers / {lo['layers']} layers: {ratio:.2f}x "
            f"({'flat in depth' if ratio <= 1.3 else 'NOT flat'}: goal <= 1.3x)",
            "wall per layer (whole command / stages only): " + ", ".join(
                f"{r['layers']} layers {r['per_layer_s']['wall']}s / {r['per_layer_s']['stages_wall']}s"
                for r in done)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", default="8,16,32", help="comma-separated depths (default 8,16,32)")
    widths_arguments(p)
    p.add_argument("--workdir", default=os.environ.get("TMPDIR", "/tmp"),
                   help="scratch directory for checkpoints and stores (needs the disk: see df)")
    p.add_argument("--keep", action="store_true", help="keep each run's directory")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="cpu hides GPUs from the build; cuda requires one; auto: cuda when visible")
    p.add_argument("--timeout", type=float, default=3 * 3600, help="seconds per build (default 3h)")
    p.add_argument("--out", default=str(results_dir() / "scale.json"), help="JSON results path")
    p.add_argument("--baselines", default="magnitude", help="comma-separated baselines (default magnitude)")
    p.add_argument("--max-tokens", type=int, default=64, help="tokens per calibration document")
    p.add_argument("--measure-speed", action="store_true", help="time prefill/decode in the evaluation")
    p.add_argument("--reference", choices=["auto", "always", "never"], default="auto",
                   help="compare with the masked + compensated dense model (auto: when it fits)")
    p.add_argument("--max-rss-gb", type=float, default=None,
                   help="stop a build whose RSS passes this (default: 85%% of the memory available "
                        "when it starts), before the OOM killer picks a process on a shared machine")
    p.add_argument("--ignore-disk-estimate", action="store_true",
                   help="run even when the disk estimate exceeds the free space")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    depths = [int(x) for x in args.layers.split(",") if x]
    for d in depths:
        widths_from(args, d).check()
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            p.error("--device cuda: torch sees no CUDA device here")
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)   # stop cleanly, keep results
    runs = []
    for d in depths:
        print(f"== {d} layers", flush=True)
        runs.append(run_depth(d, args))
        r = runs[-1]
        if r.get("interrupted"):
            break
        print(f"   completed={r['completed']} stock_load_ok={r['stock_load_ok']} "
              f"peak_rss_gb={r.get('peak_rss_gb')} wall_s={r.get('wall_s')}"
              + (f" error={r['error']}" if r.get("error") else ""), flush=True)
    out = {"runs": runs, **git_state(),
           "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
           "settings": {k: getattr(args, k) for k in ("max_tokens", "baselines", "device", "reference",
                                                      "measure_speed", "seed")}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print("\n" + table(runs))
    for line in summary(runs):
        print(line)
    print(f"\nresults: {args.out}")
    return 0 if all(r["completed"] and r["stock_load_ok"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
