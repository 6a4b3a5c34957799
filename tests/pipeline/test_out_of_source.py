"""Out-of-source evaluation: which text each dimension is scored on besides its calibration
source (the spec's eval_sources, else a bundled alternative), how those sets are named and keyed,
that they hold no text any calibration read, and how the summary shows both retentions."""
from __future__ import annotations

import re

import pytest
from tests.support.report_helpers import MODELS, synthetic_report

from cusprun.errors import SpecError
from cusprun.evaluation.markdown import differences_table, summary_markdown, summary_order, to_markdown
from cusprun.evaluation.set_names import is_out_of_source, out_of_source_name, split_set_name
from cusprun.pipeline.demo import demo_spec
from cusprun.pipeline.plan_inputs import evaluation_corpora
from cusprun.pipeline.spec import DimensionSpec, load_spec
from cusprun.pipeline.worklist import corpus_jobs

OOS = "language=en (out-of-source: Bible 3)"


def _spec(**changes):
    return load_spec({**demo_spec(), **changes})


def _oos(spec) -> dict[str, dict]:
    return {n: c for n, c in evaluation_corpora(spec).items() if is_out_of_source(n)}


def test_set_names_round_trip_and_old_names_are_in_source():
    name = out_of_source_name("domain=health", "reviews.jsonl")
    assert name == "domain=health (out-of-source: reviews.jsonl)"
    assert split_set_name(name) == ("domain=health", "reviews.jsonl")
    for old in ("language=en", "general=en", "definition QA", "language=de"):
        assert split_set_name(old) == (old, None) and not is_out_of_source(old)
    with pytest.raises(ValueError, match="without"):
        out_of_source_name("task=qa", "a (b)")


def test_demo_language_gets_another_bible_translation_and_nothing_else():
    oos = _oos(_spec())
    assert list(oos) == [OOS]  # the bundle has one source of health articles and of its QA
    c = oos[OOS]
    assert c["source"] == "bundled://language/en?translation=3"
    assert "eval_percent" not in c  # the bundle's own split: held-out chapters in every translation
    assert c["max_eval_docs"] == evaluation_corpora(_spec())["language=en"]["max_eval_docs"]


def test_out_of_source_can_be_switched_off():
    assert not _oos(_spec(evaluation={**demo_spec()["evaluation"], "out_of_source": False}))


def test_eval_sources_replace_the_bundled_choice_and_are_held_out_whole():
    spec = _spec(language={"value": "en", "eval_sources": ["/data/a/reviews.jsonl",
                                                           "/data/b/reviews.jsonl",
                                                           "hf://org/forum?split=train"]},
                 domain={"value": "health", "eval_sources": ["s3://bucket/leaflets/"]})
    oos = _oos(spec)
    assert sorted(oos) == ["domain=health (out-of-source: leaflets)",
                           "language=en (out-of-source: /data/a/reviews.jsonl)",
                           "language=en (out-of-source: /data/b/reviews.jsonl)",
                           "language=en (out-of-source: org/forum)"]
    for c in oos.values():   # no calibration reads them: every document is held out
        assert (c["eval_percent"], c["min_docs"]) == (100, 0)


def test_user_calibrated_dimension_is_also_scored_on_the_bundled_corpus():
    spec = _spec(language={"value": "en", "sources": ["corpora/en/"]},
                 domain={"value": "medicine", "sources": ["corpora/med.jsonl"]})
    oos = _oos(spec)
    assert oos["language=en (out-of-source: Bible 2)"]["source"] == "bundled://language/en"
    dom = oos["domain=medicine (out-of-source: bundled domain/health)"]
    assert dom["source"] == "bundled://domain/health?lang=en" and dom["value"] == "health"
    assert not any(n.startswith("domain=nonsense") for n in
                   _oos(_spec(domain={"value": "nonsense", "sources": ["x.jsonl"]})))


@pytest.mark.parametrize("source,other", [("bundled://language/en?translation=3", "Bible 2"),
                                          ("bundled://language/de", "Bible e"),
                                          ("bundled://language/ru", None),         # one translation
                                          ("bundled://language/en?translation=all", None)])
def test_another_translation_where_the_language_has_one(source, other):
    lang = re.search(r"language/(\w+)", source)[1]
    oos = _oos(_spec(language={"value": lang, "sources": [source]}))
    assert [split_set_name(n)[1] for n in oos if n.startswith("language=")] == ([other] if other else [])


