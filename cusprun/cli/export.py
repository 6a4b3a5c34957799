"""`cusprun export EXPERT --gguf TYPE --out DIR`: GGUF files of a sliced expert, for llama.cpp."""
from __future__ import annotations

import argparse

from cusprun.errors import SpecError
from cusprun.export.types import GGUF_TYPES


def _export(args) -> int:
    from cusprun.export import check_gguf_request, export_gguf
    from cusprun.slicing.loading import _local_dir

    check_gguf_request(args.gguf)           # types and packages, before any download
    remote = "://" in args.expert and not args.expert.startswith("file://")
    if remote and not args.out:
        raise SpecError(f"{args.expert} is a store URI: give --out DIR for the GGUF files")
    src = _local_dir(args.expert, None)
    out = args.out or src
    name = args.name or (args.expert.rstrip("/").rsplit("/", 1)[-1] if remote else None)
    files = export_gguf(src, out, args.gguf, name=name, verbose=args.verbose)
    for f in files:
        print(f"{f.type:7s} {f.size / 1e6:9.1f} MB  {out}/{f.file}")
    print(f"card: {out}/README.md   record: {out}/gguf.json")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write GGUF files of an expert for llama.cpp",
                       description="Convert a sliced expert (a local directory or a published "
                                   "version's store URI) to GGUF with llama.cpp's converter. "
                                   "Types: " + "; ".join(f"{t}: {s.note}" for t, s in GGUF_TYPES.items()))
    p.add_argument("expert", help="expert checkpoint directory or store URI (s3://...)")
    p.add_argument("--gguf", action="append", required=True, metavar="TYPE",
                   help=f"GGUF type, repeatable: {', '.join(GGUF_TYPES)}")
    p.add_argument("--out", help="output directory (default: the expert's own directory)")
    p.add_argument("--name", help="file name stem (default: the expert directory's name)")
    p.set_defaults(func=_export)
