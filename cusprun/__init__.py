"""cusprun: prune general LLMs into customized expert models (Cus-Prun, ACL Findings 2025).

`import cusprun` registers the per-layer expert model type ('cusprun_per_layer') with
transformers' Auto classes, so `AutoModelForCausalLM.from_pretrained(expert)` works for both
layouts without trust_remote_code."""

from cusprun.slicing import load_expert  # noqa: E402  (registers the per-layer model type)
from cusprun.version import __version__  # noqa: E402

__all__ = ["__version__", "load_expert"]
