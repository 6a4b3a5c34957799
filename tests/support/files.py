"""Files for tests: a stage artifact's folder made up, and proof that nothing was recomputed
(the files under a directory, compared before and after).

  artifact_dir(d, tag, ...)   a folder of `n` part files (contents named by `tag`) [+ sub/meta.json]
  tree_state(root)            every file under root with its size and mtime
"""
from __future__ import annotations

import json
from pathlib import Path


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
