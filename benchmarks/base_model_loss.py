"""Held-out loss of the embedded base models on the same documents: by default the French health
held-out set of the fr-health-qa profile (same held-out corpus and first documents as its report).
nats/token depends on the tokenizer (Gemma's 262k vocabulary cuts French into fewer, harder tokens
than SmolLM2's 49k one), so whole documents are scored (--max-tokens large enough that none is
cut) and the loss is also given as bits per byte (total NLL / UTF-8 bytes of the documents),
which compares across tokenizers. A model whose tokenizer adds no BOS token (SmolLM2) does not
score its first token, a small advantage to it in bits per byte. --max-tokens 128 reproduces the
report's own setting (documents cut to 128 tokens: per-token loss only).

    python -m benchmarks run base_model_loss [--profile fr-health-qa] [--set domain=health]
        [--max-tokens 1024]
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time

import torch

from benchmarks.results_io import Result
from cusprun.corpora import prepare_corpus, read_corpus
from cusprun.evaluation import heldout_loss, loss_sets_from_tables
from cusprun.models import ALIASES, load_model, resolve_model
from cusprun.pipeline.plan_inputs import evaluation_corpora
from cusprun.pipeline.profiles import load_profile


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="fr-health-qa")
    ap.add_argument("--set", default="domain=health", help="eval set of the profile's report")
    ap.add_argument("--models", default=",".join(ALIASES))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=1024)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    spec = load_profile(args.profile).spec
    corpus = evaluation_corpora(spec)[args.set]
    with tempfile.TemporaryDirectory() as tmp:
        info = prepare_corpus(corpus, tmp)
        table = read_corpus(info.path, "eval")
    examples = loss_sets_from_tables({args.set: table}, max_docs=spec.evaluation.max_docs)[args.set]
    n_chars = sum(len(e.text) for e in examples)
    n_bytes = sum(len(e.text.encode()) for e in examples)
    result = Result("base_model_loss", "Held-out loss of the embedded base models on the same "
                    "documents", vars(args))
    result.say(f"{args.profile} {args.set}: {len(examples)} held-out documents, {n_chars} characters, "
               f"max_tokens {args.max_tokens}\n")
    rows, values = [], {}
    for ref in args.models.split(","):
        model, tok = load_model(resolve_model(ref).path)
        t0 = time.perf_counter()
        r = heldout_loss(model, tok, examples, max_tokens=args.max_tokens, progress=False)
        nll = sum(x for x, _ in r.per_doc)
        # per-character figures only where every document was scored whole (no max_tokens cut)
        cut = any(n + 1 >= args.max_tokens for _, n in r.per_doc)
        per_char = "cut" if cut else f"{nll / n_chars:.4f}"
        per_byte = "cut" if cut else f"{nll / n_bytes / math.log(2):.4f}"
        wall = time.perf_counter() - t0
        rows.append([ref, r.n_tokens, f"{r.loss:.4f}", per_char, per_byte, f"{wall:.1f}"])
        values[ref] = {"tokens": r.n_tokens, "loss": r.loss, "nll": nll, "cut": cut, "wall_s": wall}
        print(f"done: {ref}", file=sys.stderr, flush=True)
        del model
    result.table(["model", "tokens scored", "loss (nats/token)", "nats/char", "bits/byte", "wall (s)"],
                 rows)
    result.values = {"models": values, "documents": len(examples), "chars": n_chars, "bytes": n_bytes}
    result.write()

if __name__ == "__main__":
    main()
