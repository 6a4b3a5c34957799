"""Read local or s3:// files (parquet, jsonl(.gz), json, csv, tsv, txt) into raw records.

A source may be a file, a directory/prefix (every supported file in it, sorted) or a glob.
Every failure names the file and says what would be accepted.
"""
from __future__ import annotations

import gzip
import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from cusprun.corpora.spec import FILE_FORMATS, CorpusSpec
from cusprun.errors import CorpusError
from cusprun.storage.diagnose import bucket_of, diagnose

log = logging.getLogger(__name__)

_EXT = [(r"\.(parquet|pq)$", "parquet"), (r"\.(jsonl|ndjson)(\.gz)?$", "jsonl"),
        (r"\.json(\.gz)?$", "json"), (r"\.csv(\.gz)?$", "csv"), (r"\.tsv(\.gz)?$", "tsv"),
        (r"\.txt(\.gz)?$", "txt")]


def format_of(path: str, override: str | None) -> str | None:
    if override:
        return override
    for pattern, fmt in _EXT:
        if re.search(pattern, path.lower()):
            return fmt
    return None


def _filesystem(source: str, spec: CorpusSpec) -> tuple[fsspec.AbstractFileSystem, str]:
    try:
        # A fresh filesystem per read: fsspec's cached instance would keep the credentials and
        # listings of the first read in this process (a worker lives across builds).
        fs, path = fsspec.core.url_to_fs(source, **{"skip_instance_cache": True,
                                                    **spec.storage_options})
    except Exception as e:  # noqa: BLE001 - bad options, missing s3fs...
        raise CorpusError(f"Cannot open corpus source {source!r}: {type(e).__name__}: {e}") from e
    return fs, path


def _unreadable(source: str, e: Exception, storage_options: dict | None = None,
                fs: fsspec.AbstractFileSystem | None = None) -> CorpusError:
    d = diagnose(e, source, storage_options)
    if d.problem == "not found" and source.startswith("s3://") and hasattr(fs, "call_s3"):
        try:  # a missing bucket reads as a missing key: ask the bucket itself
            fs.call_s3("head_bucket", Bucket=bucket_of(source))
        except Exception as b:  # noqa: BLE001
            d = diagnose(b, source, storage_options)
    return CorpusError(d.explain(f"Cannot read corpus source {source!r}"))


def list_files(source: str, spec: CorpusSpec) -> tuple[fsspec.AbstractFileSystem, list[str]]:
    """The data files a source names, in sorted order."""
    fs, path = _filesystem(source, spec)
    try:
        if any(c in path for c in "*?["):
            files = sorted(fs.glob(path))
        elif fs.isdir(path):
            files = sorted(p for p in fs.find(path) if format_of(p, spec.format))
        elif fs.exists(path):
            files = [path]
        else:
            raise FileNotFoundError(path)
    except CorpusError:
        raise
    except Exception as e:  # noqa: BLE001 - permissions, network, moto/s3 errors
        raise _unreadable(source, e, spec.storage_options, fs) from e
    if not files:
        raise CorpusError(f"Corpus source {source!r} matches no data files; accepted formats: "
                          f"{', '.join(FILE_FORMATS)} (by extension, or set format=).")
    for f in files:
        if not format_of(f, spec.format):
            raise CorpusError(f"Cannot tell the format of {f!r} from its extension; accepted: "
                              ".parquet, .jsonl(.gz), .json, .csv, .tsv, .txt(.gz), or set "
                              f"format= to one of {', '.join(FILE_FORMATS)}.")
    return fs, files


def _read_bytes(fs: fsspec.AbstractFileSystem, path: str, shown: str) -> bytes:
    try:
        with fs.open(path, "rb") as fh:
            data = fh.read()
    except Exception as e:  # noqa: BLE001
        raise _unreadable(shown, e, getattr(fs, "storage_options", None)) from e
    if path.lower().endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise CorpusError(f"{shown}: not a valid gzip file ({e}).") from e
    return data


def _decode(data: bytes, shown: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CorpusError(f"{shown}: not UTF-8 text ({e}); convert it to UTF-8.") from e


def read_table(fs: fsspec.AbstractFileSystem, path: str, fmt: str, shown: str
               ) -> pa.Table | list[dict]:
    """One file -> an Arrow table (parquet/csv/tsv) or a list of dicts (jsonl/json/txt)."""
    data = _read_bytes(fs, path, shown)
    if not data.strip():
        raise CorpusError(f"Corpus file {shown!r} is empty (0 documents).")
    if fmt == "parquet":
        try:
            return pq.read_table(io.BytesIO(data))
        except Exception as e:  # noqa: BLE001 - ArrowInvalid, OSError on truncated files
            raise CorpusError(f"{shown}: not a readable parquet file ({type(e).__name__}: "
                              f"{str(e)[:200]}). Re-export it, or set format= if it is "
                              "another format.") from e
    if fmt in ("csv", "tsv"):
        opts = pacsv.ParseOptions(delimiter="\t" if fmt == "tsv" else ",", newlines_in_values=True)
        try:
            return pacsv.read_csv(io.BytesIO(data), parse_options=opts)
        except Exception as e:  # noqa: BLE001
            raise CorpusError(f"{shown}: not a readable {fmt} file ({str(e)[:200]}).") from e
    text = _decode(data, shown)
    if fmt == "txt":
        return [{"text": p} for p in re.split(r"\n\s*\n", text) if p.strip()]
    if fmt == "json":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            return _jsonl(text, shown)  # many '.json' files are really JSON lines
        if isinstance(obj, dict):
            obj = next((v for v in obj.values() if isinstance(v, list)), [obj])
        if not isinstance(obj, list) or not all(isinstance(o, dict) for o in obj):
            raise CorpusError(f"{shown}: expected a JSON list of objects (or JSON lines).")
        return obj
    return _jsonl(text, shown)


def _jsonl(text: str, shown: str) -> list[dict]:
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise CorpusError(f"{shown}, line {i}: not valid JSON ({e.msg}); expected one JSON "
                              "object per line.") from e
        if not isinstance(obj, dict):
            raise CorpusError(f"{shown}, line {i}: expected a JSON object, got "
                              f"{type(obj).__name__}.")
        out.append(obj)
    return out


def iter_file_records(spec: CorpusSpec) -> tuple[list[str], Iterator[dict[str, Any]]]:
    """(field names, records) over every file of the source; fields are checked by the caller
    on the first file before rows are consumed."""
    fs, files = list_files(spec.source, spec)
    protocol = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    loaded: list[tuple[str, pa.Table | list[dict]]] = []
    for f in files:
        shown = f"s3://{f}" if protocol in ("s3", "s3a") else f
        loaded.append((shown, read_table(fs, f, format_of(f, spec.format) or "", shown)))
        log.info("read %s", shown)
    fields = _fields(loaded[0][1])

    def records() -> Iterator[dict[str, Any]]:
        for _shown, tab in loaded:
            if isinstance(tab, pa.Table):
                yield from tab.to_pylist()
            else:
                yield from tab

    return fields, records()


def _fields(tab: pa.Table | list[dict]) -> list[str]:
    if isinstance(tab, pa.Table):
        return list(tab.column_names)
    seen: dict[str, None] = {}
    for rec in tab[:1000]:
        seen.update(dict.fromkeys(rec))
    return list(seen)
