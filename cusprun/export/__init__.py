"""Exporting an expert to other serving formats (GGUF for llama.cpp)."""
from cusprun.export.types import GGUF_TYPES, GGUFExportError, check_gguf_request, gguf_types

__all__ = ["GGUF_TYPES", "GGUFExportError", "check_gguf_request", "gguf_types", "export_gguf"]


def export_gguf(*args, **kwargs):
    """See cusprun.export.gguf.export_gguf (imported lazily: it pulls in the converter)."""
    from cusprun.export.gguf import export_gguf as _export

    return _export(*args, **kwargs)
