"""What every stage needs besides its inputs: the artifact store and a local scratch area."""
from __future__ import annotations

import logging
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

from cusprun.paths import cache_root
from cusprun.storage import ArtifactStore

log = logging.getLogger("cusprun.pipeline")

DONE = "DONE.json"  # written last by every stage: its presence means the artifact is complete


def open_store(root: str, storage_options: dict | None = None) -> ArtifactStore:
    return ArtifactStore(root, storage_options)


def scratch(stage: str, key: str) -> Path:
    """A fresh local working directory for one stage run."""
    d = cache_root() / "work" / stage / key
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    return d


def local_copy(store: ArtifactStore, key: str) -> Path:
    """Materialise a stored artifact directory locally (reused when already complete)."""
    if store.is_local:
        return Path(store.uri(key))
    return store.get_dir(key, cache_root() / "store-cache" / store.root.replace("://", "/") / key,
                         progress=False)


def is_done(store: ArtifactStore, key: str) -> bool:
    return store.exists(f"{key}/{DONE}")


def commit(store: ArtifactStore, local_dir: Path, key: str, summary: dict) -> dict:
    """Upload a finished artifact, then mark it done (last), and return the task result."""
    if store.exists(key):
        store.delete(key, recursive=True)
    store.put_dir(local_dir, key, progress=False)
    result = {"uri": store.uri(key), "key": key, **summary}
    store.write_json(f"{key}/{DONE}", result)
    return result


@contextmanager
def timed(what: str):
    t0 = time.perf_counter()
    log.info("%s: started", what)
    yield
    log.info("%s: done in %.1fs", what, time.perf_counter() - t0)
