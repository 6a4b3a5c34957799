"""hf://<org>/<name>[/<config>]?split=train[&config=..&revision=..] through `datasets`, streamed.

Path rule: one segment = dataset name, two = org/name, three = org/name/config; a config for a
two-segment legacy name goes in `?config=`. When the hub cannot be reached we fail in seconds
(a short socket probe) instead of waiting through `datasets`' retries.
"""
from __future__ import annotations

import itertools
import logging
import os
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from tqdm.auto import tqdm

from cusprun.corpora.spec import split_uri
from cusprun.errors import CorpusError

log = logging.getLogger(__name__)
HF_PARAMS = ("split", "config", "revision")


def parse_hf(source: str) -> tuple[str, str | None, str, str | None]:
    """-> (dataset, config, split, revision)."""
    path, params = split_uri(source)
    unknown = sorted(set(params) - set(HF_PARAMS))
    if unknown:
        raise CorpusError(f"Unknown parameter(s) {', '.join(unknown)} in {source!r}; accepted: "
                          f"{', '.join(HF_PARAMS)}.")
    segs = [s for s in path.split("/") if s]
    if not 1 <= len(segs) <= 3:
        raise CorpusError(f"Cannot read dataset name from {source!r}; write "
                          "hf://<org>/<name>[/<config>]?split=train.")
    config = params.get("config")
    if len(segs) == 3:
        if config and config != segs[2]:
            raise CorpusError(f"{source!r} names config {segs[2]!r} and config={config!r}.")
        config = segs[2]
    return "/".join(segs[:2]), config or None, params.get("split") or "train", params.get("revision")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on") or \
        os.environ.get("HF_DATASETS_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def hub_reachable(timeout: float = 3.0) -> bool:
    """Can we open a TCP connection to the hub endpoint? (DNS + connect, no request.)"""
    url = urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


def _advice(source: str) -> str:
    return (f"Copy the data elsewhere (e.g. `datasets` save to parquet) and give a local path or an "
            f"s3:// URI instead of {source!r}, or use a bundled:// corpus (`cusprun corpora list`).")


def iter_hf_records(source: str, limit: int) -> tuple[list[str], Iterator[dict[str, Any]]]:
    """(field names, up to `limit` records) from the first rows of the split."""
    name, config, split, revision = parse_hf(source)
    if not _offline() and not hub_reachable():
        raise CorpusError(f"Cannot reach the Hugging Face hub for corpus source {source!r} "
                          "(no network connection). Set HF_HUB_OFFLINE=1 to use a copy in the "
                          f"local datasets cache. {_advice(source)}")
    import datasets

    try:
        ds = datasets.load_dataset(name, config, split=split, streaming=True, revision=revision)
        it = iter(ds)
        first = next(it)
    except StopIteration:
        raise CorpusError(f"Corpus source {source!r}: split {split!r} is empty.") from None
    except Exception as e:  # noqa: BLE001 - ConnectionError, DatasetNotFoundError, bad config
        raise CorpusError(f"Cannot load corpus source {source!r} (dataset {name!r}, config "
                          f"{config!r}, split {split!r}): {str(e).splitlines()[0][:300]}. "
                          f"{_advice(source)}") from e
    log.info("streaming up to %d rows from %s", limit, source)

    def records() -> Iterator[dict[str, Any]]:
        try:
            rows = itertools.islice(itertools.chain([first], it), limit)
            yield from tqdm(rows, total=limit, desc=f"reading {name}", unit="row", leave=False)
        except Exception as e:  # noqa: BLE001 - network drop mid-stream
            raise CorpusError(f"Reading {source!r} failed mid-stream: {e}. {_advice(source)}") from e

    return list(first), records()
