"""Multiple-choice scoring: each question computed once for all its options (packed) vs one
sequence per option, on the real embedded model and the bundled French data the fr-health-qa
report uses: topic classification (French Wikipedia, 600-character article), definition QA
(French health articles, 'Qu'est-ce que X ?'), translation selection (English -> French verses);
options clipped to the pipeline's OPTION_CHARS, max_tokens as the fr-health-qa profile. Both modes run in the same process on the same items, one task after
the other, and must pick the same options.

    python -m benchmarks run bench_mc [MODEL] [--items 100] [--threads 2]
"""
from __future__ import annotations

import argparse
import time

import pyarrow as pa
import torch

from benchmarks.results_io import Result
from cusprun.corpora.bundled import bible, wiki
from cusprun.evaluation import (build_answer_items, build_topic_items, build_translation_items,
                                mc_accuracy)
from cusprun.models import load_model, resolve_model
from cusprun.pipeline.stages.evaluate import OPTION_CHARS


def french_tasks(n_items: int) -> dict:
    topic = pa.Table.from_pylist(wiki.text_rows("fr"))
    qa = pa.Table.from_pylist(wiki.qa_rows("fr", "health"))
    en = pa.Table.from_pylist(bible.language_rows("en", None, 8))
    fr = pa.Table.from_pylist(bible.language_rows("fr", None, 8))
    return {
        "topic classification": build_topic_items(topic, n_items=n_items),
        "definition QA": build_answer_items(qa, title_col="title", n_items=n_items,
                                            max_answer_chars=OPTION_CHARS),
        "translation selection": build_translation_items(en, fr, source_name="en",
                                                         target_name="fr", n_items=n_items,
                                                         max_context_chars=OPTION_CHARS),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", default="gemma3-270m")
    ap.add_argument("--items", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load_model(resolve_model(args.model).path)
    tasks = french_tasks(args.items)
    rows = []
    for name, items in tasks.items():
        t = {}
        res = {}
        for shared in (False, True):
            t0 = time.perf_counter()
            res[shared] = mc_accuracy(model, tok, items, max_tokens=args.max_tokens,
                                      batch_size=args.batch, progress=False, shared_prefix=shared)
            t[shared] = time.perf_counter() - t0
        same = res[True].predictions == res[False].predictions
        rows.append((name, len(items), t[False], t[True], res[True].n_packed, res[True].accuracy, same))
        print(f"{name}: one sequence per option {t[False]:.1f}s, packed {t[True]:.1f}s", flush=True)
    result = Result("bench_mc", "Multiple-choice scoring: packed options vs one sequence per option",
                 vars(args))
    result.say(f"\n{args.model}, {args.threads} threads, fp32, batch {args.batch}, max_tokens "
            f"{args.max_tokens}\n")
    table = [[name, n, f"{a:.1f}", f"{b:.1f}", f"{a / b:.2f}x", p, f"{acc:.3f}", same]
             for name, n, a, b, p, acc, same in rows]
    ta, tb = sum(r[2] for r in rows), sum(r[3] for r in rows)
    table.append(["**all**", sum(r[1] for r in rows), f"{ta:.1f}", f"{tb:.1f}", f"{ta / tb:.2f}x",
                  "", "", ""])
    result.table(["task", "items", "one sequence per option (s)", "packed (s)", "speed-up",
               "items packed", "accuracy", "same picks"], table,
              align=["l", "r", "r", "r", "r", "r", "r", "l"])
    result.headline = (f"Multiple-choice scoring with shared prefixes ({args.model}): {ta / tb:.2f}x faster "
                    f"than one sequence per option, same picks: {all(r[6] for r in rows)}")
    result.values = {"tasks": {name: {"items": n, "separate_s": a, "packed_s": b, "n_packed": p,
                                   "accuracy": acc, "same_picks": same}
                            for name, n, a, b, p, acc, same in rows},
                  "speedup": ta / tb}
    result.write()


if __name__ == "__main__":
    main()
