"""Plain evaluation inputs: loss examples (text, or prompt + answer) and multiple-choice items.

Everything here takes python lists or pyarrow tables with named columns, so evaluation does not
depend on how the corpora module builds its tables."""
from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from cusprun.evaluation.config import EvaluationError


class LossExample(BaseModel):
    """Loss is taken on the tokens of `text`, conditioned on `prompt` (empty: plain document)."""

    model_config = ConfigDict(frozen=True)

    text: str
    prompt: str = ""


class MCItem(BaseModel):
    """A question (any context string) and its options; the model should prefer options[answer_index]."""

    model_config = ConfigDict(frozen=True)

    question: str
    options: list[str]
    answer_index: int

    @model_validator(mode="after")
    def _check(self) -> "MCItem":
        if len(self.options) < 2:
            raise EvaluationError(f"MC item {self.question[:60]!r} has {len(self.options)} "
                                  "option(s); at least 2 are needed.")
        if not 0 <= self.answer_index < len(self.options):
            raise EvaluationError(
                f"MC item {self.question[:60]!r}: answer_index={self.answer_index} is out of range "
                f"for {len(self.options)} options (accepted: 0..{len(self.options) - 1}).")
        if any(not o for o in self.options):
            raise EvaluationError(f"MC item {self.question[:60]!r} has an empty option.")
        return self

    @property
    def chance(self) -> float:
        return 1.0 / len(self.options)


def as_loss_examples(name: str, items: Sequence[Any]) -> list[LossExample]:
    """Accept texts, (prompt, answer) pairs, {'text'} / {'prompt', 'answer'} dicts or LossExamples."""
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence) or len(items) == 0:
        raise EvaluationError(f"Eval set {name!r} is empty or not a list; give a non-empty list "
                              "of texts, (prompt, answer) pairs or {'prompt', 'answer'} dicts.")
    out: list[LossExample] = []
    for i, it in enumerate(items):
        if isinstance(it, LossExample):
            ex = it
        elif isinstance(it, str):
            ex = LossExample(text=it)
        elif isinstance(it, tuple) and len(it) == 2:
            ex = LossExample(prompt=it[0], text=it[1])
        elif isinstance(it, Mapping) and it.get("answer") is not None:
            ex = LossExample(prompt=it.get("prompt") or "", text=it["answer"])
        elif isinstance(it, Mapping) and it.get("text") is not None:
            ex = LossExample(text=it["text"])
        else:
            raise EvaluationError(f"Eval set {name!r}, item {i}: {type(it).__name__} is not a text, "
                                  "(prompt, answer) pair or dict with 'text' or 'answer'.")
        if not ex.text.strip():
            raise EvaluationError(f"Eval set {name!r}, item {i}: the scored text is empty.")
        out.append(ex)
    return out


def as_mc_items(name: str, items: Sequence[Any]) -> list[MCItem]:
    """Accept MCItems or dicts with question (or context), options, answer_index."""
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence) or len(items) == 0:
        raise EvaluationError(f"MC task {name!r} is empty or not a list; give a non-empty list of "
                              "{'question', 'options', 'answer_index'} items.")
    out = []
    for i, it in enumerate(items):
        if isinstance(it, MCItem):
            out.append(it)
            continue
        if not isinstance(it, Mapping) or "options" not in it or "answer_index" not in it:
            raise EvaluationError(f"MC task {name!r}, item {i}: needs question (or context), "
                                  "options and answer_index.")
        q = it.get("question", it.get("context", ""))
        out.append(MCItem(question=q, options=list(it["options"]), answer_index=it["answer_index"]))
    return out


# ---- builders from held-out tables ------------------------------------------------------------

def _column(table, name: str) -> list:
    if name not in table.column_names:
        raise EvaluationError(f"Column {name!r} not in table; columns: {', '.join(table.column_names)}.")
    return table.column(name).to_pylist()


def _with_distractors(rng: random.Random, correct: str, pool: list[str], n_options: int
                      ) -> tuple[list[str], int] | None:
    """Correct option plus n_options-1 distinct others from pool, in a seeded random order."""
    others = sorted({p for p in pool if p != correct})
    if len(others) < n_options - 1:
        return None
    options = rng.sample(others, n_options - 1) + [correct]
    rng.shuffle(options)
    return options, options.index(correct)


def _pick(rng: random.Random, n_rows: int, n_items: int) -> list[int]:
    return sorted(rng.sample(range(n_rows), min(n_items, n_rows)))


def _mc_items(rows: Sequence, *, pool: list[str], correct, question, n_items: int,
              n_options: int, seed: int, option_prefix: str = " ") -> list[MCItem]:
    """Up to n_items MC items from a seeded pick of rows: for row r, question(r) with correct(r)
    among n_options-1 distractors from pool (each option prefixed by option_prefix). A row whose
    answer has too few distinct distractors in pool is skipped."""
    rng = random.Random(seed)
    items = []
    for r in (rows[j] for j in _pick(rng, len(rows), n_items)):
        got = _with_distractors(rng, correct(r), pool, n_options)
        if got is None:
            continue
        options, ans = got
        items.append(MCItem(question=question(r), options=[option_prefix + o for o in options],
                            answer_index=ans))
    return items


