"""Load a resolved local HF-format directory for computation, without ever reaching the hub.

Model sources (cusprun.models.sources) fetch weights once; everything after that reads a local
directory. transformers 5 would still call the hub at load time: it turns on Hub kernels by
default (`use_kernels=None` means yes), and on a CUDA device with compute capability 9.0 that
downloads 'kernels-community/rotary', so an air-gapped GPU worker failed at its first load.
Every load here passes `use_kernels=False` unless the caller asks for kernels, and
`local_files_only=True`."""
from __future__ import annotations

import logging
import threading
from pathlib import Path

import torch

import cusprun.models.per_layer  # noqa: F401 - registers the per-layer expert model type

log = logging.getLogger(__name__)

# from_pretrained initialises on the meta device through process-global context managers, so two
# threads loading at once (concurrent Prefect tasks) corrupt each other: serialise loading.
_LOAD_LOCK = threading.Lock()


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str | torch.device | None = None) -> torch.dtype:
    """bf16 on CUDA, fp32 on CPU (CPU passes run bf16 matmuls under autocast where asked). bf16
    weights multiply in bf16 whatever a pass asks: a float32 pass on CUDA loads float32
    (cusprun.pipeline.runtime.Runtime.pass_dtype)."""
    return torch.bfloat16 if str(device or default_device()).startswith("cuda") else torch.float32


def offline_kwargs(trust_remote_code: bool = False) -> dict:
    """Keyword arguments of every from_pretrained on a local directory."""
    return {"local_files_only": True, "trust_remote_code": trust_remote_code}


def load_config(path: str | Path, *, trust_remote_code: bool = False):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(str(path), **offline_kwargs(trust_remote_code))


def load_model(path: str | Path, *, dtype: torch.dtype | None = None, device: str | None = None,
               device_map: str | dict | None = None, trust_remote_code: bool = False,
               kernels: bool = False):
    """(model, tokenizer) in eval mode on `device` (the whole model; cusprun.engine streams a
    model that does not fit). `kernels=True` lets transformers use Hub kernels (needs the hub or
    a populated kernel cache); `device_map` is passed to accelerate as given."""
    from transformers import AutoModelForCausalLM

    device = device or default_device()
    dtype = dtype or default_dtype(device)
    log.info("loading %s (%s, %s%s)", path, dtype, device_map or device,
             ", hub kernels" if kernels else "")
    with _LOAD_LOCK:
        model = AutoModelForCausalLM.from_pretrained(
            str(path), dtype=dtype, device_map=device_map, use_kernels=kernels,
            **offline_kwargs(trust_remote_code))
        if device_map is None:
            model.to(device)
        model.eval()
        tok = load_tokenizer(path, trust_remote_code=trust_remote_code)
    return model, tok


def load_tokenizer(path: str | Path, *, trust_remote_code: bool = False):
    """The model's tokenizer alone (padding with EOS where it has no pad token)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), **offline_kwargs(trust_remote_code))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def pad_id_of(tokenizer) -> int:
    """The id padding uses: the pad token, else EOS, else 0 (padding is masked everywhere)."""
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    return 0


def input_device(model) -> torch.device:
    """Device of the input embeddings (the first device when the model is spread out)."""
    return model.get_input_embeddings().weight.device
