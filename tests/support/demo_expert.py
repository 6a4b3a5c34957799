"""The demo expert (embedded SmolLM2-135M, English health QA, ratio 0.25) built from Python with
small settings, saved with GGUF files; shared by the llama.cpp test and benchmark."""
from __future__ import annotations

from pathlib import Path

CORPORA = {"language": "bundled://language/en", "domain": "bundled://domain/health?lang=en",
           "task": "bundled://task/qa?domain=health&lang=en"}


def demo_expert_with_gguf(root: Path, types: list[str]) -> tuple[Path, list[str]]:
    """(expert directory with `<name>-<TYPE>.gguf` files, held-back domain documents: never
    calibrated on). ffn_multiple=256: every FFN row fills whole Q8_0 and k-quant blocks."""
    import cusprun
    from cusprun.api import _texts, build_spec

    settings = dict(ratio=0.25, max_docs=8, max_tokens=48, holdback_docs=4, ffn_multiple=256)
    expert = cusprun.prune("smollm2-135m", CORPORA, work_dir=root / "work", progress=False,
                           **settings)
    out = expert.save(root / "expert", gguf=types, progress=False, overwrite=True)
    spec = build_spec(CORPORA, ratio=0.25, max_docs=8, holdback_docs=4)
    held = _texts(spec, "domain", CORPORA["domain"], root / "held")[1]
    return out, held
