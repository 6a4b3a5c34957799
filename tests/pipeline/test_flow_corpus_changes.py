"""A nightly rebuild sees a changed corpus: the build-expert flow under a real temporary Prefect
server, on the tiny model, with a domain corpus read from a folder and from a glob. Unchanged:
every stage reused, no new version. A file touched but not changed: its corpus is read again,
everything after it reused. One document appended to a file in the folder: a new corpus key,
new statistics, plan and slice, and a new published version."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.files import PAST_NS, jsonl_lines, write_pinned
from tests.support.flow_helpers import run_build, task_states, tiny_spec

pytestmark = [pytest.mark.prefect, pytest.mark.integration]  # other dimensions: bundled corpora

HEAVY = {"corpus", "stats", "plan", "slice"}


def _text(i: int, topic: str) -> str:
    return (f"Patient note {i}: the {topic} clinic saw a case of fever and cough, treated with "
            f"rest, fluids and a follow-up visit after {i + 2} days.")


def _calibration_text() -> str:
    """A new document that the stable hash split puts on the calibration side, so appending it
    changes what the domain corpus calibrates on."""
    from cusprun.corpora.records import _text_id, clean_text
    from cusprun.corpora.schema import split_of

    for i in range(100, 200):
        text = _text(i, "appended")
        if split_of(_text_id(clean_text(text)), 20) == "calib":
            return text
    raise AssertionError("no calibration-side text in 100 tries")


def _jsonl(path: Path, texts: list[str]) -> Path:
    return write_pinned(path, jsonl_lines({"text": t} for t in texts))


def _build(spec):
    state = run_build(spec)
    return state.result(), sorted((n, s) for n, s in task_states(state) if n in HEAVY)


def _corpus_keys(root: str) -> set[str]:
    return {p.parent.name for p in Path(root, "corpus").glob("*/DONE.json")}


def test_rebuild_reads_a_changed_folder_and_publishes_a_new_version(prefect_api, tiny_model,
                                                                     tmp_path):
    from cusprun.pipeline.context import open_store
    from cusprun.storage import list_versions

    folder = tmp_path / "corpora" / "health"
    a = _jsonl(folder / "a.jsonl", [_text(i, "town") for i in range(12)])
    _jsonl(folder / "b.jsonl", [_text(i, "village") for i in range(12, 20)])
    _jsonl(tmp_path / "more" / "c.jsonl", [_text(i, "city") for i in range(20, 40)])
    root = str(tmp_path / "artifacts")
    spec = tiny_spec(tiny_model, root, domain={
        "value": "health", "max_docs": 24,
        "sources": [f"{folder}/", str(tmp_path / "more" / "*.jsonl")]})
    store = open_store(root)

    first, heavy = _build(spec)
    assert heavy and {s for _, s in heavy} == {"Completed"}, heavy
    assert [n for n, _ in heavy].count("corpus") == 5  # 2 domain + language, task, general
    v1 = first["expert"]["version"]
    keys1 = _corpus_keys(root)

    # Nothing changed: every stage reused, the same version kept.
    second, heavy = _build(spec)
    assert {s for _, s in heavy} == {"Cached"}, heavy
    assert second["expert"]["unchanged"] and second["expert"]["version"] == v1
    assert _corpus_keys(root) == keys1

    # Touched, not changed: the folder's corpus is read again (a new key), its content hash is
    # the same, so statistics, plan and slice are reused and nothing is published.
    os.utime(a, ns=(PAST_NS + 10**9, PAST_NS + 10**9))
    touched, heavy = _build(spec)
    assert heavy.count(("corpus", "Completed")) == 1, heavy
    assert [x for x in heavy if x[0] != "corpus"] == sorted([
        ("stats", "Cached"), ("plan", "Cached"), ("slice", "Cached")])
    assert touched["expert"]["unchanged"] and list_versions(store, spec.name) == [v1]
    keys2 = _corpus_keys(root)
    assert len(keys2 - keys1) == 1

    # One document appended to a file in the folder: a new corpus key, new statistics, a new
    # plan and slice, and a new version.
    with open(a, "a") as fh:
        fh.write(jsonl_lines([{"text": _calibration_text()}]))
    third, heavy = _build(spec)
    assert heavy.count(("corpus", "Completed")) == 1, heavy
    assert heavy.count(("corpus", "Cached")) == 4, heavy  # the glob and the bundled ones
    assert {s for n, s in heavy if n != "corpus"} == {"Completed"}, heavy
    assert len(_corpus_keys(root) - keys2) == 1
    assert not third["expert"]["unchanged"]
    assert list_versions(store, spec.name) == [v1, third["expert"]["version"]]
