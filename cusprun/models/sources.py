"""Resolve a model reference to a local Hugging Face-format directory.

Accepted references:
  * an alias of an embedded model (`smollm2-135m`, `gemma3-270m`; see cusprun.models.embedded)
  * a local directory in HF layout (used in place)
  * `s3://bucket/prefix` in HF layout (downloaded once with s3fs)
  * a `.gguf` file (dequantised once to safetensors)
  * a hub id with optional revision: `Qwen/Qwen2.5-7B@main`
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from cusprun.adapters import architecture_of
from cusprun.errors import ModelSourceError
from cusprun.models.embedded import (ALIASES, DEFAULT_MODEL, EmbeddedModel,  # noqa: F401 - re-exported
                                     embedded_gguf)
from cusprun.models.fingerprint import model_fingerprint
from cusprun.models.gguf import convert_gguf
from cusprun.paths import cache_root
from cusprun.storage.diagnose import diagnose

log = logging.getLogger(__name__)


_HF_PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt", "*.jinja"]


@dataclass(frozen=True)
class ResolvedModel:
    ref: str
    kind: str             # alias | local | s3 | gguf | hub
    path: Path
    fingerprint: str
    architecture: str
    license: str | None = None
    """License id of the weights when the source states it (embedded aliases, GGUF metadata)."""


def _how_to_give() -> str:
    return ("Give the model as a local directory in HF layout (with config.json and *.safetensors), "
            "an s3://bucket/prefix holding that layout, a .gguf file, a hub id such as "
            f"'Qwen/Qwen2.5-7B@main', or one of the aliases: {', '.join(sorted(ALIASES))}.")


def validate_hf_dir(path: Path, ref: str) -> str:
    """Check an HF-layout directory cheaply (config, architecture, safetensors headers)."""
    if not path.is_dir():
        raise ModelSourceError(f"Model path {ref!r} is not a directory. {_how_to_give()}")
    cfg_file = path / "config.json"
    if not cfg_file.exists():
        raise ModelSourceError(f"Model directory {ref!r} has no config.json. {_how_to_give()}")
    try:
        cfg = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise ModelSourceError(f"config.json in {ref!r} is not valid JSON: {e}") from e
    arch = architecture_of(SimpleNamespace(**cfg))  # raises UnsupportedArchitectureError
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        bins = [p.name for p in path.glob("*.bin")] + [p.name for p in path.glob("*.pt")]
        extra = f" (found {', '.join(bins)}: cusprun never unpickles weights)" if bins else ""
        raise ModelSourceError(f"Model directory {ref!r} has no *.safetensors weights{extra}.")
    from safetensors import safe_open

    for w in weights:
        try:
            with safe_open(str(w), framework="pt") as f:
                f.keys()
        except Exception as e:  # noqa: BLE001 - safetensors raises several types
            raise ModelSourceError(f"Corrupt safetensors file {w.name!r} in {ref!r}: {e}") from e
    return arch


def _finish(ref: str, kind: str, path: Path, license: str | None = None) -> ResolvedModel:
    arch = validate_hf_dir(path, ref)
    return ResolvedModel(ref=ref, kind=kind, path=path, fingerprint=model_fingerprint(path),
                         architecture=arch, license=license or _stated_license(path))


def _stated_license(path: Path) -> str | None:
    """The license a converted GGUF stated (general.license), recorded at conversion."""
    src = path / "cusprun-source.json"
    if not src.is_file():
        return None
    try:
        return json.loads(src.read_text()).get("facts", {}).get("license")
    except (json.JSONDecodeError, AttributeError):
        return None


def _resolve_alias(ref: str, root: Path) -> ResolvedModel:
    gguf_file = embedded_gguf(ref, root / "models")
    return _finish(ref, "alias", convert_gguf(gguf_file, root / "models"), ALIASES[ref].license)


def _resolve_s3(ref: str, root: Path, storage_options: dict | None) -> ResolvedModel:
    import fsspec

    fs, _, (prefix,) = fsspec.get_fs_token_paths(ref, storage_options=storage_options or {})
    prefix = prefix.rstrip("/")
    try:
        files = [f for f in fs.find(prefix, detail=True).items() if f[0].rsplit("/", 1)[-1] != ""]
    except Exception as e:  # noqa: BLE001
        raise ModelSourceError(diagnose(e, ref, storage_options).explain(
            f"Cannot list model prefix {ref!r}")) from e
    if not files:
        raise ModelSourceError(f"S3 prefix {ref!r} does not exist or is empty. {_how_to_give()}")
    wanted = {f: d for f, d in files if "/" not in f[len(prefix) + 1:]}
    listing = json.dumps(sorted((f, d.get("ETag") or d.get("size")) for f, d in wanted.items()))
    out = root / "models" / f"s3-{hashlib.sha256((prefix + listing).encode()).hexdigest()[:24]}"
    if not (out / ".complete").exists():
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        log.info("downloading %d files from %s", len(wanted), ref)
        try:
            for f in wanted:
                fs.get(f, str(tmp / f.rsplit("/", 1)[-1]))
        except Exception as e:  # noqa: BLE001
            shutil.rmtree(tmp, ignore_errors=True)
            raise ModelSourceError(diagnose(e, ref, storage_options).explain(
                f"Cannot download model {ref!r}")) from e
        (tmp / ".complete").touch()
        if (out / ".complete").exists():     # another process finished the same download
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            shutil.rmtree(out, ignore_errors=True)
            try:
                os.replace(tmp, out)
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)
                if not (out / ".complete").exists():
                    raise
    return _finish(ref, "s3", out)


def _resolve_hub(ref: str) -> ResolvedModel:
    from huggingface_hub import snapshot_download

    repo_id, _, revision = ref.partition("@")
    try:
        path = snapshot_download(repo_id, revision=revision or None, allow_patterns=_HF_PATTERNS)
    except Exception as e:  # noqa: BLE001 - offline, missing repo, auth...
        if type(e).__name__ in ("LocalEntryNotFoundError", "OfflineModeIsEnabled") and \
                os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
            raise ModelSourceError(
                f"{ref!r} is not in the local Hugging Face cache, and the hub is off "
                "(HF_HUB_OFFLINE=1). Unset HF_HUB_OFFLINE to download it, or give the model as a "
                "local directory or an s3://bucket/prefix in HF layout.") from e
        raise ModelSourceError(
            f"Could not fetch {ref!r} from the Hugging Face hub ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:200]}). If the hub is unreachable, download the model elsewhere "
            f"and give it as a local directory or an s3://bucket/prefix in HF layout.") from e
    return _finish(ref, "hub", Path(path))


def check_model_reference(ref: str, storage_options: dict | None = None) -> None:
    """Cheap checks of a base-model reference (no download, no conversion): an alias is known,
    a local path exists and is a model directory or .gguf file, an s3:// prefix can be listed.
    Hub ids are left to resolution (it knows whether the hub is reachable)."""
    ref = (ref or "").strip()
    if ref in ALIASES or not ref:
        return
    if ref.startswith("s3://"):
        import fsspec

        try:
            fs, path = fsspec.core.url_to_fs(ref, **{"skip_instance_cache": True,
                                                      **(storage_options or {})})
            found = fs.find(path.rstrip("/"), maxdepth=1)
        except Exception as e:  # noqa: BLE001 - credentials, bucket, endpoint
            raise ModelSourceError(diagnose(e, ref, storage_options).explain(
                f"Cannot list model prefix {ref!r}")) from e
        if not any(f.rsplit("/", 1)[-1] == "config.json" for f in found):
            raise ModelSourceError(f"S3 prefix {ref!r} does not exist or holds no config.json. "
                                   f"{_how_to_give()}")
        return
    local = Path(os.path.expanduser(ref))
    if ref.endswith(".gguf"):
        if not local.is_file():
            raise ModelSourceError(f"GGUF file {ref!r} does not exist. {_how_to_give()}")
        return
    if local.exists():
        validate_hf_dir(local, ref)
        return
    looks_like_path = ref.startswith(("/", ".", "~")) or ref.partition("@")[0].count("/") > 1
    if looks_like_path:
        raise ModelSourceError(f"Local model path {ref!r} does not exist. {_how_to_give()}")
    if "/" not in ref:
        raise ModelSourceError(f"Unknown model alias {ref!r}. {_how_to_give()}")


def resolve_model(ref: str, *, cache: str | Path | None = None,
                  storage_options: dict | None = None) -> ResolvedModel:
    """Resolve `ref` to a local HF directory plus its content fingerprint."""
    ref = (ref or "").strip()
    if not ref:
        raise ModelSourceError(f"Empty model reference. {_how_to_give()}")
    root = cache_root(cache)
    if ref in ALIASES:
        return _resolve_alias(ref, root)
    if ref.startswith("s3://"):
        return _resolve_s3(ref, root, storage_options)
    local = Path(os.path.expanduser(ref))
    if ref.endswith(".gguf"):
        return _finish(ref, "gguf", convert_gguf(local, root / "models"))
    if local.exists():
        return _finish(ref, "local", local.resolve())
    check_model_reference(ref)  # a missing local path or an unknown alias
    return _resolve_hub(ref)
