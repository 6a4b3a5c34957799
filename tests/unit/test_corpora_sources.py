"""Corpus sources other than bundled://: local files of every format, S3 through a real moto
server, hf:// failing fast offline; normalisation, dedup, splits, hashing and every bad input."""
from __future__ import annotations

import gzip
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cusprun.corpora import (CorpusSpec, content_hash, corpus_info, prepare_corpus, read_corpus,
                             read_texts, split_of)
from cusprun.corpora.hf import parse_hf
from cusprun.corpora.records import parse_filter
from cusprun.errors import CorpusError, CusprunError
from tests.support.files import jsonl_lines
from tests.support.network import is_loopback, tcp_connects

TOPICS = ["health", "history", "maths"]


def _docs(n: int = 60) -> list[dict]:
    return [{"id": f"d{i}", "body": f"Document number {i} talks about {TOPICS[i % 3]} at length.",
             "topic": TOPICS[i % 3], "n": i} for i in range(n)]


def _jsonl(path, rows, gz=False):
    data = jsonl_lines(rows).encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def _check_split(pc):
    calib, held = read_corpus(pc.path, "calib"), read_corpus(pc.path, "eval")
    assert calib.num_rows == pc.n_calib >= 1 and held.num_rows == pc.n_eval >= 1
    assert not set(calib["doc_id"].to_pylist()) & set(held["doc_id"].to_pylist())
    assert not set(calib["text"].to_pylist()) & set(held["text"].to_pylist())
    for t, side in ((calib, "calib"), (held, "eval")):
        assert set(t["split"].to_pylist()) == {side}
        assert all(split_of(k, pc.spec.eval_percent) == side for k in t["split_key"].to_pylist())
    return calib, held


@pytest.mark.parametrize("fmt", ["jsonl", "jsonl.gz", "json", "csv", "tsv", "parquet"])
def test_every_file_format_gives_the_same_corpus(tmp_path, fmt):
    rows = _docs()
    path = tmp_path / f"docs.{fmt}"
    if fmt.startswith("jsonl"):
        _jsonl(path, rows, gz=fmt.endswith(".gz"))
    elif fmt == "json":
        path.write_text(json.dumps(rows))
    elif fmt in ("csv", "tsv"):
        sep = "," if fmt == "csv" else "\t"
        path.write_text("id{0}body{0}topic{0}n\n".format(sep) + "".join(
            sep.join([r["id"], f'"{r["body"]}"' if fmt == "csv" else r["body"], r["topic"],
                      str(r["n"])]) + "\n" for r in rows))
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    pc = prepare_corpus(CorpusSpec(source=str(path), text_field="body", id_field="id",
                                   label_field="topic", max_docs=100), tmp_path / "out")
    assert pc.n_calib + pc.n_eval == 60 == pc.n_candidates
    calib, held = _check_split(pc)
    by_id = {r["doc_id"]: r for r in read_corpus(pc.path).to_pylist()}
    assert by_id["d7"]["text"] == rows[7]["body"] and by_id["d7"]["label"] == "history"
    assert by_id["d7"]["n_chars"] == len(rows[7]["body"]) and by_id["d7"]["source"] == str(path)
    # The held-out share is close to eval_percent=20 (hash split of 60 ids).
    assert 4 <= pc.n_eval <= 20


def test_txt_directory_and_glob(tmp_path):
    d = tmp_path / "texts"
    d.mkdir()
    (d / "a.txt").write_text("First paragraph of file a, long enough.\n\nSecond paragraph of a.\n")
    (d / "b.txt").write_text("Only paragraph of file b, also long enough to keep.\n")
    (d / "notes.md").write_text("ignored: not a supported extension")
    for source in (str(d), str(d / "*.txt")):
        pc = prepare_corpus(CorpusSpec(source=source, eval_percent=50, min_docs=1),
                            tmp_path / "out")
        assert sorted(read_texts(pc.path)) == ["First paragraph of file a, long enough.",
                                                "Only paragraph of file b, also long enough to keep.",
                                                "Second paragraph of a."]


def test_filter_dict_and_expression_dedup_and_min_chars(tmp_path):
    rows = _docs(90) + [{"id": "dup", "body": _docs()[0]["body"], "topic": "health", "n": 0},
                        {"id": "short", "body": "tiny", "topic": "health", "n": 1}]
    path = _jsonl(tmp_path / "d.jsonl", rows)
    base = dict(source=str(path), text_field="body", max_docs=100)
    a = prepare_corpus(CorpusSpec(**base, filter={"topic": "health"}), tmp_path / "o")
    b = prepare_corpus(CorpusSpec(**base, filter="topic == 'health'"), tmp_path / "o")
    assert a.hash == b.hash and a.n_candidates == 30  # 30 health docs; duplicate and short dropped
    c = prepare_corpus(CorpusSpec(**base, filter={"topic": ["health", "maths"]}), tmp_path / "o")
    assert c.n_candidates == 60
    assert parse_filter("topic == health and n == 3") == {"topic": ["health"], "n": ["3"]}
    assert parse_filter("lang == de, topic == \"Santé et médecine\"") == {
        "lang": ["de"], "topic": ["Santé et médecine"]}


