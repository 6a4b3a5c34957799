"""Publishing and reading expert checkpoints atomically.

A version is uploaded under experts/<name>/<version>/, checked (every file present with the
right size and sha256, then the caller's `verify` callback on a local copy), and only then
made visible by writing experts/<name>/<version>/MANIFEST.json; experts/<name>/LATEST.json is
updated after that. Readers trust manifests only, so a publish that fails or is killed at
any point leaves nothing visible; `gc_incomplete` removes its leftovers later."""
from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from tqdm.auto import tqdm

from cusprun.errors import SpecError
from cusprun.paths import cache_root
from cusprun.storage import layout
from cusprun.storage.errors import (ArtifactNotFoundError, ExpertNotFoundError, PublishError,
                                    StorageError)
from cusprun.storage.localcache import MARKER, materialise, sha256_file
from cusprun.storage.store import ArtifactStore

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "cusprun-expert-manifest/1"
_TS_FMT = "%Y%m%dT%H%M%S.%fZ"


class FileEntry(BaseModel):
    size: int
    sha256: str


class ExpertManifest(BaseModel):
    format: str = MANIFEST_FORMAT
    name: str
    version: str
    created: str                     # UTC, _TS_FMT; strictly increasing per name
    content_hash: str                # sha256 over (path, sha256) of all files
    files: dict[str, FileEntry]
    verification: dict[str, Any] = {}


@dataclass(frozen=True)
class PublishedExpert:
    name: str
    version: str
    uri: str                         # of the version directory
    manifest: ExpertManifest
    reused: bool = False             # an equivalent version published meanwhile was returned


