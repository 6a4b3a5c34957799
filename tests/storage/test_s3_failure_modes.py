"""S3 failure modes against the real moto server: no credentials, unknown bucket, access denied,
endpoint unreachable, slow and flaky endpoints. Each gives one line from the CLI (what failed,
which URI, what to check) and exit status 2; only transient failures are retried, a bounded
number of times."""
from __future__ import annotations

import logging
import os
import subprocess

import pytest

from cusprun.cli import main
from cusprun.storage import ArtifactStore, StorageError
from tests.support.network import closed_port, tcp_connects
from tests.support.paths import CUSPRUN, user_cache
from tests.support.s3_faults import (FAST_RETRY as FAST, FaultyEndpoint, iam_user, moto_iam_auth,
                                     no_aws_credentials, store_through)

pytestmark = pytest.mark.s3


def cli_error(capsys, *argv: str) -> str:
    """Run `cusprun build ...` in-process; it must fail with exit 2 and one `error:` line."""
    assert main(["build", *argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.fixture
def endpoint_env(s3_server, monkeypatch):
    """The CLI reaches moto the usual AWS way: AWS_ENDPOINT_URL."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)
    return s3_server.endpoint_url


def test_build_without_credentials_prints_one_line_in_a_fresh_process(s3_server, tmp_path):
    """The command from the issue, as a user types it, on a machine without AWS credentials.
    Quick because it sends nothing: the endpoint (a counting proxy in front of moto) sees no
    request, and instance metadata is off, so no credential lookup waits on the network."""
    with FaultyEndpoint(s3_server.endpoint_url) as ep:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update({"AWS_EC2_METADATA_DISABLED": "true", "HOME": str(tmp_path),
                    "AWS_ENDPOINT_URL": ep.url, "CUSPRUN_CACHE": user_cache()})
        proc = subprocess.run([CUSPRUN, "build", "--domain", "health",
                               "--domain-source", "s3://some-bucket/x.parquet"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert ep.requests == 0
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == ("error: Cannot read corpus source 's3://some-bucket/x.parquet': no AWS "
                           "credentials found. Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or "
                           "AWS_PROFILE), or give key and secret in the storage options (the "
                           "flow's storage_block).\n")
    assert proc.stdout == ""
    assert not (tmp_path / "artifacts").exists() or not any((tmp_path / "artifacts").iterdir())


def test_no_credentials_for_the_artifact_store(endpoint_env, s3_bucket, monkeypatch, tmp_path, capsys):
    no_aws_credentials(monkeypatch, tmp_path)
    line = cli_error(capsys, "--storage-root", s3_bucket.uri)
    assert line == (f"error: Checking artifact store {s3_bucket.uri} failed: no AWS credentials "
                    "found. Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or "
                    "give key and secret in the storage options (the flow's storage_block).")


def test_unknown_bucket(endpoint_env, capsys):
    line = cli_error(capsys, "--storage-root", "s3://cusprun-no-such-bucket/experts")
    assert line == ("error: Checking artifact store s3://cusprun-no-such-bucket/experts failed: "
                    f"bucket 'cusprun-no-such-bucket' does not exist at {endpoint_env}. Check the "
                    "bucket name in the URI, and that the endpoint and region are the ones that "
                    "hold it.")


def test_unknown_bucket_of_a_corpus_source(endpoint_env, s3_bucket, capsys):
    line = cli_error(capsys, "--storage-root", s3_bucket.uri, "--domain", "health",
                     "--domain-source", "s3://cusprun-no-such-bucket/health.parquet")
    assert line.startswith("error: Cannot read corpus source "
                           "'s3://cusprun-no-such-bucket/health.parquet': bucket "
                           f"'cusprun-no-such-bucket' does not exist at {endpoint_env}.")


def test_missing_corpus_object(endpoint_env, s3_bucket, capsys):
    line = cli_error(capsys, "--storage-root", s3_bucket.uri, "--domain", "health",
                     "--domain-source", f"s3://{s3_bucket.bucket}/corpora/nope.parquet")
    assert line == (f"error: Cannot read corpus source 's3://{s3_bucket.bucket}/corpora/nope.parquet'"
                    ": not found. Check the key, the bucket and the endpoint (AWS_ENDPOINT_URL or "
                    "endpoint_url in the storage options).")


def test_access_denied(endpoint_env, s3_bucket, monkeypatch, capsys):
    nobody = iam_user(endpoint_env, ["s3:ListBucket"], "some-other-bucket")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", nobody["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", nobody["secret"])
    with moto_iam_auth():
        line = cli_error(capsys, "--storage-root", s3_bucket.uri)
    assert line == (f"error: Checking artifact store {s3_bucket.uri} failed: access denied by "
                    f"{endpoint_env} (HTTP 403). Check that the credentials are valid there and "
                    f"may list, read and write s3://{s3_bucket.bucket}/... (s3:ListBucket, "
                    "s3:GetObject, s3:PutObject, s3:DeleteObject), and the bucket policy.")


def test_read_only_credentials_fail_before_any_work(endpoint_env, s3_bucket, monkeypatch, capsys):
    """Listing is allowed, writing is not: found by the write probe, not hours later."""
    # moto authorizes HEAD bucket as "s3:HeadBucket" (AWS: s3:ListBucket); allow both
    reader = iam_user(endpoint_env, ["s3:ListBucket", "s3:HeadBucket", "s3:GetObject"],
                      s3_bucket.bucket)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", reader["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", reader["secret"])
    with moto_iam_auth():
        line = cli_error(capsys, "--storage-root", s3_bucket.uri)
    assert line.startswith(f"error: Writing to artifact store {s3_bucket.uri} failed: access "
                           f"denied by {endpoint_env} (HTTP 403).")


def test_unknown_access_key(endpoint_env, s3_bucket, capsys):
    with moto_iam_auth():   # the fixture's dummy key is not an IAM user's key
        line = cli_error(capsys, "--storage-root", s3_bucket.uri)
    assert "access denied" in line and s3_bucket.uri in line


def test_unreachable_endpoint_fails_in_seconds(monkeypatch, s3_server, capsys):
    """In seconds because bounded: one connection attempt per attempt of the check (refused at
    once), none from botocore's or s3fs's own retries."""
    from cusprun.storage.store import CHECK_POLICY

    port = closed_port()
    dead = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead)
    with tcp_connects() as connects:
        line = cli_error(capsys, "--storage-root", "s3://cusprun-anything/x")
    assert connects.count(("127.0.0.1", port)) == CHECK_POLICY.attempts == 2
    assert line == ("error: Checking artifact store s3://cusprun-anything/x failed after 2 "
                    f"attempts: endpoint {dead} is unreachable (connection refused). Check the "
                    "endpoint URL (AWS_ENDPOINT_URL, or endpoint_url in the storage options), that "
                    "the service is running, and the network.")


# ---- slow and flaky endpoints: retried with backoff, bounded ----------------------------------

def test_flaky_endpoint_is_retried_and_the_write_lands(s3_server, s3_bucket, caplog):
    with FaultyEndpoint(s3_server.endpoint_url) as ep:
        store = store_through(ep.url, s3_bucket)
        ep.fail_next = 2
        with caplog.at_level(logging.WARNING, logger="cusprun.storage.retry"):
            store.write_json("plans/p/plan.json", {"ok": 1})
        assert ep.failed == 2
        retries = [r.getMessage() for r in caplog.records if "transient" in r.getMessage()]
        assert len(retries) == 2 and all("503" in m for m in retries), retries
    assert ArtifactStore(*s3_bucket).read_json("plans/p/plan.json") == {"ok": 1}


def test_endpoint_that_keeps_failing_gives_up_after_the_policy(s3_server, s3_bucket):
    with FaultyEndpoint(s3_server.endpoint_url) as ep:
        store = store_through(ep.url, s3_bucket)
        ep.fail_next = 1000
        with pytest.raises(StorageError) as e:
            store.read_bytes("plans/p/plan.json")
        assert ep.requests == FAST.attempts          # bounded: one request per attempt
    assert e.value.transient
    # a HEAD answer has no body, so only the status is known
    assert str(e.value) == (f"Read {s3_bucket.uri}/plans/p/plan.json failed after 3 attempts: "
                            f"endpoint {ep.url} kept failing (HTTP 503). The service is "
                            "unhealthy or throttling: retry later, and check its status and "
                            "request rate limits.")


def test_permanent_http_errors_are_not_retried(s3_server, s3_bucket):
    with FaultyEndpoint(s3_server.endpoint_url) as ep:
        store = store_through(ep.url, s3_bucket)
        ep.fail_next, ep.fail_status, ep.fail_code = 1000, 403, "AccessDenied"
        with pytest.raises(StorageError, match="access denied") as e:
            store.write_json("plans/p/plan.json", {})
        assert ep.requests == 1 and not e.value.transient


def test_slow_endpoint_times_out_is_retried_and_bounded(s3_server, s3_bucket):
    """Every answer is held far past the read timeout: each attempt is cut at the timeout (the
    error says so; an answer waited for would be a 404), one request per attempt."""
    with FaultyEndpoint(s3_server.endpoint_url) as ep:
        store = store_through(ep.url, s3_bucket, read_timeout=0.5)
        ep.delay_s = 60
        with pytest.raises(StorageError) as e:
            store.read_bytes("plans/p/plan.json")
        assert ep.requests == FAST.attempts, ep.requests
    assert e.value.transient
    assert f"failed after 3 attempts: endpoint {ep.url} did not answer in time (read timeout)" in str(e.value)


def test_slow_endpoint_that_recovers_is_ridden_out(s3_server, s3_bucket, caplog):
    """Every attempt but the last times out; the last one is answered. The slow spell ends after
    a number of requests, not at a wall-clock time, so a loaded machine cannot make all
    attempts fall inside it (or none). The read timeout leaves the answered attempt (a HEAD and
    a GET through the proxy) seconds of slack on a loaded machine: at 1 s, CI once timed it out."""
    ArtifactStore(*s3_bucket).write_json("plans/p/plan.json", {"v": 2})
    with FaultyEndpoint(s3_server.endpoint_url) as ep:
        store = store_through(ep.url, s3_bucket, read_timeout=3.0)
        ep.delay_s, ep.slow_next = 60, FAST.attempts - 1   # far past the read timeout
        with caplog.at_level(logging.WARNING, logger="cusprun.storage.retry"):
            assert store.read_json("plans/p/plan.json") == {"v": 2}
        assert ep.slow_next == 0
    retries = [r.getMessage() for r in caplog.records if "transient" in r.getMessage()]
    assert len(retries) == FAST.attempts - 1 and all("Read timeout" in m for m in retries), retries
