"""Token encodings of what is scored: a document (every token after the first), or a prompt
plus a continuation (the continuation's tokens only), cut to a token budget."""
from __future__ import annotations

from dataclasses import dataclass

from cusprun.evaluation.items import MCItem

@dataclass(frozen=True)
class Encoded:
    """Token ids of one sequence; the last n_scored of them are scored."""

    ids: list[int]
    n_scored: int


def _ids(tokenizer, text: str, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def _split(tokenizer, text: str, prompt: str) -> tuple[list[int], list[int]]:
    """(prompt ids, continuation ids): the continuation's tokens are read off the encoding of
    prompt+continuation where its prefix equals the prompt's encoding (so boundary merges match
    how the model would see the full text); trailing whitespace of the prompt moves to the
    continuation."""
    stripped = prompt.rstrip()
    cont_text = prompt[len(stripped):] + text
    ctx = _ids(tokenizer, stripped, True)
    whole = _ids(tokenizer, stripped + cont_text, True)
    if whole[: len(ctx)] == ctx and len(whole) > len(ctx):
        return ctx, whole[len(ctx):]
    return ctx, _ids(tokenizer, cont_text, False)


def _fit(ctx: list[int], cont: list[int], longest: int, max_tokens: int) -> Encoded:
    """Cut the prompt from the left (it keeps at least half the budget if it needs it; the budget
    left by the longest continuation otherwise) and the continuation from the right."""
    keep_ctx = min(len(ctx), max(max_tokens - longest, max_tokens // 2))
    ctx = ctx[len(ctx) - keep_ctx:]
    cont = cont[: max_tokens - keep_ctx]
    if not ctx:  # nothing to condition the first continuation token on
        return Encoded(cont, max(len(cont) - 1, 0))
    return Encoded(ctx + cont, len(cont))


def encode(tokenizer, text: str, prompt: str = "", max_tokens: int = 512) -> Encoded:
    """Encode a document (prompt empty: every token after the first is scored) or a prompt plus a
    continuation (only continuation tokens are scored; see _split and _fit). Over max_tokens, a
    document keeps its first max_tokens tokens."""
    if not prompt:
        ids = _ids(tokenizer, text, True)[:max_tokens]
        return Encoded(ids, max(len(ids) - 1, 0))
    ctx, cont = _split(tokenizer, text, prompt)
    return _fit(ctx, cont, len(cont), max_tokens)


def encode_item(tokenizer, item: MCItem, max_tokens: int = 512) -> list[Encoded]:
    """Every option of an MC item after the same question: when the longest option needs the
    question cut, every option gets the same cut question (so all are judged on one context)."""
    if not item.question:
        return [encode(tokenizer, o, "", max_tokens) for o in item.options]
    split = [_split(tokenizer, o, item.question) for o in item.options]
    longest = max(len(cont) for _, cont in split)
    return [_fit(ctx, cont, longest, max_tokens) for ctx, cont in split]
