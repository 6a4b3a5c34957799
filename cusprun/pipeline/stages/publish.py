"""The publish stage: the Cus-Prun expert uploaded, verified (it loads and matches its plan),
then made visible by its manifest; an unchanged rebuild keeps the latest version."""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from cusprun.pipeline.context import local_copy, scratch_dir, timed
from cusprun.storage import ArtifactStore, publish_expert

log = logging.getLogger(__name__)


def publish_stage(store: ArtifactStore, name: str, sliced: dict, report: dict | None,
                  card: dict | None = None, gguf: list[str] | None = None) -> dict:
    """Publish the Cus-Prun expert with its card (cusprun.slicing.card.rewrite_card) and the
    GGUF files `gguf` names (cusprun.export, made in the staging directory): upload, verify it
    loads and matches its plan, then manifest. A rebuild whose checkpoint, report, card and GGUF
    types are unchanged keeps the latest version (no duplicate)."""
    from cusprun.slicing.card import rewrite_card
    from cusprun.storage import ExpertNotFoundError, read_expert

    card = card or {}
    build = {"sliced": sliced["key"], "report": report["key"] if report else None, "card": card}
    if gguf:               # only then: builds without GGUF keep their earlier records equal
        build["gguf"] = list(gguf)
    try:
        latest = read_expert(store, name)
        if latest.manifest.verification.get("build") == build:
            log.info("expert %s unchanged since version %s: not republished", name, latest.version)
            return {"name": name, "version": latest.version, "uri": latest.uri, "unchanged": True}
    except ExpertNotFoundError:
        pass
    src = local_copy(store, sliced["key"])   # the slice record names its store key

    def verify(copy: Path) -> dict:
        meta = json.loads((copy / "cusprun.json").read_text())
        n = checkpoint_matches_config(copy)
        expected = meta.get("params", {}).get("pruned", {}).get("total")
        if expected is not None and expected != n:
            raise ValueError(f"checkpoint has {n} parameters, cusprun.json says {expected}")
        return {"params_total": n, "plan_method": meta.get("method"), "loads": True, "build": build}

    with timed(f"publish expert {name}"), \
            scratch_dir("publish", sliced["key"].replace("/", "-")) as staged:
        for f in src.iterdir():     # hard links where possible: never a file in memory
            if f.is_file() and f.name != "DONE.json":
                try:
                    os.link(f, staged / f.name)
                except OSError:
                    shutil.copyfile(f, staged / f.name)
        rewrite_card(staged, card)
        if report:
            (staged / "evaluation.md").write_text(report["markdown"])
        if gguf:
            from cusprun.export import export_gguf

            export_gguf(staged, staged, gguf, name=name)
        pub = publish_expert(store, name, staged, verify=verify, progress=False, link=True,
                             same_as=lambda m: m.verification.get("build") == build)
        return {"name": name, "version": pub.version, "uri": pub.uri, "unchanged": pub.reused}


def checkpoint_matches_config(path: Path) -> int:
    """The model its config.json builds (on the meta device, through transformers' own classes,
    so a config they refuse fails here) has exactly the checkpoint's tensors, name by name and
    shape by shape; returns its parameter count. Verifies a 70B expert without loading it."""
    import torch
    from transformers import AutoModelForCausalLM

    from cusprun.models.checkpoint import checkpoint_tensors
    from cusprun.models.loading import load_config

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(load_config(path))
    want = {n: tuple(p.shape) for n, p in model.state_dict().items()}
    have = {n: t.shape for n, t in checkpoint_tensors(path).items()}
    tied = {n for n in want if n not in have and getattr(model.config, "tie_word_embeddings", False)}
    wrong = sorted(n for n in want.keys() - tied if have.get(n) != want[n])
    extra = sorted(have.keys() - want.keys())
    if wrong or extra:
        raise ValueError(f"checkpoint {path} does not match its config: "
                         f"{len(wrong)} missing or misshapen tensors (e.g. {wrong[:3]}), "
                         f"{len(extra)} unexpected (e.g. {extra[:3]})")
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total

