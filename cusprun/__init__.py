"""cusprun: prune general LLMs into customized expert models (Cus-Prun, ACL Findings 2025).

    expert = cusprun.prune(model, {"language": docs, "domain": "notes/", "task": qa}, ratio=0.25)
    expert.save("out")                      # a smaller standard checkpoint
    model, tok = cusprun.load_expert("out")

`import cusprun` registers the per-layer expert model type ('cusprun_per_layer') with
transformers' Auto classes, so `AutoModelForCausalLM.from_pretrained(expert)` works for both
layouts without trust_remote_code."""

from cusprun.api import Expert, prune
from cusprun.slicing import load_expert  # registers the per-layer model type
from cusprun.version import __version__

__all__ = ["Expert", "__version__", "load_expert", "prune"]
