"""benchmarks/scale/checkpoint.py: random bf16 Llama checkpoints written shard by shard, and the
scale benchmark's build spec."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from benchmarks import python_env
from benchmarks.scale.checkpoint import LlamaWidths, write_checkpoint
from benchmarks.scale.monitor import stage_kind
from benchmarks.scale.workload import spec_for, write_corpora
from cusprun.errors import SpecError

TINY = LlamaWidths(layers=2, hidden=64, heads=4, kv_heads=2, head_dim=16, ffn=96, vocab=300)


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(path.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            out.update({k: st.get_tensor(k) for k in st.keys()})
    return out


def test_checkpoint_loads_in_stock_transformers_with_the_asked_shapes(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cusprun.models import resolve_model

    info = write_checkpoint(tmp_path / "m", TINY, max_shard_bytes=40_000)
    assert len(info["shards"]) > 2                      # small shards: several files + index
    index = json.loads((tmp_path / "m" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == {n for n, _, _ in TINY.tensors()}
    assert index["metadata"]["total_size"] == TINY.nbytes() == info["bytes"]

    model, loading = AutoModelForCausalLM.from_pretrained(tmp_path / "m", output_loading_info=True)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert not loading["missing_keys"] and not loading["unexpected_keys"]
    sd = model.state_dict()
    assert {p.dtype for p in sd.values()} == {torch.bfloat16}
    assert sd["model.layers.1.self_attn.q_proj.weight"].shape == (64, 64)
    assert sd["model.layers.1.self_attn.k_proj.weight"].shape == (32, 64)
    assert sd["model.layers.0.mlp.down_proj.weight"].shape == (64, 96)
    assert sd["lm_head.weight"].shape == sd["model.embed_tokens.weight"].shape == (300, 64)
    assert not torch.equal(sd["lm_head.weight"], sd["model.embed_tokens.weight"])  # untied
    assert torch.equal(sd["model.norm.weight"], torch.ones(64, dtype=torch.bfloat16))
    assert abs(sd["model.layers.0.mlp.up_proj.weight"].float().std().item() - 0.02) < 0.002

    cfg = model.config
    tok = AutoTokenizer.from_pretrained(tmp_path / "m")
    ids = tok("The patient was given", return_tensors="pt")["input_ids"]
    assert int(ids.max()) < cfg.vocab_size
    assert (cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id) == \
           (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (256, 257, 258)
    assert cfg.rope_parameters["rope_theta"] == 500000.0 and not cfg.tie_word_embeddings
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=ids).logits).all()
    r = resolve_model(str(tmp_path / "m"))             # cusprun takes it as a local base model
    assert (r.kind, r.architecture) == ("local", "LlamaForCausalLM")


def test_same_seed_same_bytes_whatever_the_shard_size(tmp_path):
    a = write_checkpoint(tmp_path / "a", TINY, seed=3, max_shard_bytes=40_000)
    b = write_checkpoint(tmp_path / "b", TINY, seed=3, max_shard_bytes=40_000)
    for name in a["shards"]:
        assert hashlib.sha256((tmp_path / "a" / name).read_bytes()).digest() == \
               hashlib.sha256((tmp_path / "b" / name).read_bytes()).digest()
    one = write_checkpoint(tmp_path / "one", TINY, seed=3, max_shard_bytes=10**9)
    assert len(one["shards"]) == 1
    ta, t1 = _tensors(tmp_path / "a"), _tensors(tmp_path / "one")
    assert all(torch.equal(ta[k], t1[k]) for k in ta)
    other = _tensors(Path(write_checkpoint(tmp_path / "s4", TINY, seed=4)["path"]))
    assert not torch.equal(other["lm_head.weight"], ta["lm_head.weight"])


_MEASURE = """
import json, sys
from benchmarks.machine import peak_rss_bytes as hwm
from benchmarks.scale.checkpoint import LlamaWidths, write_checkpoint
w = LlamaWidths(layers=8, hidden=512, heads=8, kv_heads=4, head_dim=64, ffn=2048, vocab=32000)
write_checkpoint(sys.argv[1] + '/warm', LlamaWidths(layers=1, hidden=64, heads=4, kv_heads=2,
                 head_dim=16, ffn=96, vocab=300))     # imports and first-use allocations
before = hwm()
info = write_checkpoint(sys.argv[1] + '/big', w, max_shard_bytes=10**9)
print(json.dumps({"grew": hwm() - before, "bytes": info["bytes"]}))
"""


def test_writer_memory_stays_a_few_blocks_not_the_model(tmp_path):
    """A 128 MB checkpoint written in one shard (the worst case for a per-shard writer): peak
    RSS grows by a few 8 MiB blocks, not by the checkpoint."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}   # freed blocks leave RSS at once
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(tmp_path)], env=python_env(env),
                         capture_output=True, text=True, check=True)
    m = json.loads(out.stdout.strip().splitlines()[-1])
    assert m["bytes"] > 100e6
    assert m["grew"] < 48 * 2 ** 20, m


def test_widths_a_llama_cannot_have_are_refused_before_writing(tmp_path):
    with pytest.raises(SpecError, match="not a multiple of kv_heads"):
        write_checkpoint(tmp_path / "x", LlamaWidths(layers=1, heads=6, kv_heads=4))
    with pytest.raises(SpecError, match="give 259 or more"):
        write_checkpoint(tmp_path / "y", LlamaWidths(layers=1, hidden=64, vocab=100))
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_bench_spec_is_a_valid_build_of_local_corpora(tmp_path):
    """The scale benchmark's spec passes cusprun's own checks (spec fields, model, corpus
    sources) with the reduced settings the benchmark states."""
    from cusprun.pipeline.preflight import check_inputs
    from cusprun.pipeline.spec import load_spec

    write_checkpoint(tmp_path / "m", TINY)
    corpora = write_corpora(tmp_path / "corpora")
    lines = [json.loads(x) for x in corpora["task"].read_text().splitlines()]
    assert len(lines) == 40 and all(len(x["text"]) > 64 for x in lines)
    (tmp_path / "spec.yaml").write_text(spec_for(tmp_path / "m", corpora, tmp_path / "store",
                                                 name="scale-bench"))
    spec = load_spec(str(tmp_path / "spec.yaml"))
    check_inputs(spec)
    assert spec.baselines == ["magnitude"] and spec.max_tokens == 64
    assert (spec.allocation, spec.compensation, spec.evaluation.sweep_ratios) == ("measured", "ls", [])
    assert {d: v.sources for d, v in spec.dimensions().items()} == \
           {d: [str(corpora[d])] for d in ("language", "domain", "task")}


def test_stage_kinds_from_the_build_log_labels():
    assert stage_kind("statistics + compensation Grams task=qa (8 docs)") == "stats+grams"
    assert stage_kind("statistics general=en (8 docs)") == "stats"
    assert stage_kind("compensation Grams domain=health (8 docs)") == "grams"
    assert stage_kind("plan (exact-ratio, target 0.25, measured)") == "plan"
    assert stage_kind("slice cusprun (uniform, 0.250, compensation ls)") == "slice"
