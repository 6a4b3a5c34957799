"""How a loss set's name says where its text comes from. An in-source set is named
'dimension=value' (a held-out slice of the source the dimension calibrated on); an out-of-source
set, 'dimension=value (out-of-source: label)', holds text of the same dimension value from a
source its calibration never read. The name is the only marker, so report.json keeps its schema
and reports written before out-of-source sets existed read back unchanged."""
from __future__ import annotations

import re

_OUT = re.compile(r"^(?P<base>\S+) \(out-of-source: (?P<label>.+)\)$")


def out_of_source_name(base: str, label: str) -> str:
    """'language=en', 'Bible 3' -> 'language=en (out-of-source: Bible 3)'."""
    if not label.strip() or ")" in label or "\n" in label:
        raise ValueError(f"out-of-source label {label!r} must be non-empty, one line, without ')'")
    return f"{base} (out-of-source: {label.strip()})"


def split_set_name(name: str) -> tuple[str, str | None]:
    """(in-source set it belongs to, out-of-source label) or (name, None) for any other set."""
    m = _OUT.match(name)
    return (m["base"], m["label"]) if m else (name, None)


def is_out_of_source(name: str) -> bool:
    return split_set_name(name)[1] is not None
