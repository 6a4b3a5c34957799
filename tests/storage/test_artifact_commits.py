"""Stage artifacts under concurrency and crashes (cusprun.pipeline.artifacts), on a local store
and on the moto S3 server: one DONE.json per key whoever wins, never a mixed or partial artifact
visible, uploads of dead builds ignored."""
from __future__ import annotations

import json
import os
import threading

import pytest

from cusprun.pipeline.artifacts import (DONE, attempts_key, claim_key, commit, invalidate,
                                        local_copy, read_done)
from cusprun.pipeline.context import scratch
from cusprun.storage import StorageError
from tests.support.files import artifact_dir


def _race(n: int, fn) -> list:
    """Run fn(i) in n threads released at the same moment; their results (or exceptions)."""
    barrier, out = threading.Barrier(n), [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            out[i] = fn(i)
        except Exception as e:  # noqa: BLE001 - reported by the test
            out[i] = e
    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_create_exclusive_has_exactly_one_winner(store):
    wins = _race(6, lambda i: store.create_exclusive("locks/one.claim", f"writer {i}".encode()))
    assert sorted(map(str, wins)) == ["False"] * 5 + ["True"]
    winner = wins.index(True)
    assert store.read_bytes("locks/one.claim") == f"writer {winner}".encode()
    assert store.list("locks") == ["locks/one.claim"]      # no temporary files left


def test_concurrent_commits_of_one_key_leave_one_complete_artifact(store, tmp_path):
    """Different content on purpose (like two evaluations with different timings): whoever
    wins, every committer returns the winner's record and the files match it, not a mix."""
    dirs = [artifact_dir(tmp_path / f"w{i}", f"writer{i}") for i in range(4)]
    records = _race(4, lambda i: commit(store, dirs[i], "evaluate/k1", {"writer": i}))
    assert not [r for r in records if isinstance(r, Exception)], records
    assert all(r == records[0] for r in records)
    winner = records[0]["writer"]
    got = local_copy(store, "evaluate/k1")
    assert json.loads((got / "sub" / "meta.json").read_text()) == {"tag": f"writer{winner}"}
    for i in range(3):
        assert (got / f"part-{i}.bin").read_bytes() == (dirs[winner] / f"part-{i}.bin").read_bytes()
    # losers removed their uploads; only the claimer's folder and possibly the winner's remain
    pre = attempts_key("evaluate/k1") + "/"
    leftovers = {k[len(pre):].split("/")[0] for k in store.list(attempts_key("evaluate/k1"))}
    assert leftovers <= ({records[0]["files_key"][len(pre):]} if "files_key" in records[0] else set())


def test_a_commit_after_another_finished_reuses_it(store, tmp_path):
    first = commit(store, artifact_dir(tmp_path / "a", "a"), "plans/k2", {"n": 1})
    before = store.list_info("plans/k2")
    again = commit(store, artifact_dir(tmp_path / "b", "b"), "plans/k2", {"n": 2})
    assert again == first and store.list_info("plans/k2") == before


def test_a_dead_writers_claim_and_partial_files_are_never_read(store, tmp_path):
    """A build died mid-upload: its claim and half of its files stay. The next build writes its
    own folder, and readers only ever see that one."""
    store.create_exclusive(claim_key("stats/k3"), b'{"owner": "dead"}')
    store.write_bytes("stats/k3/part-0.bin", b"half")
    rec = commit(store, artifact_dir(tmp_path / "a", "alive"), "stats/k3", {})
    assert rec["files_key"].startswith(attempts_key("stats/k3") + "/")
    got = local_copy(store, "stats/k3")
    assert (got / "part-0.bin").read_bytes() == (tmp_path / "a" / "part-0.bin").read_bytes()
    assert json.loads((got / "sub" / "meta.json").read_text()) == {"tag": "alive"}


def test_files_that_do_not_match_the_record_are_refused(store, tmp_path):
    commit(store, artifact_dir(tmp_path / "a", "a"), "sliced/k4", {})
    store.write_bytes("sliced/k4/part-1.bin", b"truncated")
    if not store.is_local:   # a fresh reader (no local copy yet)
        import shutil

        from cusprun.paths import cache_root
        shutil.rmtree(cache_root() / "store-cache" / store.root.replace("://", "/") / "sliced/k4",
                      ignore_errors=True)
    with pytest.raises(StorageError, match=r"sliced/k4 does not match its DONE\.json .*part-1\.bin"):
        local_copy(store, "sliced/k4")


def test_invalidate_then_commit_writes_the_key_itself_again(store, tmp_path):
    store.create_exclusive(claim_key("plans/k5"), b"old")
    commit(store, artifact_dir(tmp_path / "a", "a"), "plans/k5", {})
    invalidate(store, "plans/k5")
    assert read_done(store, "plans/k5") is None and store.list("plans") == []
    rec = commit(store, artifact_dir(tmp_path / "b", "b"), "plans/k5", {})
    assert "files_key" not in rec
    assert sorted(store.list("plans/k5")) == sorted(
        ["plans/k5/" + f for f in ("part-0.bin", "part-1.bin", "part-2.bin", "sub/meta.json", DONE)])


def test_scratch_directories_are_per_run_and_dead_processes_are_cleaned(tmp_path, monkeypatch):
    monkeypatch.setenv("CUSPRUN_CACHE", str(tmp_path))
    a, b = scratch("slice", "k"), scratch("slice", "k")
    assert a != b and a.is_dir() and b.is_dir()
    dead = a.parent / "k.999999999.abcdef"   # no such process
    dead.mkdir()
    legacy = a.parent / "k"
    legacy.mkdir()
    scratch("slice", "k")
    assert not dead.exists() and not legacy.exists() and a.is_dir()
    assert str(os.getpid()) in a.name


def test_scratch_dir_is_removed_after_the_stage_committed_or_failed(tmp_path, monkeypatch):
    """A stage's scratch copy goes once the artifact is in the store (every build used to leave
    its sliced checkpoints behind in the local cache), and when the stage fails."""
    from transformers import AutoConfig

    from cusprun.pipeline.context import scratch_dir
    from cusprun.pipeline.stages.common import read_plan, write_plan
    from cusprun.storage import ArtifactStore
    from tests.support import make_tiny_model, random_plan

    monkeypatch.setenv("CUSPRUN_CACHE", str(tmp_path / "cache"))
    with pytest.raises(RuntimeError):
        with scratch_dir("slice", "k") as d:
            (d / "x.bin").write_bytes(b"x")
            raise RuntimeError("stage failed")
    assert not d.exists()

    _, path = make_tiny_model("LlamaForCausalLM", tmp_path / "m")
    plan = random_plan(AutoConfig.from_pretrained(path), fingerprint="f" * 24, ffn=40, groups=1,
                       heads_per_group=2, layout="uniform", seed=0)
    store = ArtifactStore(str(tmp_path / "store"))
    rec = write_plan(store, "plan", "p1", plan)
    assert rec["key"] == "plan/p1" and read_plan(store, "p1").layers == plan.layers
    assert list((tmp_path / "cache" / "work" / "plan").iterdir()) == []
