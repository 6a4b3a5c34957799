"""Bundled demo corpora (language, domain, general, task) built from the data packages `make`
installs. See registry.py for what each (dimension, value) is made of."""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import NamedTuple

from tqdm.auto import tqdm

from cusprun.corpora.bundled.data_files import (BIBLE_TRANSLATIONS, PACKAGES, bible_db,
                                                humaneval_file, normalise_language, stdlib_dir,
                                                wiki_json)
from cusprun.corpora.bundled.registry import (DIMENSIONS, REGISTRY, Entry, canonical_value,
                                              resolve)
from cusprun.corpora.bundled.wiki import WIKI_DOMAINS
from cusprun.corpora.records import clean_text
from cusprun.corpora.spec import CorpusSpec, split_uri
from cusprun.errors import CorpusError
from cusprun.paths import cache_root

log = logging.getLogger(__name__)
_COUNTS_VERSION = "1"
_MIN_CHARS = CorpusSpec.model_fields["min_chars"].default


class BundledCorpus(NamedTuple):
    dimension: str
    value: str
    n_docs: int
    description: str

    @property
    def uri(self) -> str:
        return f"bundled://{self.dimension}/{self.value}"


def parse_bundled(source: str) -> tuple[Entry, dict[str, str]]:
    path, params = split_uri(source)
    parts = [p for p in path.split("/") if p]
    if len(parts) != 2:
        raise CorpusError(f"Bundled corpus {source!r} should look like bundled://<dimension>/<value>"
                          f" (dimensions: {', '.join(DIMENSIONS)}); see `cusprun corpora list`.")
    return resolve(parts[0], parts[1], params), params


def build_bundled(source: str) -> tuple[Entry, list[dict]]:
    """(registry entry, normalised rows without source/split columns) for a bundled:// URI.
    The row dicts are shared with an in-process cache: copy before changing them."""
    entry, params = parse_bundled(source)
    return entry, list(_build(entry.uri, tuple(sorted(params.items()))))


@functools.lru_cache(maxsize=8)
def _build(uri: str, params: tuple[tuple[str, str], ...]) -> tuple[dict, ...]:
    entry, _ = parse_bundled(uri)
    rows = tuple(entry.build(dict(params)))
    log.info("built %d documents for %s%s", len(rows), uri, dict(params) or "")
    return rows


def _fingerprint() -> str:
    """Changes when a data package, the Python stdlib or the corpus-building code changes."""
    here = Path(__file__).parent
    parts = [_COUNTS_VERSION, sys.version, *(p.read_text() for p in sorted(here.glob("*.py")))]
    for p in (bible_db(), humaneval_file(), *(wiki_json(lang) for lang in ("en", "fr", "es"))):
        st = os.stat(p)
        parts.append(f"{p}:{st.st_size}:{st.st_mtime_ns}")
    parts.append(str(stdlib_dir()))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _count(entry: Entry, params: dict[str, str]) -> int:
    """Documents prepare_corpus could sample with default settings (distinct, >= min_chars)."""
    return len({t for r in entry.build(params) if len(t := clean_text(r["text"])) >= _MIN_CHARS})


def _count_keys(entry: Entry) -> list[tuple[str, dict[str, str]]]:
    keys = [(entry.uri, {})]
    if "lang" in entry.params and len(entry.languages) > 1:
        keys += [(f"{entry.uri}?lang={lang}", {"lang": lang}) for lang in entry.languages]
    return keys


def _counts(entries: list[Entry]) -> dict[str, int]:
    """Distinct usable documents per entry (and per language for `lang` entries), cached in
    cache_root()/corpora: building every bible language takes several seconds."""
    path = cache_root() / "corpora" / f"bundled-counts-{_fingerprint()}.json"
    try:
        counts: dict[str, int] = json.loads(path.read_text())
    except (OSError, ValueError):
        counts = {}
    todo = [(k, e, p) for e in entries for k, p in _count_keys(e) if k not in counts]
    if not todo:
        return counts
    for key, entry, params in tqdm(todo, desc="counting bundled corpora (cached once)",
                                   leave=False):
        counts[key] = _count(entry, params)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(counts, indent=1, sort_keys=True))
    os.replace(tmp, path)
    return counts


def list_bundled(dimension: str | None = None) -> list[BundledCorpus]:
    """Every bundled (dimension, value) with its document count (default parameters) and what it
    is made of; per-language counts are in the description for entries taking `lang=`."""
    if dimension is not None and dimension not in DIMENSIONS:
        raise CorpusError(f"Unknown dimension {dimension!r}; dimensions: {', '.join(DIMENSIONS)}.")
    entries = [e for e in REGISTRY.values() if dimension in (None, e.dimension)]
    counts = _counts(entries)
    out = []
    for entry in entries:
        desc = entry.description
        per_lang = [f"{lang} {counts[f'{entry.uri}?lang={lang}']}" for lang in entry.languages
                    if f"{entry.uri}?lang={lang}" in counts]
        if per_lang:
            desc += f" [lang=: {', '.join(per_lang)}]"
        params = [p for p in entry.params if p != "lang" or not per_lang]
        if params and entry.dimension != "language":  # language params: see the epilog
            desc += f" [params: {', '.join(params)}]"
        out.append(BundledCorpus(entry.dimension, entry.value, counts[entry.uri], desc))
    return out


def bundled_uri(dimension: str, value: str, **params: str) -> str:
    """bundled://dimension/value?k=v for a checked (dimension, value); unknown ones raise with
    the list of what exists."""
    entry = resolve(dimension, value, {k: str(v) for k, v in params.items() if v is not None})
    query = "&".join(f"{k}={v}" for k, v in sorted(params.items()) if v is not None)
    return entry.uri + (f"?{query}" if query else "")


def default_bundled_source(dimension: str, value: str, *, language: str | None = None,
                           domain: str | None = None) -> str:
    """The bundled corpus for one dimension of an expert, using the expert's other dimensions
    where the data has them: a domain in the expert's language, a task in its language and
    domain (e.g. task 'qa' for en + health -> bundled://task/qa?domain=health&lang=en). Where a
    combination has no data, the parameter is left at its default rather than failing."""
    entry = resolve(dimension, value, {})
    params: dict[str, str] = {}
    lang = normalise_language(language) if language else None
    if lang and lang in entry.languages and "lang" in entry.params:
        params["lang"] = lang
    if entry.value == "translation" and lang and lang != "en" and lang in BIBLE_TRANSLATIONS:
        params["lang"] = lang
    if domain and "domain" in entry.params:
        d = canonical_value("domain", domain)
        if d in WIKI_DOMAINS and params.get("lang", entry.languages[0]) in WIKI_DOMAINS[d]:
            params["domain"] = d
    return bundled_uri(entry.dimension, entry.value, **params)


__all__ = ["BundledCorpus", "PACKAGES", "WIKI_DOMAINS", "build_bundled", "bundled_uri",
           "default_bundled_source",
           "list_bundled", "parse_bundled"]
