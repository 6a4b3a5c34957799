"""Content fingerprints of model directories: the cache identity of every later stage."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from cusprun.paths import cache_root

# Config keys that change with the writer, not with the model.
_VOLATILE_CONFIG_KEYS = {"transformers_version", "_name_or_path", "_commit_hash", "dtype", "torch_dtype"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "tokenizer.model", "vocab.json", "merges.txt", "chat_template.jinja",
                   "chat_template.json", "added_tokens.json")


def file_sha256(path: str | Path, *, cache: bool = True) -> str:
    """sha256 of a file; remembered per (path, size, mtime) so big weights are hashed once."""
    p = Path(path).resolve()
    st = p.stat()
    key = f"{p}|{st.st_size}|{st.st_mtime_ns}"
    memo = cache_root() / "file-hashes.json"
    table: dict[str, str] = {}
    if cache and memo.exists():
        try:
            table = json.loads(memo.read_text())
        except json.JSONDecodeError:
            table = {}
        if key in table:
            return table[key]
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    digest = h.hexdigest()
    if cache:
        table[key] = digest
        tmp = memo.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(table))
        os.replace(tmp, memo)
    return digest


def canonical_config(path: str | Path) -> dict:
    cfg = json.loads((Path(path) / "config.json").read_text())
    return {k: v for k, v in cfg.items() if k not in _VOLATILE_CONFIG_KEYS}


def model_fingerprint(path: str | Path) -> str:
    """sha256 over the canonical config, every weight file's hash and the tokenizer files."""
    root = Path(path)
    h = hashlib.sha256()
    h.update(json.dumps(canonical_config(root), sort_keys=True).encode())
    for f in sorted(root.glob("*.safetensors")):
        h.update(f"weights:{f.name}:{file_sha256(f)}".encode())
    for name in TOKENIZER_FILES:
        if (root / name).exists():
            h.update(f"tok:{name}:{file_sha256(root / name, cache=False)}".encode())
    return h.hexdigest()[:32]
