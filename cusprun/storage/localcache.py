"""Local materialised copies of stored directories. A copy is filled in a temporary sibling
directory, stamped with a marker describing what it is a copy of, and renamed into place, so a
killed download never leaves something that looks complete; a later call with the same identity
skips the download."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cusprun.storage.errors import StorageError

log = logging.getLogger(__name__)

MARKER = ".cusprun-complete.json"
_PARTIAL = ".partial-"
_STALE_PARTIAL_S = 24 * 3600


def sha256_file(path: str | os.PathLike, chunk: int = 8 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _normal(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True))


def is_complete(dest: Path, identity: dict[str, Any]) -> bool:
    """`dest` holds a finished copy of `identity` and its files still have their sizes."""
    try:
        data = json.loads((dest / MARKER).read_text())
    except (OSError, ValueError):
        return False
    if data.get("identity") != _normal(identity):
        return False
    for rel, size in (data.get("sizes") or {}).items():
        p = dest / rel
        if not p.is_file() or p.stat().st_size != size:
            return False
    return True


def _clean_stale_partials(parent: Path, name: str) -> None:
    for p in parent.glob(f".{name}{_PARTIAL}*"):
        try:
            if time.time() - p.stat().st_mtime > _STALE_PARTIAL_S:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def _swap_in(tmp: Path, dest: Path, identity: dict[str, Any]) -> None:
    """Rename the finished `tmp` onto `dest`. Another process may do the same at the same time:
    whoever finds a complete copy there keeps it; an outdated copy of ours is moved aside (one
    rename) before it is deleted, so `dest` is never a half-deleted directory."""
    for _ in range(5):
        if is_complete(dest, identity):  # a concurrent download won the race
            shutil.rmtree(tmp, ignore_errors=True)
            return
        if dest.exists() and any(dest.iterdir()):
            aside = dest.with_name(f".{dest.name}{_PARTIAL}old-{uuid.uuid4().hex[:8]}")
            try:
                os.replace(dest, aside)
            except OSError:
                continue
            shutil.rmtree(aside, ignore_errors=True)
        try:
            os.replace(tmp, dest)
            return
        except OSError:
            continue  # someone put a copy there in between: look again
    raise StorageError(f"Could not put a downloaded copy in place at {str(dest)!r}")


def materialise(dest: Path, identity: dict[str, Any], sizes: dict[str, int],
                fill: Callable[[Path], None]) -> Path:
    """Make `dest` a complete copy of `identity`: return at once if it already is, else call
    `fill(tmp_dir)` and swap `tmp_dir` into place. Never deletes a non-empty `dest` that is not
    one of our copies (no marker)."""
    dest = Path(dest)
    if is_complete(dest, identity):
        log.info("%s already holds a complete copy; skipping download", dest)
        return dest
    if dest.exists() and any(dest.iterdir()) and not (dest / MARKER).exists():
        raise StorageError(f"Refusing to download into {str(dest)!r}: it is a non-empty directory "
                           "that cusprun did not create. Give an empty or new directory.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale_partials(dest.parent, dest.name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}{_PARTIAL}", dir=dest.parent))
    try:
        fill(tmp)
        marker = {"identity": _normal(identity), "sizes": sizes, "completed": time.time()}
        (tmp / MARKER).write_text(json.dumps(marker, indent=1, sort_keys=True))
        _swap_in(tmp, dest, identity)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("materialised %s", dest)
    return dest
