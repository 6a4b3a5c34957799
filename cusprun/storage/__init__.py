"""Artifact store: content-addressed artifacts and atomically published experts, on a local
directory or S3 (fsspec). No Prefect here: tasks pass URIs/hashes and use this library."""
from cusprun.storage.errors import (ArtifactNotFoundError, ExpertNotFoundError, PublishError,
                                    StorageError)
from cusprun.storage.experts import (ExpertManifest, FileEntry, PublishedExpert, gc_incomplete,
                                     get_expert, latest_version, list_versions, publish_expert,
                                     read_expert)
from cusprun.storage.layout import (STAGE_PREFIX, expert_key, expert_prefix, latest_key,
                                    manifest_key, stage_key)
from cusprun.storage.localcache import sha256_file
from cusprun.storage.retry import RetryPolicy, is_transient
from cusprun.storage.store import DEFAULT_ROOT, ArtifactStore, ObjectInfo

__all__ = [
    "ArtifactStore", "ObjectInfo", "DEFAULT_ROOT", "RetryPolicy", "is_transient",
    "StorageError", "ArtifactNotFoundError", "ExpertNotFoundError", "PublishError",
    "STAGE_PREFIX", "stage_key", "expert_prefix", "expert_key",
    "manifest_key", "latest_key",
    "publish_expert", "list_versions", "latest_version", "read_expert", "get_expert",
    "gc_incomplete", "PublishedExpert", "ExpertManifest", "FileEntry", "sha256_file",
]
