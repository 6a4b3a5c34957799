"""Shared pytest fixtures (owned by the storage work; keep names stable, others import them).

Session setup: HF_HUB_OFFLINE=1 and TRANSFORMERS_OFFLINE=1 for every test (no hub calls).

Fixtures:
  s3_server  (session) -> S3Server(endpoint_url, host, port): a real moto S3 server
             (ThreadedMotoServer on 127.0.0.1, free port) speaking HTTP on loopback. While it
             runs, dummy AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_DEFAULT_REGION
             (us-east-1) are set and AWS_PROFILE / AWS_SESSION_TOKEN / AWS_ENDPOINT_URL* unset;
             the previous values are restored at the end of the session.
  s3_bucket  (function) -> S3Location(uri, storage_options): a fresh, empty bucket per test.
             `uri` is "s3://<bucket>/<prefix>", `storage_options` is
             {"client_kwargs": {"endpoint_url": ...}} for fsspec/s3fs/pyarrow/ArtifactStore:
                 uri, opts = s3_bucket
                 fs = s3fs.S3FileSystem(**opts)  or  ArtifactStore(uri, opts)
             Extra conveniences: .bucket, .prefix, .endpoint_url.
  s3_store   (function) -> cusprun.storage.ArtifactStore on s3_bucket.
  local_store(function) -> cusprun.storage.ArtifactStore on tmp_path / "artifacts".
  store      (function, params "local" / "s3") -> local_store, then s3_store (that run marked
             s3): each test that takes it runs on both backends.
  tiny_model (session) -> str: directory of a tiny random Llama checkpoint with the byte
             tokenizer (tests.support.make_tiny_model), built once; tests only read it.
  one_torch_thread (module): torch on one thread while the module runs. Every test not marked
             integration runs on one torch thread anyway (autouse).
  unreachable_hub (function) -> int: the Hugging Face hub is at a closed loopback port (the
             port), and nothing says offline: what a machine without network sees.
  edit_code  (function) -> edit_code(module, change): for this test, the key code sees module's
             source as change(real source) (cache keys hash the code a stage runs).

Tests using the S3 fixtures should carry `@pytest.mark.s3`.
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

# Prefect binds its console log handler to sys.stderr when it is first imported. Imported here,
# that is pytest's session-long stream; first imported inside a `capsys` test, it would be that
# test's stream, closed when the test ends, and every later Prefect log line would fail
# (tests/ui/test_log_isolation.py).
import prefect.main  # noqa: E402,F401  (configures Prefect logging)

# The session's real `prefect server start` and its work pools (fixtures start it on first use).
pytest_plugins = ["tests.support.prefect_server"]

_DUMMY_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
              "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}
_UNSET_AWS = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL",
              "AWS_ENDPOINT_URL_S3")


class S3Server(NamedTuple):
    endpoint_url: str
    host: str
    port: int


class S3Location(NamedTuple):
    """Unpacks as (uri, storage_options)."""
    uri: str
    storage_options: dict[str, Any]

    @property
    def bucket(self) -> str:
        return self.uri.removeprefix("s3://").split("/", 1)[0]

    @property
    def prefix(self) -> str:
        return self.uri.removeprefix("s3://").partition("/")[2]

    @property
    def endpoint_url(self) -> str:
        return self.storage_options["client_kwargs"]["endpoint_url"]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A moto S3 server on loopback for the whole session (see module docstring)."""
    from moto.server import ThreadedMotoServer

    saved = {k: os.environ.get(k) for k in (*_DUMMY_AWS, *_UNSET_AWS)}
    os.environ.update(_DUMMY_AWS)
    for k in _UNSET_AWS:
        os.environ.pop(k, None)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3Server(f"http://{host}:{port}", host, port)
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> S3Location:
    """A fresh empty bucket on the moto server; returns (uri, storage_options)."""
    import boto3

    bucket = f"cusprun-test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server.endpoint_url).create_bucket(Bucket=bucket)
    return S3Location(f"s3://{bucket}/cusprun",
                      {"client_kwargs": {"endpoint_url": s3_server.endpoint_url}})


@pytest.fixture
def s3_store(s3_bucket: S3Location):
    """ArtifactStore rooted in a fresh moto bucket."""
    from cusprun.storage import ArtifactStore

    return ArtifactStore(s3_bucket.uri, s3_bucket.storage_options)


@pytest.fixture
def local_store(tmp_path):
    """ArtifactStore rooted in a temporary local directory."""
    from cusprun.storage import ArtifactStore

    return ArtifactStore(tmp_path / "artifacts")


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def store(request):
    """local_store, then s3_store: the test runs once on each backend."""
    return request.getfixturevalue(f"{request.param}_store")


@pytest.fixture(autouse=True)
def _one_torch_thread_unless_integration(request):
    """Tiny models' matmuls: one torch thread is faster than two, and much cheaper on a shared
    2-core box (the unit subset took 37 s of CPU instead of 64). Tests marked integration (the
    real bundled models) keep torch's default."""
    if request.node.get_closest_marker("integration"):
        yield
        return
    with _torch_threads(1):
        yield


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny matmuls: one thread is much faster than two on a busy shared CPU (the whole module,
    fixtures included, so integration modules can ask for it too)."""
    with _torch_threads(1):
        yield


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """A tiny random Llama checkpoint on disk, shared by the session's flow and CLI tests."""
    from tests.support import make_tiny_model

    _, path = make_tiny_model("LlamaForCausalLM", tmp_path_factory.mktemp("m") / "tiny-llama")
    return str(path)


@pytest.fixture
def edit_code(monkeypatch):
    """edit_code(module, change): the module's source as the key code sees it becomes
    change(its real source), for this test (code versions are forgotten before and after)."""
    from cusprun.pipeline import codehash
    from cusprun.pipeline.keys import forget_code_versions

    real = codehash.source
    edits: dict[str, str] = {}
    monkeypatch.setattr(codehash, "source", lambda name: edits.get(name) or real(name))

    def apply(module: str, change) -> None:
        edits[module] = change(real(module))
        forget_code_versions()

    yield apply
    forget_code_versions()


@pytest.fixture
def unreachable_hub(monkeypatch) -> int:
    """HF_ENDPOINT at a closed loopback port, HF_HUB_OFFLINE and HF_DATASETS_OFFLINE unset:
    the hub cannot be reached and nothing says so in advance. Returns the port."""
    from tests.support.network import closed_port

    port = closed_port()
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    return port
