"""Storage-specific errors. All are `StorageError`s, so callers can catch one class."""
from __future__ import annotations

from cusprun.errors import StorageError

__all__ = ["StorageError", "ArtifactNotFoundError", "ExpertNotFoundError", "PublishError"]


class ArtifactNotFoundError(StorageError, FileNotFoundError):
    """A key that should exist in the store does not (never retried)."""


class ExpertNotFoundError(StorageError, LookupError):
    """No published (manifested) expert matches the requested name/version."""


class PublishError(StorageError):
    """Publishing an expert failed; nothing was made visible to readers."""
