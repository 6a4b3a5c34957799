"""Load a resolved local HF-format directory for computation."""
from __future__ import annotations

import logging
import threading
from pathlib import Path

import torch

log = logging.getLogger(__name__)

# from_pretrained initialises on the meta device through process-global context managers, so two
# threads loading at once (concurrent Prefect tasks) corrupt each other: serialise loading.
_LOAD_LOCK = threading.Lock()


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str | None = None) -> torch.dtype:
    """bf16 on CUDA, fp32 on CPU (CPU bf16 matmuls are slow and less exact)."""
    return torch.bfloat16 if (device or default_device()).startswith("cuda") else torch.float32


def default_device_map(device: str, device_map: str | dict | None = None) -> str | dict | None:
    """The device_map from_pretrained gets. Plain "cuda" (no index) means "every visible GPU":
    accelerate's "auto" then spreads a model larger than one GPU over all of them (and over CPU
    memory when even that is not enough; the scoring hooks onload offloaded weights). A given
    device_map, "cpu" or an explicit "cuda:N" is used as it is."""
    if device_map is None and device == "cuda":
        return "auto"
    return device_map


def load_model(path: str | Path, *, dtype: torch.dtype | None = None, device: str | None = None,
               device_map: str | dict | None = None, trust_remote_code: bool = False):
    """Return (model, tokenizer) in eval mode, placed by `default_device_map`: on CUDA a model
    larger than one GPU is spread over the worker's GPUs (accelerate); hooks work the same."""
    from transformers import AutoModelForCausalLM

    import cusprun.slicing  # noqa: F401 - registers the per-layer expert model type

    device = device or default_device()
    dtype = dtype or default_dtype(device)
    device_map = default_device_map(device, device_map)
    log.info("loading %s (%s, %s)", path, dtype, device_map or device)
    with _LOAD_LOCK:
        model = AutoModelForCausalLM.from_pretrained(
            str(path), dtype=dtype, device_map=device_map, trust_remote_code=trust_remote_code)
        if device_map is None:
            model.to(device)
        model.eval()
        tok = load_tokenizer(path, trust_remote_code=trust_remote_code)
    return model, tok


def load_tokenizer(path: str | Path, *, trust_remote_code: bool = False):
    """The model's tokenizer alone (padding with EOS where it has no pad token)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def input_device(model) -> torch.device:
    """Device of the input embeddings (the first device when the model is spread out)."""
    return model.get_input_embeddings().weight.device
