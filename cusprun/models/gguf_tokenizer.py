"""Check that the tokenizer transformers built from a GGUF file reproduces the file's vocabulary.

A GGUF stores a SentencePiece vocabulary without merges; transformers rebuilds the merges from the
vocabulary. Gemma 3's file is a trap for that: built with the wrong merge order or the wrong
spelling of multi-space pieces, the tokenizer still round-trips text but cuts it into unusual
pieces, and the model's perplexity on plain text goes from about 12 to about 1000. Nothing fails
loudly, so conversion checks the tokenizer against the vocabulary and refuses a wrong one."""
from __future__ import annotations

import logging
import random

from cusprun.errors import ModelSourceError

log = logging.getLogger(__name__)

NORMAL = 1            # llama.cpp token type of an ordinary vocabulary piece
SPACE = "\u2581"      # SentencePiece's visible space
SAMPLE = 2000


def _text_of(piece: str) -> str:
    return piece.replace(SPACE, " ")


def vocabulary_mismatches(tok, vocab: list[str], types: list[int], *, add_space_prefix: bool,
                          sample: int = SAMPLE, seed: int = 0) -> tuple[int, list[tuple[str, list[str]]]]:
    """(pieces checked, [(piece, how the tokenizer cut its text)] for those it did not keep whole).

    Every ordinary piece of a SentencePiece BPE vocabulary is reachable by merges, so encoding the
    piece's own text must give exactly that piece's id. With a space prefix the text of a piece
    without a leading space is not encodable alone, so those pieces are only looked up by name."""
    normal = [i for i, t in enumerate(types) if int(t) == NORMAL and i < len(vocab)]
    picked = sorted(random.Random(seed).sample(normal, min(sample, len(normal))))
    bad = []
    for i in picked:
        piece = vocab[i]
        if tok.convert_tokens_to_ids(piece) != i and not (piece.strip() == "" and " " in piece):
            bad.append((piece, [f"lookup -> {tok.convert_tokens_to_ids(piece)}"]))
            continue
        if add_space_prefix and not piece.startswith(SPACE):
            continue
        text = _text_of(piece)
        if add_space_prefix:
            text = text[1:]
        ids = tok(text, add_special_tokens=False)["input_ids"]
        if ids != [i]:
            bad.append((piece, tok.convert_ids_to_tokens(ids)))
    return len(picked), bad


def check_tokenizer(tok, vocab: list[str], types: list[int], facts: dict, name: str) -> None:
    """Raise ModelSourceError when a SentencePiece GGUF's rebuilt tokenizer does not reproduce at
    least 99% of a seeded sample of its vocabulary. Other tokenizer kinds are not checked."""
    if facts.get("tokenizer_model") != "llama" or not vocab or not types:
        return
    n, bad = vocabulary_mismatches(tok, vocab, types,
                                   add_space_prefix=bool(facts.get("add_space_prefix", True)))
    log.info("tokenizer check of %s: %d of %d vocabulary pieces reproduced", name, n - len(bad), n)
    if n and len(bad) > 0.01 * n:
        import transformers

        shown = "; ".join(f"{p!r} -> {cut}" for p, cut in bad[:5])
        raise ModelSourceError(
            f"The tokenizer transformers {transformers.__version__} rebuilt from GGUF file {name!r} "
            f"does not reproduce {len(bad)} of {n} sampled vocabulary pieces (e.g. {shown}); "
            "text would be scored in the wrong pieces (perplexity in the hundreds). Use "
            "transformers >= 5.24, whose GGUF tokenizer rebuilds Gemma merges in file order, "
            "or give the model as an HF directory with its own tokenizer.json.")
