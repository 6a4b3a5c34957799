"""Test helpers (import as `from tests.support.s3_faults import ...`) that make the real moto
S3 server misbehave the way real endpoints do. Nothing here replaces S3: requests travel over
HTTP to moto.

  FaultyEndpoint(upstream)   an HTTP proxy in front of moto on 127.0.0.1: forwards requests, or
                             answers the next `fail_next` with an S3 error (503 SlowDown by
                             default), or holds every answer for `delay_s` seconds (a slow
                             endpoint), or lets the next `lose_next` requests matching `lose_if`
                             reach moto and drops their answers (the write happened; the client
                             sees the connection close).
  moto_iam_auth()            while active, moto checks credentials and IAM policies (as AWS does);
                             outside it, moto accepts any key.
  iam_user(endpoint, actions, bucket)  an IAM user allowed only `actions` on `bucket`: its keys.
  no_aws_credentials(monkeypatch)      an environment in which botocore finds no credentials.
  store_through(endpoint, bucket, read_timeout=None)   an ArtifactStore on the bucket that talks
                             to `endpoint` (a FaultyEndpoint's url), retrying by FAST_RETRY.
"""
from __future__ import annotations

import http.client
import json
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from cusprun.storage import ArtifactStore, RetryPolicy

FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.05, max_delay=0.2)   # real backoff, kept short
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade"}


def store_through(endpoint: str, bucket, read_timeout: float | None = None) -> ArtifactStore:
    """An ArtifactStore on `bucket` (an S3Location) that sends its requests to `endpoint`."""
    options: dict = {"client_kwargs": {"endpoint_url": endpoint}}
    if read_timeout is not None:
        options["config_kwargs"] = {"read_timeout": read_timeout}
    return ArtifactStore(bucket.uri, options, retry=FAST_RETRY)


class FaultyEndpoint:
    """An S3 endpoint in front of `upstream` (the moto server) with switchable faults."""

    def __init__(self, upstream: str) -> None:
        up = urlsplit(upstream)
        self.upstream = (up.hostname, up.port)
        self.fail_next = 0
        self.fail_status, self.fail_code = 503, "SlowDown"
        self.delay_s = 0.0
        self.slow_next: int | None = None   # set: only this many more requests wait delay_s
        self.lose_next = 0
        self.lose_if: Callable[[str, str, Message], bool] = lambda method, path, headers: True
        self.requests = 0
        self.failed = 0
        self.lost = 0
        self._lock = threading.Lock()
        self._closed = threading.Event()   # wakes requests still held when the test ends
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "FaultyEndpoint":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._closed.set()
        self._server.shutdown()
        self._server.server_close()

    def _take_failure(self) -> bool:
        with self._lock:
            self.requests += 1
            if self.fail_next > 0:
                self.fail_next -= 1
                self.failed += 1
                return True
            return False

    def _take_delay(self) -> float:
        """Seconds this request waits: delay_s, for the next `slow_next` requests only when
        that is set (a slow spell that ends after a known number of requests, not at a time
        that a loaded machine could reach before or after the client's retries)."""
        with self._lock:
            if self.slow_next is None:
                return self.delay_s
            if self.slow_next > 0:
                self.slow_next -= 1
                return self.delay_s
            return 0.0

    def _take_loss(self, method: str, path: str, headers: Message) -> bool:
        with self._lock:
            if self.lose_next > 0 and self.lose_if(method, path, headers):
                self.lose_next -= 1
                self.lost += 1
                return True
            return False

    def _handler(self):
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
                self.send_response(status)
                for k, v in headers:
                    if k.lower() not in _HOP_BY_HOP and k.lower() != "content-length":
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    if endpoint._take_failure():
                        xml = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>'
                               f"{endpoint.fail_code}</Code><Message>injected fault</Message>"
                               f"<RequestId>{uuid.uuid4().hex}</RequestId></Error>").encode()
                        self._reply(endpoint.fail_status, [("Content-Type", "application/xml")], xml)
                        return
                    delay = endpoint._take_delay()
                    if delay and endpoint._closed.wait(delay):
                        return   # the test is over: a held request must not reach the next test
                    conn = http.client.HTTPConnection(*endpoint.upstream, timeout=60)
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    conn.close()
                    if endpoint._take_loss(self.command, self.path, self.headers):
                        self.close_connection = True   # applied upstream; the answer is lost
                        return
                    self._reply(resp.status, resp.getheaders(), data)
                except OSError:
                    pass  # the client gave up waiting (read timeout), or the test is over

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _any

        return Handler


@contextmanager
def moto_iam_auth() -> Iterator[None]:
    """Make the in-process moto server authenticate and authorize requests (IAM)."""
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin

    before = settings.INITIAL_NO_AUTH_ACTION_COUNT
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    ActionAuthenticatorMixin.request_count = 0
    try:
        yield
    finally:
        settings.INITIAL_NO_AUTH_ACTION_COUNT = before


def iam_user(endpoint: str, actions: list[str], bucket: str) -> dict[str, str]:
    """Create (while moto accepts any key) a user allowed only `actions` on `bucket`; returns
    s3fs options with its key and secret."""
    import boto3

    iam = boto3.client("iam", endpoint_url=endpoint)
    name = f"user-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="only", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": actions,
                       "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]}]}))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {"key": key["AccessKeyId"], "secret": key["SecretAccessKey"]}


def no_aws_credentials(monkeypatch, tmp_path) -> None:
    """No AWS_* keys, no profile files, no instance metadata: botocore finds no credentials."""
    import s3fs

    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    s3fs.S3FileSystem.clear_instance_cache()  # instances made with credentials keep them


class RestartableS3:
    """A moto S3 server on its own port, serving this process's moto backend (so what was
    stored survives a restart), that can go down like a crashed endpoint: listener closed and
    every open connection cut. `go_down_after(n, predicate)`: once n answered requests matched
    predicate(method, path), the next request finds the server gone."""

    def __init__(self) -> None:
        self.port = 0
        self._server = None
        self._conns: set[socket.socket] = set()
        self._matched, self._limit, self._predicate = 0, None, None
        self.went_down = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def go_down_after(self, n: int, predicate) -> None:
        self._matched, self._limit, self._predicate = 0, n, predicate
        self.went_down.clear()

    def _app(self):
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

        app = DomainDispatcherApplication(create_backend_app)

        def middleware(environ, start_response):
            if self._limit is not None and self._matched >= self._limit:
                threading.Thread(target=self.stop, daemon=True).start()
                self.went_down.wait(30)   # this request is never answered: its socket is cut
                return []
            out = app(environ, start_response)
            if self._predicate and self._predicate(environ["REQUEST_METHOD"], environ["PATH_INFO"]):
                self._matched += 1
            return out
        return middleware

    def start(self) -> "RestartableS3":
        from moto.moto_server.werkzeug_app import MotoRequestHandler
        from werkzeug.serving import make_server

        self._limit = None
        server = make_server("127.0.0.1", self.port, self._app(), threaded=True,
                             request_handler=MotoRequestHandler)
        get_request = server.get_request

        def tracked():
            sock, addr = get_request()
            self._conns.add(sock)
            return sock, addr
        server.get_request = tracked
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        for sock in list(self._conns):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._conns.clear()
        server.server_close()
        self.went_down.set()
