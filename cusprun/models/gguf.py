"""GGUF files -> dequantised safetensors HF directories, converted once and cached."""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from cusprun.errors import ModelSourceError
from cusprun.models.fingerprint import file_sha256
from cusprun.models.gguf_tokenizer import check_tokenizer

log = logging.getLogger(__name__)


_FACT_KEYS = {"tokenizer.ggml.eos_token_id": "eos_id", "tokenizer.ggml.add_bos_token": "add_bos",
              "tokenizer.ggml.model": "tokenizer_model",
              "tokenizer.ggml.add_space_prefix": "add_space_prefix", "general.license": "license"}


def _gguf_facts(gguf_path: Path) -> tuple[dict, list[str], list[int]]:
    """What the GGUF file itself states (transformers' loader may differ): EOS id, add-BOS flag,
    tokenizer kind, license; plus the vocabulary and token types for the tokenizer check."""
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf_path))
    facts: dict = {}
    for key, name in _FACT_KEYS.items():
        field = reader.fields.get(key)
        if field is not None:
            facts[name] = field.contents()
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    types = reader.fields.get("tokenizer.ggml.token_type")
    return (facts, tokens.contents() if tokens is not None else [],
            types.contents() if types is not None else [])


def convert_gguf(gguf_path: str | Path, cache_dir: Path) -> Path:
    """Dequantise `gguf_path` into `cache_dir/gguf-<sha>/` (once) and return that directory."""
    src = Path(gguf_path)
    if not src.is_file():
        raise ModelSourceError(f"GGUF file {str(src)!r} does not exist.")
    out = cache_dir / f"gguf-{file_sha256(src)[:24]}"
    if (out / ".complete").exists():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors in %s (once)", src.name, out)
    try:
        tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name,
                                            local_files_only=True)
        facts, vocab, types = _gguf_facts(src)
    except Exception as e:  # noqa: BLE001 - gguf loader raises many types
        raise ModelSourceError(f"Could not read GGUF file {str(src)!r}: {e}") from e
    if "eos_id" in facts:
        eos_id = int(facts["eos_id"])
        tok.eos_token = tok.convert_ids_to_tokens(eos_id)
    if "add_bos" in facts and hasattr(tok, "add_bos_token"):
        tok.add_bos_token = bool(facts["add_bos"])
    check_tokenizer(tok, vocab, types, facts, src.name)  # before the slow weight conversion
    try:
        qmodel = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name,
                                                      local_files_only=True, use_kernels=False)
    except Exception as e:  # noqa: BLE001 - gguf loader raises many types
        raise ModelSourceError(f"Could not read the weights of GGUF file {str(src)!r}: {e}") from e
    # save_pretrained refuses a model carrying the GGUF quantization config: rebuild without it.
    config = qmodel.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.eos_token_id = tok.eos_token_id
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(qmodel.state_dict(), strict=False)
    model.tie_weights()
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "cusprun-source.json").write_text(json.dumps({"gguf": src.name, "facts": {
        k: (v if isinstance(v, (int, bool)) else str(v)) for k, v in facts.items()}}))
    (tmp / ".complete").touch()
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out
