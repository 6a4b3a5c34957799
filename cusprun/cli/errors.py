"""How the CLI shows errors: a user error (CusprunError) is one `error: ...` line and exit status
2, its traceback only with --debug; anything else is a bug and keeps its traceback. Prefect logs
the exception of a failed task or flow with its traceback; for user errors its log lines stay,
without the traceback."""
from __future__ import annotations

import contextlib
import logging
import sys
import traceback
from collections.abc import Iterator

from cusprun.errors import CusprunError

USER_ERROR_EXIT = 2
INTERRUPTED_EXIT = 130


@contextlib.contextmanager
def user_errors_without_tracebacks() -> Iterator[None]:
    """While active, log records about a CusprunError carry no traceback (the CLI prints the
    error once, as one line). Done where records are made, so every handler Prefect installs,
    whenever it installs it, sees the same record."""
    previous = logging.getLogRecordFactory()

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if record.exc_info and isinstance(record.exc_info[1], CusprunError):
            record.exc_info = None
            record.exc_text = None
        return record

    logging.setLogRecordFactory(factory)
    try:
        yield
    finally:
        logging.setLogRecordFactory(previous)


def report_user_error(e: CusprunError, debug: bool) -> int:
    if debug:
        traceback.print_exception(e, file=sys.stderr)
    print(f"error: {e}", file=sys.stderr)
    return USER_ERROR_EXIT
