"""Throughput: prefill tokens/s and greedy decode tokens/s with the KV cache.

Both use one fixed, model-independent prompt (a repeated English sentence cut to a fixed number
of tokens) at batch size 1, after warmup runs; the reported rate is the median over iterations."""
from __future__ import annotations

import logging
import statistics
import time

import torch

log = logging.getLogger(__name__)

_PROMPT = ("The committee reviewed the annual report, discussed the budget for the coming year, "
           "and agreed to publish a summary of its findings for the public. ")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fixed_prompt_ids(tokenizer, n_tokens: int) -> list[int]:
    ids: list[int] = []
    while len(ids) < n_tokens:
        ids += list(tokenizer(_PROMPT, add_special_tokens=False)["input_ids"])
    return ids[:n_tokens]


@torch.no_grad()
def speed_metrics(model, tokenizer, *, prompt_tokens: int = 128, decode_tokens: int = 32,
                  warmup: int = 2, iters: int = 5) -> dict[str, float]:
    """prefill_tokens_per_s: prompt tokens / time of one forward pass over the prompt.
    decode_tokens_per_s: decode_tokens / time of decode_tokens single-token greedy steps that
    reuse the KV cache (the prefill that builds the cache is not timed)."""
    from cusprun.models.loading import input_device

    dev = input_device(model)
    ids = torch.tensor([fixed_prompt_ids(tokenizer, prompt_tokens)], device=dev)
    prefill, decode = [], []
    # transformers 5 names the KV cache `cache` (argument and output field).
    for it in range(warmup + iters):
        _sync(dev)
        t0 = time.perf_counter()
        out = model(input_ids=ids, use_cache=True)
        _sync(dev)
        t1 = time.perf_counter()
        cache, nxt = out.cache, out.logits[:, -1:].argmax(-1)
        _sync(dev)
        t2 = time.perf_counter()
        for _ in range(decode_tokens):
            out = model(input_ids=nxt, cache=cache, use_cache=True)
            cache, nxt = out.cache, out.logits[:, -1:].argmax(-1)
        _sync(dev)
        t3 = time.perf_counter()
        if it >= warmup:
            prefill.append(prompt_tokens / max(t1 - t0, 1e-9))
            decode.append(decode_tokens / max(t3 - t2, 1e-9))
    res = {"prefill_tokens_per_s": statistics.median(prefill),
           "decode_tokens_per_s": statistics.median(decode)}
    log.info("speed: prefill %.1f tok/s, decode %.1f tok/s", *res.values())
    return res
