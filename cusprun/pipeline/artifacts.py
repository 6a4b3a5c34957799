"""Committing and reading stage artifacts so that concurrent builds, killed builds and refreshes
never show a reader a partial or mixed artifact.

An artifact lives under its content key, e.g. stats/<fp>/<corpus>/<config>/, and is visible only
once <key>/DONE.json exists. DONE.json is created at most once (atomically: first writer wins)
and records the artifact's files and their sizes. The first build to claim a key (creating the
object .claims/<key>, atomically) uploads straight into <key>/; a build that finds the key
already claimed (another build is writing it, or one died while writing) uploads into its own
folder .attempts/<key>/<id>/ and, if its DONE.json wins, points readers there. A build that loses
the DONE.json race removes its upload and returns the winner's record. Refreshing a stage removes the
artifact first (invalidate), so the refreshed result is committed like a new one."""
from __future__ import annotations

import json
import logging
import os
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from cusprun.paths import cache_root
from cusprun.storage import ArtifactNotFoundError, ArtifactStore, StorageError

log = logging.getLogger("cusprun.pipeline")

DONE = "DONE.json"
STALE_ATTEMPT_S = 6 * 3600   # unfinished attempt folders older than this are removed


def claim_key(key: str) -> str:
    return f".claims/{key}"


def attempts_key(key: str) -> str:
    return f".attempts/{key}"


def is_done(store: ArtifactStore, key: str) -> bool:
    return store.exists(f"{key}/{DONE}")


def read_done(store: ArtifactStore, key: str) -> dict | None:
    """The artifact's DONE record, or None while it is not (completely) there."""
    try:
        return store.read_json(f"{key}/{DONE}")
    except ArtifactNotFoundError:
        return None


def files_key(record: dict) -> str:
    """Where the artifact's files are: <key>/, or the attempt folder its DONE record names."""
    return record.get("files_key") or record["key"]


def _listing(local_dir: Path) -> dict[str, int]:
    return {p.relative_to(local_dir).as_posix(): p.stat().st_size
            for p in sorted(local_dir.rglob("*")) if p.is_file()}


def _attempt_id() -> str:
    return f"{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"


def commit(store: ArtifactStore, local_dir: Path, key: str, summary: dict) -> dict:
    """Upload a finished artifact and make it visible (DONE.json last); returns the task result.
    If another build committed the same key first, its record is returned instead."""
    existing = read_done(store, key)
    if existing is not None:
        log.info("%s was committed meanwhile by another build; using it", store.uri(key))
        return existing
    files = _listing(local_dir)
    if DONE in files:
        raise StorageError(f"{local_dir}/{DONE} is reserved for the commit record")
    owner = _attempt_id()
    direct = store.create_exclusive(claim_key(key), json.dumps(
        {"owner": owner, "pid": os.getpid(), "created": time.time()}).encode())
    target = key if direct else f"{attempts_key(key)}/{owner}"
    store.put_dir(local_dir, target, progress=False, link=True)   # the scratch copy goes next
    record = {"uri": store.uri(key), "key": key, **summary, "files": files}
    if not direct:
        record["files_key"] = target
    if store.create_exclusive(f"{key}/{DONE}", (json.dumps(record, indent=2, sort_keys=True)
                                                  + "\n").encode()):
        if not direct:   # there was contention: a dead build's folder may be lying around
            _remove_stale_attempts(store, key, keep=target)
        return record
    log.info("another build committed %s first; discarding this upload", store.uri(key))
    if not direct:
        store.delete(target, recursive=True)
    winner = read_done(store, key)
    if winner is None:
        raise StorageError(f"{store.uri(key)}/{DONE} vanished right after another build wrote it")
    return winner


def invalidate(store: ArtifactStore, key: str) -> None:
    """Remove an artifact (record first, so readers stop trusting it) to recompute it."""
    store.delete(f"{key}/{DONE}")
    for k in (key, attempts_key(key)):
        store.delete(k, recursive=True)
    store.delete(claim_key(key))


def _remove_stale_attempts(store: ArtifactStore, key: str, keep: str) -> None:
    """Attempt folders of builds that died mid-upload, once they are clearly abandoned. Best
    effort: the artifact is committed already, a failure here only leaves garbage."""
    groups: dict[str, list] = {}
    pre = attempts_key(key)
    try:
        listing = store.list_info(pre)
    except StorageError as e:
        log.warning("could not look for abandoned uploads of %s: %s", store.uri(key), e)
        return
    for o in listing:
        groups.setdefault(o.key[len(pre) + 1:].split("/", 1)[0], []).append(o)
    now = time.time()
    for attempt, objs in groups.items():
        folder = f"{pre}/{attempt}"
        times = [o.mtime for o in objs if o.mtime is not None]
        if folder != keep and times and now - max(times) > STALE_ATTEMPT_S:
            log.info("removing abandoned upload %s", store.uri(folder))
            store.delete(folder, recursive=True)


def local_copy(store: ArtifactStore, key: str) -> Path:
    """The committed artifact `key` as a local directory (S3: downloaded once and reused),
    checked against its DONE record: a missing or short file is an error, never read."""
    record = read_done(store, key)
    if record is None:
        raise ArtifactNotFoundError(f"{store.uri(key)} is not committed (no {DONE}); rerun the "
                                    "stage that produces it")
    where = files_key(record)
    if store.is_local:
        path = Path(store.uri(where))
    else:
        path = store.get_dir(where, cache_root() / "store-cache" / store.root.replace("://", "/")
                             / where, progress=False)
    expected = record.get("files")
    if expected is not None:
        have = {k: v for k, v in _listing(path).items() if k != DONE}
        wrong = sorted(k for k, size in expected.items() if have.get(k) != size)
        if wrong:
            raise StorageError(f"Artifact {store.uri(where)} does not match its {DONE} (missing "
                               f"or wrong size: {', '.join(wrong[:5])}); refresh its stage")
    return path


def read_file(store: ArtifactStore, key: str, name: str) -> bytes:
    """One file of a committed artifact, wherever its DONE record says its files are."""
    record = read_done(store, key)
    if record is None:
        raise ArtifactNotFoundError(f"{store.uri(key)} is not committed (no {DONE})")
    return store.read_bytes(f"{files_key(record)}/{name}")
