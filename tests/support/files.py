"""Files for tests: a stage artifact's folder made up, and proof that nothing was recomputed
(the files under a directory, compared before and after).

  artifact_dir(d, tag, ...)   a folder of `n` part files (contents named by `tag`) [+ sub/meta.json]
  tree_state(root)            every file under root with its size and mtime
  jsonl_lines(rows)           rows as JSON lines
  write_pinned(path, text)    a file whose mtime is PAST_NS: any later write moves it
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

PAST_NS = 1_600_000_000 * 10**9   # 2020-09-13: before any rewrite a test makes


def jsonl_lines(rows: Iterable[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def write_pinned(path: Path, text: str, *, pin: bool = True) -> Path:
    """Write `text` to `path` (its folders made); with `pin` its mtime is set to PAST_NS, so a
    later write always changes it (sources are identified by size and mtime, and a rewrite
    within the same clock tick would otherwise keep it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if pin:
        os.utime(path, ns=(PAST_NS, PAST_NS))
    return path


def artifact_dir(d: Path, tag: str, *, n: int = 3, size: int = 1000, meta: bool = True) -> Path:
    """Make folder `d` as a stage would before committing it: part-<i>.bin for i < n, holding
    f"{tag}-{i}" repeated size + i times (so every file and every tag differ), and with `meta`
    a sub/meta.json {"tag": tag} (a nested folder)."""
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (d / f"part-{i}.bin").write_bytes(f"{tag}-{i}".encode() * (size + i))
    if meta:
        (d / "sub").mkdir(exist_ok=True)
        (d / "sub" / "meta.json").write_text(json.dumps({"tag": tag}))
    return d


def tree_state(root: str | Path) -> dict[str, tuple[int, int]]:
    """Every file under `root` with its size and modification time (ns). Equal snapshots before
    and after an operation: it rewrote nothing there. Refuses an empty tree (nothing to prove)."""
    root = Path(root)
    state = {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
             for p in sorted(root.rglob("*")) if p.is_file()}
    assert state, f"no files under {root}"
    return state
