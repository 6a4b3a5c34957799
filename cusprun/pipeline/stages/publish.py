"""The publish stage: the Cus-Prun expert uploaded, verified (it loads and matches its plan),
then made visible by its manifest; an unchanged rebuild keeps the latest version."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from cusprun.pipeline.context import local_copy, scratch_dir, timed
from cusprun.storage import ArtifactStore, publish_expert

log = logging.getLogger(__name__)


def publish_stage(store: ArtifactStore, name: str, sliced: dict, report: dict | None) -> dict:
    """Publish the Cus-Prun expert: upload, verify it loads and matches its plan, then manifest.
    A rebuild whose checkpoint and report are unchanged keeps the latest version (no duplicate)."""
    from cusprun.storage import ExpertNotFoundError, read_expert

    build = {"sliced": sliced["key"], "report": report["key"] if report else None}
    try:
        latest = read_expert(store, name)
        if latest.manifest.verification.get("build") == build:
            log.info("expert %s unchanged since version %s: not republished", name, latest.version)
            return {"name": name, "version": latest.version, "uri": latest.uri, "unchanged": True}
    except ExpertNotFoundError:
        pass
    src = local_copy(store, sliced["key"])   # the slice record names its store key

    def verify(copy: Path) -> dict:
        import cusprun

        meta = json.loads((copy / "cusprun.json").read_text())
        model, _ = cusprun.load_expert(copy)
        n = sum(p.numel() for p in model.parameters())
        expected = meta.get("params", {}).get("pruned", {}).get("total")
        if expected is not None and expected != n:
            raise ValueError(f"checkpoint has {n} parameters, cusprun.json says {expected}")
        return {"params_total": n, "plan_method": meta.get("method"), "loads": True, "build": build}

    with timed(f"publish expert {name}"), \
            scratch_dir("publish", sliced["key"].replace("/", "-")) as staged:
        for f in src.iterdir():
            if f.is_file() and f.name != "DONE.json":
                (staged / f.name).write_bytes(f.read_bytes())
        if report:
            (staged / "evaluation.md").write_text(report["markdown"])
        pub = publish_expert(store, name, staged, verify=verify, progress=False,
                             same_as=lambda m: m.verification.get("build") == build)
        return {"name": name, "version": pub.version, "uri": pub.uri, "unchanged": pub.reused}
