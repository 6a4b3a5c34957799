"""Test helper (import as `from tests.support.sigkill import killed_at_marker`):
run a subprocess up to a point it marks with a file, then SIGKILL it there."""
from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tests.support.wait import wait_until


@contextmanager
def killed_at_marker(cmd: Sequence[str], marker: Path, *, timeout: float, what: str,
                     poll: float = 0.2, tail: int = 3000, **popen_kw) -> Iterator[subprocess.Popen]:
    """Start `cmd` (stderr to a temporary file, which never fills up and blocks the process as an
    unread pipe would; other Popen arguments as given) and wait until it creates
    `marker`; then yield the process, and after the block SIGKILL it and check that it died of
    that. Fails with the last `tail` characters of its stderr if it exits before the marker, and
    with "timed out ... waiting for <what> to reach the marker" after `timeout` seconds. The
    process is always reaped."""
    err = tempfile.TemporaryFile()
    proc = subprocess.Popen(list(cmd), stderr=err, **popen_kw)

    def stderr_tail() -> str:
        err.seek(0)
        return err.read().decode(errors="replace")[-tail:]

    def reached() -> bool:
        assert proc.poll() is None, stderr_tail()
        return marker.exists()

    try:
        wait_until(reached, what=f"{what} to reach the marker", timeout=timeout, every=poll)
        yield proc
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        err.close()
