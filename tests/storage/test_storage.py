"""ArtifactStore round trips on a local directory and on S3 (moto server over loopback HTTP)."""
from __future__ import annotations

from pathlib import Path

import pytest

from cusprun.errors import SpecError
from cusprun.storage import (ArtifactNotFoundError, ArtifactStore, StorageError, expert_key,
                             stage_key)


def _tree(root, files: dict[str, bytes]):
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def test_uri_and_keys(tmp_path):
    local = ArtifactStore(tmp_path / "a")
    assert local.uri("plans/x") == f"{(tmp_path / 'a').as_posix()}/plans/x"
    assert local.key_of(local.uri("plans/x")) == "plans/x"
    for bad in ["../x", "a/../b", "a//b", "a\\b", "./a"]:
        with pytest.raises(SpecError, match="Invalid artifact key"):
            local.uri(bad)
    with pytest.raises(SpecError, match="not under"):
        local.key_of(f"{tmp_path.as_posix()}/elsewhere/x")
    with pytest.raises(SpecError, match="no bucket"):
        ArtifactStore("s3://")


@pytest.mark.s3
def test_s3_uri_and_keys(s3_bucket):
    s3 = ArtifactStore(s3_bucket.uri + "/", s3_bucket.storage_options)
    assert s3.uri("corpora/abc/") == f"{s3_bucket.uri}/corpora/abc"
    assert s3.key_of(f"{s3_bucket.uri}/corpora/abc") == "corpora/abc"
    with pytest.raises(SpecError, match="not under"):
        s3.key_of("s3://other-bucket/x")


def test_root_through_a_symbolic_link(tmp_path):
    """`ln -s /data/artifacts artifacts`: a URI made under either spelling of the root maps to
    the same key in a store opened under the other, and the bytes are the same objects."""
    real = tmp_path / "data" / "artifacts"
    real.mkdir(parents=True)
    link = tmp_path / "work" / "artifacts"
    link.parent.mkdir()
    link.symlink_to(real, target_is_directory=True)
    via_link, via_real = ArtifactStore(link), ArtifactStore(real)
    via_real.write_bytes("reports/r1/report.md", b"# report")
    for store, other in ((via_link, via_real), (via_real, via_link)):
        assert store.key_of(other.uri("reports/r1")) == "reports/r1"
        assert store.key_of("file://" + other.uri("reports/r1")) == "reports/r1"
        assert store.key_of(other.uri()) == ""
        assert store.read_bytes(store.key_of(other.uri("reports/r1/report.md"))) == b"# report"
    outside = tmp_path / "data" / "other"
    outside.mkdir()
    (tmp_path / "work" / "sneaky").symlink_to(outside, target_is_directory=True)
    for uri in (str(outside / "x"), str(tmp_path / "work" / "sneaky" / "x"), str(real.parent / "x")):
        with pytest.raises(SpecError, match="not under the artifact store root"):
            via_link.key_of(uri)


def test_layout_keys_are_the_stage_names():
    """One name per stage: its store prefix is its name (baseline plans live beside Cus-Prun's)."""
    from cusprun.pipeline.spec import Stage
    from typing import get_args

    for stage in get_args(Stage):
        want = "plan" if stage == "baseline" else stage
        assert stage_key(stage, "k1") == f"{want}/k1"
    assert stage_key("dense-eval", "d1") == "dense-eval/d1"
    assert expert_key("med-fr", "v1.0") == "experts/med-fr/v1.0"
    for bad in ["", "..", "a/b", "-x", "a" * 129]:
        with pytest.raises(SpecError, match="Invalid"):
            expert_key(bad, "v1")


def test_file_round_trip(store, tmp_path):
    src = tmp_path / "in.bin"
    src.write_bytes(b"\x00\x01payload" * 1000)
    assert not store.exists("corpora/c1/data.bin")
    uri = store.put_file(src, "corpora/c1/data.bin")
    assert uri == store.uri("corpora/c1/data.bin")
    assert store.exists("corpora/c1/data.bin")
    assert store.exists("corpora/c1")  # a prefix counts
    assert store.info("corpora/c1/data.bin").size == src.stat().st_size
    out = store.get_file("corpora/c1/data.bin", tmp_path / "out" / "x.bin")
    assert out.read_bytes() == src.read_bytes()
    assert store.read_bytes("corpora/c1/data.bin") == src.read_bytes()
    assert not list((tmp_path / "out").glob(".*part"))  # no temp files left behind


def test_json_round_trip_and_overwrite(store):
    store.write_json("plans/p1/plan.json", {"keep": [1, 2, 3], "name": "é"})
    assert store.read_json("plans/p1/plan.json") == {"keep": [1, 2, 3], "name": "é"}
    store.write_json("plans/p1/plan.json", {"keep": []})
    assert store.read_json("plans/p1/plan.json") == {"keep": []}
    assert store.list("plans") == ["plans/p1/plan.json"]  # overwrite left no temp objects
    with pytest.raises(ArtifactNotFoundError) as e:
        store.read_json("plans/nope.json")
    assert isinstance(e.value, FileNotFoundError) and "plans/nope.json" in str(e.value)
    store.write_bytes("plans/p1/bad.json", b"{not json")
    with pytest.raises(StorageError, match="not valid JSON"):
        store.read_json("plans/p1/bad.json")


