"""Failure handling: transient errors retried with backoff, permanent ones not, and dead
endpoints / missing buckets reported quickly. Faults are injected by wrapping the real
filesystem (local or s3fs against the moto server); the operations themselves are real."""
from __future__ import annotations

import errno
import logging
from collections import Counter

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from s3fs.errors import translate_boto_error

from cusprun.storage import (ArtifactNotFoundError, ArtifactStore, RetryPolicy, StorageError,
                             is_transient)
from tests.support.network import closed_port, tcp_connects
from tests.support.s3_faults import FaultyEndpoint

FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05)


class FlakyFS:
    """Wraps a real fsspec filesystem; the first `fail_first` calls to `methods` raise."""

    def __init__(self, fs, fail_first: int = 0, error=lambda: ConnectionError("reset by peer"),
                 methods=("put_file", "get_file", "cat_file", "pipe_file", "info", "find")):
        self._fs, self.failures_left, self._error, self._methods = fs, fail_first, error, methods
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name):
        attr = getattr(self._fs, name)
        if name not in self._methods:
            return attr

        def wrapped(*args, **kwargs):
            self.calls[name] += 1
            if self.failures_left > 0:
                self.failures_left -= 1
                raise self._error()
            return attr(*args, **kwargs)
        return wrapped


def _client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")


@pytest.fixture
def base(store) -> ArtifactStore:
    """The real store (local, then s3; see conftest) that _wrap puts a flaky filesystem in front of."""
    return store


def _wrap(base: ArtifactStore, **kw) -> tuple[ArtifactStore, FlakyFS]:
    flaky = FlakyFS(base.fs, **kw)
    return ArtifactStore(base.root, base.storage_options, retry=FAST, fs=flaky), flaky


def test_classification():
    assert is_transient(ConnectionError("x"))
    assert is_transient(TimeoutError())
    assert is_transient(EndpointConnectionError(endpoint_url="http://h"))
    assert is_transient(translate_boto_error(_client_error("SlowDown", 503)))
    assert is_transient(translate_boto_error(_client_error("InternalError", 500)))
    assert is_transient(_client_error("Throttling", 400))
    assert is_transient(OSError(errno.ECONNRESET, "reset"))
    assert not is_transient(translate_boto_error(_client_error("AccessDenied", 403)))
    assert not is_transient(translate_boto_error(_client_error("NoSuchKey", 404)))
    assert not is_transient(FileNotFoundError("x"))
    assert not is_transient(PermissionError("x"))
    assert not is_transient(ValueError("x"))


def test_transient_errors_are_retried_and_logged(base, tmp_path, caplog):
    src = tmp_path / "f.txt"
    src.write_text("hello")
    store, flaky = _wrap(base, fail_first=2)
    with caplog.at_level(logging.WARNING, logger="cusprun.storage.retry"):
        store.put_file(src, "plans/p/f.txt")
    assert flaky.calls["put_file"] == 3
    assert len([r for r in caplog.records if "transient" in r.getMessage()]) == 2
    assert base.read_bytes("plans/p/f.txt") == b"hello"  # the real store has it


def test_throttling_5xx_is_retried(base):
    base.write_json("plans/p/x.json", {"a": 1})
    store, flaky = _wrap(base, fail_first=1, error=lambda: translate_boto_error(
        _client_error("SlowDown", 503)))
    assert store.read_json("plans/p/x.json") == {"a": 1}
    assert flaky.calls["cat_file"] == 2


def test_retries_are_bounded(base, tmp_path):
    src = tmp_path / "f.txt"
    src.write_text("x")
    store, flaky = _wrap(base, fail_first=100)
    with pytest.raises(StorageError, match="after 3 attempts.*ConnectionError"):
        store.put_file(src, "plans/p/f.txt")
    assert flaky.calls["put_file"] == 3


def test_permanent_error_is_not_retried(base, tmp_path):
    src = tmp_path / "f.txt"
    src.write_text("x")
    store, flaky = _wrap(base, fail_first=100, error=lambda: translate_boto_error(
        _client_error("AccessDenied", 403)))
    with pytest.raises(StorageError, match=r"failed: access denied .*\(HTTP 403\)\. Check that the "
                                           r"credentials"):
        store.put_file(src, "plans/p/f.txt")
    assert flaky.calls["put_file"] == 1


def test_missing_key_is_not_retried(base, tmp_path):
    """A real miss from the real backend: one call, ArtifactNotFoundError."""
    store, flaky = _wrap(base)
    with pytest.raises(ArtifactNotFoundError, match="plans/absent.json"):
        store.get_file("plans/absent.json", tmp_path / "x")
    with pytest.raises(ArtifactNotFoundError):
        store.read_bytes("plans/absent.json")
    assert flaky.calls["get_file"] == 1 and flaky.calls["cat_file"] == 1
    assert not store.exists("plans/absent.json")


@pytest.mark.s3
def test_unreachable_endpoint_fails_fast(s3_server, tmp_path):
    """Quick because bounded: one connection attempt per attempt of the policy (the store's
    check policy, then the store's own), none from botocore's or s3fs's retries."""
    from cusprun.storage.store import CHECK_POLICY

    port = closed_port()
    endpoint = f"http://127.0.0.1:{port}"
    store = ArtifactStore("s3://some-bucket/cusprun", {"client_kwargs": {"endpoint_url": endpoint}},
                          retry=FAST)
    with tcp_connects() as connects:
        with pytest.raises(StorageError) as e:
            store.check()
        msg = str(e.value)
        assert "s3://some-bucket/cusprun" in msg and endpoint in msg and "unreachable" in msg
        assert connects.count(("127.0.0.1", port)) == CHECK_POLICY.attempts
        src = tmp_path / "f.txt"
        src.write_text("x")
        with pytest.raises(StorageError, match="after 3 attempts"):
            store.put_file(src, "a/b")
        assert connects.count(("127.0.0.1", port)) == CHECK_POLICY.attempts + FAST.attempts


@pytest.mark.s3
def test_missing_bucket_is_a_clear_error(s3_server):
    """A missing bucket is permanent: one request each, never retried (through a counting proxy
    in front of moto that injects nothing)."""
    with FaultyEndpoint(s3_server.endpoint_url) as ep:
        store = ArtifactStore("s3://cusprun-no-such-bucket/x",
                              {"client_kwargs": {"endpoint_url": ep.url}}, retry=FAST)
        with pytest.raises(StorageError, match="cusprun-no-such-bucket.*does not exist"):
            store.check()
        assert ep.requests == 1
        with pytest.raises(StorageError, match="cusprun-no-such-bucket"):
            store.write_json("plans/p.json", {})
        assert ep.requests == 2
