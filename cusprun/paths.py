"""Where cusprun keeps its local cache (converted models, downloaded artifacts)."""
from __future__ import annotations

import os
from pathlib import Path


def cache_root(override: str | Path | None = None) -> Path:
    """`override`, else $CUSPRUN_CACHE, else ~/.cache/cusprun."""
    root = Path(override or os.environ.get("CUSPRUN_CACHE") or Path.home() / ".cache" / "cusprun")
    root.mkdir(parents=True, exist_ok=True)
    return root