def test_eval_sources_are_validated_naming_the_bad_value():
    with pytest.raises(SpecError, match="empty source"):
        _spec(language={"value": "en", "eval_sources": [" "]})
    with pytest.raises(SpecError, match="'x.jsonl' twice"):
        _spec(language={"value": "en", "eval_sources": ["x.jsonl", "x.jsonl"]})
    with pytest.raises(SpecError, match="'d.jsonl' is a calibration source of domain"):
        _spec(domain={"value": "health", "sources": ["d.jsonl"]},
              language={"value": "en", "eval_sources": ["d.jsonl"]})
    with pytest.raises(SpecError, match="'bundled://language/en' is the source language 'en' calibrates on"):
        evaluation_corpora(_spec(language={"value": "en", "eval_sources": ["bundled://language/en"]}))
    with pytest.raises(Exception, match="nope"):
        evaluation_corpora(_spec(language={"value": "en", "eval_sources": ["bundled://language/nope"]}))
    assert "out-of-source" in DimensionSpec.model_fields["eval_sources"].description.lower()


def test_out_of_source_sets_are_in_the_held_out_corpus_keys():
    def held(spec):
        return {n: j.key for n, j in corpus_jobs(spec, {})[1].items()}

    base = held(_spec())
    other = held(_spec(language={"value": "en", "eval_sources": ["bundled://language/en?translation=k"]}))
    assert OOS in base and "language=en (out-of-source: Bible k)" in other and OOS not in other
    assert {n: k for n, k in base.items() if n != OOS} == {n: k for n, k in other.items()
                                                         if not is_out_of_source(n)}


def test_cli_flag_adds_eval_sources():
    from cusprun.cli import build_parser
    from cusprun.cli.pipeline import _spec_from_args

    args = build_parser().parse_args(["build", "--language", "de", "--language-eval-source",
                                      "reviews.jsonl", "--domain", "none", "--task", "none"])
    assert _spec_from_args(args).language.eval_sources == ["reviews.jsonl"]
    args = build_parser().parse_args(["build", "--domain", "none", "--domain-eval-source", "x.jsonl"])
    with pytest.raises(SpecError, match="--domain-eval-source 'x.jsonl' needs a domain"):
        _spec_from_args(args)


# --- the summary ------------------------------------------------------------------------------

def _with_out_of_source(models=MODELS):
    """The synthetic report with its language=en values copied under an out-of-source name."""
    report = synthetic_report(models)
    extra = [r.model_copy(update={"eval_set": OOS}) for r in report.rows if r.eval_set == "language=en"]
    return report.model_copy(update={"rows": report.rows + extra})


def _rows(md: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in md.splitlines()
            if line.startswith("|")]


def test_summary_shows_out_of_source_under_its_in_source_set():
    md = summary_markdown(_with_out_of_source())
    sets = [r[0] for r in _rows(md)[2:]]
    assert sets[sets.index("language=en") + 1] == "↳ Bible 3"
    assert "out-of-source" in md and all(len(r) == 5 for r in _rows(md))
    assert summary_order({"language=fr", OOS, "language=en", "task=qa"}) == [
        "language=en", OOS, "language=fr", "task=qa"]
    # an out-of-source set whose in-source set is not in the report keeps its whole name
    assert summary_order({OOS, "task=qa"}) == ["task=qa", OOS]


def test_one_baseline_is_the_baseline_several_are_the_best_baseline():
    one = {k: v for k, v in MODELS.items() if k != "random@0.25"}
    md = summary_markdown(_with_out_of_source(one))
    head, *body = _rows(md)[:1] + _rows(md)[2:]
    assert head == ["set", "dense", "`cusprun@0.25`", "baseline `wanda-sp`", "kept"]
    assert "best baseline" not in md and "best" not in to_markdown(synthetic_report(one))
    assert all(not r[3].startswith("`") for r in body)  # the header names it; cells hold values
    several = summary_markdown(synthetic_report())
    assert _rows(several)[0][3] == "best baseline" and "`wanda-sp` " in several
    assert "| best baseline | gap to best baseline |" in "\n".join(differences_table(synthetic_report()))


def test_recorded_reports_without_out_of_source_sets_still_render():
    """report.json files written before out-of-source sets existed (benchmarks/results/)."""
    from cusprun.evaluation.report import read_report
    from tests.support.paths import REPO

    found = sorted(REPO.glob("benchmarks/results/*/report.json"))
    assert found
    for path in found:
        md = summary_markdown(read_report(path))
        assert "| set | dense |" in md
        if not any(is_out_of_source(r.eval_set) for r in read_report(path).rows):
            assert "↳" not in md


