"""Commits whose conditional write (If-None-Match: *) reached S3 while its answer was lost, on the
moto server behind the fault-injecting endpoint (s3_faults.FaultyEndpoint): the retry sees 412,
and the writer must recognise its own record instead of believing it lost the race."""
from __future__ import annotations

import json

import pytest

from cusprun.pipeline.artifacts import (DONE, attempts_key, claim_key, commit, files_key,
                                        local_copy, read_done)
from cusprun.storage import ArtifactStore
from tests.support.files import artifact_dir
from tests.support.s3_faults import FaultyEndpoint, store_through

pytestmark = pytest.mark.s3


def _conditional_put_of(suffix: str):
    """Matches the conditional PUT of an object whose key ends with `suffix`."""
    return lambda method, path, headers: (method == "PUT" and headers.get("If-None-Match") == "*"
                                          and path.split("?")[0].endswith(suffix))


def test_create_exclusive_whose_answer_was_lost_knows_it_won(s3_server, s3_bucket):
    with FaultyEndpoint(s3_server.endpoint_url) as ep:
        store = store_through(ep.url, s3_bucket)
        ep.lose_next, ep.lose_if = 1, _conditional_put_of("/locks/one")
        assert store.create_exclusive("locks/one", b'{"owner": "me-1234"}') is True
        assert ep.lost == 1
        # someone else's object stays someone else's, also on a retried attempt
        ep.fail_next = 1                     # the first attempt fails before reaching S3
        assert store.create_exclusive("locks/one", b'{"owner": "other-5678"}') is False
        assert ep.failed == 1
    assert ArtifactStore(*s3_bucket).read_bytes("locks/one") == b'{"owner": "me-1234"}'


def test_a_commit_whose_done_answer_was_lost_keeps_its_upload(s3_server, s3_bucket, tmp_path):
    """A dead build's claim sends this commit to an attempt folder; the DONE.json PUT lands but
    its answer is lost. The writer keeps its folder, and its record points at complete files."""
    plain = ArtifactStore(*s3_bucket)
    plain.create_exclusive(claim_key("stats/k1"), b'{"owner": "dead"}')
    src = artifact_dir(tmp_path / "a", "a", meta=False)
    with FaultyEndpoint(s3_server.endpoint_url) as ep:
        ep.lose_next, ep.lose_if = 1, _conditional_put_of(f"/stats/k1/{DONE}")
        rec = commit(store_through(ep.url, s3_bucket), src, "stats/k1", {"n": 1})
        assert ep.lost == 1
    assert rec["files_key"].startswith(attempts_key("stats/k1") + "/")
    assert read_done(plain, "stats/k1") == rec
    assert plain.list(files_key(rec)) == [f"{files_key(rec)}/part-{i}.bin" for i in range(3)]
    got = local_copy(plain, "stats/k1")
    for i in range(3):
        assert (got / f"part-{i}.bin").read_bytes() == (src / f"part-{i}.bin").read_bytes()


def test_a_commit_whose_claim_answer_was_lost_writes_the_key_itself(s3_server, s3_bucket, tmp_path):
    """The claim's PUT lands but its answer is lost: the writer still owns the key's own folder
    (it does not take its own claim for a dead build's)."""
    plain = ArtifactStore(*s3_bucket)
    with FaultyEndpoint(s3_server.endpoint_url) as ep:
        ep.lose_next, ep.lose_if = 1, _conditional_put_of(claim_key("plans/k2"))
        rec = commit(store_through(ep.url, s3_bucket), artifact_dir(tmp_path / "a", "a", meta=False),
                     "plans/k2", {})
        assert ep.lost == 1
    assert "files_key" not in rec
    assert json.loads(plain.read_bytes(claim_key("plans/k2")))["owner"] == rec["owner"]
    assert plain.list(attempts_key("plans/k2")) == []
    assert local_copy(plain, "plans/k2").is_dir()
