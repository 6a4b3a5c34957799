"""Out-of-source evaluation sets: per dimension, held-out text of the same value from a source
its calibration never read. An in-source set (a held-out slice of the calibration source: the
same Bible translation, Wikipedia topic, QA template) shows what the calibration corpus shows;
an out-of-source set shows how much of it transfers to other text of that language, domain or
task, which is what a customer's own documents are. Pure (no I/O); plan_inputs gives each
dimension's calibration sources and its bundled corpus."""
from __future__ import annotations

from urllib.parse import urlsplit

from cusprun.errors import SpecError
from cusprun.evaluation.set_names import out_of_source_name
from cusprun.pipeline.spec import DimensionSpec

AUTOMATIC = ("language", "domain", "task")
"""Dimensions that get a bundled out-of-source set when none is given (general text is the
protection corpus, not what the customer asked for)."""


def _bundled(source: str):
    from cusprun.corpora.bundled import parse_bundled
    from cusprun.corpora.spec import source_kind

    return parse_bundled(source) if source_kind(source) == "bundled" else None


def _canonical(source: str) -> str:
    """A bundled URI with its parameters in one order (so two spellings compare equal)."""
    from cusprun.corpora.bundled import bundled_uri

    parsed = _bundled(source)
    return bundled_uri(parsed[0].dimension, parsed[0].value, **parsed[1]) if parsed else source


def _other_translation(sources: list[str]) -> str | None:
    """Another Bible translation of a bundled language corpus: the one differing most in wording
    from the default (data_files.OTHER_TRANSLATION), else the default. Every Bible corpus splits
    by chapter, so its held-out chapters are held out in every translation: the set holds verses
    no calibration read, in any wording."""
    from cusprun.corpora.bundled import bundled_uri
    from cusprun.corpora.bundled.data_files import BIBLE_TRANSLATIONS, OTHER_TRANSLATION

    parsed = [_bundled(s) for s in sources]
    if not parsed or any(p is None or p[0].dimension != "language" for p in parsed):
        return None
    langs = {p[0].value for p in parsed}
    if len(langs) != 1:
        return None
    lang = langs.pop()
    codes = BIBLE_TRANSLATIONS[lang]
    used = {p[1].get("translation") or codes[0] for p in parsed}
    if "all" in used:
        return None
    choice = next((c for c in (OTHER_TRANSLATION.get(lang), *codes) if c and c not in used), None)
    if choice is None:
        return None
    params = {k: v for k, v in parsed[0][1].items() if k != "translation"}
    return bundled_uri("language", lang, translation=choice, **params)


def automatic_source(dimension: str, calibration: list[str], bundled: str | None) -> str | None:
    """The bundled out-of-source text for a dimension without eval_sources (`calibration`: its
    calibration sources; `bundled`: the bundled corpus of its value, if any), or None where the
    bundle has no honest one. A bundled language calibrates on one Bible translation: another
    translation. A dimension calibrated on the customer's own files: the bundled corpus of that
    value, where there is one. A bundled domain or task: none (the bundle has one source of
    each: Wikipedia articles of the topic, one QA template; its other topics would measure
    another domain, not another source)."""
    if dimension not in AUTOMATIC:
        return None
    if all(_bundled(s) for s in calibration):
        return _other_translation(calibration) if dimension == "language" else None
    if bundled is None or _canonical(bundled) in {_canonical(s) for s in calibration}:
        return None  # no bundled corpus of this value, or calibration reads it beside the files
    return bundled


def source_label(source: str) -> str:
    """A short name for a set's source: 'Bible 3', 'bundled domain/health', 'org/dataset',
    'reviews.jsonl' (the file or folder name)."""
    parsed = _bundled(source)
    if parsed:
        entry, params = parsed
        if entry.dimension == "language":
            from cusprun.corpora.bundled.data_files import BIBLE_TRANSLATIONS

            return f"Bible {params.get('translation') or BIBLE_TRANSLATIONS[entry.value][0]}"
        return f"bundled {entry.dimension}/{entry.value}"
    parts = urlsplit(source)
    path = (parts.netloc + parts.path) if parts.scheme == "hf" else parts.path
    names = [p for p in path.replace("\\", "/").split("/") if p]
    if not names:
        label = source
    elif parts.scheme == "hf":
        label = "/".join(names[:2])
    else:  # a glob's pattern says little alone: with its folder
        label = "/".join(names[-2:]) if any(c in names[-1] for c in "*?[") else names[-1]
    return label.replace("(", "[").replace(")", "]").replace("\n", " ")


def out_of_source_corpora(dimension: str, dim: DimensionSpec, calibration: list[str],
                          bundled: str | None, n_eval: int, seed: int) -> dict[str, dict]:
    """Set name -> held-out corpus spec, one per out-of-source source of this dimension. A
    bundled source keeps the bundle's split (its units are shared with the bundled calibration
    corpora); the customer's own files are read by no calibration, so all of their documents are
    held out."""
    sources = list(dim.eval_sources)
    if not sources:
        auto = automatic_source(dimension, calibration, bundled)
        sources = [auto] if auto else []
    calibrated = {_canonical(s) for s in calibration}
    labels = [source_label(s) for s in sources]
    out = {}
    for source, label in zip(sources, labels):
        if _canonical(source) in calibrated:
            raise SpecError(f"{dimension}.eval_sources {source!r} is the source {dimension} "
                            f"{dim.value!r} calibrates on: out-of-source text must come from "
                            "another source")
        parsed = _bundled(source)
        if labels.count(label) > 1:  # two files of one name: the whole source tells them apart
            label = source.replace("(", "[").replace(")", "]")
        # a bundled corpus keeps its own labels (Wikipedia text can be a language's other source)
        what = (parsed[0].dimension, parsed[0].value) if parsed else (dimension, dim.value)
        out[out_of_source_name(f"{dimension}={dim.value}", label)] = {
            "source": source, "text_field": "text" if parsed else dim.text_field, "max_docs": 1,
            "min_docs": 1 if parsed else 0, "max_eval_docs": n_eval, "min_eval_docs": 1,
            "seed": seed, "dimension": what[0], "value": what[1],
            **({} if parsed else {"eval_percent": 100})}
    return out
