"""Atomic expert publishing on a local directory and on S3 (moto server): readers see only
manifested versions, whether a publish succeeds, fails verification or is SIGKILLed midway."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cusprun.errors import SpecError
from cusprun.storage import (ExpertNotFoundError, PublishError, StorageError,
                             expert_key, gc_incomplete, get_expert, latest_key, latest_version,
                             list_versions, manifest_key, publish_expert, read_expert, sha256_file)
from tests.support.paths import REPO, cusprun_env
from tests.support.sigkill import killed_at_marker


def _checkpoint(d: Path, tag: str, n_extra: int = 0) -> Path:
    """A small stand-in for a saved expert: config, cusprun.json, weights, nested tokenizer."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (d / "cusprun.json").write_text(json.dumps({"expert": tag}))
    (d / "model.safetensors").write_bytes(tag.encode() * 4000)
    (d / "tok").mkdir(exist_ok=True)
    (d / "tok" / "tokenizer.json").write_text("{}")
    for i in range(n_extra):
        (d / f"shard-{i}.bin").write_bytes(bytes([i]) * 1000)
    return d


def _verify_tag(expected: str):
    def verify(path: Path) -> dict:
        meta = json.loads((path / "cusprun.json").read_text())
        if meta["expert"] != expected:
            raise ValueError(f"cusprun.json says {meta['expert']!r}, expected {expected!r}")
        return {"checked": meta["expert"], "files": len(list(path.rglob("*")))}
    return verify


def test_publish_then_read_latest(store, tmp_path, monkeypatch):
    assert list_versions(store, "med") == [] and latest_version(store, "med") is None
    src1 = _checkpoint(tmp_path / "e1", "one")
    p1 = publish_expert(store, "med", src1, verify=_verify_tag("one"), progress=False)
    assert p1.uri == store.uri(expert_key("med", p1.version))
    m = p1.manifest
    assert set(m.files) == {"config.json", "cusprun.json", "model.safetensors", "tok/tokenizer.json"}
    assert m.files["model.safetensors"].size == 12000
    assert m.files["model.safetensors"].sha256 == sha256_file(src1 / "model.safetensors")
    assert m.verification == {"checked": "one", "files": 5}
    stored = store.read_json(manifest_key("med", p1.version))
    assert stored["files"]["cusprun.json"]["sha256"] == sha256_file(src1 / "cusprun.json")
    assert store.read_json(latest_key("med"))["version"] == p1.version

    p2 = publish_expert(store, "med", _checkpoint(tmp_path / "e2", "two"), progress=False)
    assert p2.version > p1.version                      # default versions sort by time
    assert p2.version.endswith(p2.manifest.content_hash[:8])
    assert list_versions(store, "med") == [p1.version, p2.version]
    assert latest_version(store, "med") == p2.version
    assert store.read_json(latest_key("med"))["version"] == p2.version

    cache = tmp_path / "cache"
    latest_dir = get_expert(store, "med", local_cache=cache, progress=False)
    assert latest_dir == cache / "med" / p2.version
    assert json.loads((latest_dir / "cusprun.json").read_text()) == {"expert": "two"}
    assert (latest_dir / "tok" / "tokenizer.json").exists()
    old = get_expert(store, "med", p1.version, local_cache=cache, progress=False)
    assert (old / "model.safetensors").read_bytes() == (src1 / "model.safetensors").read_bytes()
    assert read_expert(store, "med", p1.version).manifest == p1.manifest
    # a complete local copy is reused without touching the store
    monkeypatch.setattr(store, "get_file", lambda *a, **k: pytest.fail("downloaded again"))
    assert get_expert(store, "med", local_cache=cache) == latest_dir


def test_versions_are_immutable_and_names_validated(store, tmp_path):
    src = _checkpoint(tmp_path / "e", "x")
    publish_expert(store, "med", src, version="v1", reread=False, progress=False)
    with pytest.raises(PublishError, match="already published"):
        publish_expert(store, "med", src, version="v1", progress=False)
    with pytest.raises(SpecError, match="Invalid expert version '../v2'"):
        publish_expert(store, "med", src, version="../v2", progress=False)
    with pytest.raises(SpecError, match="Invalid expert name"):
        publish_expert(store, "med/x", src, progress=False)
    with pytest.raises(ExpertNotFoundError, match="published: v1"):
        get_expert(store, "med", "v9", local_cache=tmp_path / "c")
    with pytest.raises(ExpertNotFoundError, match="No published version"):
        get_expert(store, "other", local_cache=tmp_path / "c")


def test_failing_verify_leaves_nothing_visible(store, tmp_path):
    p1 = publish_expert(store, "med", _checkpoint(tmp_path / "e1", "one"), version="v1",
                        progress=False)
    with pytest.raises(PublishError, match="Verification of med/v2 failed.*expected 'two'"):
        publish_expert(store, "med", _checkpoint(tmp_path / "e2", "bad"), version="v2",
                       verify=_verify_tag("two"), progress=False)
    assert list_versions(store, "med") == ["v1"]
    assert latest_version(store, "med") == "v1"
    assert store.list(expert_key("med", "v2")) == []       # upload removed
    assert store.read_json(latest_key("med"))["version"] == p1.version
    with pytest.raises(ExpertNotFoundError):
        get_expert(store, "med", "v2", local_cache=tmp_path / "c")