def _clip(text: str, max_chars: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= max_chars else text[:max_chars].rsplit(" ", 1)[0] + " ..."


def build_topic_items(table, *, text_col: str = "text", label_col: str = "label",
                      n_items: int = 200, n_options: int = 4, seed: int = 0,
                      max_context_chars: int = 600) -> list[MCItem]:
    """Which topic label fits the article? Distractors are other labels seen in the table."""
    texts, labels = _column(table, text_col), _column(table, label_col)
    rows = [i for i, (t, lab) in enumerate(zip(texts, labels)) if t and lab]
    distinct = sorted({labels[i] for i in rows})
    if len(distinct) < n_options:
        raise EvaluationError(f"Topic task needs >= {n_options} distinct labels in {label_col!r}; "
                              f"found {len(distinct)}: {distinct[:10]}.")
    return _mc_items(rows, pool=distinct, correct=lambda r: labels[r],
                     question=lambda r: f"Article: {_clip(texts[r], max_context_chars)}\nTopic:",
                     n_items=n_items, n_options=n_options, seed=seed)


def build_translation_items(source, target, *, key_col: str = "group_id", text_col: str = "text",
                            source_name: str = "Source", target_name: str = "Translation",
                            n_items: int = 200, n_options: int = 4, seed: int = 0,
                            max_context_chars: int = 400) -> list[MCItem]:
    """Which of n_options target-language texts translates the source text? Rows of the two
    tables are aligned by key_col (e.g. a verse id); distractors are other target texts."""
    src = dict(zip(_column(source, key_col), _column(source, text_col)))
    tgt = dict(zip(_column(target, key_col), _column(target, text_col)))
    keys = sorted(k for k in src if k is not None and k in tgt and src[k] and tgt[k])
    if len(keys) < n_options:
        raise EvaluationError(f"Translation task needs >= {n_options} aligned {key_col!r} values "
                              f"present in both tables; found {len(keys)}.")
    pool = [_clip(tgt[k], max_context_chars) for k in keys]
    return _mc_items(range(len(keys)), pool=pool, correct=lambda j: pool[j],
                     question=lambda j: (f"{source_name}: {_clip(src[keys[j]], max_context_chars)}"
                                         f"\n{target_name}:"),
                     n_items=n_items, n_options=n_options, seed=seed)


def first_sentence(text: str) -> str:
    """Text up to the first '. ', '! ' or '? ' (the whole text if none)."""
    text = " ".join(text.split())
    for i, ch in enumerate(text):
        if ch in ".!?" and (i + 1 == len(text) or text[i + 1] == " ") and i > 0:
            return text[: i + 1]
    return text


_STOP = {"the", "a", "an", "of", "and", "in", "on", "for", "to", "le", "la", "les", "el", "los",
         "las", "de", "des", "du", "der", "die", "das"}


def _mask(sentence: str, title: str) -> str:
    """Replace the defined term by 'it', so the answer cannot be found by copying the title.

    The term is the title, else the title without a '(...)' qualifier, else its longest leading
    word run that occurs in the sentence ('Ukrainian' for 'Ukrainian language'; such a run is never
    a lone stopword or under 4 characters); a leading article and a short word ending glued to a
    term of 4+ characters ('A violin', 'Kelps') go with it."""
    base = re.sub(r"\s*\(.*?\)\s*$", "", title).strip()
    words = base.split()
    partial = [" ".join(words[:k]) for k in range(len(words) - 1, 0, -1)]
    partial = [p for p in partial if len(p) >= 4 and p.lower() not in _STOP]
    for term in [t for t in (title, base) if t] + partial:
        ending = r"\w{0,3}(?!\w)" if len(term) >= 4 else r"(?!\w)"  # 'Kelps'; never 'C' -> 'Cat'
        pattern = r"(?:\b(?:the|an|a)\s+)?(?<!\w)" + re.escape(term) + ending
        if re.search(pattern, sentence, flags=re.IGNORECASE):
            out = re.sub(pattern, "it", sentence, flags=re.IGNORECASE)
            return out[:1].upper() + out[1:]
    return sentence


def build_definition_items(table, *, title_col: str = "title", text_col: str = "text",
                           n_items: int = 200, n_options: int = 4, seed: int = 0,
                           mask_title: bool = True, question: str = "Question: What is {title}?\nAnswer:"
                           ) -> list[MCItem]:
    """'What is X?' answered by the first sentence of X's article; distractors are first sentences
    of other articles. With mask_title, X is replaced by 'it' in every option."""
    titles, texts = _column(table, title_col), _column(table, text_col)
    rows = [i for i, (t, x) in enumerate(zip(titles, texts)) if t and x]
    sentences = {i: first_sentence(texts[i]) for i in rows}
    if mask_title:
        sentences = {i: _mask(s, titles[i]) for i, s in sentences.items()}
    pool = sorted(set(sentences.values()))
    if len(pool) < n_options:
        raise EvaluationError(f"Definition task needs >= {n_options} distinct articles; "
                              f"found {len(pool)}.")
    return _mc_items(rows, pool=pool, correct=lambda r: sentences[r],
                     question=lambda r: question.format(title=titles[r]),
                     n_items=n_items, n_options=n_options, seed=seed)


def loss_examples_from_table(table, *, text_col: str = "text", prompt_col: str = "prompt",
                             answer_col: str = "answer") -> list[LossExample]:
    """Rows with a non-null answer become prompt+answer examples (loss on the answer only);
    other rows are plain documents (loss on the whole text)."""
    texts = _column(table, text_col)
    names = table.column_names
    prompts = table.column(prompt_col).to_pylist() if prompt_col in names else [None] * len(texts)
    answers = table.column(answer_col).to_pylist() if answer_col in names else [None] * len(texts)
    out = []
    for t, p, a in zip(texts, prompts, answers):
        if a:
            out.append(LossExample(prompt=p or "", text=a))
        elif t:
            out.append(LossExample(text=t))
    return out


def subsample(items: list, n: int, seed: int) -> list:
    """At most n items: a seeded subsample that keeps the original order."""
    if len(items) <= n:
        return items
    return [items[i] for i in _pick(random.Random(seed), len(items), n)]