def _content_hash(files: dict[str, FileEntry]) -> str:
    canon = json.dumps([[k, files[k].sha256] for k in sorted(files)], separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()


def _scan_local(local_dir: Path) -> dict[str, FileEntry]:
    if not local_dir.is_dir():
        raise SpecError(f"Expert directory {str(local_dir)!r} does not exist or is not a directory")
    files: dict[str, FileEntry] = {}
    for p in sorted(local_dir.rglob("*")):
        rel = p.relative_to(local_dir).as_posix()
        if not p.is_file() or rel == MARKER:
            continue
        if rel == layout.MANIFEST:
            raise SpecError(f"{str(p)!r}: {layout.MANIFEST} is reserved for the store's manifest; "
                            "rename or remove it before publishing")
        ArtifactStore.normalize_key(rel)
        files[rel] = FileEntry(size=p.stat().st_size, sha256=sha256_file(p))
    if not files:
        raise SpecError(f"Expert directory {str(local_dir)!r} is empty; nothing to publish")
    return files


def _parse_ts(s: str) -> datetime:
    return datetime.strptime(s, _TS_FMT).replace(tzinfo=timezone.utc)


def _next_created(previous: list[ExpertManifest]) -> datetime:
    """Now, or just after the newest existing version when the clock is behind it."""
    now = datetime.now(timezone.utc)
    if previous:
        last = max(_parse_ts(m.created) for m in previous)
        if now <= last:
            now = last + timedelta(microseconds=1)
    return now


# ---- readers -----------------------------------------------------------------------------
def _manifests(store: ArtifactStore, name: str) -> list[ExpertManifest]:
    prefix = layout.expert_prefix(name)
    out = []
    for key in store.list(prefix):
        parts = key[len(prefix) + 1:].split("/")
        if len(parts) != 2 or parts[1] != layout.MANIFEST:
            continue
        try:
            m = ExpertManifest.model_validate(store.read_json(key))
        except (ValidationError, ArtifactNotFoundError) as e:
            log.warning("ignoring unreadable manifest %s: %s", store.uri(key), e)
            continue
        if m.version == parts[0] and m.name == name:
            out.append(m)
        else:
            log.warning("ignoring manifest %s: it names %s/%s", store.uri(key), m.name, m.version)
    return sorted(out, key=lambda m: (m.created, m.version))


def list_versions(store: ArtifactStore, name: str) -> list[str]:
    """Published (manifested) versions of `name`, oldest first. Unfinished ones are invisible."""
    return [m.version for m in _manifests(store, name)]


def latest_version(store: ArtifactStore, name: str) -> str | None:
    """The most recently published version, or None when there is none."""
    versions = list_versions(store, name)
    return versions[-1] if versions else None


def read_expert(store: ArtifactStore, name: str, version: str | None = None) -> PublishedExpert:
    """The manifest of `version` (default: latest); ExpertNotFoundError if not published."""
    manifests = _manifests(store, name)
    if version is None:
        if not manifests:
            raise ExpertNotFoundError(f"No published version of expert {name!r} in {store.root}")
        m = manifests[-1]
    else:
        layout.segment(version, "expert version")
        found = [m for m in manifests if m.version == version]
        if not found:
            have = ", ".join(x.version for x in manifests) or "none"
            raise ExpertNotFoundError(f"Expert {name!r} has no published version {version!r} in "
                                      f"{store.root} (published: {have})")
        m = found[0]
    return PublishedExpert(name, m.version, store.uri(layout.expert_key(name, m.version)), m)


def get_expert(store: ArtifactStore, name: str, version: str | None = None,
               local_cache: str | Path | None = None, *, progress: bool = True) -> Path:
    """Materialise a published expert at <local_cache>/<name>/<version>/ (default local_cache:
    <cusprun cache>/experts) and return that directory. Every file is checked against the
    manifest's sha256; an existing complete copy is reused without downloading."""
    pe = read_expert(store, name, version)
    prefix = layout.expert_key(name, pe.version)
    dest = Path(local_cache or cache_root() / "experts") / name / pe.version
    files = pe.manifest.files

    def fill(tmp: Path) -> None:
        for rel, entry in tqdm(sorted(files.items()), desc=f"get {name}/{pe.version}",
                               unit="file", disable=not progress or len(files) < 2):
            local = store.get_file(f"{prefix}/{rel}", tmp / rel)
            if sha256_file(local) != entry.sha256:
                raise StorageError(f"{store.uri(f'{prefix}/{rel}')} does not match its manifest "
                                   "(sha256 differs): the stored expert is corrupt")
    identity = {"uri": pe.uri, "content_hash": pe.manifest.content_hash}
    return materialise(dest, identity, {k: v.size for k, v in files.items()}, fill)


# ---- publishing --------------------------------------------------------------------------
def _check_uploaded(store: ArtifactStore, prefix: str, files: dict[str, FileEntry]) -> None:
    remote = {o.key[len(prefix) + 1:]: o.size for o in store.list_info(prefix)}
    missing = sorted(set(files) - set(remote))
    extra = sorted(set(remote) - set(files))
    wrong = sorted(k for k in files if k in remote and remote[k] != files[k].size)
    if missing or extra or wrong:
        raise PublishError(f"Upload to {store.uri(prefix)} is inconsistent: missing {missing}, "
                           f"unexpected {extra}, wrong size {wrong}")


def _reread(store: ArtifactStore, prefix: str, files: dict[str, FileEntry], into: Path) -> Path:
    """Download what was uploaded and compare sha256 (local stores: read in place)."""
    if store.is_local:
        into = Path(store.uri(prefix))
    else:
        for rel in files:
            store.get_file(f"{prefix}/{rel}", into / rel)
    bad = [rel for rel, e in files.items() if sha256_file(into / rel) != e.sha256]
    if bad:
        raise PublishError(f"Uploaded files under {store.uri(prefix)} differ from the local ones "
                           f"(sha256): {bad}")
    return into


def _new_version(files_hash: str, created: datetime) -> str:
    return f"{created.strftime(_TS_FMT)}-{files_hash[:8]}"


def publish_expert(store: ArtifactStore, name: str, local_dir: str | Path, *,
                   version: str | None = None,
                   verify: Callable[[Path], dict | None] | None = None,
                   reread: bool = True, progress: bool = True,
                   same_as: Callable[[ExpertManifest], bool] | None = None,
                   link: bool = False) -> PublishedExpert:
    """Publish `local_dir` as expert `name`. `version` defaults to '<UTC timestamp>-<hash8>'
    (sorts in publication order). After upload, the listing is checked (names, sizes); with
    `reread` or `verify` the files are read back and their sha256 compared, then
    `verify(local_copy)` may check the checkpoint and return a dict stored in the manifest.
    Any failure (StorageError from the store, PublishError from the checks or `verify`)
    removes the upload and leaves nothing visible.

    `link`: files of `local_dir` nobody changes afterwards may be hard-linked into a local
    store (ArtifactStore.put_file). `same_as(manifest)` says whether a published version is equivalent to this one: when a
    concurrent publisher made one visible while this upload was verified, this upload is
    removed and that version returned (so two identical builds at once publish once, unless
    they write their manifests within the same moment; then both versions are complete)."""
    layout.segment(name, "expert name")
    if version is not None:
        layout.segment(version, "expert version")
    local_dir = Path(local_dir)
    files = _scan_local(local_dir)
    chash = _content_hash(files)
    previous = _manifests(store, name)
    created = _next_created(previous)
    if version is None:
        version = _new_version(chash, created)
    if any(m.version == version for m in previous):
        raise PublishError(f"Expert {name}/{version} is already published in {store.root}; "
                           "published versions are immutable: choose another version")
    prefix = layout.expert_key(name, version)
    if store.exists(prefix):
        log.warning("removing unfinished upload %s before publishing", store.uri(prefix))
        store.delete(prefix, recursive=True)

    log.info("publishing %s (%d files) to %s", local_dir, len(files), store.uri(prefix))
    verification: dict[str, Any] = {}
    try:
        for rel in tqdm(sorted(files), desc=f"publish {name}/{version}", unit="file",
                        disable=not progress or len(files) < 2):
            store.put_file(local_dir / rel, f"{prefix}/{rel}", link=link)
        _check_uploaded(store, prefix, files)
        if reread or verify is not None:
            tmp_root = cache_root() / "tmp"
            tmp_root.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix="verify-", dir=tmp_root) as tmp:
                copy = _reread(store, prefix, files, Path(tmp) / version)
                if verify is not None:
                    try:
                        verification = dict(verify(copy) or {})
                    except Exception as e:
                        raise PublishError(f"Verification of {name}/{version} failed, not "
                                           f"publishing: {type(e).__name__}: {e}") from e
        manifest = ExpertManifest(name=name, version=version, created=created.strftime(_TS_FMT),
                                  content_hash=chash, files=files, verification=verification)
        json.dumps(manifest.model_dump(mode="json"))  # fail here, not half-written, if unserialisable
        twin = _published_meanwhile(store, name, previous, manifest, same_as)
    except Exception:
        log.warning("publish of %s/%s failed; removing the upload", name, version)
        try:
            store.delete(prefix, recursive=True)
        except Exception as cleanup_error:  # gc_incomplete will get it
            log.warning("could not remove %s: %s", store.uri(prefix), cleanup_error)
        raise
    if twin is not None:
        log.info("expert %s/%s was published meanwhile with the same content; not publishing %s",
                 name, twin.version, version)
        store.delete(prefix, recursive=True)
        return PublishedExpert(name, twin.version, store.uri(layout.expert_key(name, twin.version)),
                               twin, reused=True)
    store.write_json(layout.manifest_key(name, version), manifest.model_dump(mode="json"))
    published = PublishedExpert(name, version, store.uri(prefix), manifest)
    _update_latest(store, published)
    log.info("published expert %s/%s at %s", name, version, published.uri)
    return published


