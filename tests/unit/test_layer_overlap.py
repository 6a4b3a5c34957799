"""Shared vs expert-specific kept units per layer, from experts' pruning plans; `cusprun overlap`."""
import json

import pytest

from cusprun.cli import main
from cusprun.evaluation.config import EvaluationError
from cusprun.evaluation.layer_overlap import kept_from_plan, layer_overlap
from tests.support import random_plan, tiny_config


def test_layer_fractions_count_each_kept_unit_once():
    kept = {"en": [{0, 1, 2, 3}, {0}], "fr": [{0, 1, 4}, {1}], "es": [{0, 5}, {2}]}
    rows = layer_overlap(kept)
    r0 = rows[0]   # union {0..5}: 0 shared by all, 1 by some (en, fr), 2 3 only en, 4 only fr, 5 only es
    assert r0["kept_by_any"] == 6 and r0["shared_by_all"] == pytest.approx(1 / 6)
    assert r0["shared_by_some"] == pytest.approx(1 / 6)
    assert r0["specific"] == {"en": pytest.approx(2 / 6), "fr": pytest.approx(1 / 6),
                              "es": pytest.approx(1 / 6)}
    assert r0["jaccard"]["en|fr"] == pytest.approx(2 / 5)
    assert rows[1]["shared_by_all"] == 0 and rows[1]["mean_jaccard"] == 0
    with pytest.raises(EvaluationError, match="at least two experts"):
        layer_overlap({"en": [{1}]})
    with pytest.raises(EvaluationError, match="different layer counts"):
        layer_overlap({"en": [{1}], "fr": [{1}, {2}]})


def _expert(tmp_path, name, lang, seed, fingerprint="fp"):
    cfg = tiny_config("LlamaForCausalLM")
    plan = random_plan(cfg, fingerprint=fingerprint, ffn=[40 + seed, 60, 20], groups=[1, 2, 1],
                       heads_per_group=[2, 1, 2], seed=seed)
    meta = {**plan.model_dump(mode="json"), "dimensions": {"language": {"value": lang}}}
    d = tmp_path / name
    d.mkdir()
    (d / "cusprun.json").write_text(json.dumps(meta))
    return d, plan


def test_overlap_command_reads_expert_plans_and_writes_plot(tmp_path, capsys):
    experts = [_expert(tmp_path, f"x{i}", lang, i) for i, lang in enumerate(["en", "fr", "es"])]
    out = tmp_path / "report"
    assert main(["overlap", *[str(d) for d, _ in experts], "--out", str(out)]) == 0
    md = (out / "layer_overlap.md").read_text()
    assert "| layer | kept by any | shared by all | by some | only en | only fr | only es |" in md
    data = json.loads((out / "layer_overlap.json").read_text())
    kept = {lang: kept_from_plan(p.model_dump())["ffn"] for (_, p), lang in zip(experts, ["en", "fr", "es"])}
    assert data["layers"]["ffn"] == json.loads(json.dumps(layer_overlap(kept)))
    for png in ("layer_overlap.png", "layer_overlap_heads.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    other, _ = _expert(tmp_path, "other", "de", 5, fingerprint="another-model")
    assert main(["overlap", str(experts[0][0]), str(other), "--out", str(out)]) == 2
    assert "different base models" in capsys.readouterr().err
    assert main(["overlap", str(experts[0][0]), str(tmp_path / "nope")]) == 2
    assert "No cusprun.json" in capsys.readouterr().err
