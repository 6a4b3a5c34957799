"""Loading is safe from concurrent Prefect task threads. Bug seen in the demo: transformers'
from_pretrained patches process-global state while it builds a model (default dtype, weight
tying, init functions); two threads interleaving those patches can leave tying disabled, and a
model with tied embeddings then keeps its LM head on the meta device."""
from concurrent.futures import ThreadPoolExecutor

from cusprun.models import load_model
from tests.support import make_tiny_model


def test_concurrent_loads_of_tied_models_give_real_weights(tmp_path):
    shape = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4, vocab_size=2048,
                 tie_word_embeddings=True)
    dirs = [make_tiny_model(a, tmp_path / a, **shape)[1] for a in ("LlamaForCausalLM", "Qwen2ForCausalLM")]

    def load(i: int) -> str:
        try:
            model = load_model(dirs[i % 2], device="cpu")[0]
        except Exception as e:  # noqa: BLE001 - the bug surfaced as a meta-tensor copy error
            return f"{type(e).__name__}: {e}"
        if any(p.is_meta for p in model.parameters()):
            return "meta parameters"
        tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
        return "ok" if tied else "untied"

    with ThreadPoolExecutor(max_workers=6) as pool:
        outcomes = list(pool.map(load, range(24)))
    assert outcomes == ["ok"] * 24, outcomes
