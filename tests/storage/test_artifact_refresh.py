"""Refreshing a committed stage artifact (reused(refresh=True), then the stage's commit_stage:
cusprun.pipeline.artifacts.commit(replace=True)), on a local store and on the moto S3 server.
The next reader gets the refreshed artifact; a reader that already holds the old one keeps
intact files; old files go only once clearly abandoned."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest

from cusprun.pipeline import artifacts
from cusprun.pipeline.artifacts import (DONE, attempts_key, collect_garbage, commit, files_key,
                                        local_copy, read_done, retired_key)
from cusprun.pipeline.keys import content_key
from cusprun.pipeline.stages.common import commit_stage, reused
from cusprun.storage.layout import stage_key
from tests.support.files import artifact_dir


def _contents(d: Path) -> dict[str, bytes]:
    """The artifact's files in a directory (not its record, nor a download's marker)."""
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*"))
            if p.is_file() and p.name != DONE and not p.name.startswith(".cusprun-")}


def _stored(store, record: dict) -> dict[str, bytes]:
    """The record's files as a reader that resolved it reads them from the store."""
    return {name: store.read_bytes(f"{files_key(record)}/{name}") for name in record["files"]}


def test_a_refresh_leaves_a_readers_files_intact_and_the_next_read_gets_the_new_artifact(
        store, tmp_path):
    key = content_key("plan", "refresh-while-read")
    path = stage_key("plan", key)
    old_dir, new_dir = artifact_dir(tmp_path / "old", "old"), artifact_dir(tmp_path / "new", "new")
    first = commit_stage(store, "plan", key, old_dir, {"n": 1})
    # a reader (an evaluation, another build) resolved the artifact and holds its files
    held = read_done(store, path)
    held_dir = local_copy(store, path)

    assert reused(store, "plan", key, refresh=True) is None
    new = commit_stage(store, "plan", key, new_dir, {"n": 2})
    assert new["generation"] == first["generation"] + 1 and new["owner"] != first["owner"]

    assert _stored(store, held) == _contents(old_dir)            # still on the store
    assert _contents(held_dir) == _contents(old_dir)             # and where the reader reads
    late = store.get_dir(files_key(held), tmp_path / "late-reader", progress=False)
    assert _contents(late) == _contents(old_dir)                 # a download begun before
    assert store.exists(f"{retired_key(path)}/0-{files_key(held).rsplit('/', 1)[-1]}.json")

    assert reused(store, "plan", key)["n"] == 2                  # the next read: the new one
    assert _contents(local_copy(store, path)) == _contents(new_dir)
    # the refresh was consumed: a later commit without one adopts the record again
    again = commit_stage(store, "plan", key, artifact_dir(tmp_path / "x", "x"), {"n": 3})
    assert again["n"] == 2 and read_done(store, path)["owner"] == new["owner"]


def test_refreshes_and_first_builds_racing_leave_one_complete_artifact(store, tmp_path):
    """Two refreshes and two first builds of one new key at once: whoever ends up in DONE.json,
    its files are complete, and every committer's returned record still reads complete."""
    dirs = [artifact_dir(tmp_path / f"w{i}", f"writer{i}") for i in range(4)]
    barrier, out = threading.Barrier(4), [None] * 4

    def run(i: int) -> None:
        barrier.wait()
        try:
            out[i] = commit(store, dirs[i], "plans/race", {"writer": i}, replace=i % 2 == 0)
        except Exception as e:  # noqa: BLE001 - reported below
            out[i] = e
    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not [r for r in out if isinstance(r, Exception)], out
    final = read_done(store, "plans/race")
    assert final in out
    assert _contents(local_copy(store, "plans/race")) == _contents(dirs[final["writer"]])
    for r in out:
        assert _stored(store, r) == _contents(dirs[r["writer"]])


def test_replaced_files_go_only_once_abandoned(store, tmp_path, monkeypatch):
    path = "sliced/gc"
    a = commit(store, artifact_dir(tmp_path / "a", "a"), path, {})              # in sliced/gc/
    b = commit(store, artifact_dir(tmp_path / "b", "b"), path, {}, replace=True)
    store.write_bytes(f"{attempts_key(path)}/dead-build/part-0.bin", b"half")  # died uploading
    c = commit(store, artifact_dir(tmp_path / "c", "c"), path, {}, replace=True)
    # just replaced: a reader may still hold a's and b's files, so they stay
    assert _stored(store, a) == _contents(tmp_path / "a")
    assert _stored(store, b) == _contents(tmp_path / "b")
    assert store.exists(f"{attempts_key(path)}/dead-build/part-0.bin")

    monkeypatch.setattr(artifacts, "STALE_ATTEMPT_S", -3600)   # as if hours had passed
    # a refresh that died between setting the current record aside and switching: kept
    store.write_json(f"{retired_key(path)}/2-{files_key(c).rsplit('/', 1)[-1]}.json", c)
    collect_garbage(store, path)
    assert sorted(store.list(path)) == [f"{path}/{DONE}"]                  # a's files went
    pre = attempts_key(path) + "/"
    assert {k[len(pre):].split("/")[0] for k in store.list(attempts_key(path))} == {
        files_key(c)[len(pre):]}                                           # only c's folder
    assert [k.rsplit("/", 1)[-1] for k in store.list(retired_key(path))] == [
        f"2-{files_key(c).rsplit('/', 1)[-1]}.json"]
    assert _contents(local_copy(store, path)) == _contents(tmp_path / "c")


@pytest.mark.s3
def test_a_refresh_whose_answer_was_lost_still_switches(s3_server, s3_bucket, tmp_path):
    from cusprun.storage import ArtifactStore, RetryPolicy
    from tests.support.s3_faults import FaultyEndpoint

    plain = ArtifactStore(*s3_bucket)
    old = commit(plain, artifact_dir(tmp_path / "old", "old"), "reports/lost", {})
    with FaultyEndpoint(s3_server.endpoint_url) as ep:
        store = ArtifactStore(s3_bucket.uri, {"client_kwargs": {"endpoint_url": ep.url}},
                              retry=RetryPolicy(attempts=3, base_delay=0.05, max_delay=0.2))
        ep.lose_next = 1
        ep.lose_if = lambda method, p, headers: method == "PUT" and p.split("?")[0].endswith(
            f"/reports/lost/{DONE}")
        new = commit(store, artifact_dir(tmp_path / "new", "new"), "reports/lost", {}, replace=True)
        assert ep.lost == 1
    assert read_done(plain, "reports/lost") == new
    assert _contents(local_copy(plain, "reports/lost")) == _contents(tmp_path / "new")
    assert _stored(plain, old) == _contents(tmp_path / "old")
