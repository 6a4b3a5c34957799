"""Loading is safe from concurrent Prefect task threads (a bug seen in the demo: a model loaded
while another thread was inside from_pretrained came back with meta tensors)."""
from concurrent.futures import ThreadPoolExecutor

import torch

from cusprun.models import load_model
from cusprun.testing import make_tiny_model


def test_concurrent_loads_give_real_weights(tmp_path):
    dirs = [make_tiny_model(a, tmp_path / a)[1] for a in ("LlamaForCausalLM", "Qwen2ForCausalLM")]
    with ThreadPoolExecutor(max_workers=4) as pool:
        models = list(pool.map(lambda i: load_model(dirs[i % 2], device="cpu")[0], range(8)))
    for m in models:
        assert not any(p.is_meta for p in m.parameters())
        assert m.get_input_embeddings().weight.device == torch.device("cpu")
