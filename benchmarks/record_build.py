"""Build an expert and record its comparison for docs/results.md: the build's report.json as it
is, and build.json with the build's wall time, stage timings, commit, date and machine.

    python -m benchmarks run record_build --demo          # the quick English demo (make demo)
    python -m benchmarks run record_build --demo --full   # every baseline and the ratio sweep
    python -m benchmarks run record_build --profile fr-health-qa

(or `python -m benchmarks.record_build ...`). Results go to benchmarks/results/<expert>/
(`--full` demo: <expert>-full/); then `make results`. The build runs in this process against a
temporary Prefect server, as `cusprun build` does (benchmarks.build_runner.build_in_process);
`--storage-root` keeps its artifacts (default: a fresh temporary store, so nothing is reused
and the wall time is a whole build's)."""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from datetime import datetime, timezone

from benchmarks.build_runner import build_in_process
from benchmarks.machine import describe
from benchmarks.results_io import git_state, results_dir


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--demo", action="store_true", help="the English demo expert")
    src.add_argument("--profile", help="a customer profile of deployments/customers/")
    p.add_argument("--full", action="store_true", help="with --demo: the full comparison")
    p.add_argument("--storage-root", help="artifact store to use (default: a fresh temporary one)")
    args = p.parse_args(argv)

    from cusprun.pipeline.demo import demo_spec
    from cusprun.pipeline.profiles import load_profile
    from cusprun.pipeline.spec import load_spec

    tmp = None if args.storage_root else tempfile.mkdtemp(prefix="cusprun-record-")
    root = args.storage_root or tmp
    if args.demo:
        data = demo_spec(full=args.full, storage_root=root)
    else:
        data = {**load_profile(args.profile).spec.model_dump(), "storage_root": root}
    spec = load_spec(data)
    state, when = git_state(), datetime.now(timezone.utc).isoformat(timespec="seconds")
    try:
        built = build_in_process(spec)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    out = results_dir() / (spec.name + ("-full" if args.demo and args.full else ""))
    out.mkdir(parents=True, exist_ok=True)
    result = built.result
    (out / "report.json").write_bytes(built.report)
    (out / "sweep.json").unlink(missing_ok=True)
    if built.sweep is not None:
        (out / "sweep.json").write_bytes(built.sweep)
    build = {"build_s": result["wall_s"], **state, "date": when, "machine": describe(),
             "stages": {r["stage"]: r["seconds"] for r in result.get("timings", [])}}
    (out / "build.json").write_text(json.dumps(build, indent=2) + "\n")
    print(f"recorded {out}/report.json and build.json (build {result['wall_s']} s); "
          "now run `make results`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
