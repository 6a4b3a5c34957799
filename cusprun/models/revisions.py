"""The current revision of a base model, found cheaply (no weights are downloaded).

  * alias of an embedded model -> the version of the package that ships it
  * hub id[@revision]          -> the commit sha the hub reports for that revision
  * s3:// prefix or local dir  -> `revision` from <prefix>/MANIFEST.json when the registry writes
                                  one, else a hash of the file listing (names, sizes, ETags on S3,
                                  modification times locally)
  * .gguf file (local or S3)   -> a hash of its size and ETag / modification time

A changed revision means "rebuild the experts made from this model"; the build itself then
fingerprints the weights, so a revision that changed without new content costs only cache hits.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from cusprun.errors import ModelSourceError
from cusprun.models.sources import ALIASES

log = logging.getLogger(__name__)

MANIFEST = "MANIFEST.json"


@dataclass(frozen=True)
class ModelRevision:
    ref: str
    kind: str       # alias | hub | s3 | local
    revision: str
    method: str     # package | hub-sha | manifest | listing | file

    def as_dict(self) -> dict:
        return asdict(self)


def _digest(items: list) -> str:
    return hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()[:16]


def _alias_revision(ref: str) -> ModelRevision:
    dist = ALIASES[ref].package.split("==")[0]
    try:
        version = metadata.version(dist)
    except metadata.PackageNotFoundError:
        raise ModelSourceError(f"Alias {ref!r} needs the package {ALIASES[ref].package}: "
                               f"{ALIASES[ref].install_hint()}.") from None
    return ModelRevision(ref, "alias", f"{dist}=={version}", "package")


def _hub_revision(ref: str, timeout: float) -> ModelRevision:
    from huggingface_hub import HfApi

    repo_id, _, revision = ref.partition("@")
    try:
        info = HfApi().model_info(repo_id, revision=revision or None, timeout=timeout)
    except Exception as e:  # noqa: BLE001 - offline, missing repo, auth, timeouts...
        raise ModelSourceError(
            f"Cannot read the revision of {ref!r} from the Hugging Face hub "
            f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}).") from e
    return ModelRevision(ref, "hub", str(info.sha), "hub-sha")


def _manifest_revision(data: bytes, where: str) -> str | None:
    try:
        rev = json.loads(data).get("revision")
    except (ValueError, AttributeError):
        log.warning("%s is not a JSON object; using the file listing instead", where)
        return None
    return str(rev) if rev not in (None, "") else None


def _s3_revision(ref: str, storage_options: dict | None) -> ModelRevision:
    import fsspec

    fs, _, (path,) = fsspec.get_fs_token_paths(ref, storage_options=storage_options or {})
    path = path.rstrip("/")
    try:
        if path.endswith(".gguf"):
            info = fs.info(path)
            return ModelRevision(ref, "s3", _digest([info.get("ETag"), info.get("size")]), "file")
        fs.invalidate_cache(path)
        entries = fs.find(path, detail=True)
    except FileNotFoundError:
        raise ModelSourceError(f"S3 model {ref!r} does not exist.") from None
    except Exception as e:  # noqa: BLE001 - endpoint down, credentials, bucket missing
        raise ModelSourceError(f"Cannot list S3 model {ref!r}: {type(e).__name__}: {e}") from e
    if not entries:
        raise ModelSourceError(f"S3 model prefix {ref!r} is empty or does not exist.")
    manifest = f"{path}/{MANIFEST}"
    if manifest in entries:
        rev = _manifest_revision(fs.cat_file(manifest), f"{ref}/{MANIFEST}")
        if rev:
            return ModelRevision(ref, "s3", rev, "manifest")
    listing = sorted((k[len(path) + 1:], v.get("size"), str(v.get("ETag") or ""))
                     for k, v in entries.items())
    return ModelRevision(ref, "s3", _digest(listing), "listing")


def _local_revision(ref: str) -> ModelRevision:
    path = Path(os.path.expanduser(ref))
    if path.is_file():
        st = path.stat()
        return ModelRevision(ref, "local", _digest([path.name, st.st_size, st.st_mtime_ns]), "file")
    manifest = path / MANIFEST
    if manifest.is_file():
        rev = _manifest_revision(manifest.read_bytes(), str(manifest))
        if rev:
            return ModelRevision(ref, "local", rev, "manifest")
    listing = []
    for f in sorted(path.rglob("*")):
        if f.is_file():
            st = f.stat()
            listing.append((f.relative_to(path).as_posix(), st.st_size, st.st_mtime_ns))
    if not listing:
        raise ModelSourceError(f"Local model directory {ref!r} is empty.")
    return ModelRevision(ref, "local", _digest(listing), "listing")


def current_revision(ref: str, storage_options: dict | None = None, *,
                     hub_timeout: float = 10.0) -> ModelRevision:
    """The revision `ref` has now; ModelSourceError when it cannot be determined."""
    ref = (ref or "").strip()
    if not ref:
        raise ModelSourceError("Empty model reference.")
    if ref in ALIASES:
        return _alias_revision(ref)
    if ref.startswith("s3://"):
        return _s3_revision(ref, storage_options)
    if Path(os.path.expanduser(ref)).exists():
        return _local_revision(ref)
    if ref.startswith(("/", ".", "~")) or ref.endswith(".gguf") or ref.partition("@")[0].count("/") != 1:
        raise ModelSourceError(f"Model {ref!r} is neither an alias ({', '.join(sorted(ALIASES))}), "
                               "an existing local path, an s3:// prefix nor a hub id 'org/name[@rev]'.")
    return _hub_revision(ref, hub_timeout)
