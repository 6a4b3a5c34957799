#!/usr/bin/env bash
# GPU check without network: on a CUDA machine with torch preinstalled, run the statistics and
# prefill benchmarks (bf16 on CUDA) and the scale benchmark at Llama-3.1-8B widths, within about
# 8 minutes, writing results under $OUT (when set) or benchmarks/results/.
#
#   bash benchmarks/gpu_check.sh                 # from the repository root
#   WHEELS=/path/to/wheels bash benchmarks/gpu_check.sh   # first installs missing packages
#                                                # from that directory only (pip --no-index)
#
# Python packages it expects to find (pyproject.toml's dependencies; cusprun itself is used from
# this checkout when it is not installed):
#   torch>=2.11 (a CUDA build; the lent H200 image has 2.11, this project tests 2.13), transformers>=5.24 (older ones lack `out.cache`, which
#   cusprun/evaluation/speed.py uses), tokenizers, safetensors>=0.8, accelerate>=1.15,
#   pydantic>=2.14, prefect>=3.9.1, datasets>=5.2, fsspec, s3fs, pyarrow>=26, gguf>=0.19,
#   numpy>=2, pyyaml, tqdm, matplotlib>=3.11.
#   Not needed: kernels (hub kernels are turned off: USE_HUB_KERNELS=0), the data packages
#   behind the bundled demo corpora (the scale benchmark writes its own corpora).
#
# Settings (environment): PYTHON (default .venv/bin/python, else python3), BUDGET_S (480),
# SCALE_LAYERS (32), SCALE_FALLBACK_LAYERS (4: run when the disk cannot hold SCALE_LAYERS'
# build, so the CUDA build path still runs at 8B widths), SCALE_ARGS (extra bench_scale
# arguments, e.g. smaller widths), SCALE_WORKDIR, GPU_CHECK_ALLOW_CPU=1 (run without CUDA).
set -u
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
OUT_DIR=${OUT:-benchmarks/results}
BUDGET_S=${BUDGET_S:-480}
SCALE_LAYERS=${SCALE_LAYERS:-32}
SCALE_FALLBACK_LAYERS=${SCALE_FALLBACK_LAYERS:-4}
SCALE_WORKDIR=${SCALE_WORKDIR:-${TMPDIR:-/tmp}/cusprun-scale}
mkdir -p "$OUT_DIR" "$SCALE_WORKDIR"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 USE_HUB_KERNELS=0
export PREFECT_SERVER_ANALYTICS_ENABLED=false TRANSFORMERS_VERBOSITY=error
# cusprun, flows and tasks from this checkout when they are not installed
$PYTHON -c "import cusprun, flows, tasks" 2>/dev/null || export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

REQUIRED="torch>=2.11 transformers>=5.24 tokenizers safetensors>=0.8 accelerate>=1.15 pydantic>=2.14
prefect>=3.9.1 datasets>=5.2 fsspec s3fs pyarrow>=26 gguf>=0.19 numpy>=2 pyyaml tqdm matplotlib>=3.11"

missing() {  # prints "name>=version (found X)" for each requirement not met
  $PYTHON - "$REQUIRED" <<'EOF'
import re, sys
from importlib import metadata
def key(v):
    return tuple(int(x) for x in re.findall(r"\d+", v.split("+")[0])[:3])
for req in sys.argv[1].split():
    name, _, need = req.partition(">=")
    try:
        have = metadata.version(name)
    except metadata.PackageNotFoundError:
        print(f"{req} (not installed)")
        continue
    if need and key(have) < key(need):
        print(f"{req} (found {have})")
EOF
}

MISSING=$(missing)
if [ -n "$MISSING" ] && [ -n "${WHEELS:-}" ]; then
  echo "installing from $WHEELS (no index):" $MISSING
  # shellcheck disable=SC2046
  $PYTHON -m pip install -q --no-index --find-links "$WHEELS" $(echo "$MISSING" | cut -d' ' -f1)
  MISSING=$(missing)
