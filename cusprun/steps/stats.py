"""The statistics step: impact statistics (and compensation Grams) of every corpus, one pass."""
from __future__ import annotations

from collections.abc import Callable, Mapping


def statistics(lm, tok, jobs: Mapping, *, max_tokens: int, batch_size: int, grams_precision: str,
               progress: bool = True, on_progress: Callable[[int, int], None] | None = None) -> dict:
    """One pass over the base model for every corpus of `jobs` (name -> cusprun.scoring.CorpusJob):
    name -> its DimensionStats (None where only Grams were asked)."""
    from cusprun.scoring import collect_corpora

    return collect_corpora(lm, tok, jobs, max_tokens=max_tokens, batch_size=batch_size,
                           grams_precision=grams_precision, progress=progress,
                           on_progress=on_progress)
