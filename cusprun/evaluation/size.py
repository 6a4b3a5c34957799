"""Model size: parameter counts (from the loaded model) and checkpoint bytes on disk."""
from __future__ import annotations

from pathlib import Path

from cusprun.adapters import count_params
from cusprun.evaluation.config import EvaluationError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


def checkpoint_bytes(path: str | Path) -> int:
    """Bytes of the weight files (*.safetensors, *.bin, *.pt, *.gguf) under a checkpoint directory
    (a single weight file counts as itself). Config and tokenizer files are not counted."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    if not p.is_dir():
        raise EvaluationError(f"Checkpoint {str(p)!r} does not exist; give a model directory.")
    files = [f for f in p.rglob("*") if f.is_file() and f.name.endswith(WEIGHT_SUFFIXES)]
    if not files:
        raise EvaluationError(f"Checkpoint {str(p)!r} holds no weight files "
                              f"({', '.join(WEIGHT_SUFFIXES)}).")
    return sum(f.stat().st_size for f in files)


def size_metrics(model, path: str | Path | None = None) -> dict[str, float]:
    """params_total and params_non_embedding (tied weights once, as count_params), disk_bytes."""
    counts = count_params(model)
    out = {"params_total": float(counts["total"]),
           "params_non_embedding": float(counts["non_embedding"])}
    if path is not None:
        out["disk_bytes"] = float(checkpoint_bytes(path))
    return out