def _published_meanwhile(store: ArtifactStore, name: str, before: list[ExpertManifest],
                         mine: ExpertManifest, same_as: Callable[[ExpertManifest], bool] | None
                         ) -> ExpertManifest | None:
    """The newest version published since `before` was read, if it has the same content and
    `same_as` accepts it."""
    if same_as is None:
        return None
    known = {m.version for m in before}
    new = [m for m in _manifests(store, name) if m.version not in known]
    if new and new[-1].content_hash == mine.content_hash and same_as(new[-1]):
        return new[-1]
    return None


def _update_latest(store: ArtifactStore, pe: PublishedExpert) -> None:
    """Advisory pointer for humans/tools; readers decide from manifests, so failure only warns.
    It names the newest manifest; concurrent publishers each write it and then check that no
    newer manifest appeared meanwhile (else write again), so the last writer leaves it right."""
    key = layout.latest_key(pe.name)
    try:
        newest = None
        for _ in range(5):
            manifests = _manifests(store, pe.name)
            if not manifests or (newest and manifests[-1].version == newest.version):
                return
            newest = manifests[-1]
            store.write_json(key, {
                "name": pe.name, "version": newest.version, "created": newest.created,
                "uri": store.uri(layout.expert_key(pe.name, newest.version))})
    except Exception as e:
        log.warning("published %s/%s but could not update %s: %s", pe.name, pe.version,
                    store.uri(key), e)


def gc_incomplete(store: ArtifactStore, name: str, *, older_than_s: float = 24 * 3600) -> list[str]:
    """Delete version directories of `name` that have no manifest and whose newest object is
    older than `older_than_s` (so running publishes are left alone). Returns removed versions."""
    prefix = layout.expert_prefix(name)
    now = time.time()
    groups: dict[str, list] = {}
    for o in store.list_info(prefix):
        parts = o.key[len(prefix) + 1:].split("/")
        if len(parts) == 1:
            if parts[0].endswith(".part") and o.mtime is not None and now - o.mtime >= older_than_s:
                store.delete(o.key)  # temp file of an interrupted local write
            continue
        groups.setdefault(parts[0], []).append(o)
    removed = []
    for version, objs in sorted(groups.items()):
        if any(o.key.endswith("/" + layout.MANIFEST) and o.key.count("/") == prefix.count("/") + 2
               for o in objs):
            continue
        times = [o.mtime for o in objs]
        if older_than_s > 0 and (None in times or now - max(times) < older_than_s):
            continue
        log.info("removing unfinished expert upload %s", store.uri(f"{prefix}/{version}"))
        store.delete(f"{prefix}/{version}", recursive=True)
        removed.append(version)
    return removed
