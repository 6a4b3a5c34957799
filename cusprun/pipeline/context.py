"""What every stage needs besides its inputs: the artifact store and a local scratch area."""
from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cusprun.paths import cache_root
from cusprun.system import release_free_memory
from cusprun.pipeline.artifacts import DONE, commit, invalidate, is_done, local_copy  # noqa: F401
from cusprun.storage import ArtifactStore

log = logging.getLogger("cusprun.pipeline")


def open_store(root: str, storage_options: dict | None = None) -> ArtifactStore:
    return ArtifactStore(root, storage_options)


def scratch(stage: str, key: str) -> Path:
    """A fresh local working directory for one stage run. Two builds (or threads) computing the
    same stage at once get different directories; those of processes that are gone are removed."""
    parent = cache_root() / "work" / stage
    parent.mkdir(parents=True, exist_ok=True)
    for old in [parent / key, *parent.glob(f"{key}.*")]:
        pid = old.name[len(key) + 1:].split(".")[0]
        if old.name == key or (pid.isdigit() and not _alive(int(pid))):
            shutil.rmtree(old, ignore_errors=True)
    d = parent / f"{key}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
    d.mkdir()
    return d


@contextmanager
def scratch_dir(stage: str, key: str) -> Iterator[Path]:
    """A `scratch` directory removed when the block ends, committed or failed: the artifact then
    lives in the store, and every build would otherwise leave its checkpoints behind in the
    local cache (gigabytes per build of the demo)."""
    d = scratch(stage, key)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def timed(what: str):
    t0 = time.perf_counter()
    log.info("%s: started", what)
    yield
    release_free_memory()   # what the stage freed goes back to the OS, not to the next stage
    log.info("%s: done in %.1fs", what, time.perf_counter() - t0)