def test_corrupted_upload_is_caught_before_publishing(store, tmp_path):
    """The store silently stores different bytes of the same size: the sha256 re-read fails."""
    real_fs = store.fs

    class TamperFS:
        def __getattr__(self, name):
            return getattr(real_fs, name)

        def put_file(self, lpath, rpath, *a, **k):
            if "model.safetensors" in str(rpath):  # local stores write a temp name first
                data = Path(lpath).read_bytes()
                lpath = tmp_path / "tampered"
                lpath.write_bytes(bytes([data[0] ^ 1]) + data[1:])
            return real_fs.put_file(str(lpath), rpath, *a, **k)
    store.fs = TamperFS()
    with pytest.raises(PublishError, match="differ from the local ones.*model.safetensors"):
        publish_expert(store, "med", _checkpoint(tmp_path / "e", "x"), version="v1", progress=False)
    assert list_versions(store, "med") == []


def test_stored_corruption_detected_on_download(store, tmp_path):
    publish_expert(store, "med", _checkpoint(tmp_path / "e", "x"), version="v1", progress=False)
    key = f"{expert_key('med', 'v1')}/cusprun.json"
    good = store.read_bytes(key)
    store.write_bytes(key, good.replace(b"x", b"y"))
    with pytest.raises(StorageError, match="sha256 differs"):
        get_expert(store, "med", local_cache=tmp_path / "cache", progress=False)
    assert not (tmp_path / "cache" / "med" / "v1").exists()  # no half copy


def test_unmanifested_dirs_are_invisible_and_gc(store, tmp_path):
    publish_expert(store, "med", _checkpoint(tmp_path / "e", "x"), version="v1", progress=False)
    store.put_dir(_checkpoint(tmp_path / "p", "partial"), expert_key("med", "v0-partial"))
    # a stale pointer to an unpublished version does not fool readers
    store.write_json(latest_key("med"), {"version": "v0-partial", "created": "99999999"})
    assert list_versions(store, "med") == ["v1"] and latest_version(store, "med") == "v1"
    assert gc_incomplete(store, "med", older_than_s=3600) == []   # too young: maybe running
    assert store.list(expert_key("med", "v0-partial"))
    assert gc_incomplete(store, "med", older_than_s=0) == ["v0-partial"]
    assert store.list(expert_key("med", "v0-partial")) == []
    assert list_versions(store, "med") == ["v1"]
    assert len(store.list(expert_key("med", "v1"))) == 5      # 4 files + manifest


_KILL_SCRIPT = textwrap.dedent("""
    import json, sys, threading
    from pathlib import Path
    from cusprun.storage import ArtifactStore, publish_expert

    root, opts, src, ready = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
    uploads = []
    real_put = ArtifactStore.put_file

    def pausing_put(self, local, key, **kw):  # pause after the 3rd file until killed
        out = real_put(self, local, key, **kw)
        uploads.append(key)
        if len(uploads) == 3:
            ready.write_text(json.dumps(uploads))
            threading.Event().wait()   # until the test kills this process
        return out

    ArtifactStore.put_file = pausing_put
    publish_expert(ArtifactStore(root, opts), "med", src, version="v2", progress=False)
    print("publish finished (should have been killed)")
""")


def test_killed_publish_leaves_no_visible_expert(store, tmp_path):
    publish_expert(store, "med", _checkpoint(tmp_path / "e1", "one"), version="v1", progress=False)
    src = _checkpoint(tmp_path / "e2", "two", n_extra=4)
    ready = tmp_path / "ready.json"
    env = cusprun_env()
    with killed_at_marker(
            [sys.executable, "-c", _KILL_SCRIPT, store.root, json.dumps(store.storage_options),
             str(src), str(ready)], ready, timeout=300, poll=0.05, tail=2000,
            what="the publisher (pause)", cwd=REPO, env=env, stdout=subprocess.PIPE):
        uploaded = json.loads(ready.read_text())
        assert sorted(store.list(expert_key("med", "v2"))) == sorted(uploaded)  # really partial
    assert list_versions(store, "med") == ["v1"]
    assert latest_version(store, "med") == "v1"
    assert store.read_json(latest_key("med"))["version"] == "v1"
    with pytest.raises(ExpertNotFoundError):
        get_expert(store, "med", "v2", local_cache=tmp_path / "cache")
    got = get_expert(store, "med", local_cache=tmp_path / "cache", progress=False)
    assert json.loads((got / "cusprun.json").read_text()) == {"expert": "one"}
    # the leftovers are collected, and the version can then be published for real
    assert gc_incomplete(store, "med", older_than_s=0) == ["v2"]
    assert store.list(expert_key("med", "v2")) == []
    publish_expert(store, "med", src, version="v2", verify=_verify_tag("two"), progress=False)
    assert latest_version(store, "med") == "v2"
