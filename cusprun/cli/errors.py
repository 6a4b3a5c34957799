"""How the CLI shows errors: a user error (CusprunError) is one `error: ...` line and exit status
2, its traceback only with --debug; anything else is a bug and keeps its traceback. Prefect logs
the exception of a failed task or flow with its traceback; for user errors the console gets the
log line without it (the Prefect UI keeps the full record)."""
from __future__ import annotations

import logging
import sys
import traceback

from cusprun.errors import CusprunError

USER_ERROR_EXIT = 2
INTERRUPTED_EXIT = 130


class DropUserErrorTracebacks(logging.Filter):
    """On console handlers: log records about a CusprunError lose their traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, CusprunError):
            record.exc_info = None
            record.exc_text = None
        return True


def quiet_console_tracebacks() -> None:
    """Add DropUserErrorTracebacks to the root logger's handlers (the console; Prefect's API log
    handlers sit on its own loggers and see records first, traceback included)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, DropUserErrorTracebacks) for f in handler.filters):
            handler.addFilter(DropUserErrorTracebacks())


def report_user_error(e: CusprunError, debug: bool) -> int:
    if debug:
        traceback.print_exception(e, file=sys.stderr)
    print(f"error: {e}", file=sys.stderr)
    return USER_ERROR_EXIT
