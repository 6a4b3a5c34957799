"""No model load reaches the hub. transformers 5 turns Hub kernels on by default: on a CUDA
device of compute capability 9.0 without hub access its load fails fetching
'kernels-community/rotary'. Reproduced here on CPU by making transformers' kernel code see such a
device, with the hub offline (conftest sets HF_HUB_OFFLINE)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from cusprun.engine import LayeredModel
from cusprun.models.loading import load_model
from tests.support import make_tiny_model
from tests.support.paths import REPO


@pytest.fixture
def hopper_offline(monkeypatch):
    import transformers.integrations.hub_kernels as hk

    monkeypatch.setattr(hk, "get_device_type", lambda device=None: "cuda")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: (9, 0))


def test_stock_load_fails_there_and_cusprun_loads(hopper_offline, tmp_path):
    from transformers import AutoModelForCausalLM

    _, path = make_tiny_model("LlamaForCausalLM", tmp_path / "m")
    with pytest.raises(ValueError, match="kernels-community/rotary"):
        AutoModelForCausalLM.from_pretrained(path)          # what an offline GPU worker hit
    model, tok = load_model(path, device="cpu")
    assert not model.use_kernels and tok.pad_token is not None
    lm = LayeredModel.streamed(path, device="cpu")
    assert lm.checkpoint is not None


def _from_pretrained_calls(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "from_pretrained":
            yield node


def test_every_load_in_the_code_base_is_local_and_without_kernels():
    """Each from_pretrained in cusprun/ passes local_files_only (directly or through
    offline_kwargs) and, for models, use_kernels."""
    offenders = []
    for path in sorted((REPO / "cusprun").rglob("*.py")):
        for call in _from_pretrained_calls(path):
            names = {k.arg for k in call.keywords}
            spread = [ast.unparse(k.value) for k in call.keywords if k.arg is None]
            local = "local_files_only" in names or any("offline_kwargs" in s for s in spread)
            model = "Model" in ast.unparse(call.func)
            if not local or (model and "use_kernels" not in names):
                offenders.append(f"{path.relative_to(REPO)}:{call.lineno}")
    assert not offenders, offenders
