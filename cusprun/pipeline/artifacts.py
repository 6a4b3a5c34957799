"""Committing and reading stage artifacts so that concurrent builds, killed builds, refreshes and
lost answers from the store never show a reader a partial or mixed artifact, nor delete one a
reader holds.

An artifact lives under its content key, e.g. stats/<key>/, and is visible only once
<key>/DONE.json exists: the record readers trust, naming the artifact's files, their sizes and
where they are. A new key is committed first-writer-wins: the first build to claim it (creating
.claims/<key> atomically) uploads straight into <key>/; a build that finds it claimed (another
build is writing it, or one died while writing) uploads into its own .attempts/<key>/<id>/; then
each creates DONE.json atomically, and a build that loses that race removes its upload and
returns the winner's record. Every record created so (the claim, DONE.json) holds its writer's
owner id: a write whose answer was lost is recognised as the writer's own, never taken for a
lost race (which would delete the files the record names).

A refresh never deletes: it uploads into a new attempt folder, moves the current record aside
(.retired/<key>/<generation>-<folder>.json) and replaces DONE.json with one atomic write. A reader
that resolved the old record keeps reading intact files; the next read gets the new artifact.
Retired folders, and uploads of builds that died, are removed once untouched for
STALE_ATTEMPT_S (collect_garbage, run after commits that saw contention and after refreshes)."""
from __future__ import annotations

import json
import logging
import os
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from cusprun.paths import cache_root
from cusprun.storage.layout import DONE, attempts_key, claim_key, retired_key
from cusprun.storage import ArtifactNotFoundError, ArtifactStore, ObjectInfo, StorageError

log = logging.getLogger("cusprun.pipeline")

STALE_ATTEMPT_S = 6 * 3600   # retired artifacts and unfinished uploads untouched this long go


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


def _encode(record: dict) -> bytes:
    return (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()


def commit(store: ArtifactStore, local_dir: Path, key: str, summary: dict, *,
           replace: bool = False) -> dict:
    """Upload a finished artifact and make it visible (DONE.json last); returns the task result.
    If another build committed the same key first, its record is returned instead; with
    `replace` (a refresh), this artifact replaces the committed one."""
    files = _listing(local_dir)
    if DONE in files:
        raise StorageError(f"{local_dir}/{DONE} is reserved for the commit record")
    owner = _attempt_id()
    if replace:
        return _replace(store, local_dir, key, summary, files, owner)
    existing = read_done(store, key)
    if existing is not None:
        log.info("%s was committed meanwhile by another build; using it", store.uri(key))
        return existing
    direct = store.create_exclusive(claim_key(key), _encode(
        {"owner": owner, "pid": os.getpid(), "created": time.time()}))
    target = key if direct else f"{attempts_key(key)}/{owner}"
    store.put_dir(local_dir, target, progress=False, link=True)   # the scratch copy goes next
    record = _record(store, key, summary, files, owner, target, generation=0)
    if store.create_exclusive(f"{key}/{DONE}", _encode(record)):
        if not direct:   # there was contention: a dead build's folder may be lying around
            collect_garbage(store, key)
        return record
    winner = read_done(store, key)
    if winner is None:
        raise StorageError(f"{store.uri(key)}/{DONE} vanished right after another build wrote it")
    if winner.get("owner") == owner:   # ours after all; the store recognises this itself, but
        return record                  # nothing is deleted on a misreported race either way
    log.info("another build committed %s first; discarding this upload", store.uri(key))
    if not direct:
        store.delete(target, recursive=True)
    elif files_key(winner) != key:     # the winner's files are elsewhere; ours are nobody's
        for name in files:
            store.delete(f"{key}/{name}")
    return winner


def _record(store: ArtifactStore, key: str, summary: dict, files: dict[str, int], owner: str,
            target: str, generation: int) -> dict:
    record = {"uri": store.uri(key), "key": key, **summary, "files": files, "owner": owner,
              "generation": generation}
    if target != key:
        record["files_key"] = target
    return record


def _replace(store: ArtifactStore, local_dir: Path, key: str, summary: dict,
             files: dict[str, int], owner: str) -> dict:
    """A refresh: upload into a new attempt folder, set the current record aside, switch
    DONE.json to the new one (one atomic write). Nothing a reader may hold is deleted."""
    target = f"{attempts_key(key)}/{owner}"
    store.put_dir(local_dir, target, progress=False, link=True)
    old = read_done(store, key)   # read late: the record replaced is the one current now
    record = _record(store, key, summary, files, owner, target,
                     generation=0 if old is None else int(old.get("generation", 0)) + 1)
    if old is not None:   # before the switch, so the old folder is never unmarked and stale
        where = files_key(old)
        store.write_json(f"{retired_key(key)}/{old.get('generation', 0)}-"
                         f"{where.rsplit('/', 1)[-1]}.json", {**old, "retired_at": time.time()})
    store.write_bytes(f"{key}/{DONE}", _encode(record))
    log.info("%s refreshed (generation %d); readers of the previous files keep them",
             store.uri(key), record["generation"])
    collect_garbage(store, key)
    return record


def invalidate(store: ArtifactStore, key: str) -> None:
    """Remove an artifact outright (record first, so new readers stop trusting it). A refresh
    does not use this: it would delete files a concurrent reader holds (commit(replace=True))."""
    store.delete(f"{key}/{DONE}")
    for k in (key, attempts_key(key), retired_key(key)):
        store.delete(k, recursive=True)
    store.delete(claim_key(key))


def collect_garbage(store: ArtifactStore, key: str) -> None:
    """Remove the artifact's files no reader should hold any more, once untouched for
    STALE_ATTEMPT_S: those of records a refresh replaced (counted from the replacement) and
    uploads of builds that died. Never the files the current record names. Best effort: a
    failure here only leaves garbage."""
    try:
        _collect(store, key)
    except StorageError as e:
        log.warning("could not remove old uploads of %s: %s", store.uri(key), e)


def _stale(infos: list[ObjectInfo], now: float) -> bool:
    times = [o.mtime for o in infos if o.mtime is not None]
    return bool(times) and now - max(times) > STALE_ATTEMPT_S


def _collect(store: ArtifactStore, key: str) -> None:
    current = read_done(store, key)
    keep = {files_key(current)} if current is not None else set()
    now = time.time()
    for marker in store.list_info(retired_key(key)):
        try:
            old = store.read_json(marker.key)
        except ArtifactNotFoundError:   # another build's clean-up got there first
            continue
        where = files_key(old)
        if where in keep:         # current again: a refresh died between aside and switch
            continue
        if not _stale([marker], now):
            keep.add(where)
            continue
        log.info("removing %s, replaced by a refresh", store.uri(where))
        if where == key:          # the first build's files, next to DONE.json
            for name in old.get("files", {}):
                store.delete(f"{key}/{name}")
        else:
            store.delete(where, recursive=True)
        store.delete(marker.key)
    groups: dict[str, list[ObjectInfo]] = {}
    pre = attempts_key(key)
    for o in store.list_info(pre):
        groups.setdefault(o.key[len(pre) + 1:].split("/", 1)[0], []).append(o)
    for attempt, objs in groups.items():
        folder = f"{pre}/{attempt}"
        if folder not in keep and _stale(objs, now):
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
