"""Proof that nothing was recomputed: the files under a directory, compared before and after."""
from __future__ import annotations

from pathlib import Path


def tree_state(root: str | Path) -> dict[str, tuple[int, int]]:
    """Every file under `root` with its size and modification time (ns). Equal snapshots before
    and after an operation: it rewrote nothing there. Refuses an empty tree (nothing to prove)."""
    root = Path(root)
    state = {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
             for p in sorted(root.rglob("*")) if p.is_file()}
    assert state, f"no files under {root}"
    return state
