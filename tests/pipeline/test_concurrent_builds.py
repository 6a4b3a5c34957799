"""Two `cusprun build` processes for the same expert name and spec at the same time, on a local
store and on S3 (moto): both end cleanly, every artifact is complete and matches its record, the
expert's versions and manifests stay consistent, and a reader polling all along never sees a
partial version. Real processes, real Prefect server, real moto server."""
from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import pytest
import yaml

from tests.support.paths import CUSPRUN, cusprun_env

pytestmark = [pytest.mark.prefect, pytest.mark.integration]   # builds on the bundled corpora


def _spec_file(tmp_path: Path, model: str, root: str) -> Path:
    dim = {"max_docs": 16}
    spec = {"name": "twin-expert", "base_model": model, "language": {"value": "en", **dim},
            "domain": {"value": "health", **dim}, "task": None, "general": {"value": "en", **dim},
            "target_ratios": [0.25], "max_tokens": 48, "min_docs": 4, "baselines": [],
            # the evaluation report holds timings: two builds write different bytes for one key
            "evaluation": {"max_docs": 4, "mc_items": 4, "max_tokens": 48,
                           "other_languages": [], "speed_iters": 1},
            "storage_root": root}
    path = tmp_path / "twin.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


class Reader(threading.Thread):
    """Polls the store during the builds like a consumer would: every listed version must
    download completely and match its manifest, every committed artifact its DONE record."""

    def __init__(self, store, name: str, cache: Path) -> None:
        super().__init__(daemon=True)
        self.store, self.name, self.cache = store, name, cache
        self.stop, self.problems, self.versions_seen, self.checks = threading.Event(), [], set(), 0

    def run(self) -> None:
        from cusprun.pipeline.artifacts import local_copy
        from cusprun.storage import get_expert, list_versions

        while not self.stop.is_set():
            try:
                for v in list_versions(self.store, self.name):
                    if v not in self.versions_seen:
                        get_expert(self.store, self.name, v, self.cache, progress=False)
                        self.versions_seen.add(v)
                for key in [k.rsplit("/", 1)[0] for k in self.store.list("")
                            if k.endswith("/DONE.json") and not k.startswith("experts/")]:
                    local_copy(self.store, key)
                self.checks += 1
            except Exception as e:  # noqa: BLE001 - collected, the test reports them
                self.problems.append(f"{type(e).__name__}: {e}")
            self.stop.wait(0.2)   # the pace of polling, not a condition: stop ends it at once


def _run_twins(spec: Path, env: dict, cwd: Path) -> list[subprocess.CompletedProcess]:
    procs = [subprocess.Popen([CUSPRUN, "build", "--spec", str(spec)], cwd=cwd, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


@pytest.mark.parametrize("backend", ["local", pytest.param("s3", marks=pytest.mark.s3)])
def test_two_builds_of_one_expert_at_once(backend, prefect_api, tiny_model, tmp_path, request):
    from cusprun.pipeline.artifacts import local_copy, read_done
    from cusprun.storage import (ArtifactStore, get_expert, latest_key, list_versions,
                                 read_expert)

    env = cusprun_env(prefect_api.env)
    if backend == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        env.update({k: os.environ[k] for k in os.environ if k.startswith("AWS_")})
        env["AWS_ENDPOINT_URL"] = bucket.endpoint_url
        root, store = bucket.uri, ArtifactStore(*bucket)
    else:
        root = str(tmp_path / "artifacts")
        store = ArtifactStore(root)
    spec = _spec_file(tmp_path, tiny_model, root)
    reader = Reader(store, "twin-expert", tmp_path / "reader-cache")
    reader.start()
    try:
        results = _run_twins(spec, env, tmp_path)
    finally:
        reader.stop.set()
        reader.join(60)

    for r in results:
        assert r.returncode == 0, r.stderr[-3000:]
        assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert reader.checks > 0 and reader.problems == [], reader.problems

    # Versions and manifests: one or two (identical) versions, each complete; LATEST = newest.
    versions = list_versions(store, "twin-expert")
    assert 1 <= len(versions) <= 2, versions
    printed = {line.split("version")[1].strip() for r in results for line in r.stdout.splitlines()
               if line.startswith("expert:")}
    assert printed <= set(versions), (printed, versions)
    weights = set()
    for v in versions:
        path = get_expert(store, "twin-expert", v, tmp_path / "check", progress=False)
        assert (path / "config.json").exists()
        weights.add(read_expert(store, "twin-expert", v).manifest.content_hash)
    assert len(weights) == 1
    assert store.read_json(latest_key("twin-expert"))["version"] == versions[-1]

    # Every stage artifact committed once, complete, and matching its record.
    keys = [k.rsplit("/", 1)[0] for k in store.list("") if k.endswith("/DONE.json")
            and not k.startswith("experts/")]
    assert {k.split("/")[0] for k in keys} == {"corpus", "stats", "grams", "plan",
                                                "slice", "dense-eval", "evaluate"}
    for key in keys:
        local_copy(store, key)
        assert read_done(store, key)["key"] == key
