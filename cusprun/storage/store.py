"""`ArtifactStore`: one root (a local directory or an fsspec URL such as s3://bucket/prefix) and
keys below it. Every remote call goes through one retry policy; failures surface as
`StorageError`s that name the URI and the underlying reason. Writes are atomic per object:
local files are written to a temporary name and renamed, S3 objects appear only when complete."""
from __future__ import annotations

import json
import logging
import os
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import fsspec
from fsspec.spec import AbstractFileSystem
from tqdm.auto import tqdm

from cusprun.errors import SpecError
from cusprun.storage.diagnose import diagnose
from cusprun.storage.errors import ArtifactNotFoundError, StorageError
from cusprun.storage.localcache import materialise
from cusprun.storage.retry import RetryPolicy, call_with_retries

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_ROOT = "./artifacts"
# Fail fast on dead endpoints; botocore/s3fs retries are off because RetryPolicy retries.
_S3_CONFIG_DEFAULTS: dict[str, Any] = {
    "connect_timeout": 5, "read_timeout": 60,
    "retries": {"total_max_attempts": 1, "mode": "standard"},
}
CHECK_POLICY = RetryPolicy(attempts=2, base_delay=0.25, max_delay=1.0)


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    mtime: float | None   # seconds since the epoch (S3: LastModified)
    etag: str | None


def _mtime(info: dict) -> float | None:
    for name in ("mtime", "LastModified", "last_modified", "updated"):
        v = info.get(name)
        if isinstance(v, datetime):
            return v.timestamp()
        if isinstance(v, (int, float)):
            return float(v)
    return None


def _write_via_temp(dest: Path, write: Callable[[str], None]) -> None:
    """write(tmp) fills a temporary file next to `dest` (whose folder must exist), which is then
    renamed onto `dest`: readers see the old file or the new one, never a partial one. The
    temporary file is removed if anything fails."""
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _link_or_copy(src: Path, dest: Path, link: bool, copy: Callable[[], None]) -> None:
    """dest (an empty temporary file) becomes a hard link to src, or copy() fills it."""
    if link:
        try:
            dest.unlink()
            os.link(src, dest)
            return
        except OSError:      # another filesystem, or links not supported: copy
            dest.touch()
    copy()


def _s3_fs(storage_options: dict[str, Any]) -> AbstractFileSystem:
    opts = dict(storage_options)
    opts["config_kwargs"] = {**_S3_CONFIG_DEFAULTS, **(opts.get("config_kwargs") or {})}
    opts.setdefault("use_listings_cache", False)   # other processes write under the same root
    opts.setdefault("skip_instance_cache", True)   # we mutate .retries below
    fs = fsspec.filesystem("s3", **opts)
    fs.retries = 1
    return fs