# --- with the bundled data ---------------------------------------------------------------------

@pytest.mark.integration
def test_other_translation_holds_no_verse_any_calibration_read(tmp_path):
    """The out-of-source translation is split by chapter like every Bible corpus: its held-out
    documents are verses held out of the calibration translation too (and of translation pairs)."""
    from cusprun.corpora import CorpusSpec, prepare_corpus, read_corpus

    spec = _spec()
    calib = evaluation_corpora(spec)["language=en"] | {"max_docs": 4000, "max_eval_docs": 1}
    held = evaluation_corpora(spec)[OOS]
    seen = read_corpus(prepare_corpus(CorpusSpec(**calib), tmp_path).path, "calib").to_pylist()
    out = read_corpus(prepare_corpus(CorpusSpec(**held), tmp_path).path, "eval").to_pylist()
    assert out and all(r["doc_id"].startswith("bible/3/") for r in out)
    assert not {r["split_key"] for r in out} & {r["split_key"] for r in seen}
    # the same verses as the in-source set, in another wording: wording apart from content
    ins = read_corpus(prepare_corpus(CorpusSpec(**evaluation_corpora(spec)["language=en"]),
                                     tmp_path).path, "eval").to_pylist()
    assert [r["group_id"] for r in out][:5] == [r["group_id"] for r in ins][:5]
    assert out[0]["text"] != ins[0]["text"]


@pytest.mark.integration
def test_other_translation_is_the_one_sharing_fewest_words_with_the_default():
    from cusprun.corpora.bundled.bible import load_translation
    from cusprun.corpora.bundled.data_files import BIBLE_TRANSLATIONS, OTHER_TRANSLATION

    def words(t):
        return set(re.findall(r"\w+", t.lower()))

    def overlap(a, b):
        pairs = list(zip(load_translation(a), load_translation(b)))[::50]
        both = sum(len(words(x[3]) & words(y[3])) for x, y in pairs)
        return both / sum(len(words(x[3]) | words(y[3])) for x, y in pairs)

    several = {lang: codes for lang, codes in BIBLE_TRANSLATIONS.items() if len(codes) > 1}
    assert set(OTHER_TRANSLATION) == set(several)
    for lang, codes in several.items():
        assert OTHER_TRANSLATION[lang] == min(codes[1:], key=lambda c: overlap(codes[0], c)), lang


@pytest.mark.integration
def test_out_of_source_tables_are_loss_sets_not_tasks(tmp_path):
    """Scored as loss only: the multiple-choice tasks are those of the in-source data (an
    out-of-source language set must not become the source side of translation selection)."""
    from cusprun.pipeline.stages.corpus import corpus_stage
    from cusprun.pipeline.stages.evaluate import build_eval_inputs
    from cusprun.storage import ArtifactStore

    store = ArtifactStore(str(tmp_path / "store"))
    wanted = evaluation_corpora(_spec(evaluation={**demo_spec()["evaluation"], "max_docs": 4,
                                                  "min_loss_tokens": 0, "mc_items": 4}))
    wanted = {n: c for n, c in wanted.items() if n in ("language=en", "language=de", OOS)}
    prepared = {n: corpus_stage(store, f"k{i}", c) for i, (n, c) in enumerate(wanted.items())}
    loss, mc = build_eval_inputs(store, prepared, own_language="en", max_docs=4, mc_items=4, seed=0)
    assert set(loss) == set(wanted) and len(loss[OOS]) == 4
    assert "translation selection" in mc
    alone, mc_alone = build_eval_inputs(store, {n: prepared[n] for n in ("language=en", OOS)},
                                        own_language="en", max_docs=4, mc_items=4, seed=0)
    assert set(alone) == {"language=en", OOS} and not mc_alone


def test_source_labels_and_mixed_calibration():
    from cusprun.pipeline.out_of_source import source_label

    assert source_label("corpora/*.jsonl") == "corpora/*.jsonl"
    assert source_label("s3://bucket/a/b.parquet") == "b.parquet"
    assert source_label("reviews (2).csv") == "reviews [2].csv"
    assert source_label("bundled://task/qa?lang=fr") == "bundled task/qa"
    # files and the bundled Bible together: the bundle's other source would be read by calibration
    assert not _oos(_spec(language={"value": "en", "sources": ["mine.jsonl", "bundled://language/en"]}))