def test_prompt_answer_fields_and_text_from_them(tmp_path):
    rows = [{"q": f"Question {i}: what is item {i}?", "a": f"It is item number {i}."}
            for i in range(40)]
    path = _jsonl(tmp_path / "qa.jsonl", rows)
    pc = prepare_corpus(CorpusSpec(source=str(path), prompt_field="q", answer_field="a",
                                   dimension="task", value="qa"), tmp_path / "o")
    for r in read_corpus(pc.path).to_pylist():
        assert r["text"] == f"{r['prompt']} {r['answer']}" and r["dimension"] == "task"


def test_sampling_is_seeded_and_never_moves_documents_between_splits(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", _docs(200))
    spec = dict(source=str(path), text_field="body", max_docs=20, max_eval_docs=5)
    a0 = prepare_corpus(CorpusSpec(**spec, seed=0), tmp_path / "a")
    b0 = prepare_corpus(CorpusSpec(**spec, seed=0), tmp_path / "b")
    a1 = prepare_corpus(CorpusSpec(**spec, seed=1), tmp_path / "a")
    assert a0.hash == b0.hash and a0.hash != a1.hash
    assert (a0.n_calib, a0.n_eval) == (20, 5)
    assert read_corpus(a0.path).equals(read_corpus(b0.path))
    calib0, eval0 = (set(read_texts(a0.path, s)) for s in ("calib", "eval"))
    calib1, eval1 = (set(read_texts(a1.path, s)) for s in ("calib", "eval"))
    assert calib0 != calib1
    assert not (calib0 | calib1) & (eval0 | eval1)


def test_content_hash_is_pinned_and_matches_the_file(tmp_path, monkeypatch):
    """The hash is a function of row content only: pinned here so a change in how it is
    computed (which would invalidate every cache) is deliberate."""
    rows = [{"id": f"x{i}", "text": f"Stable hashing document number {i}."} for i in range(30)]
    path = _jsonl(tmp_path / "stable.jsonl", rows)
    monkeypatch.chdir(tmp_path)  # `source` is part of the rows: use a relative path
    pc = prepare_corpus(CorpusSpec(source=path.name, id_field="id"), tmp_path / "o")
    table = read_corpus(pc.path)
    assert content_hash(table.to_pylist()) == pc.hash
    assert corpus_info(pc.path, verify=True).hash == pc.hash
    assert pc.hash == "6b1711a2bf75bea408ecaa5670f7e58fa809b1a5e35a506a3187a892c014e1c0"


def test_atomic_write_reuse_and_repair(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", _docs())
    out = tmp_path / "out"
    pc = prepare_corpus(CorpusSpec(source=str(path), text_field="body"), out)
    assert [p.name for p in out.iterdir()] == [os.path.basename(pc.path)]  # no temp files left
    mtime = os.stat(pc.path).st_mtime_ns
    assert prepare_corpus(CorpusSpec(source=str(path), text_field="body"), out).hash == pc.hash
    assert os.stat(pc.path).st_mtime_ns == mtime  # reused, not rewritten
    with open(pc.path, "r+b") as fh:  # corrupt the shard: the next prepare rewrites it
        fh.seek(100)
        fh.write(b"\x00" * 200)
    with pytest.raises(CorpusError, match="not a readable parquet"):
        read_corpus(pc.path)
    again = prepare_corpus(CorpusSpec(source=str(path), text_field="body"), out)
    assert corpus_info(again.path, verify=True).n_docs == pc.n_docs


# ---- bad input ----------------------------------------------------------------------------

def test_empty_file(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(CorpusError, match=r"empty\.jsonl.* is empty"):
        prepare_corpus(CorpusSpec(source=str(tmp_path / "empty.jsonl")), tmp_path / "o")


def test_missing_text_field_lists_fields(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", _docs())
    with pytest.raises(CorpusError, match=r"'text' \(text_field\) not found; fields that exist: "
                                          r"id, body, topic, n"):
        prepare_corpus(CorpusSpec(source=str(path)), tmp_path / "o")
    with pytest.raises(CorpusError, match=r"'lang' \(filter column 'lang'\) not found"):
        prepare_corpus(CorpusSpec(source=str(path), text_field="body", filter={"lang": "de"}),
                       tmp_path / "o")


def test_corrupt_parquet_and_bad_json_line(tmp_path):
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 this is not really parquet PAR1")
    with pytest.raises(CorpusError, match=r"bad\.parquet: not a readable parquet file"):
        prepare_corpus(CorpusSpec(source=str(tmp_path / "bad.parquet")), tmp_path / "o")
    (tmp_path / "bad.jsonl").write_text('{"text": "fine document here"}\n{"text": oops}\n')
    with pytest.raises(CorpusError, match=r"bad\.jsonl, line 2: not valid JSON"):
        prepare_corpus(CorpusSpec(source=str(tmp_path / "bad.jsonl")), tmp_path / "o")


def test_missing_path_and_unknown_format(tmp_path):
    with pytest.raises(CorpusError, match="nope.jsonl.*not found"):
        prepare_corpus(CorpusSpec(source=str(tmp_path / "nope.jsonl")), tmp_path / "o")
    (tmp_path / "data.xml").write_text("<a/>")
    with pytest.raises(CorpusError, match=r"Cannot tell the format of .*data\.xml"):
        prepare_corpus(CorpusSpec(source=str(tmp_path / "data.xml")), tmp_path / "o")
    with pytest.raises(CorpusError, match="unsupported scheme 'gopher://'"):
        prepare_corpus(CorpusSpec(source="gopher://x/y"), tmp_path / "o")


def test_too_few_documents_for_a_split(tmp_path):
    one = _jsonl(tmp_path / "one.jsonl", [{"text": "A single document is not enough."}])
    with pytest.raises(CorpusError, match=r"too few documents: 1 usable.*need >= min_docs=1 "
                                          r"calibration and >= min_eval_docs=1 held-out"):
        prepare_corpus(CorpusSpec(source=str(one)), tmp_path / "o")
    path = _jsonl(tmp_path / "d.jsonl", _docs(30))
    with pytest.raises(CorpusError, match=r"need >= min_docs=40 calibration"):
        prepare_corpus(CorpusSpec(source=str(path), text_field="body", max_docs=64, min_docs=40),
                       tmp_path / "o")
    with pytest.raises(CorpusError, match="no documents: 30 row"):
        prepare_corpus(CorpusSpec(source=str(path), text_field="body", min_chars=1000),
                       tmp_path / "o")
    assert not (tmp_path / "o").exists()  # nothing written before the checks


def test_duplicate_ids_and_bad_split_argument(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", [{"id": "same", "text": f"Different text number {i}."}
                                         for i in range(2)])
    with pytest.raises(CorpusError, match="'same' appears twice"):
        prepare_corpus(CorpusSpec(source=str(path), id_field="id"), tmp_path / "o")
    good = prepare_corpus(CorpusSpec(source=str(_jsonl(tmp_path / "g.jsonl", _docs())),
                                     text_field="body"), tmp_path / "o")
    with pytest.raises(CorpusError, match="split='test'; accepted: 'calib', 'holdback', 'eval'"):
        read_corpus(good.path, "test")  # type: ignore[arg-type]
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"text": ["x"]}), plain)
    with pytest.raises(CorpusError, match="not a cusprun corpus shard"):
        read_corpus(plain)


def test_spec_validation():
    with pytest.raises(ValueError, match="min_docs=10 exceeds max_docs=5"):
        CorpusSpec(source="x.jsonl", max_docs=5, min_docs=10)
    with pytest.raises(ValueError, match="dimension 'topic' is not one of"):
        CorpusSpec(source="x.jsonl", dimension="topic")
    assert CorpusSpec(source="x.jsonl", max_docs=80).eval_cap == 20


# ---- hf:// ---------------------------------------------------------------------------------

def test_hf_uri_parsing():
    assert parse_hf("hf://allenai/c4/en?split=validation") == ("allenai/c4", "en", "validation", None)
    assert parse_hf("hf://imdb") == ("imdb", None, "train", None)
    assert parse_hf("hf://Salesforce/wikitext?config=wikitext-2-raw-v1&revision=abc") == (
        "Salesforce/wikitext", "wikitext-2-raw-v1", "train", "abc")
    with pytest.raises(CorpusError, match="Unknown parameter.*streaming.*accepted: split"):
        parse_hf("hf://imdb?streaming=1")


def _no_dataset_loads(monkeypatch) -> list:
    """datasets.load_dataset replaced by a recorder that fails like an unreachable hub."""
    import datasets

    calls = []

    def load_dataset(*args, **kwargs):
        calls.append(args)
        raise ConnectionError("load_dataset was called")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_hf_offline_fails_fast_with_advice(tmp_path, monkeypatch, unreachable_hub):
    """Fast because it never touches the network: no connection to the hub (here a closed
    loopback port) or anywhere off this machine is attempted."""
    port = unreachable_hub
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with tcp_connects() as connects, pytest.raises(CorpusError) as e:
        prepare_corpus(CorpusSpec(source="hf://allenai/c4/en?split=train"), tmp_path / "o")
    assert not [(host, p) for host, p in connects if p == port or not is_loopback(host)], connects
    assert "'hf://allenai/c4/en?split=train'" in str(e.value) and "s3://" in str(e.value)
    assert isinstance(e.value, CusprunError)


def test_hf_unreachable_hub_fails_in_seconds(tmp_path, monkeypatch, unreachable_hub):
    """Hub not offline-flagged but unreachable: one socket probe to a closed loopback port fails
    at once, and datasets (whose retries take ~25 s) is never asked."""
    port = unreachable_hub
    loads = _no_dataset_loads(monkeypatch)
    with tcp_connects() as connects, pytest.raises(
            CorpusError, match=r"Cannot reach the Hugging Face hub for corpus source "
                               r"'hf://org/data'.*local path or an s3:// URI"):
        prepare_corpus(CorpusSpec(source="hf://org/data"), tmp_path / "o")
    assert connects.count(("127.0.0.1", port)) == 1 and loads == []


# ---- S3 (real moto server on loopback) -----------------------------------------------------

@pytest.mark.s3
def test_s3_parquet_roundtrip_missing_key_and_corrupt_object(tmp_path, s3_bucket):
    import s3fs

    uri, opts = s3_bucket
    fs = s3fs.S3FileSystem(**opts)
    rows = _docs()
    with fs.open(f"{uri}/corpus/part-0.parquet", "wb") as fh:
        pq.write_table(pa.Table.from_pylist(rows), fh)
    pc = prepare_corpus(CorpusSpec(source=f"{uri}/corpus/part-0.parquet", text_field="body",
                                   id_field="id", storage_options=opts), tmp_path / "o")
    assert pc.n_calib + pc.n_eval == 60
    assert set(read_texts(pc.path)) == {r["body"] for r in rows}
    # The same data from a local copy gives the same rows apart from `source`.
    prefix = prepare_corpus(CorpusSpec(source=f"{uri}/corpus/", text_field="body", id_field="id",
                                       storage_options=opts), tmp_path / "o")
    assert read_corpus(prefix.path, columns=["doc_id", "text", "split"]).equals(
        read_corpus(pc.path, columns=["doc_id", "text", "split"]))
    # storage_options never reach the shard's metadata (they may carry credentials).
    assert corpus_info(pc.path).spec.storage_options == {}

    with pytest.raises(CorpusError, match=rf"Cannot read corpus source '{uri}/corpus/missing"
                                          r"\.parquet': not found.*endpoint_url"):
        prepare_corpus(CorpusSpec(source=f"{uri}/corpus/missing.parquet", storage_options=opts),
                       tmp_path / "o")
    with fs.open(f"{uri}/bad/part-0.parquet", "wb") as fh:
        fh.write(b"PAR1\x00\x01 truncated garbage")
    with pytest.raises(CorpusError, match=r"bad/part-0\.parquet: not a readable parquet file"):
        prepare_corpus(CorpusSpec(source=f"{uri}/bad/part-0.parquet", storage_options=opts),
                       tmp_path / "o")
    # A prepared shard can also be read from S3.
    fs.put(pc.path, f"{uri}/prepared/corpus.parquet")
    assert read_texts(f"{uri}/prepared/corpus.parquet", "eval", storage_options=opts) == \
        read_texts(pc.path, "eval")


@pytest.mark.s3
def test_s3_sources_see_credentials_and_files_as_they_are_now(tmp_path, s3_bucket, monkeypatch):
    """A long-lived process (a worker, the test session) reads an S3 source first without
    credentials, then with them: the second read works (no filesystem cached with the first
    read's credentials), and a file added since is listed (found by random test order)."""
    import s3fs

    from cusprun.corpora.files import list_files
    from tests.support.s3_faults import no_aws_credentials

    uri, opts = s3_bucket
    fs = s3fs.S3FileSystem(**opts, skip_instance_cache=True)
    fs.pipe(f"{uri}/c/a.jsonl", b'{"text": "one"}\n')
    spec = CorpusSpec(source=f"{uri}/c/", storage_options=opts)
    with monkeypatch.context() as m:
        no_aws_credentials(m, tmp_path)
        with pytest.raises(CorpusError, match="no AWS credentials found"):
            list_files(spec.source, spec)
    fs.pipe(f"{uri}/c/b.jsonl", b'{"text": "two"}\n')
    assert [p.rsplit("/", 1)[1] for p in list_files(spec.source, spec)[1]] == ["a.jsonl", "b.jsonl"]
