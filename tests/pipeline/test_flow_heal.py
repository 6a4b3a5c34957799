"""The build-expert flow with `heal:` on a tiny model, under the session's real Prefect server:
the healed expert is published (stock checkpoint, healing.json, card says so), the report sets
one-shot and healed side by side with the healing cost, and a second run reuses every heal."""
from __future__ import annotations

import json

import pytest

from tests.support.flow_helpers import run_build as run, task_states, tiny_spec

pytestmark = pytest.mark.prefect

HEAL = {"tokens": 2048, "seq_len": 32, "batch_size": 4, "lr": 1e-3, "top_k": 8}
EVALUATION = {"max_docs": 4, "mc_items": 4, "max_tokens": 32, "other_languages": [],
              "sweep_ratios": [], "measure_speed": False, "min_loss_tokens": 0,
              "out_of_source": False}


@pytest.mark.integration
def test_a_healing_build_publishes_the_healed_expert_and_reports_it_beside_the_one_shot(
        prefect_api, tiny_model, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from cusprun.pipeline.context import open_store

    root = str(tmp_path / "artifacts")
    spec = tiny_spec(tiny_model, root, task=None, baselines=["magnitude"], heal=HEAL,
                     evaluation=EVALUATION)
    first = run(spec)
    heals = [s for n, s in task_states(first) if n == "heal"]
    assert heals == ["Completed", "Completed"]            # the expert and the baseline
    result = first.result()
    assert set(result["healed"]) == {"cusprun@0.25", "magnitude@0.25"}
    assert result["healed"]["cusprun@0.25"]["tokens"] == HEAL["tokens"]
    store = open_store(root)
    pub = store.uri(f"experts/tiny-expert/{result['expert']['version']}")
    healing = json.loads(open(f"{pub}/healing.json").read())
    assert len(healing["curve"]) == HEAL["tokens"] // (4 * 32)
    assert "Then healed" in open(f"{pub}/README.md").read()
    # the published weights are the healed ones, in a stock checkpoint of the sliced shapes
    model = AutoModelForCausalLM.from_pretrained(pub)
    published = load_file(f"{pub}/model.safetensors")
    assert all(v.shape == model.state_dict()[k].shape for k, v in published.items())
    report = store.read_bytes(store.key_of(result["report"]) + "/report.md").decode()
    assert "## Healing" in report and "**`cusprun@0.25` one-shot vs healed**" in report
    assert "**`magnitude@0.25` one-shot vs healed**" in report
    assert "![healing loss curves](healing_loss.png)" in report
    assert store.exists(store.key_of(result["report"]) + "/healing_loss.png")

    second = run(spec)
    assert [s for n, s in task_states(second) if n == "heal"] == ["Cached", "Cached"]
    assert second.result()["expert"]["unchanged"]
