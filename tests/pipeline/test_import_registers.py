"""`import cusprun` alone makes per-layer experts loadable by stock transformers Auto classes."""
import subprocess
import sys

from cusprun.models import model_fingerprint
from cusprun.slicing import slice_checkpoint
from tests.support import make_tiny_model, random_plan


def test_import_cusprun_registers_per_layer_type(tmp_path):
    model, path = make_tiny_model("Qwen3ForCausalLM", tmp_path / "dense")
    fp = model_fingerprint(path)
    plan = random_plan(model.config, fingerprint=fp, ffn=[40, 64, 12], groups=[1, 2, 1],
                       heads_per_group=[2, 1, 1], layout="per_layer")
    out = slice_checkpoint(path, plan, tmp_path / "expert", model_fingerprint=fp, progress=False)
    code = (
        "import cusprun, torch\n"
        "from transformers import AutoModelForCausalLM\n"
        f"m = AutoModelForCausalLM.from_pretrained({str(out)!r})\n"
        "assert m.config.model_type == 'cusprun_per_layer', m.config.model_type\n"
        "print(m(torch.tensor([[1, 2, 3]])).logits.shape)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "torch.Size([1, 3, 300])" in res.stdout
