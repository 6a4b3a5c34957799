"""Load a sliced expert of either layout."""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import torch

from cusprun.paths import cache_root

log = logging.getLogger(__name__)


def _local_dir(path: str | Path, storage_options: dict[str, Any] | None) -> Path:
    """A local directory for `path`: itself, or a cached download of a store URI (s3://...)."""
    s = str(path)
    if "://" not in s or s.startswith("file://"):
        return Path(s.removeprefix("file://"))
    from cusprun.storage import ArtifactStore

    store = ArtifactStore(s, storage_options)
    dest = cache_root() / "experts" / hashlib.sha256(store.root.encode()).hexdigest()[:16]
    log.info("fetching expert %s into %s", store.root, dest)
    return store.get_dir("", dest, progress=False)


def load_expert(path: str | Path, *, dtype: torch.dtype | None = None, device: str | None = None,
                device_map: str | None = None, storage_options: dict[str, Any] | None = None):
    """(model, tokenizer) in eval mode for a sliced expert, uniform or per-layer layout.

    `path` is a local directory or an artifact-store URI (downloaded once into the cusprun cache;
    `storage_options` as for `cusprun.storage.ArtifactStore`). dtype/device default as in
    `cusprun.models.load_model` (bf16 on CUDA, fp32 on CPU). No remote code is run."""
    from cusprun.models.loading import load_model

    return load_model(_local_dir(path, storage_options), dtype=dtype, device=device,
                      device_map=device_map)
