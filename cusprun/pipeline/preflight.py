"""Checks that take seconds and catch, before any heavy work, what would otherwise fail minutes or
hours into a build: the artifact store (reachable, bucket there, credentials that may write), the
base model reference, and every corpus source (bundled corpus known, file or S3 object there and
readable). Run by `cusprun build` before it starts Prefect, and by the flow's first task."""
from __future__ import annotations

import logging

from cusprun.models.sources import check_model_reference
from cusprun.pipeline.spec import ExpertSpec
from cusprun.storage import ArtifactStore

log = logging.getLogger(__name__)


def check_corpus_source(corpus: dict, storage_options: dict | None = None) -> None:
    """The source names a known bundled corpus, or files that exist and can be listed."""
    from cusprun.corpora import CorpusSpec
    from cusprun.corpora.spec import source_kind

    kind = source_kind(corpus["source"])
    if kind == "bundled":
        from cusprun.corpora.bundled import parse_bundled

        parse_bundled(corpus["source"])
    elif kind in ("local", "s3"):
        from cusprun.corpora.files import list_files

        if kind == "s3" and not corpus.get("storage_options"):
            corpus = {**corpus, "storage_options": storage_options or {}}
        list_files(corpus["source"], CorpusSpec.model_validate(corpus))


def check_inputs(spec: ExpertSpec, storage_options: dict | None = None) -> None:
    """Raise the first problem found (a CusprunError naming the bad value) or return quietly."""
    from cusprun.pipeline.plan_inputs import calibration_corpora, evaluation_corpora
    from cusprun.pipeline.validate import validate_build

    validate_build(spec)
    ArtifactStore(spec.storage_root, storage_options).check(write=True)
    check_model_reference(spec.base_model, storage_options)
    corpora = [c for cs in calibration_corpora(spec).values() for c in cs]
    corpora += list(evaluation_corpora(spec).values())
    seen = set()
    for c in corpora:
        if c["source"] not in seen:
            seen.add(c["source"])
            check_corpus_source(c, storage_options)
    log.debug("inputs of %s checked: store %s, model %s, %d corpus sources", spec.name,
              spec.storage_root, spec.base_model, len(seen))
