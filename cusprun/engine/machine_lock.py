"""One placement at a time on this machine: whole or streamed is decided from free memory, and
a whole load then takes that memory, so a second decision made meanwhile sees memory that is
about to go. Flow runs on one worker are separate processes, so a thread lock is not enough: the
lock is also an flock on a per-user file, taken on a file opened for each hold (flock belongs to
the open file description, not to the process). Threads queue on a thread lock first, which is
also all there is where flock is not (Windows)."""
from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:      # Windows: no flock; the lock holds within the process only
    fcntl = None

_THREADS = threading.Lock()


def lock_path() -> Path:
    """$CUSPRUN_LOCK_DIR/placement.lock, else a per-user directory under the temp directory."""
    user = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    root = Path(os.environ.get("CUSPRUN_LOCK_DIR") or Path(tempfile.gettempdir()) / f"cusprun-{user}")
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    return root / "placement.lock"


@contextmanager
def placement_lock(*, blocking: bool = True) -> Iterator[None]:
    """Hold the machine's placement lock for the block. `blocking=False`: raise
    BlockingIOError at once when a thread or process holds it."""
    if not _THREADS.acquire(blocking=blocking):
        raise BlockingIOError("the placement lock is held by another thread")
    try:
        if fcntl is None:
            yield
            return
        fd = os.open(lock_path(), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            yield
        finally:
            os.close(fd)     # releases the flock
    finally:
        _THREADS.release()