fi
if [ -n "$MISSING" ]; then
  echo "gpu_check: missing Python packages (this check never downloads; install them, or give"
  echo "WHEELS=DIR holding their wheels):"
  echo "$MISSING" | sed 's/^/  /'
  exit 2
fi
if $PYTHON -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  DEVICE=cuda
elif [ "${GPU_CHECK_ALLOW_CPU:-0}" = 1 ]; then
  DEVICE=cpu
else
  echo "gpu_check: torch sees no CUDA device (torch $($PYTHON -c 'import torch; print(torch.__version__)'));"
  echo "run it on a CUDA machine, or set GPU_CHECK_ALLOW_CPU=1 to try it on CPU"
  exit 2
fi

START=$(date +%s)
STEPS=()
left() { echo $(( BUDGET_S - ($(date +%s) - START) )); }
step() {  # step NAME SECONDS OUTFILE CMD...: run with a timeout, output to OUTFILE
  local name=$1 limit=$2 out=$3; shift 3
  local t0; t0=$(date +%s)
  echo "== $name (at most ${limit}s) -> $out"
  timeout --signal=TERM --kill-after=15 "$limit" "$@" > "$out" 2>&1
  local rc=$?
  tail -n 25 "$out"
  echo "== $name: rc $rc in $(( $(date +%s) - t0 ))s"
  STEPS+=("$name|$rc|$(( $(date +%s) - t0 ))|$out")
}

step bench_stats 75 "$OUT_DIR/gpu_bench_stats.txt" \
  $PYTHON -m benchmarks run bench_stats --repeats 2 --threads 0
step bench_prefill 60 "$OUT_DIR/gpu_bench_prefill.txt" \
  $PYTHON -m benchmarks run bench_prefill --device "$DEVICE" --reps 5

scale() {  # scale LAYERS JSON: bench_scale at 8B widths in what is left of the budget
  local layers=$1 json=$2 limit; limit=$(( $(left) - 10 ))
  # the build gets what is left after writing the checkpoint (~100M params/s) and checking
  # the expert; the masked + compensated reference would load the whole dense model: skipped
  # shellcheck disable=SC2086
  step "bench_scale --layers $layers" "$limit" "${json%.json}.txt" \
    $PYTHON -m benchmarks run bench_scale --layers "$layers" --device "$DEVICE" --reference never \
      --workdir "$SCALE_WORKDIR" --timeout $(( limit * 6 / 10 )) --out "$json" ${SCALE_ARGS:-}
}
scale "$SCALE_LAYERS" "$OUT_DIR/gpu_scale.json"
if grep -q '"error": "needs about' "$OUT_DIR/gpu_scale.json" 2>/dev/null \
    && [ "$SCALE_FALLBACK_LAYERS" != "$SCALE_LAYERS" ] && [ "$(left)" -gt 60 ]; then
  echo "gpu_check: $SCALE_LAYERS layers do not fit this disk; trying $SCALE_FALLBACK_LAYERS layers"
  scale "$SCALE_FALLBACK_LAYERS" "$OUT_DIR/gpu_scale_fallback.json"
fi

$PYTHON - "$OUT_DIR/gpu_check.json" "$DEVICE" "$(( $(date +%s) - START ))" "${STEPS[@]}" <<'EOF'
import json, subprocess, sys
import torch, transformers
out, device, total, *steps = sys.argv[1:]
rows = []
for s in steps:
    name, rc, secs, path = s.split("|", 3)
    rows.append({"step": name, "rc": int(rc), "seconds": int(secs), "output": path,
                 "timed_out": int(rc) in (124, 137)})
try:   # the checkout may come without git, or without its .git
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True).stdout.strip()) if head else None
except OSError:
    head, dirty = None, None
json.dump({"device": device, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
           "torch": torch.__version__, "transformers": transformers.__version__, "commit": head or None,
           "dirty": dirty, "total_s": int(total), "steps": rows}, open(out, "w"), indent=2)
print(f"summary: {out}")
for r in rows:
    print(f"  {r['step']}: rc {r['rc']}{' (timed out)' if r['timed_out'] else ''}, {r['seconds']}s")
EOF
