"""Raw records (dicts from files or hf://) -> normalised rows: filter, field mapping, doc ids."""
from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from cusprun.corpora.spec import CorpusSpec
from cusprun.errors import CorpusError

_COND = re.compile(r"""^\s*([A-Za-z_][\w.\-]*)\s*==\s*(?:'([^']*)'|"([^"]*)"|(\S.*?))\s*$""")


def parse_filter(expr: dict[str, Any] | str | None) -> dict[str, list[Any]]:
    """{'col': v | [v, ...]} or "col == v and col2 == 'x y'" -> {col: [accepted values]}."""
    if expr is None:
        return {}
    if isinstance(expr, Mapping):
        return {str(k): list(v) if isinstance(v, (list, tuple, set)) else [v]
                for k, v in expr.items()}
    out: dict[str, list[Any]] = {}
    for part in re.split(r"\s+and\s+|\s*,\s*(?=[A-Za-z_][\w.\-]*\s*==)", expr.strip()):
        m = _COND.match(part)
        if not m:
            raise CorpusError(f"Cannot parse filter condition {part!r} in {expr!r}; write "
                              "conditions as column == value joined by 'and', e.g. "
                              "\"lang == de and topic == 'Santé et médecine'\", or give a dict.")
        value = next(g for g in m.groups()[1:] if g is not None)
        out.setdefault(m.group(1), []).append(value)
    return out


def matches(record: Mapping[str, Any], conditions: Mapping[str, list[Any]]) -> bool:
    for col, accepted in conditions.items():
        v = record.get(col)
        if not any(v == a or (v is not None and str(v) == str(a)) for a in accepted):
            return False
    return True


def clean_text(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()


def _text_id(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def _opt(record: Mapping[str, Any], field: str | None) -> str | None:
    if field is None:
        return None
    v = record.get(field)
    return None if v is None else str(v)


def check_fields(spec: CorpusSpec, fields: Iterable[str], where: str) -> None:
    """Fail before any work when a configured field is absent from the source."""
    fields = list(fields)
    have = set(fields)
    wanted = {"text_field": spec.text_field}
    if spec.text_field not in have and spec.prompt_field and spec.answer_field:
        wanted = {}  # text is built from prompt + answer
    for name in ("id_field", "group_field", "prompt_field", "answer_field", "label_field",
                 "title_field", "lang_field"):
        if getattr(spec, name):
            wanted[name] = getattr(spec, name)
    for col in parse_filter(spec.filter):
        wanted[f"filter column {col!r}"] = col
    for what, col in wanted.items():
        if col not in have:
            raise CorpusError(f"{where}: field {col!r} ({what}) not found; fields that exist: "
                              f"{', '.join(fields) or '(none)'}. Set {what.split()[0]} to one "
                              "of them.")


def normalise(records: Iterable[Mapping[str, Any]], spec: CorpusSpec, source: str) -> list[dict]:
    """Filtered raw records -> rows with doc_id/text/split_key and the optional task columns.
    doc_id: the id_field value, else a hash of the text (so it is stable and content-derived)."""
    conditions = parse_filter(spec.filter)
    rows = []
    for rec in records:
        if conditions and not matches(rec, conditions):
            continue
        raw = rec.get(spec.text_field)
        prompt, answer = _opt(rec, spec.prompt_field), _opt(rec, spec.answer_field)
        if raw is None and prompt is not None and answer is not None:
            raw = f"{prompt} {answer}"
        if raw is None:
            continue
        text = clean_text(raw if isinstance(raw, str) else str(raw))
        doc_id = _opt(rec, spec.id_field) or _text_id(text)
        rows.append({
            "doc_id": doc_id, "text": text, "source": source,
            "split_key": _opt(rec, spec.group_field) or doc_id,
            "group_id": _opt(rec, spec.group_field), "title": _opt(rec, spec.title_field),
            "label": _opt(rec, spec.label_field), "lang": _opt(rec, spec.lang_field),
            "prompt": prompt, "answer": answer,
        })
    return rows
