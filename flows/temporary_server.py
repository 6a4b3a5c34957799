"""The temporary Prefect server of a command run without PREFECT_API_URL, owned by the command.

Left to Prefect, the server starts on first use with this process's terminal as its output, and
is stopped at interpreter exit: after the command has printed its last line, and, while the
server is still writing its backlog of events, with a hundred lines and more of tracebacks of the
cancelled database writes. Here it starts up front with its output going to a log file, and
stops, once this process has handed over its logs and events, before the command prints its
result or its error."""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)
HAND_OVER_TIMEOUT_S = 10


@contextlib.contextmanager
def temporary_server(log_path: Path) -> Iterator[str | None]:
    """Start Prefect's temporary server, its output appended to `log_path`, unless
    PREFECT_API_URL names a server; yield its API URL (None: not ours to run); stop it on the
    way out, whether the body succeeded or raised."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        yield None
        return
    server = SubprocessASGIServer()   # the instance Prefect's clients use when no URL is set
    if server.running:                # started earlier in this process: its owner stops it
        yield server.api_url
        return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _output_to(log_path):
            server.start()
    except Exception:
        log.error("the temporary Prefect server did not start; its output: %s", log_path)
        raise
    log.info("temporary Prefect server on %s (its log: %s)", server.api_url, log_path)
    try:
        yield server.api_url
    finally:
        _hand_over()
        with _output_to(log_path):   # Prefect's "Stopping temporary server" line too
            server.stop()


def _hand_over() -> None:
    """Send the logs and events still queued in this process while the server is up, so that
    nothing tries to reach it once it is gone."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        try:
            worker.drain_all(timeout=HAND_OVER_TIMEOUT_S)
        except Exception as e:  # noqa: BLE001 - best effort: the build's outcome stands
            log.debug("could not hand over %s's queue: %s", worker.__name__, e)


@contextlib.contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """Meanwhile this process's stdout and stderr (file descriptors 1 and 2), and so those of
    any child it starts, append to `path`; the terminal gets them back after."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(1), os.dup(2)]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in (*saved, fd):
            os.close(f)
