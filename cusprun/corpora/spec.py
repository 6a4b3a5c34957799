"""What a corpus is (CorpusSpec) and how its source is spelled (source_kind, split_uri). What
preparing it produced (PreparedCorpus) lives with the shard reader in cusprun.corpora.store."""
from __future__ import annotations

import math
import re
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cusprun.errors import CorpusError

CORPUS_DIMENSIONS = ("language", "domain", "task", "general")
FILE_FORMATS = ("parquet", "jsonl", "json", "csv", "tsv", "txt")
SourceKind = Literal["bundled", "hf", "s3", "local"]


class CorpusSpec(BaseModel):
    """One calibration/evaluation corpus.

    source: `bundled://<dimension>/<value>[?k=v&...]`, `hf://<org>/<name>[/<config>]?split=train`,
    `s3://bucket/key-or-prefix` or a local file/directory/glob of parquet, jsonl(.gz), json, csv,
    tsv or txt (txt: one document per blank-line-separated paragraph).
    max_docs caps the calibration side; max_eval_docs the held-out side (default: the share
    eval_percent would give, i.e. ceil(max_docs * p / (100 - p))).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(description="bundled://..., hf://..., s3://... or a local path")
    text_field: str = Field("text", description="column/JSON field holding the document text")
    filter: dict[str, Any] | str | None = Field(
        None, description="keep rows where column == value: {'lang': 'de'} (a list value means "
                          "any of) or \"lang == de and topic == 'History'\"")
    max_docs: int = Field(512, ge=1, le=1_000_000, description="at most this many calibration docs")
    holdback_docs: int = Field(0, ge=0, le=100_000, description=(
        "calibration-side docs set aside as split 'holdback' (never used for statistics) to "
        "measure candidate plans; taken after the max_docs calibration docs"))
    max_eval_docs: int | None = Field(None, ge=1, le=1_000_000,
                                      description="at most this many held-out docs")
    min_docs: int = Field(1, ge=0, description="fail unless at least this many calibration docs "
                                               "(0: a held-out-only corpus)")
    min_eval_docs: int = Field(1, ge=1, description="fail unless at least this many held-out docs")
    eval_percent: int = Field(20, ge=1, le=100, description="share of split units held out; keep "
                                                            "it equal across an expert's corpora "
                                                            "(100: text no calibration reads)")
    seed: int = Field(0, description="sampling seed (does not move documents between splits)")
    min_chars: int = Field(16, ge=1, description="drop documents shorter than this")
    scan_limit: int | None = Field(None, ge=1, description="read at most this many source rows "
                                                          "(hf:// default: 20x the docs needed)")
    dimension: str | None = Field(None, description="label: language | domain | task | general")
    value: str | None = Field(None, description="label: e.g. 'de', 'health', 'qa'")
    id_field: str | None = Field(None, description="column with a stable document id")
    group_field: str | None = Field(None, description="column grouping rows that must share a split")
    prompt_field: str | None = None
    answer_field: str | None = None
    label_field: str | None = None
    title_field: str | None = None
    lang_field: str | None = None
    format: Literal["parquet", "jsonl", "json", "csv", "tsv", "txt"] | None = Field(
        None, description="file format (default: from the extension)")
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="fsspec/s3fs options, e.g. "
                                          "{'client_kwargs': {'endpoint_url': 'http://...'}}")

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("corpus source is empty; give bundled://..., hf://..., s3://... "
                             "or a local path")
        return v

    @field_validator("dimension")
    @classmethod
    def _dimension(cls, v: str | None) -> str | None:
        if v is not None and v not in CORPUS_DIMENSIONS:
            raise ValueError(f"dimension {v!r} is not one of {', '.join(CORPUS_DIMENSIONS)}")
        return v

    @model_validator(mode="after")
    def _mins(self) -> "CorpusSpec":
        if self.min_docs > self.max_docs:
            raise ValueError(f"min_docs={self.min_docs} exceeds max_docs={self.max_docs}")
        if self.min_eval_docs > self.eval_cap:
            raise ValueError(f"min_eval_docs={self.min_eval_docs} exceeds the held-out cap "
                             f"{self.eval_cap} (max_eval_docs, or max_docs * eval_percent share)")
        return self

    @property
    def kind(self) -> SourceKind:
        return source_kind(self.source)

    @property
    def eval_cap(self) -> int:
        if self.max_eval_docs is not None:
            return self.max_eval_docs
        if self.eval_percent == 100:
            return self.max_docs  # nothing on the calibration side to scale from
        return math.ceil(self.max_docs * self.eval_percent / (100 - self.eval_percent))


def source_kind(source: str) -> SourceKind:
    scheme = urlsplit(source).scheme.lower()
    if scheme in ("bundled", "hf", "s3"):
        return scheme  # type: ignore[return-value]
    if scheme in ("", "file") or re.fullmatch(r"[a-z]", scheme):  # '' or a Windows drive letter
        return "local"
    raise CorpusError(f"Corpus source {source!r} has unsupported scheme {scheme + '://'!r}; use "
                      "bundled://, hf://, s3:// or a local path.")


def split_uri(source: str) -> tuple[str, dict[str, str]]:
    """'scheme://path?k=v' -> ('path', {k: v}); repeated keys are an error."""
    parts = urlsplit(source)
    params: dict[str, str] = {}
    for k, v in parse_qsl(parts.query, keep_blank_values=True):
        if k in params:
            raise CorpusError(f"Parameter {k!r} given twice in corpus source {source!r}.")
        params[k] = v
    return (parts.netloc + parts.path).strip("/"), params
