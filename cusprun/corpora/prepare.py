"""prepare_corpus: read a source once, normalise, dedup, split by stable hash, sample by seed,
write one parquet shard named by its content hash.

Held-out guarantee: a row is 'eval' iff sha256(split_key) mod 100 < eval_percent, where
split_key is the doc_id or the unit several rows share (article, chapter, source file). The split
does not depend on the seed, the sample size or the other rows, so the same unit is on the same
side in every corpus prepared with the same eval_percent.
"""
from __future__ import annotations

import itertools
import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cusprun.corpora.bundled import build_bundled
from cusprun.corpora.bundled.registry import canonical_value
from cusprun.corpora.files import iter_file_records
from cusprun.corpora.hf import iter_hf_records
from cusprun.corpora.records import check_fields, clean_text, matches, normalise, parse_filter
from cusprun.corpora.schema import (COLUMN_NAMES, OPTIONAL_COLUMNS, SCHEMA_VERSION, content_hash,
                                    order_key, split_of, to_table)
from cusprun.corpora.spec import CorpusSpec, split_uri
from cusprun.corpora.store import PreparedCorpus, _info, _read_raw, write_shard
from cusprun.errors import CorpusError

log = logging.getLogger(__name__)


def _bundled_rows(spec: CorpusSpec) -> tuple[list[dict], str, str, str]:
    entry, rows = build_bundled(spec.source)
    _, params = split_uri(spec.source)
    query = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
    canonical = entry.uri + (f"?{query}" if query else "")  # same corpus, same rows, same hash
    if spec.dimension is not None and spec.dimension != entry.dimension:
        raise CorpusError(f"{spec.source!r} is a {entry.dimension} corpus, but the spec says "
                          f"dimension={spec.dimension!r}; drop dimension= or use a matching source.")
    if spec.value is not None and canonical_value(entry.dimension, spec.value) != entry.value:
        raise CorpusError(f"{spec.source!r} is {entry.dimension} {entry.value!r}, but the spec "
                          f"says value={spec.value!r}; drop value= or use a matching source.")
    if spec.text_field != "text":
        raise CorpusError(f"Bundled corpora keep their text in 'text'; text_field="
                          f"{spec.text_field!r} is not accepted for {spec.source!r}.")
    conditions = parse_filter(spec.filter)
    bad = [c for c in conditions if c not in COLUMN_NAMES]
    if bad:
        raise CorpusError(f"Filter column(s) {', '.join(bad)} do not exist in bundled corpora; "
                          f"columns: {', '.join(COLUMN_NAMES)}.")
    rows = [r for r in rows if matches(r, conditions)] if conditions else rows
    return rows, entry.dimension, spec.value or entry.value, canonical


def _source_rows(spec: CorpusSpec) -> list[dict]:
    if spec.kind == "hf":
        limit = spec.scan_limit or 20 * (spec.max_docs + spec.eval_cap)
        fields, records = iter_hf_records(spec.source, limit)
    else:
        fields, records = iter_file_records(spec)
        if spec.scan_limit:
            records = itertools.islice(records, spec.scan_limit)
    check_fields(spec, fields, spec.source)
    return normalise(records, spec, spec.source)


def _candidates(rows: list[dict], spec: CorpusSpec) -> list[dict]:
    """Cleaned, long enough, deduplicated by text (first occurrence wins), unique doc ids."""
    seen_text: set[str] = set()
    ids: dict[str, str] = {}
    out = []
    for r in rows:
        text = clean_text(r["text"])
        if len(text) < spec.min_chars or text in seen_text:
            continue
        if r["doc_id"] in ids:
            raise CorpusError(f"Document id {r['doc_id']!r} appears twice with different texts in "
                              f"{spec.source!r}; id_field={spec.id_field!r} must be unique.")
        seen_text.add(text)
        ids[r["doc_id"]] = text
        out.append({**r, "text": text})
    return out