class ArtifactStore:
    """Artifacts under `root`. `storage_options` go to fsspec (for S3: key/secret/token,
    endpoint_url or client_kwargs={"endpoint_url": ...}, config_kwargs...); without them the
    usual AWS sources apply (AWS_* env vars incl. AWS_ENDPOINT_URL, AWS_PROFILE, instance role).
    `fs` replaces the filesystem (fault injection in tests)."""

    def __init__(self, root: str | os.PathLike = DEFAULT_ROOT,
                 storage_options: dict[str, Any] | None = None, *,
                 retry: RetryPolicy | None = None, fs: AbstractFileSystem | None = None) -> None:
        root = os.fspath(root)
        self.storage_options = dict(storage_options or {})
        self.retry = retry or RetryPolicy()
        protocol, _, rest = root.partition("://") if "://" in root else ("file", "", root)
        self.protocol = "s3" if protocol == "s3a" else protocol
        self.is_local = self.protocol in ("file", "local")
        if self.is_local:
            self._root_path = os.path.abspath(os.path.expanduser(rest)).replace(os.sep, "/")
            self.root = self._root_path
        else:
            self._root_path = rest.strip("/")
            if not self._root_path:
                raise SpecError(f"Artifact store root {root!r} names no bucket/container; "
                                "give e.g. s3://my-bucket/cusprun")
            self.root = f"{self.protocol}://{self._root_path}"
        if fs is not None:
            self.fs = fs
        elif self.is_local:
            self.fs = fsspec.filesystem("file")
        elif self.protocol == "s3":
            self.fs = _s3_fs(self.storage_options)
        else:
            self.fs = fsspec.filesystem(self.protocol, **self.storage_options)

    def __repr__(self) -> str:  # never shows credentials
        return f"ArtifactStore({self.root!r})"

    # ---- keys and URIs -------------------------------------------------------------------
    @staticmethod
    def normalize_key(key: str) -> str:
        """'a/b/c' form; rejects '..', '.', backslashes and empty segments."""
        if not isinstance(key, str):
            raise SpecError(f"Artifact key must be a string, got {key!r}")
        k = key.strip("/")
        if not k:
            return ""
        parts = k.split("/")
        if "\\" in k or any(p in ("", ".", "..") for p in parts):
            raise SpecError(f"Invalid artifact key {key!r}: use '/'-separated names without "
                            "'.', '..', empty segments or backslashes, e.g. 'plans/ab12cd'")
        return k

    def _path(self, key: str) -> str:
        k = self.normalize_key(key)
        return f"{self._root_path}/{k}" if k else self._root_path

    def uri(self, key: str = "") -> str:
        """Full URI (local: absolute path) of `key`; what Prefect tasks pass around."""
        k = self.normalize_key(key)
        return f"{self.root}/{k}" if k else self.root

    def key_of(self, uri: str) -> str:
        """Inverse of `uri`: the key of a URI under this root. A local URI may name the root
        another way (through a symbolic link, or its target): Prefect's result cache hands back
        the URIs of the build that computed a stage, which may have spelled the root so."""
        if uri == self.root:
            return ""
        if uri.startswith(self.root + "/"):
            return self.normalize_key(uri[len(self.root) + 1:])
        rel = self._same_directory_key(uri) if self.is_local else None
        if rel is None:
            raise SpecError(f"URI {uri!r} is not under the artifact store root {self.root!r}")
        return self.normalize_key(rel)

    def _same_directory_key(self, uri: str) -> str | None:
        """Key of a local path under this root, links resolved on both sides; None: elsewhere."""
        path = uri.removeprefix("file://")
        if not os.path.isabs(path):
            return None
        rel = os.path.relpath(os.path.realpath(path), os.path.realpath(self._root_path))
        if rel == os.curdir:
            return ""
        if rel == os.pardir or rel.startswith(os.pardir + os.sep) or os.path.isabs(rel):
            return None
        return rel.replace(os.sep, "/")

    def _key_from_fs_path(self, path: str) -> str:
        path = path.replace(os.sep, "/") if self.is_local else path
        return path[len(self._root_path):].strip("/")

    # ---- the one place that calls the filesystem ------------------------------------------
    def _call(self, what: str, key: str, fn: Callable[[], T],
              policy: RetryPolicy | None = None) -> T:
        policy = policy or self.retry
        uri = self.uri(key)
        try:
            return call_with_retries(fn, what=f"{what} {uri}", policy=policy)
        except StorageError:
            raise
        except FileNotFoundError as e:
            d = diagnose(e, uri, self.storage_options)
            if d.problem != "not found":   # e.g. the bucket is gone: not a missing artifact
                raise StorageError(d.sentence(what.capitalize(), uri)) from e
            raise ArtifactNotFoundError(f"{what} {uri}: not found ({e})") from e
        except Exception as e:
            d = diagnose(e, uri, self.storage_options)
            raise StorageError(d.sentence(what.capitalize(), uri, policy.attempts),
                               transient=d.transient) from e

    # ---- queries ---------------------------------------------------------------------------
    def info(self, key: str) -> ObjectInfo:
        d = self._call("look up", key, lambda: self.fs.info(self._path(key)))
        return ObjectInfo(self.normalize_key(key), int(d.get("size") or 0), _mtime(d),
                          d.get("ETag") or d.get("etag"))

    def exists(self, key: str) -> bool:
        """True for an object or a non-empty prefix ("directory")."""
        try:
            self.info(key)
            return True
        except ArtifactNotFoundError:
            return False

    def list_info(self, prefix: str = "") -> list[ObjectInfo]:
        """Every object under `prefix` (recursive), sorted by key. Missing prefix: []."""
        base = self._path(prefix)
        found = self._call("list", prefix, lambda: self.fs.find(base, detail=True))
        out = []
        for name, d in found.items():
            if d.get("type", "file") != "file":
                continue
            key = self._key_from_fs_path(name)
            pre = self.normalize_key(prefix)
            if pre and not (key == pre or key.startswith(pre + "/")):
                continue
            out.append(ObjectInfo(key, int(d.get("size") or 0), _mtime(d),
                                  d.get("ETag") or d.get("etag")))
        return sorted(out, key=lambda o: o.key)

    def list(self, prefix: str = "") -> list[str]:
        """Keys of every object under `prefix` (recursive), sorted."""
        return [o.key for o in self.list_info(prefix)]

    # ---- reads -----------------------------------------------------------------------------
    def read_bytes(self, key: str) -> bytes:
        return self._call("read", key, lambda: self.fs.cat_file(self._path(key)))

    def read_json(self, key: str) -> Any:
        data = self.read_bytes(key)
        try:
            return json.loads(data)
        except ValueError as e:
            raise StorageError(f"{self.uri(key)} is not valid JSON: {e}") from e

    def get_file(self, key: str, local: str | os.PathLike) -> Path:
        """Download one object to `local` (written to a temporary name, then renamed)."""
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)

        self._call("download", key,
                   lambda: _write_via_temp(local, lambda tmp: self.fs.get_file(self._path(key), tmp)))
        return local

    def get_dir(self, key: str, local_dir: str | os.PathLike, *, progress: bool = True) -> Path:
        """Materialise everything under `key` into `local_dir`. Skipped when `local_dir` already
        holds a complete copy of the same listing (sizes + ETag/mtime, kept in a marker file)."""
        infos = self.list_info(key)
        if not infos:
            raise ArtifactNotFoundError(f"download {self.uri(key)}: nothing stored under this key")
        pre = self.normalize_key(key)
        rel = {o.key[len(pre):].strip("/") or Path(o.key).name: o for o in infos}
        identity = {"uri": self.uri(key),
                    "files": {r: [o.size, o.etag or o.mtime] for r, o in sorted(rel.items())}}

        def fill(tmp: Path) -> None:
            for r, o in tqdm(sorted(rel.items()), desc=f"get {pre}", unit="file",
                             disable=not progress or len(rel) < 2):
                self.get_file(o.key, tmp / r)
        return materialise(Path(local_dir), identity, {r: o.size for r, o in rel.items()}, fill)

    # ---- writes ----------------------------------------------------------------------------
    def _atomic_local_write(self, key: str, write: Callable[[str], None]) -> None:
        dest = Path(self._path(key))
        dest.parent.mkdir(parents=True, exist_ok=True)
        _write_via_temp(dest, write)

    def write_bytes(self, key: str, data: bytes) -> str:
        """Atomic: readers see the old object or the new one, never a partial one."""
        if not self.normalize_key(key):
            raise SpecError("write_bytes needs a non-empty key")
        if self.is_local:
            def put() -> None:
                self._atomic_local_write(key, lambda tmp: Path(tmp).write_bytes(data))
        else:
            def put() -> None:
                self.fs.pipe_file(self._path(key), data)
        self._call("write", key, put)
        return self.uri(key)

    def create_exclusive(self, key: str, data: bytes) -> bool:
        """Create `key` with `data` unless it already exists; True when this call created it.
        Of concurrent callers exactly one wins: S3 uses a conditional PUT (If-None-Match: *),
        local stores hard-link a finished temporary file (both atomic). Other filesystems fall
        back to check-then-write. `data` must be unique to the caller (hold an owner id): a
        remote store that answers "exists" may be answering a resent request whose first try
        created the object but lost its answer (our retries, or aiohttp's own resend of a PUT
        whose kept-alive connection dropped), so the object is read back and equal bytes mean
        this caller won."""
        if not self.normalize_key(key):
            raise SpecError("create_exclusive needs a non-empty key")
        path = self._path(key)
        if self.is_local:
            def create() -> bool:
                dest = Path(path)
                dest.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
                try:
                    with os.fdopen(fd, "wb") as f:
                        f.write(data)
                    os.link(tmp, dest)
                    return True
                except FileExistsError:
                    return False
                finally:
                    Path(tmp).unlink(missing_ok=True)
        elif self.protocol == "s3":
            bucket, obj, _ = self.fs.split_path(path)

            def create() -> bool:
                try:
                    self.fs.call_s3("put_object", Bucket=bucket, Key=obj, Body=data, IfNoneMatch="*")
                    return True
                except FileExistsError:   # s3fs's name for 412 PreconditionFailed (If-None-Match)
                    return False
        else:
            def create() -> bool:
                if self.fs.exists(path):
                    return False
                self.fs.pipe_file(path, data)
                return True
        if self.is_local:   # a hard link has no answer to lose
            return self._call("create", key, create)
        return self._call("create", key, lambda: create() or self._holds(path, data))

    def _holds(self, path: str, data: bytes) -> bool:
        """Whether the object at `path` holds exactly `data` (missing: no)."""
        try:
            same = self.fs.cat_file(path) == data
        except FileNotFoundError:
            return False
        if same:
            log.info("%s: created by an earlier try of this write, whose answer was lost", path)
        return same

    def write_json(self, key: str, obj: Any) -> str:
        return self.write_bytes(key, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())

    def put_file(self, local: str | os.PathLike, key: str, *, link: bool = False) -> str:
        """Upload one local file to `key`; returns its URI. `link`: a local store hard-links the
        file instead of copying it where both are on one filesystem (for files nobody changes in
        place afterwards: a stage's finished artifact; a sliced 70B checkpoint is then not
        written twice)."""
        local = Path(local)
        if not local.is_file():
            raise SpecError(f"put_file needs an existing local file, got {str(local)!r}")
        if not self.normalize_key(key):
            raise SpecError("put_file needs a non-empty key")
        if self.is_local:
            def put() -> None:
                self._atomic_local_write(key, lambda tmp: _link_or_copy(
                    local, Path(tmp), link, lambda: self.fs.put_file(str(local), tmp)))
        else:
            def put() -> None:
                self.fs.put_file(str(local), self._path(key))
        self._call("upload", key, put)
        return self.uri(key)

    def put_dir(self, local_dir: str | os.PathLike, key: str, *, progress: bool = True,
                link: bool = False) -> list[str]:
        """Upload every file under `local_dir` to `key/<relative path>`; returns their keys
        (`link`: as put_file)."""
        local_dir = Path(local_dir)
        if not local_dir.is_dir():
            raise SpecError(f"put_dir needs an existing local directory, got {str(local_dir)!r}")
        pre = self.normalize_key(key)
        files = sorted(p for p in local_dir.rglob("*") if p.is_file())
        keys = []
        for p in tqdm(files, desc=f"put {pre}", unit="file", disable=not progress or len(files) < 2):
            k = f"{pre}/{p.relative_to(local_dir).as_posix()}" if pre else p.relative_to(local_dir).as_posix()
            self.put_file(p, k, link=link)
            keys.append(k)
        return keys

    def delete(self, key: str, *, recursive: bool = False) -> None:
        """Delete an object (or, with `recursive`, everything under a prefix). Missing: no-op."""
        if not self.normalize_key(key):
            raise SpecError("refusing to delete the store root; give a key")
        path = self._path(key)

        def rm() -> None:
            try:
                self.fs.rm(path, recursive=recursive)
            except FileNotFoundError:
                pass
        self._call("delete", key, rm)

    # ---- health ------------------------------------------------------------------------------
    def check(self, *, write: bool = False) -> None:
        """Raise StorageError quickly (seconds) when the root cannot be used: unreachable
        endpoint, missing bucket, missing or refused credentials, a local root that is a file or
        read-only. With `write`, also write and delete a small probe object, so credentials that
        may only read fail here and not after hours of work."""
        if self.is_local:
            root = Path(self._root_path)
            if root.exists() and not root.is_dir():
                raise StorageError(f"Artifact store root {self.root!r} is a file; give a "
                                   "directory (it is created if missing) or s3://bucket/prefix")
            try:
                root.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StorageError(f"Artifact store root {self.root!r} cannot be created: {e}") from e
            if not os.access(root, os.W_OK):
                raise StorageError(f"Artifact store root {self.root!r} is not writable")
            return
        what = "Checking artifact store"
        if self.protocol == "s3":
            bucket = self._root_path.split("/", 1)[0]
            def probe() -> Any:
                return self.fs.call_s3("head_bucket", Bucket=bucket)
        else:
            def probe() -> Any:
                return self.fs.ls(self._root_path)
        try:
            call_with_retries(probe, what=f"check {self.root}", policy=CHECK_POLICY)
        except Exception as e:
            d = diagnose(e, self.root, self.storage_options)
            raise StorageError(d.sentence(what, self.root, CHECK_POLICY.attempts),
                               transient=d.transient) from e
        if write:
            key = f".cusprun-write-check/{uuid.uuid4().hex}"
            try:
                call_with_retries(lambda: self.fs.pipe_file(self._path(key), b"ok"),
                                  what=f"write check {self.root}", policy=CHECK_POLICY)
            except Exception as e:
                d = diagnose(e, self.root, self.storage_options)
                raise StorageError(d.sentence("Writing to artifact store", self.root,
                                              CHECK_POLICY.attempts), transient=d.transient) from e
            self.delete(key)
        log.debug("artifact store %s reachable", self.root)
