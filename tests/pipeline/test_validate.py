"""The pipeline's entry checks run the same validation as cusprun.prune (validate_build), first:
bad settings fail in preflight, in well under a second, before the store, model or corpora are
touched."""
from __future__ import annotations

import time

import pytest
import torch

from cusprun.errors import SpecError
from cusprun.pipeline.spec import load_spec


@pytest.mark.parametrize("over, match", [
    ({"baselines": ["wanda-sp"], "general": None}, "method 'wanda-sp' scores with general-text"),
    ({"device": "cuda"}, "device='cuda' but this machine has no CUDA"),
])
def test_preflight_refuses_cross_field_settings_first(over, match, tmp_path, monkeypatch):
    from cusprun.pipeline import preflight

    if over.get("device") == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    touched = []
    monkeypatch.setattr(preflight, "check_model_reference", lambda *a, **k: touched.append(a))
    spec = load_spec({"storage_root": "s3://no-such-bucket/x", **over})
    t0 = time.perf_counter()
    with pytest.raises(SpecError, match=match):
        preflight.check_inputs(spec)
    assert time.perf_counter() - t0 < 1.0 and not touched


def test_distributed_builds_may_name_cuda_on_a_machine_without_it():
    """In distributed mode the gpu pool's workers run the passes, not this machine."""
    from cusprun.pipeline.validate import validate_build

    assert validate_build(load_spec({"device": "cuda", "execution": "distributed"})) is None
    if not torch.cuda.is_available():   # the same device for a build on this machine is refused
        with pytest.raises(SpecError, match="device='cuda' but this machine has no CUDA"):
            validate_build(load_spec({"device": "cuda"}))


@pytest.mark.parametrize("data, match", [
    ({"layout": "perlayer"}, "layout: Input should be 'uniform' or 'per_layer'"),
    ({"allocation": "measure"}, "allocation: Input should be 'measured' or 'rank'"),
    ({"target_ratios": [0.95]}, r"target ratio 0.95 is outside \(0, 0.9\]"),
])
def test_the_spec_refuses_what_prune_refuses(data, match):
    import cusprun

    with pytest.raises(SpecError, match=match):
        load_spec(data)
    prune_args = {"ratio": data["target_ratios"][0]} if "target_ratios" in data else data
    with pytest.raises(SpecError, match=match):
        cusprun.prune("smollm2-135m", {"domain": ["d"] * 20}, **prune_args)
