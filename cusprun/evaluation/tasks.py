"""Evaluation inputs from held-out corpus tables (the normalised schema of cusprun.corpora:
text, value, plus nullable prompt, answer, label, title), without importing the corpora module."""
from __future__ import annotations

from collections.abc import Callable, Mapping

from cusprun.evaluation.config import EvaluationError
from cusprun.evaluation.items import (LossExample, MCItem, _clip, _column, _mask, _mc_items,
                                      build_topic_items, loss_examples_from_table)


def _has(table, col: str) -> bool:
    return col in table.column_names and table.column(col).null_count < table.num_rows


def build_answer_items(table, *, prompt_col: str = "prompt", answer_col: str = "answer",
                       title_col: str | None = None, n_items: int = 200, n_options: int = 4,
                       seed: int = 0, max_answer_chars: int | None = None) -> list[MCItem]:
    """Which answer belongs to this prompt? The prompt is the question as the corpus wrote it
    ('Question: What is X?\\nAnswer: ', 'Translate from English to German:\\nEnglish: ...\\nGerman: ');
    distractors are answers of other rows. With title_col, each option has its own row's title
    replaced by 'it' (definition QA: the answer cannot be found by copying the title). With
    max_answer_chars, longer answers are cut at a word boundary and end in ' ...' (every option
    token costs an LM-head row: a 262k vocabulary makes long options the bulk of MC time)."""
    prompts, answers = _column(table, prompt_col), _column(table, answer_col)
    titles = _column(table, title_col) if title_col else [None] * len(prompts)
    rows = [i for i, (p, a) in enumerate(zip(prompts, answers)) if p and a]
    shown = {i: _mask(answers[i], titles[i]) if titles[i] else answers[i] for i in rows}
    if max_answer_chars:
        shown = {i: _clip(a, max_answer_chars) for i, a in shown.items()}
    pool = sorted(set(shown.values()))
    if len(pool) < n_options:
        raise EvaluationError(f"Answer selection needs >= {n_options} distinct non-empty "
                              f"{answer_col!r} values; found {len(pool)}.")
    return _mc_items(rows, pool=pool, correct=lambda r: shown[r], question=lambda r: prompts[r],
                     n_items=n_items, n_options=n_options, seed=seed, option_prefix="")


def loss_sets_from_tables(tables: Mapping[str, object], *, max_docs: int | None = None,
                          min_tokens: int = 0, count_tokens: Callable[[LossExample], int] | None = None
                          ) -> dict[str, list[LossExample]]:
    """One loss set per table: prompt+answer rows score the answer, other rows the whole text.

    Each set is its first max_docs rows; with min_tokens (and count_tokens, the scored tokens of
    one example), rows keep being added in order until the set scores min_tokens tokens or the
    table runs out: ten QA answers are about 250 tokens, too few to rank two models (on the
    demo a 0.004 retention gap at 10 answers reversed to 0.02, 2.7 standard errors, at 128)."""
    if min_tokens and count_tokens is None:
        raise EvaluationError("loss_sets_from_tables(min_tokens=...) needs count_tokens, the "
                              "scored tokens of one example (cusprun.evaluation.scored_tokens).")
    out = {}
    for name, table in tables.items():
        ex = loss_examples_from_table(table)
        if not ex:
            raise EvaluationError(f"Eval table {name!r} has no rows with text or answer.")
        n = min(max_docs or len(ex), len(ex))
        if min_tokens:
            total = sum(count_tokens(e) for e in ex[:n])
            while total < min_tokens and n < len(ex):
                total += count_tokens(ex[n])
                n += 1
        out[name] = ex[:n]
    return out


def mc_tasks_from_tables(tables: Mapping[str, object], *, n_items: int = 200, n_options: int = 4,
                         seed: int = 0, max_option_chars: int | None = None,
                         max_article_chars: int = 600) -> dict[str, list[MCItem]]:
    """The MC tasks the held-out tables allow, named after what they test:

    - 'topic classification' from the first table (by name) with >= n_options distinct labels;
    - 'definition QA' from a table whose `value` is 'qa' (prompt/answer rows, titles masked);
    - 'translation selection' from a table whose `value` is 'translation' (prompt/answer rows).
    Tables that fit none are skipped; an empty result is allowed."""
    tasks: dict[str, list[MCItem]] = {}
    for name in sorted(tables):
        t = tables[name]
        value = t.column("value")[0].as_py() if _has(t, "value") else None
        if ("topic classification" not in tasks and _has(t, "label")
                and len(set(t.column("label").drop_null().to_pylist())) >= n_options):
            tasks["topic classification"] = build_topic_items(
                t, n_items=n_items, n_options=n_options, seed=seed,
                max_context_chars=max_article_chars)
        if _has(t, "prompt") and _has(t, "answer"):
            if value == "qa" and "definition QA" not in tasks:
                tasks["definition QA"] = build_answer_items(
                    t, title_col="title" if _has(t, "title") else None, n_items=n_items,
                    n_options=n_options, seed=seed, max_answer_chars=max_option_chars)
            elif value == "translation" and "translation selection" not in tasks:
                tasks["translation selection"] = build_answer_items(
                    t, n_items=n_items, n_options=n_options, seed=seed,
                    max_answer_chars=max_option_chars)
    return tasks