def test_dir_round_trip_listing_and_delete(store, tmp_path):
    files = {"config.json": b"{}", "model.safetensors": b"w" * 5000, "sub/deep/t.txt": b"t"}
    src = _tree(tmp_path / "src", files)
    keys = store.put_dir(src, "stats/fp/c1/cfg")
    assert keys == sorted(f"stats/fp/c1/cfg/{k}" for k in files)
    store.write_json("stats/fp/c1/cfg2/x.json", {})   # sibling whose name extends the prefix
    assert store.list("stats/fp/c1/cfg") == keys
    assert [o.size for o in store.list_info("stats/fp/c1/cfg")] == [2, 5000, 1]
    assert store.list("stats/missing") == []
    assert len(store.list()) == 4
    dest = store.get_dir("stats/fp/c1/cfg", tmp_path / "copy")
    for rel, data in files.items():
        assert (dest / rel).read_bytes() == data
    store.delete("stats/fp/c1/cfg", recursive=True)
    assert store.list("stats/fp/c1/cfg") == [] and not store.exists("stats/fp/c1/cfg")
    store.delete("stats/fp/c1/cfg/config.json")  # missing: no error
    with pytest.raises(ArtifactNotFoundError):
        store.get_dir("stats/fp/c1/cfg", tmp_path / "copy2")


def test_get_dir_skips_identical_copy_and_refreshes_changed(store, tmp_path, monkeypatch):
    src = _tree(tmp_path / "src", {"a.txt": b"one", "b/c.txt": b"two"})
    store.put_dir(src, "corpora/c9")
    dest = store.get_dir("corpora/c9", tmp_path / "cache" / "c9")

    def no_download(*a, **k):
        raise AssertionError("should not download again")
    with monkeypatch.context() as m:
        m.setattr(store, "get_file", no_download)
        assert store.get_dir("corpora/c9", dest) == dest
    # remote changed -> the copy is refreshed, stale files disappear
    store.delete("corpora/c9", recursive=True)
    store.put_dir(_tree(tmp_path / "src2", {"a.txt": b"one, longer"}), "corpora/c9")
    store.get_dir("corpora/c9", dest)
    assert (dest / "a.txt").read_bytes() == b"one, longer" and not (dest / "b").exists()
    # a damaged local copy (size changed) is fetched again
    (dest / "a.txt").write_bytes(b"x")
    store.get_dir("corpora/c9", dest)
    assert (dest / "a.txt").read_bytes() == b"one, longer"
    # never overwrites a directory cusprun did not create
    foreign = _tree(tmp_path / "mine", {"keep.txt": b"precious"})
    with pytest.raises(StorageError, match="Refusing"):
        store.get_dir("corpora/c9", foreign)
    assert (foreign / "keep.txt").read_bytes() == b"precious"


def test_check_passes(store):
    """A usable root passes the check and the write check (a missing local root is made), the
    write probe leaves nothing behind, and the store then works."""
    if store.is_local:
        assert not Path(store.root).exists()
    assert store.check() is None
    assert store.check(write=True) is None
    if store.is_local:
        assert Path(store.root).is_dir()
    assert store.list("") == []
    store.write_json("reports/r1/ok.json", {"ok": True})
    assert store.read_json("reports/r1/ok.json") == {"ok": True}


def test_local_check_rejects_file_root(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(StorageError, match="is a file; give a directory"):
        ArtifactStore(tmp_path / "f").check()


def test_put_rejects_missing_local(store, tmp_path):
    with pytest.raises(SpecError, match="existing local file"):
        store.put_file(tmp_path / "nope", "a/b")
    with pytest.raises(SpecError, match="existing local directory"):
        store.put_dir(tmp_path / "nope", "a")


@pytest.mark.s3
def test_s3_configured_the_usual_aws_way(s3_bucket, monkeypatch, tmp_path):
    """No storage_options: endpoint from AWS_ENDPOINT_URL, credentials from AWS_* env vars."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_bucket.endpoint_url)
    store = ArtifactStore(s3_bucket.uri)
    store.check()
    store.write_json("reports/r1/summary.json", {"ok": True})
    explicit = ArtifactStore(s3_bucket.uri, s3_bucket.storage_options)
    assert explicit.read_json("reports/r1/summary.json") == {"ok": True}
    assert "testing" not in repr(explicit)


def test_a_local_store_links_finished_artifacts_instead_of_copying_them(tmp_path):
    """A sliced 70B checkpoint must not be written twice (scratch, then store, then the
    published copy): link=True hard-links into a local store; plain put_file still copies."""
    import os

    store = ArtifactStore(tmp_path / "s")
    f = tmp_path / "shard.safetensors"
    f.write_bytes(b"x" * 4096)
    store.put_file(f, "sliced/k/shard.safetensors", link=True)
    store.put_file(f, "other/shard.safetensors")
    linked, copied = (Path(store.uri(k)) for k in ("sliced/k/shard.safetensors", "other/shard.safetensors"))
    assert os.stat(linked).st_ino == os.stat(f).st_ino and linked.read_bytes() == f.read_bytes()
    assert os.stat(copied).st_ino != os.stat(f).st_ino and copied.read_bytes() == f.read_bytes()
    f.unlink()                                   # the scratch copy goes; the artifact stays
    assert linked.read_bytes() == b"x" * 4096
