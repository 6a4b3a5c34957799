"""Prepared corpus shards: write them (atomically), read them, and PreparedCorpus, the handle on
one. The parquet schema metadata carries the content hash, counts and the spec (without
storage_options, which may hold credentials)."""
from __future__ import annotations

import io
import json
import os
import uuid
from pathlib import Path
from typing import Any, Literal

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from cusprun.corpora.schema import COLUMN_NAMES, METADATA_KEY, SPLITS, content_hash
from cusprun.corpora.spec import CorpusSpec
from cusprun.errors import CorpusError

Split = Literal["calib", "holdback", "eval"]


def write_shard(table: pa.Table, path: Path) -> None:
    """tmp file in the same directory, then rename: readers never see a partial shard."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _read_raw(path: str | Path, storage_options: dict[str, Any] | None) -> pa.Table:
    shown = str(path)
    try:
        with fsspec.open(shown, "rb", **(storage_options or {})) as fh:
            data = fh.read()
    except Exception as e:  # noqa: BLE001 - FileNotFoundError, permissions, S3 errors
        what = "not found" if isinstance(e, FileNotFoundError) else f"{type(e).__name__}: {e}"
        raise CorpusError(f"Cannot read prepared corpus {shown!r}: {what}. Prepare it again with "
                          "prepare_corpus().") from e
    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception as e:  # noqa: BLE001 - ArrowInvalid on truncated/corrupt files
        raise CorpusError(f"Prepared corpus {shown!r} is not a readable parquet file "
                          f"({str(e)[:200]}); delete it and prepare the corpus again.") from e
    missing = [c for c in COLUMN_NAMES if c not in table.column_names]
    if missing or not (table.schema.metadata or {}).get(METADATA_KEY):
        raise CorpusError(f"{shown!r} is not a cusprun corpus shard (missing "
                          f"{', '.join(missing) or 'corpus metadata'}); prepare it with "
                          "prepare_corpus().")
    return table


def read_corpus(path: str | Path, split: Split | None = None, columns: list[str] | None = None,
                storage_options: dict[str, Any] | None = None) -> pa.Table:
    """The prepared corpus as a pyarrow Table: every row, or only the 'calib', 'holdback' or
    'eval' split."""
    if split not in (None, *SPLITS):
        raise CorpusError(f"split={split!r}; accepted: 'calib', 'holdback', 'eval' or None (all).")
    table = _read_raw(path, storage_options)
    if split is not None:
        table = table.filter(pc.equal(table["split"], split))
    if columns is not None:
        bad = [c for c in columns if c not in table.column_names]
        if bad:
            raise CorpusError(f"Unknown column(s) {', '.join(bad)}; columns: "
                              f"{', '.join(table.column_names)}.")
        table = table.select(columns)
    return table


def read_texts(path: str | Path, split: Split | None = None,
               storage_options: dict[str, Any] | None = None) -> list[str]:
    return read_corpus(path, split, ["text"], storage_options).column("text").to_pylist()


class PreparedCorpus(BaseModel):
    """A prepared, split corpus on disk. `hash` is the content hash of its rows (cache key)."""

    model_config = ConfigDict(frozen=True)

    path: str
    hash: str
    n_docs: int
    n_calib: int
    n_eval: int
    n_holdback: int = 0
    source: str
    dimension: str | None
    value: str | None
    n_candidates: int = Field(description="documents available before sampling")
    spec: CorpusSpec

    def read(self, split: Split | None = None, columns: list[str] | None = None) -> pa.Table:
        return read_corpus(self.path, split, columns=columns)

    def texts(self, split: Split | None = None) -> list[str]:
        return read_texts(self.path, split)


def _info(path: str | Path, table: pa.Table) -> PreparedCorpus:
    meta = json.loads(table.schema.metadata[METADATA_KEY])
    return PreparedCorpus(path=str(path), hash=meta["hash"], n_docs=table.num_rows,
                          n_calib=meta["n_calib"], n_eval=meta["n_eval"],
                          n_holdback=meta.get("n_holdback", 0), source=meta["source"],
                          dimension=meta["dimension"], value=meta["value"],
                          n_candidates=meta["n_candidates"], spec=CorpusSpec(**meta["spec"]))


def corpus_info(path: str | Path, storage_options: dict[str, Any] | None = None,
                verify: bool = False) -> PreparedCorpus:
    """PreparedCorpus of a shard from its metadata; verify=True recomputes the content hash."""
    table = _read_raw(path, storage_options)
    info = _info(path, table)
    if verify:
        actual = content_hash(table.select(COLUMN_NAMES).to_pylist())
        if actual != info.hash:
            raise CorpusError(f"Prepared corpus {str(path)!r} does not match its content hash "
                              f"({actual[:16]} != {info.hash[:16]}); prepare it again.")
    return info


def translation_tables(table: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Translation rows -> (source, target) tables with columns group_id, text, lang, aligned by
    group_id (the verse id): the shape translation-selection items are built from."""
    missing = [c for c in ("group_id", "source_text", "source_lang", "answer", "lang")
               if c not in table.column_names]
    if missing:
        raise CorpusError(f"Not a translation table: missing {', '.join(missing)}; prepare "
                          "bundled://task/translation (or give source_text/answer columns).")
    rows = table.filter(pc.is_valid(table["source_text"]))
    if table.num_rows and not rows.num_rows:
        raise CorpusError("Not a translation table: no row has source_text; prepare "
                          "bundled://task/translation (or give source_text/answer columns).")
    src = pa.table({"group_id": rows["group_id"], "text": rows["source_text"],
                    "lang": rows["source_lang"]})
    tgt = pa.table({"group_id": rows["group_id"], "text": rows["answer"], "lang": rows["lang"]})
    return src, tgt