def _sample(cands: list[dict], spec: CorpusSpec) -> tuple[list[dict], list[dict], list[dict]]:
    """(calib, holdback, eval). Holdback docs come after the max_docs calibration docs in the
    seeded order, so asking for some leaves the calibration docs as they were; a small corpus
    gives them up only down to min_docs calibration docs."""
    sides: dict[str, list[dict]] = {"calib": [], "eval": []}
    for r in cands:
        sides[split_of(r["split_key"], spec.eval_percent)].append(r)
    ranked = {side: sorted(rows, key=lambda r: order_key(
        spec.seed, r.get("group_id") or r["split_key"], r["doc_id"])) for side, rows in sides.items()}
    n = len(ranked["calib"])
    hold = min(spec.holdback_docs, max(0, n - spec.min_docs))
    n_calib = min(spec.max_docs, n - hold)
    calib = [{**r, "split": "calib"} for r in ranked["calib"][:n_calib]]
    held_back = [{**r, "split": "holdback"} for r in ranked["calib"][n_calib:n_calib + hold]]
    held_out = [{**r, "split": "eval"} for r in ranked["eval"][:spec.eval_cap]]
    return calib, held_back, held_out


def _slug(dimension: str | None, value: str | None) -> str:
    name = "-".join(x for x in (dimension, value) if x) or "corpus"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:60]


def prepare_corpus(spec: CorpusSpec | Mapping[str, Any] | str, out_dir: str | Path
                   ) -> PreparedCorpus:
    """Build (or reuse) the shard for `spec` under out_dir and describe it.

    Raises CorpusError, before writing anything, when the source is missing/unreadable/empty,
    a field is missing, or a split would get fewer than min_docs / min_eval_docs documents.
    """
    if isinstance(spec, str):
        spec = CorpusSpec(source=spec)
    elif not isinstance(spec, CorpusSpec):
        spec = CorpusSpec(**spec)
    if spec.kind == "bundled":
        rows, dimension, value, source = _bundled_rows(spec)
    else:
        rows, source = _source_rows(spec), spec.source
        dimension, value = spec.dimension, spec.value
    cands = _candidates(rows, spec)
    if not cands:
        raise CorpusError(f"Corpus {spec.source!r} has no documents: {len(rows)} row(s) read, none "
                          f"left after filter={spec.filter!r}, min_chars={spec.min_chars} and "
                          "dedup. Check the source, text_field and filter.")
    calib, held_back, held = _sample(cands, spec)
    if len(calib) < spec.min_docs or len(held) < spec.min_eval_docs:
        raise CorpusError(
            f"Corpus {spec.source!r} has too few documents: {len(cands)} usable, split into "
            f"{len(calib)} calibration and {len(held)} held-out (eval_percent={spec.eval_percent}); "
            f"need >= min_docs={spec.min_docs} calibration and >= min_eval_docs="
            f"{spec.min_eval_docs} held-out. Add data, relax the filter, or lower the minimums.")
    out = []
    for r in calib + held_back + held:
        row = {c: r.get(c) for c in OPTIONAL_COLUMNS}
        row.update(doc_id=r["doc_id"], text=r["text"], source=source, dimension=dimension,
                   value=value, n_chars=len(r["text"]), split=r["split"], split_key=r["split_key"])
        out.append({c: row[c] for c in COLUMN_NAMES})
    digest = content_hash(out)
    meta = {"schema_version": SCHEMA_VERSION, "hash": digest, "n_calib": len(calib),
            "n_eval": len(held), "n_holdback": len(held_back), "n_candidates": len(cands),
            "source": source,
            "dimension": dimension, "value": value,
            "spec": json.loads(spec.model_dump_json(exclude={"storage_options"}))}
    path = Path(out_dir) / f"{_slug(dimension, value)}-{digest[:16]}.parquet"
    if not _reusable(path, digest):
        write_shard(to_table(out, meta), path)
    log.info("corpus %s: %d calib + %d holdback + %d eval of %d candidates -> %s (hash %s)",
             spec.source, len(calib), len(held_back), len(held), len(cands), path, digest[:16])
    info = _info(path, _read_raw(path, None))
    return info.model_copy(update={"spec": spec})


def _reusable(path: Path, digest: str) -> bool:
    """Same name means same content hash; reuse only if the file still reads and says so."""
    if not path.is_file():
        return False
    try:
        return _info(path, _read_raw(path, None)).hash == digest
    except CorpusError:
        return False
