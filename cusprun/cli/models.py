"""`cusprun model ...`: resolve a model reference, summarise it, generate from it."""
from __future__ import annotations

import argparse
import json

from cusprun.errors import ModelSourceError
from cusprun.models import DEFAULT_MODEL, greedy_continuation, load_model, resolve_model, summarize


def _resolve(args) -> int:
    r = resolve_model(args.model)
    print(json.dumps({"ref": r.ref, "kind": r.kind, "path": str(r.path),
                      "fingerprint": r.fingerprint, "architecture": r.architecture}, indent=2))
    return 0


def _summary(args) -> int:
    r = resolve_model(args.model)
    print(f"model            {r.ref} -> {r.path}\nfingerprint      {r.fingerprint}")
    print(summarize(r.path).as_text())
    return 0


def _generate(args) -> int:
    prompt = args.text if args.text is not None else args.prompt
    if not prompt:
        raise ModelSourceError("Empty prompt; give one: cusprun model generate MODEL \"The capital of "
                               "France is\"")
    r = resolve_model(args.model)
    model, tok = load_model(r.path)
    print(prompt + greedy_continuation(model, tok, prompt, args.max_new_tokens))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("model", help="resolve, summarise and try a base model",
                       description="Resolve a model reference (alias, local dir, s3://, .gguf, "
                                   "hub id[@revision]) and inspect it.")
    msub = p.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    for name, func, helptext in (
        ("resolve", _resolve, "resolve to a local HF directory and print its fingerprint"),
        ("summary", _summary, "print the architecture summary: layers, heads, FFN, what is prunable"),
        ("generate", _generate, "greedy continuation of a prompt"),
    ):
        q = msub.add_parser(name, help=helptext, description=helptext)
        q.add_argument("model", nargs="?", default=DEFAULT_MODEL,
                       help=f"model reference (default: {DEFAULT_MODEL})")
        if name == "generate":
            q.add_argument("text", nargs="?", metavar="PROMPT",
                           help="text to continue (default: --prompt)")
            q.add_argument("--prompt", default="The capital of France is")
            q.add_argument("--max-new-tokens", type=int, default=16)
        q.set_defaults(func=func)
