"""Turn an S3 (or local file) failure into one sentence a user can act on: what went wrong and
what to check. botocore/s3fs errors arrive wrapped in each other (s3fs turns a ClientError into
an OSError whose __cause__ is the ClientError); the whole chain is looked at."""
from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from typing import Any

from cusprun.storage.retry import chain, client_error_code, is_transient

CREDENTIALS_HINT = ("Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or give "
                    "key and secret in the storage options (the flow's storage_block)")
ENDPOINT_HINT = ("Check the endpoint URL (AWS_ENDPOINT_URL, or endpoint_url in the storage "
                 "options), that the service is running, and the network")


@dataclass(frozen=True)
class Diagnosis:
    problem: str       # e.g. "no AWS credentials found"
    advice: str        # e.g. "Set AWS_ACCESS_KEY_ID ..." (what to check or do)
    transient: bool    # retrying could help

    def sentence(self, what: str, uri: str, attempts: int | None = None) -> str:
        """'<what> <uri> failed [after N attempts]: <problem>. <advice>.' on one line."""
        after = f" after {attempts} attempts" if attempts and attempts > 1 and self.transient else ""
        return self.explain(f"{what} {uri} failed{after}")

    def explain(self, prefix: str) -> str:
        """'<prefix>: <problem>. <advice>.'"""
        return f"{prefix}: {self.problem}. {self.advice}."


def endpoint_of(storage_options: dict[str, Any] | None) -> str:
    """The S3 endpoint these options (or the AWS environment) point at, for messages."""
    opts = storage_options or {}
    ck = opts.get("client_kwargs") or {}
    return (opts.get("endpoint_url") or ck.get("endpoint_url")
            or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
            or "the default AWS endpoint")


def bucket_of(uri: str) -> str | None:
    if "://" not in uri:
        return None
    return uri.split("://", 1)[1].split("/", 1)[0] or None


def _short(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:160]}" if text else type(e).__name__


def _connection_reason(exc: BaseException) -> str:
    for e in chain(exc):
        if isinstance(e, ConnectionRefusedError):
            return "connection refused"
        if type(e).__name__ == "ConnectTimeoutError":
            return "no connection within the connect timeout"
        if type(e).__name__ == "gaierror":
            return "host name not found"
    return next((_short(e) for e in chain(exc) if isinstance(e, ConnectionError)), _short(exc))


def _names(exc: BaseException) -> set[str]:
    return {type(e).__name__ for e in chain(exc)}


def diagnose(exc: BaseException, uri: str,
             storage_options: dict[str, Any] | None = None) -> Diagnosis:
    """Why a call on `uri` failed, for a user."""
    remote = "://" in uri and not uri.startswith("file://")
    endpoint = endpoint_of(storage_options)
    bucket = bucket_of(uri)
    names = _names(exc)
    if names & {"NoCredentialsError", "PartialCredentialsError"}:
        what = "incomplete" if "PartialCredentialsError" in names else "no"
        return Diagnosis(f"{what} AWS credentials found", CREDENTIALS_HINT, False)
    code, status = client_error_code(exc)
    head_bucket = any("HeadBucket" in str(e) for e in chain(exc))
    if code == "NoSuchBucket" or (code == "404" and head_bucket):
        return Diagnosis(f"bucket {bucket!r} does not exist at {endpoint}",
                         "Check the bucket name in the URI, and that the endpoint and region are "
                         "the ones that hold it", False)
    if code == "InvalidAccessKeyId":
        return Diagnosis(f"the access key id is not known to {endpoint}",
                         "Check AWS_ACCESS_KEY_ID / AWS_PROFILE (or the key in the storage "
                         "options) and that the endpoint is the right one", False)
    if code == "SignatureDoesNotMatch":
        return Diagnosis("the secret key does not match the access key id",
                         "Check AWS_SECRET_ACCESS_KEY (or the secret in the storage options)", False)
    if code in ("ExpiredToken", "TokenRefreshRequired", "RequestTimeTooSkewed"):
        return Diagnosis(f"the credentials were refused ({code})",
                         "Refresh the session credentials and check the machine's clock", False)
    if code in ("AccessDenied", "403", "AllAccessDisabled") or status == 403:
        scope = f"s3://{bucket}/..." if bucket else uri
        return Diagnosis(f"access denied by {endpoint} (HTTP 403)",
                         f"Check that the credentials are valid there and may list, read and "
                         f"write {scope} (s3:ListBucket, s3:GetObject, s3:PutObject, "
                         "s3:DeleteObject), and the bucket policy", False)
    if names & {"ReadTimeoutError", "SocketTimeoutError", "ReadTimeout"} or code in (
            "RequestTimeout", "RequestTimeoutException"):
        return Diagnosis(f"endpoint {endpoint} did not answer in time (read timeout)",
                         "The service is overloaded or the network slow: retry later, or raise "
                         "config_kwargs.read_timeout in the storage options", True)
    if names & {"EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError",
                "ClientConnectorError", "ServerDisconnectedError"} or any(
            isinstance(e, (ConnectionError, TimeoutError)) for e in chain(exc)):
        return Diagnosis(f"endpoint {endpoint} is unreachable ({_connection_reason(exc)})",
                         ENDPOINT_HINT, True)
    if is_transient(exc):
        label = f"HTTP {status} {code}" if status and code and code != str(status) else (
            f"HTTP {status or code}" if (status or code) else _short(exc))
        return Diagnosis(f"endpoint {endpoint} kept failing ({label})",
                         "The service is unhealthy or throttling: retry later, and check its "
                         "status and request rate limits", True)
    if isinstance(exc, FileNotFoundError) or code in ("NoSuchKey", "404"):
        return Diagnosis("not found", "Check the key, the bucket and the endpoint (AWS_ENDPOINT_URL "
                         "or endpoint_url in the storage options)" if remote else "Check the path",
                         False)
    if isinstance(exc, PermissionError) or getattr(exc, "errno", None) == errno.EACCES:
        return Diagnosis(f"permission denied ({_short(exc)})",
                         "Check the permissions of the directory and its parents", False)
    if getattr(exc, "errno", None) == errno.ENOSPC:
        return Diagnosis("no space left on the device", "Free some disk space", False)
    if remote:
        return Diagnosis(_short(exc), f"Check the URI, the credentials and {endpoint}", False)
    return Diagnosis(_short(exc), "Check the path and the file system", False)
