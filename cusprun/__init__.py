"""cusprun: prune general LLMs into customized expert models (Cus-Prun, ACL Findings 2025)."""
from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "load_expert"]


def __getattr__(name: str) -> Any:
    # Lazy so that `import cusprun` (and the CLI) stays fast: torch/transformers load only when
    # an expert is loaded. Touching `cusprun.load_expert` imports cusprun.slicing, which registers
    # the per-layer model type with transformers' Auto classes.
    if name == "load_expert":
        from cusprun.slicing import load_expert

        return load_expert
    raise AttributeError(f"module 'cusprun' has no attribute {name!r}")
