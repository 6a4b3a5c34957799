"""Retry policy for store operations: transient failures (connection problems, timeouts, 5xx,
throttling) are retried with capped exponential backoff; permanent ones (missing key, access
denied, bad request) fail at once. This is the only retry layer: botocore's and s3fs's own
retries are switched off in `ArtifactStore` so attempts do not multiply."""
from __future__ import annotations

import asyncio
import errno
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

_TRANSIENT_CODES = {
    "Throttling", "ThrottlingException", "ThrottledException", "SlowDown", "RequestTimeout",
    "RequestTimeoutException", "RequestLimitExceeded", "TooManyRequestsException",
    "InternalError", "ServiceUnavailable", "ProvisionedThroughputExceededException",
    "ConditionalRequestConflict",   # 409: a concurrent conditional write; try again
}
_TRANSIENT_ERRNOS = {
    errno.EBUSY, errno.EAGAIN, errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED,
    errno.ETIMEDOUT, errno.EPIPE, errno.ENETUNREACH, errno.EHOSTUNREACH,
    getattr(errno, "EREMOTEIO", 121),
}
_PERMANENT_OS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError,
                 FileExistsError)


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` in total (1 = no retry); delay before retry i is base*2**i, capped, +-10%."""
    attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 8.0

    def delay(self, retry_index: int) -> float:
        d = min(self.max_delay, self.base_delay * (2 ** retry_index))
        return d * random.uniform(0.9, 1.1)


def chain(exc: BaseException) -> list[BaseException]:
    """`exc` and the exceptions it was raised from (cause or context), outermost first."""
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def client_error_code(exc: BaseException) -> tuple[str | None, int | None]:
    """(error code, HTTP status) of the first botocore-style ClientError in the chain."""
    for e in chain(exc):
        response = getattr(e, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            return (str(code) if code else None), (status if isinstance(status, int) else None)
    return None, None


def _client_error_verdict(exc: BaseException) -> bool | None:
    """For a botocore-style ClientError (anything with .response): transient or not."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code in _TRANSIENT_CODES or (code.isdigit() and (int(code) >= 500 or int(code) == 429)):
        return True
    if isinstance(status, int):
        return status >= 500 or status == 429
    return False


def is_transient(exc: BaseException) -> bool:
    """True when retrying `exc` could succeed (looks through the exception chain)."""
    links = chain(exc)
    for e in links:  # an HTTP response, when there is one, decides
        verdict = _client_error_verdict(e)
        if verdict is not None:
            return verdict
    for e in links:
        if isinstance(e, _PERMANENT_OS):
            return False
        if isinstance(e, (ConnectionError, TimeoutError, asyncio.TimeoutError)):
            return True
        mod = type(e).__module__ or ""
        name = type(e).__name__
        if mod.startswith("botocore") and name in {"NoCredentialsError", "PartialCredentialsError",
                                                   "NoRegionError", "ParamValidationError"}:
            return False
        if mod.startswith(("botocore", "urllib3", "aiohttp")) and (
                "Connection" in name or "Timeout" in name or "HTTPClient" in name
                or "Payload" in name or "Disconnected" in name or "IncompleteRead" in name
                or "ResponseParser" in name):
            return True
        if isinstance(e, OSError) and e.errno in _TRANSIENT_ERRNOS:
            return True
    return False


def _reason(exc: BaseException) -> str:
    code, status = client_error_code(exc)
    if status or code:
        parts = [f"HTTP {status}" if status else "", code if code and code != str(status) else ""]
        return " ".join(p for p in parts if p)
    return f"{type(exc).__name__}: {exc}"


def call_with_retries(fn: Callable[[], T], *, what: str, policy: RetryPolicy) -> T:
    """Run `fn`; retry transient failures per `policy` (logged), re-raise the last error."""
    for attempt in range(1, policy.attempts + 1):
        try:
            return fn()
        except Exception as e:
            if attempt >= policy.attempts or not is_transient(e):
                raise
            wait = policy.delay(attempt - 1)
            log.warning("%s failed with a transient error (%s); attempt %d/%d, retrying in %.1fs",
                        what, _reason(e), attempt, policy.attempts, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover
