"""Calibration and evaluation corpora: sources (bundled://, hf://, s3://, local files), one
normalised parquet shard per corpus, held-out splits by stable hash, content hash as cache key.

    from cusprun.corpora import CorpusSpec, prepare_corpus, read_corpus
    pc = prepare_corpus(CorpusSpec(source="bundled://task/qa?lang=en&domain=health", max_docs=64),
                        out_dir)
    calib_texts = pc.texts("calib"); held_out = read_corpus(pc.path, "eval")
"""
from cusprun.corpora.bundled import (BundledCorpus, bundled_uri, default_bundled_source,
                                     list_bundled)
from cusprun.corpora.prepare import prepare_corpus
from cusprun.corpora.schema import COLUMNS, SCHEMA, content_hash, split_of
from cusprun.corpora.spec import CorpusSpec
from cusprun.corpora.store import (PreparedCorpus, corpus_info, read_corpus, read_texts,
                                    translation_tables)

__all__ = ["COLUMNS", "SCHEMA", "BundledCorpus", "CorpusSpec", "PreparedCorpus", "bundled_uri",
           "default_bundled_source",
           "content_hash", "corpus_info", "list_bundled", "prepare_corpus", "read_corpus",
           "read_texts", "split_of", "translation_tables"]
