"""The normalised corpus table: one parquet shard per prepared corpus, same columns for every
source.

Task rows keep `text == prompt + answer` (the prompt ends with its separator, e.g. "Answer: "),
so calibration can read `text` alone while evaluation scores `answer` given `prompt`. Structured
columns (label, title, group_id, lang, source_*) stay so held-out multiple-choice items can be
built from the eval split without re-reading the source.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa

SCHEMA_VERSION = "1"
METADATA_KEY = b"cusprun.corpus"
SPLITS = ("calib", "holdback", "eval")

# name, type, nullable, meaning (the meaning is printed by docs/tests, keep it short)
COLUMNS: list[tuple[str, pa.DataType, bool, str]] = [
    ("doc_id", pa.string(), False, "unique id within the corpus, stable across runs"),
    ("text", pa.string(), False, "the document (task rows: prompt + answer)"),
    ("source", pa.string(), False, "source URI the row came from"),
    ("dimension", pa.string(), True, "language | domain | task | general (None: unlabelled)"),
    ("value", pa.string(), True, "dimension value, e.g. 'de', 'health', 'qa'"),
    ("n_chars", pa.int32(), False, "len(text)"),
    ("split", pa.string(), False, "'calib', 'holdback' (calibration side, kept from the "
                                    "statistics to measure plans) or 'eval' (held out)"),
    ("split_key", pa.string(), False, "what the split hashes: doc_id, or the shared unit "
                                      "(article, chapter, file) rows derived from it share"),
    ("lang", pa.string(), True, "language code of text/answer"),
    ("group_id", pa.string(), True, "alignment id shared across languages (verse or verse range)"),
    ("title", pa.string(), True, "article/problem title"),
    ("label", pa.string(), True, "class label (topic)"),
    ("prompt", pa.string(), True, "task input (task rows)"),
    ("answer", pa.string(), True, "task target (task rows)"),
    ("source_lang", pa.string(), True, "translation rows: language of source_text"),
    ("source_text", pa.string(), True, "translation rows: the text being translated"),
]
COLUMN_NAMES = [c[0] for c in COLUMNS]
OPTIONAL_COLUMNS = [c[0] for c in COLUMNS if c[2] and c[0] not in ("dimension", "value")]
SCHEMA = pa.schema([pa.field(n, t, nullable=nul) for n, t, nul, _ in COLUMNS])


def split_of(split_key: str, eval_percent: int) -> str:
    """'eval' when sha256(split_key) mod 100 < eval_percent. Independent of seed and corpus, so a
    unit shared by several corpora (an article, a chapter) lands on the same side everywhere."""
    h = int.from_bytes(hashlib.sha256(split_key.encode("utf-8")).digest()[:8], "big")
    return "eval" if h % 100 < eval_percent else "calib"


def order_key(seed: int, align_key: str, doc_id: str) -> tuple[bytes, str]:
    """Sampling order: seeded hash of the alignment key (doc_id breaks ties), so aligned sources
    (one verse range in many languages) sample the same units for the same seed."""
    return hashlib.sha256(f"{seed}\x00{align_key}".encode("utf-8")).digest(), doc_id


def to_table(rows: list[Mapping[str, Any]], metadata: Mapping[str, Any] | None = None) -> pa.Table:
    cols = {n: [r.get(n) for r in rows] for n in COLUMN_NAMES}
    table = pa.Table.from_pydict(cols, schema=SCHEMA)
    if metadata is not None:
        table = table.replace_schema_metadata({METADATA_KEY: json.dumps(metadata, sort_keys=True)})
    return table


def content_hash(rows: Iterable[Mapping[str, Any]]) -> str:
    """sha256 over the normalised rows in file order: one canonical JSON line per row, every
    column in schema order. Depends on content only (not on paths, time or machine)."""
    h = hashlib.sha256(f"cusprun-corpus-v{SCHEMA_VERSION}\n".encode())
    for r in rows:
        line = json.dumps([r.get(n) for n in COLUMN_NAMES], ensure_ascii=False,
                          separators=(",", ":"))
        h.update(line.encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()
